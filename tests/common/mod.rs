//! Test support shared by the integration tests: a blocking line client with generous
//! timeouts (they only stop a broken test from hanging; nothing waits on them), a server
//! binary started on a free port, and the two suites every server must pass, the protocol
//! suite (`protocol_suite!`, against the library) and the binary suite (`binary_suite!`,
//! against the executable). Each suite is a macro holding its tests' bodies, so a test
//! crate that instantiates it gets every test, and a test cannot be written and then left
//! out for one of the servers.
//!
//! Tests drop their clients before stopping the server: at shutdown the server shuts down
//! its write side and waits (up to its linger timeout) for each client's EOF, so a client
//! left open would only make the test slower.
//!
//! Every test crate that declares `mod common;` compiles all of it, and none uses all of
//! it: a helper that some crates have no use for says so with an `#[allow(dead_code)]` of
//! its own, and `tests/loadgen_servers.rs`, which needs only [`start`] and [`Spawn`],
//! allows dead code on its `mod common;`. Anything else unused is a warning, so a helper
//! that no test needs any more does not linger.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
#[cfg(unix)]
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use evloop::{Running, ServerConfig};

/// How a test starts a server: `evloop::reactor::spawn` or `evloop::threaded::spawn`.
pub type Spawn = fn(ServerConfig) -> io::Result<Running>;

/// A guard against a hung test, not a synchronisation: every read below waits for data.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A blocking TCP client that reads whole lines.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects from the loopback address `from` (127.0.0.2, 127.0.0.3, ...), so one test
    /// can play clients on several addresses. (Used by the protocol suite only.)
    #[allow(dead_code)]
    pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::from((from, 0)).into())
            .expect("bind a loopback source address");
        socket.connect(&addr.into()).expect("connect");
        Client::from_stream(socket.into())
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Connects and reads the default greeting.
    pub fn greeted(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr);
        assert_eq!(client.line(), b"Welcome!\n");
        client
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Reads one line, newline included; panics at EOF.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read line");
        assert!(
            line.ends_with(b"\n"),
            "EOF inside a line: {:?}",
            String::from_utf8_lossy(&line)
        );
        line
    }

    /// Reads exactly `n` bytes.
    #[allow(dead_code)] // the protocol suite's; tests/limits.rs has no use for it
    pub fn exactly(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).expect("read");
        buf
    }

    /// Reads until EOF; a reset fails the test, since it can destroy replies.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .expect("read to a clean EOF");
        rest
    }

    #[allow(dead_code)] // the protocol suite's; tests/limits.rs has no use for it
    pub fn half_close(&mut self) {
        self.writer.shutdown(Shutdown::Write).unwrap();
    }

    #[allow(dead_code)] // for tests/limits.rs; the suites never need the raw socket
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }
}

/// A UDP client bound to loopback.
pub fn udp_client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

pub fn udp_roundtrip(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    socket.send_to(payload, to).unwrap();
    let mut buf = vec![0; 65536];
    let (n, from) = socket.recv_from(&mut buf).expect("udp reply");
    assert_eq!(from, to);
    buf.truncate(n);
    buf
}

pub fn start(spawn: Spawn, configure: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut config = ServerConfig::ephemeral();
    configure(&mut config);
    spawn(config).expect("start server")
}

/// The real binary, started on a free port; killed on drop if a test fails midway.
pub struct Binary {
    pub child: Child,
    pub tcp: SocketAddr,
    #[allow(dead_code)] // read by the binary suite; tests/limits.rs has no use for it
    pub udp: Option<SocketAddr>,
    #[allow(dead_code)] // read by the binary suite; tests/limits.rs has no use for it
    pub first_line: String,
}

impl Binary {
    pub fn start(exe: &str, args: &[&str]) -> Binary {
        Binary::start_with(exe, args, None)
    }

