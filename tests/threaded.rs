//! Tests of the thread-per-connection server through real sockets on 127.0.0.1, port 0.
//!
//! Nothing here sleeps to synchronise: a test waits for a reply, an EOF or a process exit.
//! Every socket has a generous read timeout only so that a bug fails the test instead of
//! hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use evloop::protocol::{Framing, Mode, LINE_TOO_LONG, SERVER_BUSY};
use evloop::{threaded, Running, ServerConfig, Stats};

/// Long enough for a loaded CI machine, short enough that a hang is noticed.
const TIMEOUT: Duration = Duration::from_secs(10);

fn start(config: ServerConfig) -> Running {
    threaded::spawn(config).expect("server starts")
}

fn start_default() -> Running {
    start(ServerConfig::ephemeral())
}

/// A connected client that has already read the greeting.
struct Client {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect_no_greeting(addr);
        assert_eq!(client.line(), b"Welcome!\n");
        client
    }

    fn connect_no_greeting(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// One reply line, `\n` included.
    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read a line");
        line
    }

    /// Everything until EOF; fails on a reset, which would mean replies could be lost.
    fn rest(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .expect("read to a clean EOF");
        rest
    }

    fn round_trip(&mut self, message: &str) {
        self.send(format!("{message}\n").as_bytes());
        assert_eq!(
            String::from_utf8(self.line()).unwrap(),
            format!("Hello, {message}!\n")
        );
    }
}

fn udp_round_trip(server: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.send_to(payload, server).unwrap();
    let mut buf = [0; 65_535];
    let (n, from) = socket.recv_from(&mut buf).expect("a UDP reply");
    assert_eq!(from, server);
    buf[..n].to_vec()
}

#[test]
fn hello_round_trip_after_the_greeting() {
    let server = start_default();
    let mut client = Client::connect(server.tcp);
    client.round_trip("alice");
    client.send(b"bob\r\n");
    assert_eq!(client.line(), b"Hello, bob!\n");
    server.shutdown().unwrap();
}

#[test]
fn lines_sent_byte_by_byte_are_each_answered_once_in_order() {
    let server = start_default();
    let mut client = Client::connect(server.tcp);
    for byte in b"one\ntwo\r\nthree\n" {
        client.send(&[*byte]);
    }
    assert_eq!(client.line(), b"Hello, one!\n");
    assert_eq!(client.line(), b"Hello, two!\n");
    assert_eq!(client.line(), b"Hello, three!\n");
    server.shutdown().unwrap();
}

#[test]
fn a_thousand_lines_in_one_write_get_a_thousand_replies_in_order() {
    let server = start_default();
    let mut client = Client::connect(server.tcp);
    let batch: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    client.send(batch.as_bytes());
    for i in 0..1000 {
        assert_eq!(
            String::from_utf8(client.line()).unwrap(),
            format!("Hello, line {i}!\n")
        );
    }
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.messages, 1000);
}

#[test]
fn exit_closes_after_the_replies_owed() {
    let server = start_default();
    let mut client = Client::connect(server.tcp);
    client.send(b"a\nb\nexit\nnever answered\n");
    assert_eq!(client.rest(), b"Hello, a!\nHello, b!\n");
    server.shutdown().unwrap();
}

#[test]
fn half_close_answers_the_final_unterminated_line_then_closes() {
    let server = start_default();
    let mut client = Client::connect(server.tcp);
    client.send(b"a\nlast");
    client.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.rest(), b"Hello, a!\nHello, last!\n");
    server.shutdown().unwrap();
}

#[test]
fn a_line_over_max_line_is_refused_and_closes() {
    let mut config = ServerConfig::ephemeral();
    config.protocol.max_line = 8;
    let server = start(config);
    let mut client = Client::connect(server.tcp);
    client.round_trip("12345678");
    client.send(b"123456789\n");
    assert_eq!(client.rest(), LINE_TOO_LONG);
    server.shutdown().unwrap();
}

#[test]
fn raw_framing_answers_each_read_without_newlines() {
    let mut config = ServerConfig::ephemeral();
    config.protocol.framing = Framing::Raw;
    let server = start(config);
    let mut client = Client::connect_no_greeting(server.tcp);
    let mut greeting = [0; 8];
    client.reader.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"Welcome!");
    client.send(b"bob\r\n");
    let mut reply = [0; 11];
    client.reader.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"Hello, bob!");
    server.shutdown().unwrap();
}

