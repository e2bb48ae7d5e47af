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
//! its own, and `tests/loadgen_servers.rs`, which needs only [`start`] and [`Spawn`], and
//! `tests/metrics.rs`, which needs only [`Binary`] and [`Client`], and `tests/admission.rs`,
//! which needs only [`start`] and [`Client`], allow dead code on their `mod common;`. Anything else unused is a warning, so a helper
//! that no test needs any more does not linger.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
#[cfg(unix)]
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
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
    /// The rest of its stdout, kept open (`--metrics` prints a second line).
    #[allow(dead_code)] // read by tests/metrics.rs only
    pub stdout: BufReader<ChildStdout>,
}

impl Binary {
    pub fn start(exe: &str, args: &[&str]) -> Binary {
        Binary::start_with(exe, args, None)
    }

    /// Starts `exe`, optionally with RLIMIT_NOFILE set to `fd_limit` (soft and hard).
    pub fn start_with(exe: &str, args: &[&str], fd_limit: Option<u64>) -> Binary {
        Binary::start_configured(exe, args, fd_limit, &[])
    }

    /// Starts `exe` with these environment variables added (`RUST_LOG`, say).
    #[allow(dead_code)] // for tests/proxy.rs
    pub fn start_with_env(exe: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::start_configured(exe, args, None, env)
    }

    fn start_configured(
        exe: &str,
        args: &[&str],
        fd_limit: Option<u64>,
        env: &[(&str, &str)],
    ) -> Binary {
        let mut command = Command::new(exe);
        command
            .envs(env.iter().copied())
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
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut first_line).unwrap();
        let mut tcp = None;
        let mut udp = None;
        for field in first_line.split_whitespace().skip(1) {
            match field.split_once('=') {
                Some(("tcp", a)) => tcp = Some(a.parse().expect("tcp address")),
                Some(("udp", "off")) => {}
                Some(("udp", a)) => udp = Some(a.parse().expect("udp address")),
                Some(("tls", "on")) => {}
                _ => panic!("unexpected startup line {first_line:?}"),
            }
        }
        Binary {
            child,
            tcp: tcp.expect("tcp= in startup line"),
            udp,
            first_line,
            stdout,
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

// The TLS tests' certificates and clients (tests/tls.rs, tests/tls_threaded.rs); rcgen, which
// makes the certificates, is a Linux-only dev-dependency.
#[cfg(all(feature = "tls", target_os = "linux"))]
#[allow(dead_code)]
pub mod tls;
// The TLS suite, written once for both servers (tests/tls.rs, tests/tls_threaded.rs).
#[cfg(all(feature = "tls", target_os = "linux"))]
mod tls_suite;

// The two suites every server passes (and the TLS one above), each a macro that writes its
// tests into the crate that instantiates it (exported at the crate root, whichever file
// defines them).
mod binary_suite;
mod protocol_suite;
