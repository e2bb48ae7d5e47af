//! `loadgen --tls` against a TLS server nobody here wrote, socat terminating TLS
//! (`OPENSSL-LISTEN`) in front of the plain reactor, and against the reactor's own TLS;
//! with a certificate authority and a server certificate made by `openssl` for the test.
#![cfg(all(target_os = "linux", feature = "tls"))]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evloop::loadgen::{self, ClientTls, Options};

fn need(program: &str) {
    if Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!("this test needs {program}: `apt-get install {program}` (Debian's package)");
    }
}

/// A throwaway CA and a certificate for 127.0.0.1 it signed, in a directory of this test's.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=evloop test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// socat, killed on drop.
struct Terminator(Child);

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// socat accepting TLS on a free port and passing the plaintext to `backend`; returns
/// once it accepts connections (bounded).
fn terminate_tls(cert: &Path, key: &Path, backend: SocketAddr) -> (Terminator, SocketAddr) {
    // socat says nothing of the port it listens on, so the test picks a free one.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listen = format!(
        "OPENSSL-LISTEN:{},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
        addr.port(),
        cert.display(),
        key.display()
    );
    let child = Command::new("socat")
        .args([&listen, &format!("TCP:{backend}")])
        .stderr(Stdio::null())
        .spawn()
        .expect("start socat");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "socat did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Terminator(child), addr)
}

#[test]
fn loadgen_speaks_tls_to_a_server_it_did_not_write() {
    need("openssl");
    need("socat");
    let dir = std::env::temp_dir().join(format!("evloop-loadgen-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = certificates(&dir);
    let server = evloop::reactor::spawn(evloop::ServerConfig::ephemeral()).unwrap();
    let (_socat, tls_addr) = terminate_tls(&cert, &key, server.tcp);

    let options = |tls: ClientTls| Options {
        addr: tls_addr,
        connections: 4,
        duration: None,
        messages: Some(400),
        timeout: Duration::from_secs(5),
        tls: Some(tls),
        ..Options::default()
    };
    // Verified against the CA: every reply checked, as over plain TCP.
    let verified = loadgen::run(&options(ClientTls::new(Some(&ca), "127.0.0.1").unwrap())).unwrap();
    assert_eq!(verified.errors(), 0, "{verified}");
    assert_eq!(verified.messages, 400);
    assert_eq!(verified.tls_verified, Some(true));
    assert!(verified.to_string().contains("verified against --tls-ca"));

    // A new connection every 2 requests: a handshake each, counted.
    let churning = loadgen::run(&Options {
        requests_per_connection: Some(2),
        ..options(ClientTls::new(Some(&ca), "127.0.0.1").unwrap())
    })
    .unwrap();
    assert_eq!(churning.errors(), 0, "{churning}");
    assert!(churning.tls_handshakes >= 150, "{churning}");
    assert!(churning.to_json().contains("\"tls_verified\":1"));

    // --tls-insecure connects to the same server, and says it did not verify.
    let insecure = loadgen::run(&options(ClientTls::new(None, "127.0.0.1").unwrap())).unwrap();
    assert_eq!(insecure.errors(), 0, "{insecure}");
    assert!(insecure
        .to_string()
        .contains("NOT verified (--tls-insecure)"));

    // The certificate does not name this server: every connection fails, none is served.
    let wrong_name =
        loadgen::run(&options(ClientTls::new(Some(&ca), "example.com").unwrap())).unwrap();
    assert_eq!(wrong_name.connected, 0, "{wrong_name}");
    assert_eq!(wrong_name.connection_errors, 4, "{wrong_name}");

    // A file without certificates is a one-line error naming it.
    let err = ClientTls::new(Some(&key), "127.0.0.1").unwrap_err();
    assert!(
        err.contains("--tls-ca") && err.contains("server.key"),
        "{err}"
    );

    server.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loadgen_over_tls_against_the_reactors_own_tls() {
    need("openssl");
    let dir = std::env::temp_dir().join(format!("evloop-loadgen-tls-own-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = certificates(&dir);
    let mut config = evloop::ServerConfig::ephemeral();
    config.tls = Some(evloop::tls::Identity::load(&cert, &key).unwrap());
    let server = evloop::reactor::spawn(config).unwrap();
    let tls = || Some(ClientTls::new(Some(&ca), "127.0.0.1").unwrap());
    let lockstep = loadgen::run(&Options {
        addr: server.tcp,
        connections: 20,
        duration: None,
        messages: Some(4_000),
        timeout: Duration::from_secs(5),
        tls: tls(),
        ..Options::default()
    })
    .unwrap();
    assert_eq!(lockstep.errors(), 0, "{lockstep}");
    assert_eq!(lockstep.messages, 4_000);
    // One request per connection: a handshake, a greeting, a reply, close_notify both ways.
    let handshakes = loadgen::run(&Options {
        addr: server.tcp,
        connections: 4,
        duration: None,
        messages: Some(200),
        timeout: Duration::from_secs(5),
        requests_per_connection: Some(1),
        tls: tls(),
        ..Options::default()
    })
    .unwrap();
    assert_eq!(handshakes.errors(), 0, "{handshakes}");
    assert!(handshakes.tls_handshakes >= 190, "{handshakes}");
    let stats = server.shutdown().unwrap();
    // A run ends as soon as its last request is answered, so a client that had already
    // opened its next connection leaves it mid-handshake: at most one per client.
    assert!(stats.tls_rejected <= 4, "{stats:?}");
    assert_eq!(stats.messages, 4_200);
    let _ = std::fs::remove_dir_all(&dir);
}