#[test]
fn udp_answers_hello_and_the_empty_datagram() {
    let server = start_default();
    let udp = server.udp.expect("UDP is on by default");
    assert_eq!(udp.port(), server.tcp.port(), "TCP and UDP share the port");
    assert_eq!(udp_round_trip(udp, b"carol\n"), b"Hello, carol!");
    assert_eq!(udp_round_trip(udp, b""), b"Hello, !");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.messages, 2);
    assert_eq!(stats.udp_dropped, 0);
}

#[test]
fn no_udp_means_no_udp_thread_and_stop_still_works() {
    let mut config = ServerConfig::ephemeral();
    config.udp = None;
    let server = start(config);
    assert_eq!(server.udp, None);
    Client::connect(server.tcp).round_trip("tcp only");
    server.shutdown().unwrap();
}

#[test]
fn over_max_connections_a_client_is_told_busy_and_the_others_carry_on() {
    let mut config = ServerConfig::ephemeral();
    config.max_connections = 1;
    let server = start(config);
    let mut first = Client::connect(server.tcp);
    let mut second = Client::connect_no_greeting(server.tcp);
    assert_eq!(second.rest(), SERVER_BUSY);
    first.round_trip("still served");
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.connections, stats.refused), (1, 1));
}

#[test]
fn two_hundred_concurrent_clients_each_get_their_own_replies() {
    const CLIENTS: usize = 200;
    const ROUND_TRIPS: usize = 5;
    let server = start_default();
    let addr = server.tcp;
    // Every client connects before any sends, so all 200 threads are alive at once.
    let all_connected = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let all_connected = Arc::clone(&all_connected);
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                all_connected.wait();
                for r in 0..ROUND_TRIPS {
                    client.round_trip(&format!("client {c} trip {r}"));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.connections, CLIENTS as u64);
    assert_eq!(stats.messages, (CLIENTS * ROUND_TRIPS) as u64);
}

#[test]
fn idle_timeout_closes_a_silent_connection() {
    let mut config = ServerConfig::ephemeral();
    config.idle_timeout = Some(Duration::from_millis(200));
    let server = start(config);
    let mut client = Client::connect(server.tcp);
    let started = Instant::now();
    assert_eq!(client.rest(), b"");
    assert!(started.elapsed() >= Duration::from_millis(150));
    server.shutdown().unwrap();
}

#[test]
fn graceful_stop_closes_idle_connections_at_once_and_returns_exact_stats() {
    let mut config = ServerConfig::ephemeral();
    config.shutdown_grace = TIMEOUT;
    let server = start(config);
    let mut busy = Client::connect(server.tcp);
    busy.round_trip("one");
    busy.round_trip("two");
    // A line that never ends is owed nothing: stopping is not the client's EOF.
    let mut partial = Client::connect(server.tcp);
    partial.send(b"unfinished");
    assert_eq!(
        udp_round_trip(server.udp.unwrap(), b"udp\n"),
        b"Hello, udp!"
    );

    let started = Instant::now();
    let stats = server.shutdown().unwrap();
    assert!(
        started.elapsed() < TIMEOUT / 2,
        "idle connections must not wait out the grace: {:?}",
        started.elapsed()
    );
    assert_eq!(busy.rest(), b"");
    assert_eq!(partial.rest(), b"");
    let greetings = 2 * b"Welcome!\n".len() as u64;
    let tcp_in = (b"one\ntwo\n".len() + b"unfinished".len()) as u64;
    let tcp_out = greetings + (b"Hello, one!\nHello, two!\n".len()) as u64;
    // Whether the server read the unfinished line before it stopped is up to scheduling.
    let tcp_in_without_partial = tcp_in - b"unfinished".len() as u64;
    let udp_in = b"udp\n".len() as u64;
    let udp_out = b"Hello, udp!".len() as u64;
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.refused, 0);
    assert_eq!(stats.messages, 3);
    assert!(
        stats.bytes_in == tcp_in + udp_in || stats.bytes_in == tcp_in_without_partial + udp_in,
        "{stats:?}"
    );
    assert_eq!(stats.bytes_out, tcp_out + udp_out);
    assert_eq!(stats.udp_dropped, 0);
}

