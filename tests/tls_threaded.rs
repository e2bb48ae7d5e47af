//! `--tls-cert` and `--tls-key` in the threaded baseline (rustls over a blocking socket), as
//! `tests/tls.rs` checks them in the reactor: `openssl s_client` forced to TLS 1.2 and to
//! TLS 1.3 and `socat`, then a rustls client and raw sockets for a client that never
//! finishes its handshake or dribbles it, plaintext instead of TLS, a handshake cut off,
//! 2 MiB pipelined before reading, `close_notify` at `exit` and at shutdown, and a TCP EOF
//! without `close_notify`. The certificates and clients are `tests/common/tls.rs`'s.
//!
//! Linux only, like the rest of the tests that run; the TLS feature is on by default.
#![cfg(all(feature = "tls", target_os = "linux"))]

// This crate uses the server starter, the binary helper and the TLS helpers only.
#[allow(dead_code)]
mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::tls::{client_connection, line, raw, read_to_eof, tls_client, Certificate};
use common::Binary;

const THREADED: &str = env!("CARGO_BIN_EXE_threaded");

// openssl s_client, socat, a handshake never finished or cut off, 2 MiB pipelined: the
// suite both servers pass (tests/common/tls_suite.rs).
tls_suite!(evloop::threaded::spawn);

use tls_suite::tls_server;

/// The threaded binary serving TLS with `cert`, logging at info.
fn tls_binary(cert: &Certificate) -> Binary {
    let mut args = cert.args();
    args.push("--no-udp".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Binary::start_with_env(THREADED, &args, &[("RUST_LOG", "info")])
}

/// Stops the binary as SIGTERM does and returns what it logged.
fn stopped(server: Binary) -> String {
    server.signal(libc::SIGTERM);
    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
    stderr
}

/// Each of the thread's reads waits only for what is left of the handshake's time, so a
/// client that keeps sending does not keep its handshake going, as it would if every byte
/// restarted a read timeout.
#[test]
fn threaded_a_client_that_dribbles_its_client_hello_is_closed_at_the_handshake_timeout() {
    let cert = Certificate::new();
    let timeout = Duration::from_millis(500);
    let server = tls_server(&cert, |c| c.handshake_timeout = timeout);
    let mut hello = Vec::new();
    client_connection(&cert).write_tls(&mut hello).unwrap();
    let mut dribbler = raw(server.tcp);
    // Between two bytes, a short wait for the server's FIN.
    dribbler
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let accepted = Instant::now();
    // Dribbled whole, the hello would take over ten seconds.
    let closed_after = hello.iter().position(|byte| {
        dribbler.write_all(std::slice::from_ref(byte)).unwrap();
        let mut answer = [0; 64];
        match dribbler.read(&mut answer) {
            Ok(0) => true,
            Ok(n) => panic!("an answer to half a ClientHello: {:02x?}", &answer[..n]),
            Err(_) => false,
        }
    });
    let elapsed = accepted.elapsed();
    let sent = closed_after.expect("the handshake outlived the whole dribbled ClientHello");
    assert!(sent < hello.len() - 1, "{sent} of {} bytes", hello.len());
    assert!(elapsed >= timeout, "closed after {elapsed:?}");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.tls_rejected, 1, "{stats:?}");
}

#[test]
fn threaded_plaintext_instead_of_tls_is_sent_an_alert_then_closed_logged_and_counted() {
    let cert = Certificate::new();
    let server = tls_binary(&cert);
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
    let from = plain.local_addr().unwrap();
    drop((plain, other));
    let log = stopped(server);
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains(&format!("{from}: ")), "{log}");
    assert!(
        log.contains(", 1 without a complete TLS handshake"),
        "{log}"
    );
}

#[test]
fn threaded_the_startup_line_says_tls_on_and_exit_ends_with_close_notify() {
    let cert = Certificate::new();
    let server = tls_binary(&cert);
    assert!(
        server.first_line.trim_end().ends_with(" tls=on"),
        "{:?}",
        server.first_line
    );
    let mut c = BufReader::new(tls_client(server.tcp, &cert));
    assert_eq!(line(&mut c), "Welcome!\n");
    c.get_mut().write_all(b"alice\nexit\n").unwrap();
    assert_eq!(line(&mut c), "Hello, alice!\n");
    let mut rest = String::new();
    // A clean close: rustls reports the server's close_notify as EOF, a TCP EOF without it
    // as an error.
    c.read_to_string(&mut rest).expect("close_notify, then EOF");
    assert_eq!(rest, "");
    drop(c);
    let log = stopped(server);
    assert!(!log.contains("truncated"), "{log}");
}

#[test]
fn threaded_shutdown_sends_close_notify_to_a_client_that_is_still_connected() {
    let cert = Certificate::new();
    let server = tls_server(&cert, |_| {});
    let mut c = BufReader::new(tls_client(server.tcp, &cert));
    assert_eq!(line(&mut c), "Welcome!\n");
    let stopping = std::thread::spawn(move || server.shutdown().unwrap());
    let mut rest = String::new();
    c.read_to_string(&mut rest).expect("close_notify, then EOF");
    assert_eq!(rest, "");
    drop(c);
    let stats = stopping.join().unwrap();
    assert_eq!((stats.connections, stats.tls_rejected), (1, 0), "{stats:?}");
}

#[test]
fn threaded_a_tcp_eof_without_close_notify_is_answered_and_logged_as_truncated() {
    let cert = Certificate::new();
    let server = tls_binary(&cert);
    let mut c = tls_client(server.tcp, &cert);
    // An unterminated last line, then FIN with no close_notify before it: the line is
    // still answered, as at a plain EOF.
    c.write_all(b"last").unwrap();
    c.flush().unwrap();
    c.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reader = BufReader::new(&mut c);
    assert_eq!(line(&mut reader), "Welcome!\n");
    assert_eq!(line(&mut reader), "Hello, last!\n");
    let from = c.sock.local_addr().unwrap();
    drop(c);
    let log = stopped(server);
    let truncated: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TCP EOF without a TLS close_notify"))
        .collect();
    assert_eq!(truncated.len(), 1, "{log}");
    assert!(truncated[0].contains(&format!("{from}: ")), "{log}");
}