    /// Starts `exe`, optionally with RLIMIT_NOFILE set to `fd_limit` (soft and hard).
    pub fn start_with(exe: &str, args: &[&str], fd_limit: Option<u64>) -> Binary {
        let mut command = Command::new(exe);
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        if let Some(limit) = fd_limit {
            let rlimit = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                });
            }
        }
        #[cfg(not(unix))]
        assert!(fd_limit.is_none(), "a descriptor limit is a Unix thing");
        let mut child = command.spawn().expect("start server binary");
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        let mut tcp = None;
        let mut udp = None;
        for field in first_line.split_whitespace().skip(1) {
            match field.split_once('=') {
                Some(("tcp", a)) => tcp = Some(a.parse().expect("tcp address")),
                Some(("udp", "off")) => {}
                Some(("udp", a)) => udp = Some(a.parse().expect("udp address")),
                _ => panic!("unexpected startup line {first_line:?}"),
            }
        }
        Binary {
            child,
            tcp: tcp.expect("tcp= in startup line"),
            udp,
            first_line,
        }
    }

    #[allow(dead_code)] // for tests/limits.rs and tests/threaded.rs, not tests/reactor.rs
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    #[cfg(unix)]
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for exit; returns the status code and everything logged on stderr.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status.code(), stderr)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The protocol suite: `protocol_suite!(evloop::reactor::spawn)` defines each test below as a
/// `#[test]` of the same name at the root of the test crate, run against the server the
/// given spawn function starts, and a module `protocol_suite` with what the tests use.
/// Each test is written only here, so each runs against every server the suite is
/// instantiated for. The crate must declare `mod common;`.
#[macro_export]
macro_rules! protocol_suite {
    ($spawn:path) => {
        /// What the tests of the suite use: the shared helpers, the settings they give the
        /// server, and the suite's own helpers.
        mod protocol_suite {
            pub use evloop::protocol::{Framing, Mode};
            pub use evloop::ServerConfig;
            pub use std::time::Duration;

            pub use $crate::common::{start, udp_client, udp_roundtrip, Client, IO_TIMEOUT};

            /// Every reply is `BIG_REPLY` bytes, so a few lines owe the client more than the
            /// kernel's socket buffers on both ends hold: the server is sure to be stuck writing.
            pub fn big_replies(config: &mut ServerConfig, shutdown_grace: Duration) {
                config.protocol.mode =
                    Mode::Custom(std::sync::Arc::new(|_: &[u8], out: &mut Vec<u8>| {
                        out.resize(out.len() + BIG_REPLY, b'x')
                    }));
                config.protocol.greeting.clear();
                config.shutdown_grace = shutdown_grace;
            }

            pub const BIG_REPLY: usize = 1 << 20;
            pub const BIG_LINES: usize = 16;
        }

        #[test]
        fn greeting_then_one_reply_per_line() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"alice\n");
            assert_eq!(c.line(), b"Hello, alice!\n");
            c.send(b"bob\r\n\n");
            assert_eq!(c.line(), b"Hello, bob!\n");
            assert_eq!(c.line(), b"Hello, !\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn empty_greeting_sends_nothing() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.greeting.clear());
            let mut c = Client::connect(server.tcp);
            c.send(b"x\n");
            assert_eq!(c.line(), b"Hello, x!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn bytes_are_bytes() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"\xff\xfe\x00caf\xc3\xa9\r\r\n");
            assert_eq!(c.line(), b"Hello, \xff\xfe\x00caf\xc3\xa9\r!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn echo_mode() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.mode = Mode::Echo);
            let mut c = Client::greeted(server.tcp);
            c.send(b"same\r\nagain\n");
            assert_eq!(c.line(), b"same\n");
            assert_eq!(c.line(), b"again\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_line_sent_one_byte_at_a_time() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            for byte in b"one byte at a time\n" {
                c.send(&[*byte]);
            }
            assert_eq!(c.line(), b"Hello, one byte at a time!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_thousand_lines_in_one_write() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            let batch: Vec<u8> = (0..1000)
                .flat_map(|i| format!("line {i}\n").into_bytes())
                .collect();
            c.send(&batch);
            for i in 0..1000 {
                assert_eq!(c.line(), format!("Hello, line {i}!\n").as_bytes());
            }
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn exit_sends_what_is_owed_then_closes_cleanly() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            // Lines after `exit`, and a lot of them, must not turn the close into a reset that
            // destroys the replies the client has not read yet.
            let mut input = b"a\nb\nexit\n".to_vec();
            input.extend(std::iter::repeat_n(b"ignored\n".as_slice(), 128 * 1024).flatten());
            c.send(&input);
            assert_eq!(c.rest(), b"Hello, a!\nHello, b!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn half_close_answers_the_final_line() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"first\nlast without newline");
            c.half_close();
            assert_eq!(c.rest(), b"Hello, first!\nHello, last without newline!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_line_too_long_is_refused_and_closed() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.max_line = 16);
            let mut c = Client::greeted(server.tcp);
            c.send(b"exactly sixteen!\n");
            assert_eq!(c.line(), b"Hello, exactly sixteen!!\n");
            // No newline ever comes: the server must refuse once the 17th byte arrives.
            c.send(b"seventeen bytes..");
            assert_eq!(c.rest(), b"ERR line too long\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn raw_framing_answers_messages_without_newlines() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.framing = Framing::Raw);
            let mut c = Client::connect(server.tcp);
            assert_eq!(c.exactly(8), b"Welcome!");
            c.send(b"bob");
            assert_eq!(c.exactly(11), b"Hello, bob!");
            c.send(b"alice\r\n");
            assert_eq!(c.exactly(13), b"Hello, alice!");
            c.send(b"exit\n");
            assert_eq!(c.rest(), b"");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn raw_echo_is_a_plain_echo_server() {
            use protocol_suite::*;
            let server = start($spawn, |c| {
                c.protocol.framing = Framing::Raw;
                c.protocol.mode = Mode::Echo;
                c.protocol.greeting.clear();
            });
            let mut c = Client::connect(server.tcp);
            c.send(b"as is\r\n");
            assert_eq!(c.exactly(7), b"as is\r\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn udp_hello_and_empty_datagram() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let udp = server.udp.expect("udp is on by default");
            assert_eq!(
                udp.port(),
                server.tcp.port(),
                "TCP and UDP share the port number"
            );
            let socket = udp_client();
            assert_eq!(udp_roundtrip(&socket, udp, b"bob\n"), b"Hello, bob!");
            assert_eq!(
                udp_roundtrip(&socket, udp, b"no newline"),
                b"Hello, no newline!"
            );
            assert_eq!(udp_roundtrip(&socket, udp, b""), b"Hello, !");
            server.shutdown().unwrap();
        }

        #[test]
        fn udp_echo_returns_the_payload() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.mode = Mode::Echo);
            let socket = udp_client();
            let udp = server.udp.unwrap();
            assert_eq!(udp_roundtrip(&socket, udp, b"as is\n"), b"as is\n");
            let big = vec![b'x'; 60_000];
            assert_eq!(udp_roundtrip(&socket, udp, &big), big);
            server.shutdown().unwrap();
        }

        #[test]
        fn no_udp_serves_tcp_only() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.udp = None);
            assert!(server.udp.is_none());
            let mut c = Client::greeted(server.tcp);
            c.send(b"x\n");
            assert_eq!(c.line(), b"Hello, x!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn max_connections_refuses_then_recovers() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.max_connections = 2);
            let mut first = Client::greeted(server.tcp);
            let second = Client::greeted(server.tcp);
            let mut third = Client::connect(server.tcp);
            assert_eq!(third.rest(), b"ERR server busy\n");
            first.send(b"still served\n");
            assert_eq!(first.line(), b"Hello, still served!\n");
            first.send(b"exit\n");
            assert_eq!(first.rest(), b"");
            drop(first);
            // The server frees the slot when it sees our close, just after we make it: retry
            // until admitted, with a deadline only to fail rather than hang.
            let deadline = std::time::Instant::now() + IO_TIMEOUT;
            loop {
                let mut c = Client::connect(server.tcp);
                if c.line() == b"Welcome!\n" {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "never admitted again");
            }
            drop((second, third));
            let stats = server.shutdown().unwrap();
            assert!(stats.refused >= 1);
        }

        #[test]
        fn stop_delivers_and_counts() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"a\nb\n");
            assert_eq!(c.line(), b"Hello, a!\n");
            assert_eq!(c.line(), b"Hello, b!\n");
            let udp = udp_client();
            udp_roundtrip(&udp, server.udp.unwrap(), b"u");
            server.stop();
            // The server closes the connection at shutdown with a clean EOF.
            assert_eq!(c.rest(), b"");
            drop(c);
            let stats = server.join().unwrap();
            assert_eq!(stats.connections, 1);
            assert_eq!(stats.messages, 3);
        }

        #[test]
        fn idle_timeout_closes_a_silent_connection() {
            use protocol_suite::*;
            let server = start($spawn, |c| {
                c.idle_timeout = Some(Duration::from_millis(200))
            });
            let mut c = Client::greeted(server.tcp);
            let started = std::time::Instant::now();
            assert_eq!(c.rest(), b"");
            assert!(started.elapsed() >= Duration::from_millis(150));
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_line_that_never_ends_times_out_however_it_dribbles() {
            use protocol_suite::*;
            let line_timeout = Duration::from_millis(300);
            let server = start($spawn, |c| c.line_timeout = Some(line_timeout));
            let mut c = Client::greeted(server.tcp);
            c.send(b"ok\nslow");
            assert_eq!(c.line(), b"Hello, ok!\n");
            let started = std::time::Instant::now();
            // A slowloris client: a byte every 50 ms, never a newline. Every byte is input,
            // so only the line's own deadline can end this.
            let mut dribbler = c.stream().try_clone().unwrap();
            let dribbling = std::thread::spawn(move || {
                for _ in 0..100 {
                    if std::io::Write::write_all(&mut dribbler, b"z").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            assert_eq!(c.rest(), b"ERR line timeout\n");
            assert!(started.elapsed() >= line_timeout - Duration::from_millis(50));
            dribbling.join().unwrap();
            server.shutdown().unwrap();
        }

        #[test]
        fn whole_lines_are_never_timed_however_slowly_they_come() {
            use protocol_suite::*;
            let server = start($spawn, |c| {
                c.line_timeout = Some(Duration::from_millis(200))
            });
            let mut c = Client::greeted(server.tcp);
            for i in 0..4 {
                std::thread::sleep(Duration::from_millis(100));
                c.send(format!("{i}\n").as_bytes());
                assert_eq!(c.line(), format!("Hello, {i}!\n").as_bytes());
            }
            c.send(b"exit\n");
            assert_eq!(c.rest(), b"");
            server.shutdown().unwrap();
        }

        #[test]
        fn connections_beyond_the_per_address_limit_are_refused() {
            use protocol_suite::*;
            use std::net::Ipv4Addr;
            let server = start($spawn, |c| c.max_connections_per_ip = 2);
            let local = Ipv4Addr::LOCALHOST;
            let mut first = Client::connect_from(local, server.tcp);
            assert_eq!(first.line(), b"Welcome!\n");
            let mut second = Client::connect_from(local, server.tcp);
            assert_eq!(second.line(), b"Welcome!\n");
            assert_eq!(
                Client::connect_from(local, server.tcp).rest(),
                b"ERR too many connections from your address\n"
            );
            // Another address is another client, served at once.
            let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), server.tcp);
            assert_eq!(other.line(), b"Welcome!\n");
            // A close gives the address its slot back.
            first.send(b"exit\n");
            assert_eq!(first.rest(), b"");
            let served = (0..200).find_map(|_| {
                let mut c = Client::connect_from(local, server.tcp);
                match c.line().as_slice() {
                    b"Welcome!\n" => Some(c),
                    _ => {
                        std::thread::sleep(Duration::from_millis(10));
                        None
                    }
                }
            });
            assert!(served.is_some(), "the freed slot is usable again");
            drop((second, other, served));
            let stats = server.shutdown().unwrap();
            assert!(stats.refused_per_ip >= 1, "{stats:?}");
            assert_eq!(stats.refused, 0, "per-address refusals are counted apart");
        }

        #[test]
        fn stop_closes_an_idle_client_at_once() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut idle = Client::greeted(server.tcp);
            let stopped = std::time::Instant::now();
            server.stop();
            assert_eq!(idle.rest(), b"", "a clean EOF");
            server.join().unwrap();
            // It owed nothing and held no line, so nothing waits for its EOF (the lingering
            // close would take 2 s), though the client keeps its end open.
            let took = stopped.elapsed();
            assert!(took < Duration::from_secs(1), "stop took {took:?}");
            drop(idle);
        }

        #[test]
        fn graceful_stop_answers_what_it_read_and_counts_exactly() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.shutdown_grace = IO_TIMEOUT);
            let mut busy = Client::greeted(server.tcp);
            busy.send(b"one\ntwo\n");
            assert_eq!(busy.line(), b"Hello, one!\n");
            assert_eq!(busy.line(), b"Hello, two!\n");
            // A line that never ends is owed nothing: stopping is not the client's EOF.
            let mut partial = Client::greeted(server.tcp);
            partial.send(b"unfinished");
            assert_eq!(
                udp_roundtrip(&udp_client(), server.udp.unwrap(), b"udp\n"),
                b"Hello, udp!"
            );

            server.stop();
            assert_eq!(busy.rest(), b"");
            assert_eq!(partial.rest(), b"");
            drop((busy, partial));
            let stats = server.join().unwrap();
            let greetings = 2 * b"Welcome!\n".len() as u64;
            let tcp_out = greetings + b"Hello, one!\nHello, two!\n".len() as u64;
            let udp = (b"udp\n".len() as u64, b"Hello, udp!".len() as u64);
            // Whether the server read the unfinished line before it stopped is up to scheduling.
            let tcp_in = b"one\ntwo\n".len() as u64;
            let partial_in = b"unfinished".len() as u64;
            assert_eq!(
                (stats.connections, stats.refused, stats.messages),
                (2, 0, 3)
            );
            assert!(
                [tcp_in + udp.0, tcp_in + partial_in + udp.0].contains(&stats.bytes_in),
                "{stats:?}"
            );
            assert_eq!(stats.bytes_out, tcp_out + udp.1);
            assert_eq!(stats.udp_dropped, 0);
        }

        #[test]
        fn stop_delivers_every_reply_already_owed() {
            use protocol_suite::*;
            let server = start($spawn, |c| big_replies(c, IO_TIMEOUT));
            let mut c = Client::connect(server.tcp);
            c.send(&b"x\n".repeat(BIG_LINES));
            // The first byte back proves the server has read the lines: every reply is owed.
            c.exactly(1);
            server.stop();
            let rest = c.rest();
            assert_eq!(1 + rest.len(), BIG_LINES * (BIG_REPLY + 1));
            drop(c);
            let stats = server.join().unwrap();
            assert_eq!(stats.messages, BIG_LINES as u64);
            assert_eq!(stats.bytes_out, (BIG_LINES * (BIG_REPLY + 1)) as u64);
        }

        #[test]
        fn stop_gives_up_on_a_client_that_never_reads_after_the_grace() {
            use protocol_suite::*;
            let grace = Duration::from_millis(200);
            let server = start($spawn, |c| big_replies(c, grace));
            let mut c = Client::connect(server.tcp);
            c.send(&b"x\n".repeat(BIG_LINES));
            c.exactly(1);
            let started = std::time::Instant::now();
            let stats = server.shutdown().unwrap();
            let took = started.elapsed();
            assert!(took >= grace, "owed replies get the grace: {took:?}");
            assert!(
                took < IO_TIMEOUT / 2,
                "then the server stops anyway: {took:?}"
            );
            assert_eq!(stats.connections, 1);
        }

        /// A thousand connections open at once, each doing five lockstep round trips.
        #[test]
        fn a_thousand_concurrent_clients() {
            use protocol_suite::*;
            let (clients, rounds) = (1000, 5);
            evloop::net::raise_fd_limit().unwrap();
            let server = start($spawn, |_| {});
            let workers = 50;
            let per_worker = clients / workers;
            let all_open = std::sync::Barrier::new(workers);
            std::thread::scope(|scope| {
                for w in 0..workers {
                    let all_open = &all_open;
                    let addr = server.tcp;
                    std::thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn_scoped(scope, move || {
                            let mut conns: Vec<Client> =
                                (0..per_worker).map(|_| Client::greeted(addr)).collect();
                            // Every connection of every worker is open before any round trip.
                            all_open.wait();
                            for round in 0..rounds {
                                for (i, c) in conns.iter_mut().enumerate() {
                                    c.send(format!("w{w} c{i} r{round}\n").as_bytes());
                                }
                                for (i, c) in conns.iter_mut().enumerate() {
                                    let expected = format!("Hello, w{w} c{i} r{round}!\n");
                                    assert_eq!(c.line(), expected.as_bytes());
                                }
                            }
                            drop(conns);
                        })
                        .unwrap();
                }
            });
            let stats = server.shutdown().unwrap();
            assert_eq!(stats.connections, (per_worker * workers) as u64);
            assert_eq!(stats.messages, (per_worker * workers * rounds) as u64);
        }
    };
}

/// The binary suite: `binary_suite!(env!("CARGO_BIN_EXE_reactor"))` defines each test below
/// as a `#[test]` of the same name in a module `binary` of the test crate, run against the
/// given executable: what every server binary must do, whichever server it runs. The crate
/// must declare `mod common;`.
#[macro_export]
macro_rules! binary_suite {
    ($exe:expr) => {
        mod binary {
            use std::net::TcpListener;
            use std::process::Command;

            use $crate::common::{udp_client, udp_roundtrip, Binary, Client};

            /// Runs a binary to completion; returns its exit code and stderr.
            fn run(exe: &str, args: &[&str]) -> (Option<i32>, String) {
                let out = Command::new(exe).args(args).output().unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }

            #[test]
            fn binary_prints_the_startup_line_and_serves_tcp_and_udp() {
                let server = Binary::start($exe, &[]);
                assert!(server.first_line.starts_with("listening tcp=127.0.0.1:"));
                assert!(server.first_line.ends_with('\n'));
                let udp = server.udp.expect("udp on by default");
                assert_eq!(udp.port(), server.tcp.port());
                let mut c = Client::greeted(server.tcp);
                c.send(b"binary\n");
                assert_eq!(c.line(), b"Hello, binary!\n");
                assert_eq!(udp_roundtrip(&udp_client(), udp, b"x\n"), b"Hello, x!");
            }

            #[test]
            fn binary_startup_line_says_udp_off() {
                let server = Binary::start($exe, &["--no-udp"]);
                assert!(
                    server.first_line.trim_end().ends_with("udp=off"),
                    "{}",
                    server.first_line
                );
                assert!(server.udp.is_none());
            }

            #[cfg(unix)]
            #[test]
            fn sigterm_delivers_owed_replies_and_exits_zero() {
                let server = Binary::start($exe, &[]);
                let mut c = Client::greeted(server.tcp);
                c.send(b"before\n");
                assert_eq!(c.line(), b"Hello, before!\n");
                server.signal(libc::SIGTERM);
                assert_eq!(c.rest(), b"", "closed with a clean EOF");
                drop(c);
                let (code, stderr) = server.wait();
                assert_eq!(code, Some(0), "{stderr}");
                assert!(
                    stderr.contains("served 1 connections"),
                    "summary missing: {stderr}"
                );
                assert!(stderr.contains("1 messages"), "{stderr}");
            }

            #[cfg(unix)]
            #[test]
            fn sigint_exits_zero_too() {
                let server = Binary::start($exe, &["--no-udp"]);
                server.signal(libc::SIGINT);
                let (code, stderr) = server.wait();
                assert_eq!(code, Some(0), "{stderr}");
            }

            #[test]
            fn bad_flags_give_one_line_and_a_nonzero_exit() {
                for args in [
                    &["--listen", "not-an-address"][..],
                    &["--mode", "shout"],
                    &["--max-line", "0"],
                    &["--no-such-flag"],
                    &["--idle-timeout", "-1"],
                    &["--threads", "0"],
                ] {
                    let (code, stderr) = run($exe, args);
                    assert_eq!(code, Some(2), "{args:?}: {stderr}");
                    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
                    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
                    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
                }
            }

            #[test]
            fn an_address_in_use_is_one_line_and_a_nonzero_exit() {
                let held = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = held.local_addr().unwrap().to_string();
                let (code, stderr) = run($exe, &["--listen", &addr, "--no-udp"]);
                assert_ne!(code, Some(0));
                assert_eq!(stderr.lines().count(), 1, "{stderr}");
                assert!(
                    stderr.contains(&addr) && stderr.contains("in use"),
                    "{stderr}"
                );
            }

            #[test]
            fn help_explains_and_exits_zero() {
                let out = Command::new($exe).arg("--help").output().unwrap();
                assert_eq!(out.status.code(), Some(0));
                let help = String::from_utf8_lossy(&out.stdout);
                for flag in [
                    "--listen",
                    "--udp",
                    "--no-udp",
                    "--framing",
                    "--mode",
                    "--greeting",
                    "--max-line",
                ] {
                    assert!(help.contains(flag), "--help lacks {flag}");
                }
            }
        }
    };
}
