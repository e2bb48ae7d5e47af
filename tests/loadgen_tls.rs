//! `loadgen --tls` against a TLS server nobody here wrote, socat terminating TLS
//! (`OPENSSL-LISTEN`) in front of the plain reactor, and against the reactor's own TLS,
//! with the certificate the other TLS tests make (rcgen, for `localhost`).
#![cfg(all(target_os = "linux", feature = "tls"))]

// This crate uses the TLS helpers only: a certificate made by rcgen, and the check that a
// program is installed.
#[allow(dead_code)]
mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::{tool, Certificate};
use evloop::loadgen::{self, ClientTls, Options};

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
