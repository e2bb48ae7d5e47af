//! `--tls-cert` and `--tls-key` against real sockets and clients nobody here wrote:
//! `openssl s_client` (TLS 1.2 and 1.3) and `socat`, then a rustls client for what a command
//! line client cannot do (pipeline 2 MiB before reading, never read), and raw sockets for
//! clients that never finish, cut off or do not speak TLS at all; last, SIGHUP against the
//! binary (certificate rotation, and a plain server that ignores it), each step awaited on
//! the server's log. Certificates are made by the tests with rcgen, in a directory of their
//! own; no key is checked in.
//!
//! Linux only, like the rest of the tests that run; the TLS feature is on by default.
#![cfg(all(feature = "tls", target_os = "linux"))]

// This crate uses the line client, the server starter, the binary helper and the TLS
// helpers only.
#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::tls::{line, raw, read_to_eof, tls_client, tls_client_over, Certificate};
use common::{Binary, IO_TIMEOUT};
use harness::procfs;

const REACTOR: &str = env!("CARGO_BIN_EXE_reactor");
const THREADED: &str = env!("CARGO_BIN_EXE_threaded");

// openssl s_client, socat, a handshake never finished or cut off, 2 MiB pipelined: the
// suite both servers pass (tests/common/tls_suite.rs).
tls_suite!(evloop::reactor::spawn);

use tls_suite::tls_server;

#[test]
fn plaintext_instead_of_tls_is_sent_an_alert_then_closed_and_counted() {
    let cert = Certificate::new();
    let server = tls_server(&cert, |_| {});
    // A TLS client connected meanwhile is served as usual.
    let mut other = tls_client(server.tcp, &cert);
    let mut plain = raw(server.tcp);
    plain.write_all(b"hello\n").unwrap();
    let answer = read_to_eof(&mut plain);
    // One alert record (content type 21) and then a clean EOF: no greeting, no reply.
    assert_eq!(answer.first(), Some(&0x15), "{answer:02x?}");
    assert_eq!(answer.len(), 7, "one fatal alert: {answer:02x?}");
    let mut reader = BufReader::new(&mut other);
    assert_eq!(line(&mut reader), "Welcome!\n");
    drop(reader);
    drop(other);
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.tls_rejected, 1, "{stats:?}");
}

