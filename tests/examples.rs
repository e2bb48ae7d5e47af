//! The examples, run against a reactor started in this process on port 0.
//!
//! How: each example keeps its work in a `run` function that takes its arguments, its input
//! and its output, and `main` only maps the result to an exit code and one line on stderr.
//! This file compiles the example sources in as modules (`#[path]`) and calls `run`, which
//! takes milliseconds and needs nothing but the test binary. Starting the example binaries
//! instead is less robust than it looks: cargo gives integration tests the path of `[[bin]]`
//! targets (`CARGO_BIN_EXE_*`) but not of examples, and `cargo test --test examples` does
//! not build them at all, so a test looking for them next to itself could run a stale one.
//! Running `cargo run --example` from the test works, but costs a cargo start-up and
//! fingerprint check per call, and under `cargo test --release` would build every
//! dependency a second time in the dev profile.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use evloop::{reactor, Running, ServerConfig};

// Each example's `main` is not called here (the tests call `run`), hence `dead_code`.
#[allow(dead_code)]
#[path = "../examples/tcp_client.rs"]
mod tcp_client;

#[allow(dead_code)]
#[path = "../examples/udp_client.rs"]
mod udp_client;

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

#[allow(dead_code)]
#[path = "../examples/minimal.rs"]
mod minimal;

fn server() -> Running {
    reactor::spawn(ServerConfig::ephemeral()).expect("start the reactor")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A port on loopback that nothing listens on (it was free a moment ago).
fn closed_tcp_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn closed_udp_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn tcp_client(args: &[String], stdin: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    tcp_client::run(args, stdin, &mut out)?;
    Ok(out)
}

#[test]
fn tcp_client_sends_each_argument_as_a_line_and_prints_one_reply_each() {
    let server = server();
    let addr = server.tcp.to_string();
    let out = tcp_client(&args(&[&addr, "alice", "bob"]), b"").unwrap();
    assert_eq!(out, b"Welcome!\nHello, alice!\nHello, bob!\n");
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.connections, stats.messages), (1, 2));
}

#[test]
fn tcp_client_without_messages_reads_standard_input_until_exit() {
    let server = server();
    let addr = server.tcp.to_string();
    // Bytes, not text: invalid UTF-8 comes back unchanged. Nothing after `exit` is sent.
    let stdin = b"carol\r\n\xff\nexit\nnever sent\n";
    let out = tcp_client(&args(&[&addr]), stdin).unwrap();
    assert_eq!(out, b"Welcome!\nHello, carol!\nHello, \xff!\n");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.messages, 2);
}

#[test]
fn tcp_client_reports_errors_instead_of_panicking() {
    let refused = closed_tcp_port().to_string();
    let err = tcp_client(&args(&[&refused, "hi"]), b"").unwrap_err();
    assert!(
        err.starts_with(&format!("cannot connect to {refused}")),
        "{err}"
    );

    let err = tcp_client(&args(&[&refused, "two\nlines"]), b"").unwrap_err();
    assert!(err.contains("contains a newline"), "{err}");

    // A server that closes in the middle of its greeting line.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"Welc").unwrap();
    });
    let err = tcp_client(&args(&[&addr, "hi"]), b"").unwrap_err();
    fake.join().unwrap();
    assert!(err.contains("in the middle of the greeting"), "{err}");
}

fn fast_retry() -> udp_client::Retry {
    udp_client::Retry {
        timeout: Duration::from_millis(200),
        attempts: 3,
    }
}

fn udp_client(args: &[String], stdin: &[u8], retry: &udp_client::Retry) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    udp_client::run(args, stdin, &mut out, retry)?;
    Ok(out)
}

