//! A UDP client: one datagram per message, one reply datagram back, with a timeout and
//! retries because UDP does not promise delivery.
//!
//! ```sh
//! cargo run --example udp_client -- 127.0.0.1:9999 alice bob
//! cargo run --example udp_client                  # each line of standard input is a datagram
//! ```
//!
//! Datagram semantics, in short:
//! - One `send` is one datagram, and the server answers each with one datagram. Unlike TCP
//!   there is no stream to cut into messages: a message needs no newline, and a `recv`
//!   returns exactly one whole datagram (or nothing).
//! - There is no connection: no greeting, no `exit`, no close. The server knows us only by the
//!   source address of each datagram.
//! - Datagrams can be lost (or, on a real network, duplicated and reordered), and nothing
//!   tells the sender. So the client waits a bounded time for the reply and sends again if
//!   none comes. A reply that was only late can then arrive after we moved on; a real
//!   protocol puts a request id in each datagram to tell them apart, this toy one has none.
//!
//! The socket is `connect`ed to the server. That sends nothing; it makes the kernel accept
//! datagrams from the server only, and report an ICMP "port unreachable" as a
//! `ConnectionRefused` error, so that "nothing is listening" is an immediate clear error
//! rather than a run of timeouts.

use std::io::{self, BufRead, ErrorKind, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

/// Where the reactor listens by default.
const DEFAULT_ADDR: &str = "127.0.0.1:9999";

/// The largest UDP payload (65,535 minus the IP and UDP headers): a buffer this size never
/// truncates a datagram, which would otherwise silently lose its tail.
const MAX_DATAGRAM: usize = 65_507;

/// How long to wait for each reply, and how many times to send before giving up. On
/// loopback a reply takes microseconds; two seconds covers a loaded machine or a slow
/// network, and three tries make a single lost datagram harmless.
pub struct Retry {
    pub timeout: Duration,
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }
}

const USAGE: &str = "usage: udp_client [ADDR] [MESSAGE...]
  ADDR     server address, HOST:PORT (default 127.0.0.1:9999)
  MESSAGE  sent as one datagram each; without any, each line of standard input is one";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let stdin = io::stdin().lock();
    match run(&args, stdin, &mut io::stdout().lock(), &Retry::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("udp_client: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sends each message (from `args`, or the lines of `input` if there are none) and writes
/// each reply to `output`, followed by a newline since a datagram carries none.
pub fn run(
    args: &[String],
    input: impl BufRead,
    output: &mut impl Write,
    retry: &Retry,
) -> Result<(), String> {
    let (addr, messages) = split_args(args);
    let server = resolve(&addr)?;
    let socket = connected_socket(server, retry.timeout)?;
    let mut reply = vec![0; MAX_DATAGRAM];
    let mut answer = |message: &[u8]| -> Result<(), String> {
        let n = request(&socket, server, message, &mut reply, retry)?;
        output
            .write_all(&reply[..n])
            .and_then(|()| output.write_all(b"\n"))
            .and_then(|()| output.flush())
            .map_err(|e| format!("cannot write the output: {e}"))
    };
    if messages.is_empty() {
        for line in input.split(b'\n') {
            let line = line.map_err(|e| format!("cannot read standard input: {e}"))?;
            answer(line.strip_suffix(b"\r").unwrap_or(&line))?;
        }
    } else {
        for message in messages {
            answer(message.as_bytes())?;
        }
    }
    Ok(())
}

/// The first argument is the address if it looks like one (`HOST:PORT`); everything else is
/// a message. An empty message is allowed: an empty datagram is a message too.
fn split_args(args: &[String]) -> (String, &[String]) {
    match args.split_first() {
        Some((first, rest)) if looks_like_address(first) => (first.clone(), rest),
        _ => (DEFAULT_ADDR.to_string(), args),
    }
}

fn looks_like_address(arg: &str) -> bool {
    match arg.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

/// A socket of the server's address family on an ephemeral port, connected to the server.
fn connected_socket(server: SocketAddr, timeout: Duration) -> Result<UdpSocket, String> {
    // The unspecified address lets the kernel pick the source address that routes to the
    // server (127.0.0.1 for a loopback server); it must be of the server's family.
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("cannot bind {local}: {e}"))?;
    socket
        .connect(server)
        .map_err(|e| format!("cannot connect the socket to {server}: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("cannot set a read timeout: {e}"))?;
    Ok(socket)
}

/// Sends `message` until a reply comes back or the attempts run out; returns the reply's
/// length in `reply`.
fn request(
    socket: &UdpSocket,
    server: SocketAddr,
    message: &[u8],
    reply: &mut [u8],
    retry: &Retry,
) -> Result<usize, String> {
    let refused = || {
        format!("nothing is listening on udp {server} (the port answered ICMP port unreachable)")
    };
    for attempt in 1..=retry.attempts {
        match socket.send(message) {
            Ok(_) => {}
            // The ICMP error of an earlier datagram can surface on the next send instead.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(refused()),
            Err(e) => return Err(format!("cannot send to {server}: {e}")),
        }
        loop {
            match socket.recv(reply) {
                Ok(n) => return Ok(n),
                // A signal arrived while waiting: wait again, the datagram is not lost.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The read timeout: the request or its reply may have been dropped.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if attempt < retry.attempts {
                        eprintln!(
                            "udp_client: no reply from {server} within {:?}, sending again",
                            retry.timeout
                        );
                    }
                    break;
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(refused()),
                Err(e) => return Err(format!("cannot receive from {server}: {e}")),
            }
        }
    }
    Err(format!(
        "no reply from {server} after {} attempts, {:?} each",
        retry.attempts, retry.timeout
    ))
}
