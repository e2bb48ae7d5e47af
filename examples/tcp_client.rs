//! A TCP client for the line protocol, the kind every socket tutorial starts with, written
//! so that it works however TCP delivers the bytes.
//!
//! ```sh
//! cargo run --example tcp_client -- 127.0.0.1:9999 alice bob   # one reply per message
//! cargo run --example tcp_client                               # type lines, read replies
//! ```
//!
//! It connects, reads the greeting line, sends each message as a line and reads exactly one
//! reply line for each, then sends `exit` and reads until the server closes.
//!
//! Why whole lines: TCP is a byte stream, not a sequence of messages. A read returns whatever
//! bytes have arrived so far, so a read boundary is not a message boundary: one `read()` may
//! return half of the greeting, or the greeting and the first reply together. The classic
//! tutorial client that does `read()` once and calls the result "the reply" works on loopback
//! by luck and breaks on a real network. Here every message ends in `\n` and the client reads
//! until it has seen one (`BufRead::read_until`), keeping whatever came after it for the next
//! line. The server does the same with our input, which is why we may send a message in any
//! number of writes.
//!
//! Errors (no server, the server closing mid-line, a server that never answers) end the
//! program with one line on stderr and exit code 1, never a panic.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Where the reactor listens by default.
const DEFAULT_ADDR: &str = "127.0.0.1:9999";

/// How long to wait for the server to say anything. Replies to this protocol are immediate,
/// so a silent server is a wrong server (another protocol, `raw` framing, or `--greeting ''`,
/// which sends no greeting line): better a clear error than a client hung forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: tcp_client [ADDR] [MESSAGE...]
  ADDR     server address, HOST:PORT (default 127.0.0.1:9999)
  MESSAGE  sent as one line each; without any, lines are read from standard input
The conversation ends with `exit`, sent after the last message (or typed).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args, io::stdin().lock(), &mut io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tcp_client: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one conversation. Messages come from `args` or, if there are none, from `input`;
/// everything the server says is written to `output` exactly as received.
pub fn run(args: &[String], input: impl BufRead, output: &mut impl Write) -> Result<(), String> {
    let (addr, messages) = split_args(args)?;
    let mut server = LineClient::connect(&addr)?;
    let greeting = server.read_line("the greeting")?;
    print(output, &greeting)?;
    if messages.is_empty() {
        converse(&mut server, stdin_lines(input), output)?;
    } else {
        let messages = messages.iter().map(|m| Ok(m.as_bytes().to_vec()));
        converse(&mut server, messages, output)?;
    }
    let rest = server.finish()?;
    print(output, &rest)
}

/// The first argument is the address if it looks like one (`HOST:PORT`); everything else is
/// a message.
fn split_args(args: &[String]) -> Result<(String, &[String]), String> {
    let (addr, messages) = match args.split_first() {
        Some((first, rest)) if looks_like_address(first) => (first.clone(), rest),
        _ => (DEFAULT_ADDR.to_string(), args),
    };
    // A newline inside a message would make it two lines and two replies, and the client
    // would then wait for the wrong number of them.
    if let Some(message) = messages.iter().find(|m| m.contains('\n')) {
        return Err(format!(
            "message {message:?} contains a newline; pass each line as its own argument"
        ));
    }
    Ok((addr, messages))
}

fn looks_like_address(arg: &str) -> bool {
    match arg.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Sends each message and prints its one reply, in lockstep. `exit` ends the conversation
/// early: the server answers it by closing, so nothing after it could be sent.
fn converse(
    server: &mut LineClient,
    messages: impl Iterator<Item = Result<Vec<u8>, String>>,
    output: &mut impl Write,
) -> Result<(), String> {
    for message in messages {
        let message = message?;
        if message == b"exit" {
            break;
        }
        server.send_line(&message)?;
        let reply = server.read_line("a reply")?;
        print(output, &reply)?;
    }
    Ok(())
}

/// The lines of standard input, without their line endings. Bytes, not `String`: the
/// protocol returns any byte unchanged, invalid UTF-8 included, and so should we.
fn stdin_lines(mut input: impl BufRead) -> impl Iterator<Item = Result<Vec<u8>, String>> {
    std::iter::from_fn(move || {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                let end = line.strip_suffix(b"\n").unwrap_or(&line);
                let end = end.strip_suffix(b"\r").unwrap_or(end);
                Some(Ok(end.to_vec()))
            }
            Err(e) => Some(Err(format!("cannot read standard input: {e}"))),
        }
    })
}

fn print(output: &mut impl Write, bytes: &[u8]) -> Result<(), String> {
    // Flushed at once so that an interactive user sees each reply as it arrives.
    output
        .write_all(bytes)
        .and_then(|()| output.flush())
        .map_err(|e| format!("cannot write the output: {e}"))
}

/// A connection to a line-protocol server: a buffered reader for whole lines, and the same
/// socket for writing.
struct LineClient {
    addr: SocketAddr,
    /// The buffer keeps the bytes read past the end of one line for the next one: that is
    /// what makes the read boundaries irrelevant.
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    fn connect(addr: &str) -> Result<LineClient, String> {
        let candidates: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {addr}: {e}"))?
            .collect();
        let stream = TcpStream::connect(&candidates[..])
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        // Of the addresses a name resolves to, the one that answered.
        let addr = stream.peer_addr().unwrap_or_else(|_| candidates[0]);
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let writer = stream
            .try_clone()
            .map_err(|e| format!("cannot clone the socket: {e}"))?;
        Ok(LineClient {
            addr,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends `message` and its `\n` in one write: two writes would work just as well (the
    /// server reassembles lines), but one write means one segment on the wire.
    fn send_line(&mut self, message: &[u8]) -> Result<(), String> {
        let mut line = Vec::with_capacity(message.len() + 1);
        line.extend_from_slice(message);
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|e| format!("cannot send to {}: {e}", self.addr))
    }

    /// Reads one whole line, `\n` included, however many reads it takes.
    fn read_line(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let mut line = Vec::new();
        // `read_until` rather than `read_line`: the same loop, but into bytes, since the
        // server may send back bytes that are not UTF-8 and `read_line` would refuse them.
        let result = self.reader.read_until(b'\n', &mut line);
        let addr = self.addr;
        match result {
            Ok(_) if line.ends_with(b"\n") => Ok(line),
            Ok(0) => Err(format!(
                "{addr} closed the connection before sending {what}"
            )),
            Ok(_) => Err(format!(
                "{addr} closed the connection in the middle of {what} (got {:?})",
                String::from_utf8_lossy(&line)
            )),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(format!(
                    "{addr} sent no complete line for {}s while we waited for {what} \
                     (is it a line-framing server with a greeting?)",
                    REPLY_TIMEOUT.as_secs()
                ))
            }
            Err(e) => Err(format!("cannot read {what} from {addr}: {e}")),
        }
    }

    /// Says `exit` and reads until the server closes, returning anything it still sent.
    /// Waiting for the close rather than just hanging up means every reply owed has arrived.
    fn finish(mut self) -> Result<Vec<u8>, String> {
        self.writer
            .write_all(b"exit\n")
            .map_err(|e| format!("cannot send exit to {}: {e}", self.addr))?;
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .map_err(|e| format!("reading from {} until it closed: {e}", self.addr))?;
        Ok(rest)
    }
}
