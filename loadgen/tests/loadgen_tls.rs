//! `loadgen --tls` against a TLS server nobody here wrote, socat terminating TLS
//! (`OPENSSL-LISTEN`) in front of the plain reactor, and against the reactor's own TLS,
//! with the certificate the other TLS tests make (rcgen, for `localhost`), and with the
//! certificates people make by hand (`openssl req -x509`) pinned by `--tls-ca`.
#![cfg(all(target_os = "linux", feature = "tls"))]

// This crate uses the TLS helpers only: a certificate made by rcgen, and the check that a
// program is installed.
#[allow(dead_code)]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::{run, tool, Certificate};
use loadgen::{self, ClientTls, Options};

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
    let child = Command::new(tool("socat", "socat"))
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
    let cert = Certificate::new();
    let server = evloop::reactor::spawn(evloop::ServerConfig::ephemeral()).unwrap();
    let (_socat, tls_addr) = terminate_tls(&cert.cert, &cert.key, server.tcp);

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
    let verified = loadgen::run(&options(
        ClientTls::new(Some(&cert.cert), "localhost").unwrap(),
    ))
    .unwrap();
    assert_eq!(verified.errors(), 0, "{verified}");
    assert_eq!(verified.messages, 400);
    assert_eq!(verified.tls_verified, Some(true));
    assert!(verified.to_string().contains("verified against --tls-ca"));

    // A new connection every 2 requests: a handshake each, counted.
    let churning = loadgen::run(&Options {
        requests_per_connection: Some(2),
        ..options(ClientTls::new(Some(&cert.cert), "localhost").unwrap())
    })
    .unwrap();
    assert_eq!(churning.errors(), 0, "{churning}");
    assert!(churning.tls_handshakes >= 150, "{churning}");
    assert!(churning.to_json().contains("\"tls_verified\":1"));

    // --tls-insecure connects to the same server, and says it did not verify.
    let insecure = loadgen::run(&options(ClientTls::new(None, "localhost").unwrap())).unwrap();
    assert_eq!(insecure.errors(), 0, "{insecure}");
    assert!(insecure
        .to_string()
        .contains("NOT verified (--tls-insecure)"));

    // The certificate does not name this server: every connection fails, none is served.
    let wrong_name = loadgen::run(&options(
        ClientTls::new(Some(&cert.cert), "example.com").unwrap(),
    ))
    .unwrap();
    assert_eq!(wrong_name.connected, 0, "{wrong_name}");
    assert_eq!(wrong_name.connection_errors, 4, "{wrong_name}");

    // A file without certificates is a one-line error naming it.
    let err = ClientTls::new(Some(&cert.key), "localhost").unwrap_err();
    assert!(err.contains("--tls-ca") && err.contains("key.pem"), "{err}");

    server.shutdown().unwrap();
}

#[test]
fn loadgen_over_tls_against_the_reactors_own_tls() {
    let cert = Certificate::new();
    let mut config = evloop::ServerConfig::ephemeral();
    config.tls = Some(cert.files());
    let server = evloop::reactor::spawn(config).unwrap();
    let tls = || Some(ClientTls::new(Some(&cert.cert), "localhost").unwrap());
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
}

/// A certificate for `localhost` as `openssl req -x509` makes it unless told otherwise:
/// self-signed, `CA:TRUE`, the name in the subject's common name only. Written into `dir`;
/// returns the certificate's and the key's paths.
fn openssl_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("openssl-cert.pem"), dir.join("openssl-key.pem"));
    let (made, said) = run(
        Command::new(tool("openssl", "openssl"))
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        b"",
    );
    assert!(made, "openssl req -x509: {said}");
    (cert, key)
}

/// A self-signed `CA:TRUE` certificate for `localhost` that expired a year before the test,
/// made by rcgen; returns the certificate's and the key's paths.
fn expired_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let made = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("expired-cert.pem"), dir.join("expired-key.pem"));
    std::fs::write(&cert_path, made.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// The reactor serving TLS with this certificate and key.
fn tls_reactor(cert: &Path, key: &Path) -> evloop::Running {
    let mut config = evloop::ServerConfig::ephemeral();
    config.tls = Some(evloop::config::TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    });
    evloop::reactor::spawn(config).unwrap()
}

/// 4 clients, 40 requests, trusting `ca` for `name`.
fn tls_run(addr: SocketAddr, ca: &Path, name: &str) -> loadgen::Report {
    loadgen::run(&Options {
        addr,
        connections: 4,
        duration: None,
        messages: Some(40),
        timeout: Duration::from_secs(5),
        tls: Some(ClientTls::new(Some(ca), name).unwrap()),
        ..Options::default()
    })
    .unwrap()
}

/// The run failed every connection, for the one cause whose name holds `cause`, and says so
/// in its text and its JSON.
fn assert_failed_for(report: &loadgen::Report, cause: &str) {
    assert_eq!(report.connected, 0, "{report}");
    assert_eq!(report.connection_errors, 4, "{report}");
    assert_eq!(report.causes.len(), 1, "{report}");
    let only = &report.causes[0];
    assert_eq!(only.count, 4, "{report}");
    assert!(only.cause.contains(cause), "{report}");
    assert!(only.first.starts_with("client "), "{report}");
    assert!(report.to_string().contains(&only.cause), "{report}");
    let json = report.to_json();
    assert!(json.contains(",\"error_causes\":[{\"cause\":"), "{json}");
    assert!(json.contains(cause), "{json}");
}

#[test]
fn the_servers_own_certificate_in_tls_ca_is_pinned_and_still_checked() {
    let cert = Certificate::new();
    let (openssl_cert, openssl_key) = openssl_certificate(&cert.dir);
    let server = tls_reactor(&openssl_cert, &openssl_key);

    // openssl's usual test certificate, CA:TRUE and named in its CN only: accepted when it
    // is the very certificate --tls-ca lists, as openssl s_client -CAfile accepts it.
    let pinned = tls_run(server.tcp, &openssl_cert, "localhost");
    assert_eq!(pinned.errors(), 0, "{pinned}");
    assert_eq!(pinned.messages, 40);
    assert!(pinned.causes.is_empty());
    assert!(!pinned.to_json().contains("error_causes"));

    // Pinned, but not for this name.
    let wrong_name = tls_run(server.tcp, &openssl_cert, "example.com");
    assert_failed_for(&wrong_name, "NotValidForName");

    // Another certificate in --tls-ca: the server's must chain to it, and does not.
    let other = tls_run(server.tcp, &cert.cert, "localhost");
    assert_failed_for(&other, "InvalidCertificate");
    server.shutdown().unwrap();

    // Pinned, and expired.
    let (expired_cert, expired_key) = expired_certificate(&cert.dir);
    let server = tls_reactor(&expired_cert, &expired_key);
    let expired = tls_run(server.tcp, &expired_cert, "localhost");
    assert_failed_for(&expired, "Expired");
    server.shutdown().unwrap();
}

#[test]
fn a_failed_run_says_why_without_a_log() {
    let cert = Certificate::new();
    let server = tls_reactor(&cert.cert, &cert.key);
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .env_remove("RUST_LOG")
        .args(["--addr", &server.tcp.to_string(), "--connections", "3"])
        .args([
            "--messages",
            "30",
            "--tls",
            "--tls-server-name",
            "example.com",
        ])
        .arg("--tls-ca")
        .arg(&cert.cert)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("because    3 × TLS InvalidCertificate(NotValidForName"),
        "{stdout}"
    );
    assert!(
        stdout.contains("certificate not valid for name \"example.com\""),
        "{stdout}"
    );
    server.shutdown().unwrap();
}
