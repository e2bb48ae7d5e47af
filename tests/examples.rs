//! The examples, run against a reactor started in this process on port 0, and the minimal
//! reactor run as the program a reader runs.
//!
//! How: each client example keeps its work in a `run` function that takes its arguments,
//! its input and its output, and `main` only maps the result to an exit code and one line
//! on stderr. This file compiles those sources in as modules (`#[path]`) and calls `run`,
//! which takes milliseconds and needs nothing but the test binary. The minimal reactor is
//! the file a reader starts with, so it carries nothing for tests: it is built with cargo
//! (`cargo test --test examples` does not build examples, and cargo gives tests the path of
//! `[[bin]]` targets only), in the test binary's own profile so no dependency is built
//! twice, started on port 0, and driven over TCP from the outside.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// The minimal example's executable, built by cargo in this test binary's profile.
fn minimal_example() -> PathBuf {
    // This binary is target/<profile dir>/deps/examples-<hash>.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => "dev",
    };
    let mut cargo = Command::new(env!("CARGO"));
    // What cargo set for this test process describes this crate; build scripts that watch
    // those names (ring's does) would be rebuilt if the inner cargo saw them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let prefixes = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ];
        let exact = ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"];
        if prefixes.iter().any(|p| name.starts_with(p)) || exact.contains(&name.as_str()) {
            cargo.env_remove(&name);
        }
    }
    let output = cargo
        .args(["build", "--example", "minimal", "--message-format=json"])
        .arg("--profile")
        .arg(profile)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo build --example minimal failed"
    );
    // The artifact line names the executable: `"executable":"/path/to/minimal"`.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let path = stdout
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
        .find_map(|line| {
            let (_, rest) = line.split_once(r#""executable":""#)?;
            Some(rest.split('"').next()?.to_string())
        })
        .expect("cargo names the minimal example's executable");
    PathBuf::from(path)
}

/// The minimal reactor as a process on port 0; killed when dropped, so a failed assertion
/// leaves nothing running.
struct Minimal {
    child: Child,
    addr: SocketAddr,
}

impl Minimal {
    fn start() -> Minimal {
        let mut child = Command::new(minimal_example())
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the minimal example");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim_end()
            .strip_prefix("listening tcp=")
            .unwrap_or_else(|| panic!("a startup line, not {line:?}"))
            .parse()
            .unwrap();
        Minimal { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    }
}

impl Drop for Minimal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_minimal_reactor_greets_answers_each_line_and_closes_on_exit() {
    let server = Minimal::start();
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let mut stream = server.connect();
            thread::spawn(move || {
                // Lines split across writes and several in one: read boundaries mean nothing.
                stream.write_all(b"bo").unwrap();
                stream
                    .write_all(format!("b{i}\nalice\nexit\nignored\n").as_bytes())
                    .unwrap();
                let mut transcript = String::new();
                stream.read_to_string(&mut transcript).unwrap();
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
}

#[test]
fn the_minimal_reactor_answers_everything_owed_before_it_closes_on_a_half_close() {
    // The client reads nothing until it has half-closed, with a small receive buffer, so
    // replies pile up in the server (more than the kernel's buffers hold, a few MiB) and
    // may still be owed when it reads the EOF; and the last line, without its `\n`, is
    // only answered if the server answers what a half-close ends.
    const LINES: usize = 700_000;
    let server = Minimal::start();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Empty lines: 9 bytes of reply for each byte sent.
    stream.write_all(&b"\n".repeat(LINES)).unwrap();
    // The last line has no `\n`: a half-close ends it.
    stream.write_all(b"last").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    // Now read in larger steps (the window scale agreed at connect still limits them).
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(1 << 20)
        .unwrap();
    let mut transcript = Vec::new();
    stream.read_to_end(&mut transcript).unwrap();
    let mut expected = b"Welcome!\n".to_vec();
    expected.extend_from_slice(&b"Hello, !\n".repeat(LINES));
    expected.extend_from_slice(b"Hello, last!\n");
    assert_eq!(transcript.len(), expected.len(), "every reply, then EOF");
    assert!(transcript == expected, "the replies, in order");
}