#[test]
fn udp_client_sends_one_datagram_per_message() {
    let server = server();
    let addr = server.udp.unwrap().to_string();
    // The default patience: nothing is lost on loopback, and a short timeout on a busy
    // machine would resend and then take the late reply for the next message's.
    let retry = udp_client::Retry::default();
    let out = udp_client(&args(&[&addr, "alice", ""]), b"", &retry).unwrap();
    assert_eq!(out, b"Hello, alice!\nHello, !\n");
    let out = udp_client(&args(&[&addr]), b"from\nstdin", &retry).unwrap();
    assert_eq!(out, b"Hello, from!\nHello, stdin!\n");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.messages, 4);
}

#[test]
fn udp_client_sends_again_when_a_datagram_is_lost() {
    // A server that "loses" the first datagram and answers the second.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let lossy = thread::spawn(move || -> io::Result<Vec<u8>> {
        let mut buf = [0; 64];
        socket.recv_from(&mut buf)?;
        let (n, from) = socket.recv_from(&mut buf)?;
        socket.send_to(b"pong", from)?;
        Ok(buf[..n].to_vec())
    });
    let out = udp_client(&args(&[&addr, "ping"]), b"", &fast_retry()).unwrap();
    assert_eq!(out, b"pong\n");
    assert_eq!(lossy.join().unwrap().unwrap(), b"ping");
}

#[test]
fn udp_client_gives_up_with_a_clear_error() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let retry = udp_client::Retry {
        timeout: Duration::from_millis(50),
        attempts: 2,
    };
    let err = udp_client(&args(&[&addr, "anyone?"]), b"", &retry).unwrap_err();
    assert!(
        err.starts_with(&format!("no reply from {addr} after 2 attempts")),
        "{err}"
    );
    let mut unread = [0; 16];
    silent.set_nonblocking(true).unwrap();
    assert_eq!(silent.recv(&mut unread).unwrap(), 7, "first attempt");
    assert_eq!(silent.recv(&mut unread).unwrap(), 7, "second attempt");
    drop(silent);

    let refused = closed_udp_port().to_string();
    let err = udp_client(&args(&[&refused, "hi"]), b"", &fast_retry()).unwrap_err();
    assert!(err.starts_with("nothing is listening"), "{err}");
}

#[test]
fn embed_serves_its_custom_reply_and_stops_by_itself() {
    let mut out = Vec::new();
    let stats = embed::run("127.0.0.1:0".parse().unwrap(), &mut out).unwrap();
    assert_eq!((stats.connections, stats.messages), (1, 2));
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("listening tcp=127.0.0.1:"), "{out}");
    assert_eq!(
        lines[1..4],
        [
            "tcp greeting: Welcome to the embedded server!",
            "tcp reply:    HELLO FROM TCP (14 bytes)",
            "udp reply:    HELLO FROM UDP (14 bytes)",
        ],
        "{out}"
    );
    assert_eq!(lines[4], stats.to_string());
    assert_eq!(lines.len(), 5);

    let mut reply = Vec::new();
    embed::shout(b"abc\xff", &mut reply);
    assert_eq!(reply, b"ABC\xff (4 bytes)");
}

#[test]
fn embed_fails_cleanly_when_the_address_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = embed::run(taken.local_addr().unwrap(), &mut io::sink()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    drop(taken);
}

#[test]
fn the_minimal_reactor_greets_answers_each_line_and_closes_on_exit() {
    use std::io::BufReader;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // It stops after three connections have closed, so the test can join it.
    let server = thread::spawn(move || minimal::run(listener, Some(3)));
    let clients: Vec<_> = (0..3)
        .map(|i| {
            thread::spawn(move || {
                let stream = std::net::TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                // Lines split across writes and several in one: read boundaries mean nothing.
                writer.write_all(b"bo").unwrap();
                writer
                    .write_all(format!("b{i}\nalice\nexit\nignored\n").as_bytes())
                    .unwrap();
                let mut transcript = String::new();
                io::Read::read_to_string(&mut reader, &mut transcript).unwrap();
                assert_eq!(
                    transcript,
                    format!("Welcome!\nHello, bob{i}!\nHello, alice!\n")
                );
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    server.join().unwrap().unwrap();
}
