//! Test support for the TLS tests (`tests/tls.rs` against the reactor,
//! `tests/tls_threaded.rs` against the threaded baseline): a certificate made by rcgen in a
//! directory of its own (no key is checked in), the command line clients nobody here wrote
//! (`openssl`, `socat`), which fail a test with the command that installs them rather than
//! skip it, and a rustls client.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use evloop::config::TlsFiles;

use super::IO_TIMEOUT;

/// A self-signed certificate for `localhost` and its key, as PEM files in a fresh directory.
pub struct Certificate {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl Certificate {
    pub fn new() -> Certificate {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "evloop-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        Certificate {
            dir,
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    pub fn args(&self) -> Vec<String> {
        let path = |p: &Path| p.to_str().unwrap().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
        ]
    }

    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).unwrap()
    }

    /// The files, as a server's config names them.
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The program, or a failure that says how to install it: never a skip.
pub fn tool(program: &str, package: &str) -> &'static str {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{program}` is needed by this test: apt-get install -y {package}"
    );
    program.to_string().leak()
}

/// Runs `command` with `input` on its stdin (kept open) and returns what it printed on stdout
/// and stderr once it exits; killed after IO_TIMEOUT, which only turns a hang into a failure.
pub fn run(command: &mut Command, input: &[u8]) -> (bool, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let pid = child.id() as i32;
    let (done, watchdog) = mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if watchdog.recv_timeout(IO_TIMEOUT).is_err() {
            // SAFETY: kill only sends a signal, to our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    let _ = done.send(());
    guard.join().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A raw TCP connection to a TLS server, with the test's generous timeout.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .expect("a clean EOF, not a reset");
    all
}

/// A rustls client trusting `cert`, over a blocking socket.
pub fn tls_client(
    addr: SocketAddr,
    cert: &Certificate,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    tls_client_over(raw(addr), cert)
}

pub fn client_connection(cert: &Certificate) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap()
}

pub fn tls_client_over(
    socket: TcpStream,
    cert: &Certificate,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    rustls::StreamOwned::new(client_connection(cert), socket)
}

pub fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    line
}