/// A config whose every reply is [`BIG_REPLY`] bytes, so a few lines owe the client more
/// than the kernel's socket buffers on both ends can hold (4 MiB + 6 MiB by default): the
/// server is then certain to block in write() until the client reads.
fn big_replies(shutdown_grace: Duration) -> ServerConfig {
    let mut config = ServerConfig::ephemeral();
    config.protocol.mode = Mode::Custom(Arc::new(|_: &[u8], out: &mut Vec<u8>| {
        out.resize(out.len() + BIG_REPLY, b'x')
    }));
    config.protocol.greeting.clear();
    config.shutdown_grace = shutdown_grace;
    config
}

const BIG_REPLY: usize = 1 << 20;
const BIG_LINES: usize = 16;

#[test]
fn stop_delivers_every_reply_already_owed_before_closing() {
    let server = start(big_replies(TIMEOUT));
    let mut client = Client::connect_no_greeting(server.tcp);
    client.send(&b"x\n".repeat(BIG_LINES));
    // The first byte back proves the server has read the lines: every reply is now owed.
    let mut first = [0; 1];
    client.reader.read_exact(&mut first).unwrap();
    let stopping = thread::spawn(move || server.shutdown());
    let rest = client.rest();
    assert_eq!(1 + rest.len(), BIG_LINES * (BIG_REPLY + 1));
    let stats = stopping.join().unwrap().unwrap();
    assert_eq!(stats.messages, BIG_LINES as u64);
    assert_eq!(stats.bytes_out, (BIG_LINES * (BIG_REPLY + 1)) as u64);
}

#[test]
fn stop_cuts_off_a_client_that_never_reads_once_the_grace_is_over() {
    let grace = Duration::from_millis(200);
    let server = start(big_replies(grace));
    let mut client = Client::connect_no_greeting(server.tcp);
    client.send(&b"x\n".repeat(BIG_LINES));
    let mut first = [0; 1];
    client.reader.read_exact(&mut first).unwrap();
    let started = Instant::now();
    let stats: Stats = server.shutdown().unwrap();
    let took = started.elapsed();
    assert!(took >= grace, "owed replies get the grace: {took:?}");
    assert!(took < TIMEOUT / 2, "then the server stops anyway: {took:?}");
    assert_eq!(stats.connections, 1);
}

/// The `threaded` binary, started on a free port.
struct Binary {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Binary {
    fn start(extra: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_threaded"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Binary { child, stdout }
    }

    /// Reads the startup line and returns the TCP and UDP addresses it names.
    fn startup_line(&mut self) -> (SocketAddr, Option<SocketAddr>) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("a startup line");
        let line = line.strip_suffix('\n').expect("a whole line");
        let rest = line.strip_prefix("listening tcp=").expect(line);
        let (tcp, udp) = rest.split_once(" udp=").expect(line);
        let udp = (udp != "off").then(|| udp.parse().expect(line));
        (tcp.parse().expect(line), udp)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill() takes no pointers; the pid is our own child, not yet waited for.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0);
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn binary_prints_the_startup_line_and_serves_on_it() {
    let mut binary = Binary::start(&[]);
    let (tcp, udp) = binary.startup_line();
    assert_eq!(tcp.ip().to_string(), "127.0.0.1");
    assert_ne!(tcp.port(), 0);
    assert_eq!(udp, Some(tcp));
    Client::connect(tcp).round_trip("binary");
    assert_eq!(udp_round_trip(tcp, b"dgram"), b"Hello, dgram!");

    let mut binary = Binary::start(&["--no-udp"]);
    assert_eq!(binary.startup_line().1, None);
}

#[test]
fn binary_exits_zero_on_sigterm_after_closing_connections() {
    let mut binary = Binary::start(&[]);
    let (tcp, _) = binary.startup_line();
    let mut client = Client::connect(tcp);
    client.round_trip("before the signal");
    binary.signal(libc::SIGTERM);
    assert_eq!(client.rest(), b"");
    let status = binary.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn binary_rejects_a_bad_flag_with_one_line_on_stderr() {
    for args in [&["--no-such-flag"][..], &["--max-connections", "0"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_threaded"))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn binary_fails_in_one_line_when_the_address_is_taken() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_threaded"))
        .args(["--listen", &addr])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}