#[test]
fn a_tls_client_that_never_reads_cannot_grow_server_memory_in_proc() {
    let cert = Certificate::new();
    let mut args = cert.args();
    args.push("--no-udp".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Binary::start(REACTOR, &args);
    let ping = |count: usize| {
        let mut c = BufReader::new(tls_client(server.tcp, &cert));
        assert_eq!(line(&mut c), "Welcome!\n");
        for i in 0..count {
            c.get_mut()
                .write_all(format!("ping {i}\n").as_bytes())
                .unwrap();
            assert_eq!(line(&mut c), format!("Hello, ping {i}!\n"));
        }
    };
    ping(10);
    let before = procfs::rss(server.pid()).unwrap();

    // "x\n" lines, each owed ten bytes of reply, never read. Once the server stops reading,
    // the kernel's buffers fill and the write times out: that is the backpressure.
    let flood = raw(server.tcp);
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut flood = tls_client_over(flood, &cert);
    let chunk = b"x\n".repeat(8 * 1024);
    let limit: usize = 300 << 20;
    let mut pushed = 0;
    while pushed < limit {
        match flood.write_all(&chunk) {
            Ok(()) => pushed += chunk.len(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("flood write: {e}"),
        }
    }
    ping(50);
    let after = procfs::rss(server.pid()).unwrap();
    let growth = after.saturating_sub(before);
    eprintln!(
        "TLS slow reader: pushed {} KiB before blocking; server RSS {} KiB -> {} KiB (+{} KiB)",
        pushed >> 10,
        before >> 10,
        after >> 10,
        growth >> 10
    );
    assert!(
        pushed < limit,
        "the server kept reading a client that never reads"
    );
    assert!(growth < 4 << 20, "server RSS grew by {} KiB", growth >> 10);
}

/// Runs a server binary that must refuse to start: exit 2 and one line on stderr.
fn refused(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe)
        .args(["--listen", "127.0.0.1:0", "--no-udp"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_tls_flags_are_one_line_naming_the_file_and_exit_2() {
    let cert = Certificate::new();
    let other = Certificate::new();
    let (c, k) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let missing = cert.dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let garbage = cert.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let bad_der = cert.dir.join("bad-der.pem");
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad_der = bad_der.to_str().unwrap();
    for exe in [REACTOR, THREADED] {
        let only_cert = refused(exe, &["--tls-cert", c]);
        assert!(
            only_cert.contains("--tls-cert needs --tls-key"),
            "{only_cert}"
        );
        let only_key = refused(exe, &["--tls-key", k]);
        assert!(
            only_key.contains("--tls-key needs --tls-cert"),
            "{only_key}"
        );
        let no_file = refused(exe, &["--tls-cert", missing, "--tls-key", k]);
        assert!(
            no_file.contains(missing) && no_file.contains("No such file"),
            "{no_file}"
        );
        let not_pem = refused(exe, &["--tls-cert", garbage, "--tls-key", k]);
        assert!(
            not_pem.contains(garbage) && not_pem.contains("no CERTIFICATE"),
            "{not_pem}"
        );
        let no_key = refused(exe, &["--tls-cert", c, "--tls-key", c]);
        assert!(
            no_key.contains(c) && no_key.contains("no PRIVATE KEY"),
            "{no_key}"
        );
        let bad_cert = refused(exe, &["--tls-cert", bad_der, "--tls-key", k]);
        assert!(bad_cert.contains(bad_der), "{bad_cert}");
        let other_key = other.key.to_str().unwrap();
        let mismatch = refused(exe, &["--tls-cert", c, "--tls-key", other_key]);
        assert!(
            mismatch.contains(other_key) && mismatch.contains("not the key of the certificate"),
            "{mismatch}"
        );
    }
}

#[test]
fn the_startup_line_says_tls_on_and_the_binary_serves_tls() {
    let cert = Certificate::new();
    let args = cert.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Binary::start(REACTOR, &args);
    assert!(
        server.first_line.trim_end().ends_with(" tls=on"),
        "{:?}",
        server.first_line
    );
    let mut c = BufReader::new(tls_client(server.tcp, &cert));
    assert_eq!(line(&mut c), "Welcome!\n");
    c.get_mut().write_all(b"exit\n").unwrap();
    let mut rest = String::new();
    // A clean close: rustls reports the server's close_notify as EOF, a TCP EOF without it
    // as an error.
    c.read_to_string(&mut rest).expect("close_notify, then EOF");
    assert_eq!(rest, "");
}

/// A server binary's stderr, line by line, read on a thread of its own: a test waits for
/// the log line that says something happened instead of sleeping.
struct Log {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Log {
    fn of(server: &mut Binary) -> Log {
        let stderr = server.child.stderr.take().expect("stderr piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Log {
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line that contains `text`; fails after IO_TIMEOUT, with what was logged.
    fn next_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "no log line with {text:?}; logged:\n{}",
                    self.seen.join("\n")
                );
            };
            self.seen.push(line);
            let line = self.seen.last().unwrap();
            if line.contains(text) {
                return line.clone();
            }
        }
    }

    /// Every line, once the server has exited and closed its stderr.
    fn all(mut self) -> Vec<String> {
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// A new connection trusting `trusted` only: the certificate the server showed it, after
/// the greeting (a handshake with another certificate fails the test here).
fn certificate_served(addr: SocketAddr, trusted: &Certificate) -> Vec<u8> {
    let mut c = BufReader::new(tls_client(addr, trusted));
    let mut greeting = String::new();
    c.read_line(&mut greeting)
        .unwrap_or_else(|e| panic!("not shown the certificate the client trusts: {e}"));
    assert_eq!(greeting, "Welcome!\n");
    let shown = c.get_ref().conn.peer_certificates().expect("a certificate");
    shown[0].to_vec()
}

/// Stops a server binary with SIGTERM: its exit status and every line it logged.
fn stopped(mut server: Binary, log: Log) -> (Option<i32>, Vec<String>) {
    server.signal(libc::SIGTERM);
    let status = server.child.wait().unwrap();
    (status.code(), log.all())
}

/// SIGHUP with a bad file in place: one error line naming `file` and `problem`, and new
/// connections still shown `served`.
fn reload_refused(server: &Binary, log: &mut Log, served: &Certificate, file: &str, problem: &str) {
    server.signal(libc::SIGHUP);
    let refused = log.next_with("SIGHUP");
    assert!(
        refused.contains(" ERROR ") && refused.contains(file) && refused.contains(problem),
        "{refused}"
    );
    for _ in 0..4 {
        assert_eq!(certificate_served(server.tcp, served), served.der.to_vec());
    }
}

#[test]
fn sighup_rotates_the_certificate_for_new_connections_and_a_bad_file_keeps_the_old_one() {
    // Two loops: the first reloads, and both must serve the new certificate.
    sighup_rotation(REACTOR, &["--threads", "2"]);
}

#[test]
fn threaded_sighup_rotates_the_certificate_too() {
    sighup_rotation(THREADED, &[]);
}

/// Certificate A, a client held open on it, then B in A's files and SIGHUP: new
/// connections are shown B and the held one goes on; then three bad files, each refused in
/// one error line with B still served.
fn sighup_rotation(exe: &str, extra: &[&str]) {
    let (a, b) = (Certificate::new(), Certificate::new());
    let mut args = a.args();
    args.push("--no-udp".into());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Binary::start(exe, &args);
    let mut log = Log::of(&mut server);
    let mut established = BufReader::new(tls_client(server.tcp, &a));
    assert_eq!(line(&mut established), "Welcome!\n");

    // B in A's files, as a renewal replaces them.
    std::fs::copy(&b.cert, &a.cert).unwrap();
    std::fs::copy(&b.key, &a.key).unwrap();
    server.signal(libc::SIGHUP);
    let reloaded = log.next_with("SIGHUP");
    assert!(
        reloaded.contains(" INFO ") && reloaded.contains(a.cert.to_str().unwrap()),
        "{reloaded}"
    );
    // With two loops the kernel spreads connections over both; every one is shown B.
    for _ in 0..6 {
        assert_eq!(certificate_served(server.tcp, &b), b.der.to_vec());
    }
    // The connection made before it goes on in its session with A.
    established.get_mut().write_all(b"still\n").unwrap();
    assert_eq!(line(&mut established), "Hello, still!\n");

    // Bad files: each is one error line naming the file and the problem, and B stays.
    let (cert, key) = (a.cert.to_str().unwrap(), a.key.to_str().unwrap());
    std::fs::write(&a.cert, "not a certificate\n").unwrap();
    reload_refused(&server, &mut log, &b, cert, "no CERTIFICATE");
    std::fs::copy(&b.cert, &a.cert).unwrap();
    std::fs::write(&a.key, Certificate::new().key_pem()).unwrap();
    reload_refused(&server, &mut log, &b, key, "not the key of the certificate");
    std::fs::remove_file(&a.key).unwrap();
    reload_refused(&server, &mut log, &b, key, "No such file");

    let mut new = BufReader::new(tls_client(server.tcp, &b));
    assert_eq!(line(&mut new), "Welcome!\n");
    new.get_mut().write_all(b"new\n").unwrap();
    assert_eq!(line(&mut new), "Hello, new!\n");
    established.get_mut().write_all(b"old\n").unwrap();
    assert_eq!(line(&mut established), "Hello, old!\n");
    drop((new, established));

    let (status, logged) = stopped(server, log);
    assert_eq!(status, Some(0), "{}", logged.join("\n"));
    // One line per SIGHUP, however many loops: the first reloads for all of them.
    let sighup: Vec<&String> = logged.iter().filter(|l| l.contains("SIGHUP")).collect();
    assert_eq!(sighup.len(), 4, "{sighup:#?}");
}

#[test]
fn threaded_sighup_on_a_plain_server_is_logged_and_ignored() {
    let mut server = Binary::start(THREADED, &["--no-udp"]);
    let mut log = Log::of(&mut server);
    let mut before = common::Client::greeted(server.tcp);
    server.signal(libc::SIGHUP);
    let ignored = log.next_with("SIGHUP");
    assert!(ignored.contains("ignored"), "{ignored}");
    before.send(b"x\n");
    assert_eq!(before.line(), b"Hello, x!\n");
    drop(before);
    let (status, _) = stopped(server, log);
    assert_eq!(status, Some(0));
}

#[test]
fn sighup_on_a_plain_server_is_logged_and_ignored() {
    let mut server = Binary::start(REACTOR, &["--no-udp", "--threads", "2"]);
    let mut log = Log::of(&mut server);
    let mut before = common::Client::greeted(server.tcp);
    server.signal(libc::SIGHUP);
    let ignored = log.next_with("SIGHUP");
    assert!(ignored.contains("ignored"), "{ignored}");
    // Not a shutdown: the connection made before is served, and new ones are accepted.
    before.send(b"x\n");
    assert_eq!(before.line(), b"Hello, x!\n");
    let mut after = common::Client::greeted(server.tcp);
    after.send(b"y\n");
    assert_eq!(after.line(), b"Hello, y!\n");
    drop((before, after));
    let (status, logged) = stopped(server, log);
    assert_eq!(status, Some(0), "{}", logged.join("\n"));
    let sighup = logged.iter().filter(|l| l.contains("SIGHUP")).count();
    assert_eq!(sighup, 1, "{}", logged.join("\n"));
}

/// A client that, like a TLS layer waiting for its writes to go out, sends everything before
/// it reads. The server's `write_tls` blocks early (its socket buffers and the client's
/// receive buffer are small), and the server must go on reading while the records wait in
/// rustls, up to its output bound; if it waited for them to go out first, both ends would
/// wait for ever and the client's write would time out.
#[test]
fn a_blocked_write_tls_does_not_stop_the_server_reading() {
    let cert = Certificate::new();
    let server = tls_server(&cert, |c| {
        c.send_buffer = Some(4096);
        c.recv_buffer = Some(4096);
    });
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(&server.tcp.into()).unwrap();
    let socket: std::net::TcpStream = socket.into();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut client = tls_client_over(socket, &cert);
    // 48 KiB of lines: far more than the socket buffers hold, while their replies stay
    // under the output bound (`OUTPUT_HIGH_WATER`, 64 KiB), so the server reads it all.
    let lines = 384;
    let mut input = Vec::new();
    for i in 0..lines {
        input.extend_from_slice(format!("{i:0>127}\n").as_bytes());
    }
    client
        .write_all(&input)
        .expect("the server reads while its records wait");
    client.flush().unwrap();
    let mut reader = BufReader::new(client);
    assert_eq!(line(&mut reader), "Welcome!\n");
    for i in 0..lines {
        assert_eq!(line(&mut reader), format!("Hello, {i:0>127}!\n"));
    }
}
