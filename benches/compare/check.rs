//! The bench binary run without `--bench`, as `cargo test` runs it: instead of measuring,
//! it checks that every server the bench compares speaks the protocol the same way, byte
//! for byte. That is what makes the bench a comparison of designs and not of protocols,
//! and the tokio server, built here rather than in `src/`, is checked nowhere else.
//!
//! Each case is one TCP connection from greeting to close (replies, `exit`, a line split
//! across writes, the final unterminated line at EOF, the longest line and one byte more,
//! a line far too long refused with FIN rather than a reset), or one datagram. Then the
//! crate's own servers are stopped as a user stops them, and their summary lines (one
//! `Stats` type, whichever server) must count those connections and messages alike. All of
//! it takes well under a second.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use evloop::protocol::DEFAULT_MAX_LINE;

use crate::plan::{out_dir, Program, SERVERS};
use crate::processes::{start_server, start_server_logging, ServerProcess};

/// A guard against a hung check, not a wait: every read below expects data or EOF soon.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between a case's writes, so that they tend to arrive in separate reads.
const BETWEEN_WRITES: Duration = Duration::from_millis(10);

/// One TCP connection: what the client writes, and all the server must send before it
/// closes.
struct Case {
    name: &'static str,
    /// Written one after another.
    writes: Vec<Vec<u8>>,
    /// Whether the client then half-closes, making EOF part of the case.
    eof: bool,
    /// Everything read from the greeting to the server's EOF.
    expect: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let greeted = |replies: &[u8]| [b"Welcome!\n", replies].concat();
    let longest = vec![b'x'; DEFAULT_MAX_LINE];
    vec![
        Case {
            name: "each line answered, `exit` closes and later lines are not",
            writes: vec![b"alice\nbob\r\n\nexit\nnot answered\n".to_vec()],
            eof: false,
            expect: greeted(b"Hello, alice!\nHello, bob!\nHello, !\n"),
        },
        Case {
            name: "input arriving after `exit` is not answered",
            writes: vec![b"a\nexit\n".to_vec(), b"late\n".to_vec()],
            eof: false,
            expect: greeted(b"Hello, a!\n"),
        },
        Case {
            name: "lines split across writes",
            writes: vec![b"hel".to_vec(), b"lo\nwor".to_vec(), b"ld\n".to_vec()],
            eof: true,
            expect: greeted(b"Hello, hello!\nHello, world!\n"),
        },
        Case {
            name: "a final unterminated line is answered at EOF",
            writes: vec![b"one\nlast".to_vec()],
            eof: true,
            expect: greeted(b"Hello, one!\nHello, last!\n"),
        },
        Case {
            name: "the longest line is answered",
            writes: vec![[&longest[..], b"\n"].concat()],
            eof: true,
            expect: greeted(&[b"Hello, ", &longest[..], b"!\n"].concat()),
        },
        Case {
            name: "one byte more is refused and the connection closed",
            writes: vec![[&longest[..], b"x\nnot answered\n"].concat()],
            eof: false,
            expect: greeted(b"ERR line too long\n"),
        },
        Case {
            name: "a line far too long is refused, not reset, while it is still arriving",
            writes: vec![vec![b'x'; 4 * DEFAULT_MAX_LINE]],
            eof: false,
            expect: greeted(b"ERR line too long\n"),
        },
    ]
}

/// UDP: (datagram, reply).
const DATAGRAMS: [(&[u8], &[u8]); 3] = [
    (b"bob\n", b"Hello, bob!"),
    (b"", b"Hello, !"),
    (b"two\n\n", b"Hello, two\n!"),
];

/// Runs every case against every server; returns whether all of them passed.
pub fn run() -> bool {
    let logs = out_dir().join("logs");
    if let Err(e) = fs::create_dir_all(&logs) {
        eprintln!("check: cannot create {}: {e}", logs.display());
        return false;
    }
    let cases = cases();
    let mut passed = true;
    for spec in &SERVERS {
        let log = logs.join(format!("{}-check.server.log", spec.name));
        // The crate's servers log their summary line at `info`.
        let summarised = matches!(spec.program, Program::Reactor | Program::Threaded);
        let started = match summarised {
            true => start_server_logging(spec, &log, None, None, "info"),
            false => start_server(spec, &log, None, None),
        };
        let mut server = match started {
            Ok(server) => server,
            Err(e) => {
                println!("check {}: FAILED to start: {e}", spec.name);
                passed = false;
                continue;
            }
        };
        let mut failures = Vec::new();
        for case in &cases {
            if let Err(e) = run_case(server.tcp, case) {
                failures.push(format!("{}: {e}", case.name));
            }
        }
        match server.udp {
            Some(udp) => {
                for (datagram, reply) in DATAGRAMS {
                    if let Err(e) = udp_case(udp, datagram, reply) {
                        failures.push(format!("datagram {:?}: {e}", shown(datagram)));
                    }
                }
            }
            None => failures.push("no UDP address in the startup line".into()),
        }
        if summarised {
            let expected = (cases.len() as u64, messages(&cases));
            if let Err(e) = check_summary(&mut server, &log, expected) {
                failures.push(format!("the summary line: {e}"));
            }
        }
        if failures.is_empty() {
            println!(
                "check {}: ok, {} connections and {} datagrams answered as expected{}",
                spec.name,
                cases.len(),
                DATAGRAMS.len(),
                if summarised {
                    ", and counted so in its summary line"
                } else {
                    ""
                }
            );
        } else {
            println!("check {}: FAILED (its log: {})", spec.name, log.display());
            for failure in failures {
                println!("    {failure}");
            }
            passed = false;
        }
    }
    passed
}

/// The messages the cases and the datagrams are answered for: every `Hello` reply.
fn messages(cases: &[Case]) -> u64 {
    let tcp = cases
        .iter()
        .flat_map(|case| case.expect.split(|&b| b == b'\n'))
        .filter(|line| line.starts_with(b"Hello, "))
        .count();
    (tcp + DATAGRAMS.len()) as u64
}

/// Stops the server with SIGTERM and reads its summary line; `Ok` if it counts
/// `(connections, messages)`.
fn check_summary(
    server: &mut ServerProcess,
    log: &std::path::Path,
    (connections, messages): (u64, u64),
) -> Result<(), String> {
    if cfg!(not(unix)) {
        return Ok(());
    }
    let status = server
        .child
        .terminate(IO_TIMEOUT)
        .ok_or_else(|| format!("no exit within {IO_TIMEOUT:?} of SIGTERM"))?;
    if !status.success() {
        return Err(format!("the server exited with {status} at SIGTERM"));
    }
    let text = fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let counted = text
        .lines()
        .rev()
        .find_map(summary_counts)
        .ok_or("no summary line in the log")?;
    if counted != (connections, messages) {
        return Err(format!(
            "(connections, messages) {counted:?} where the check made {:?}",
            (connections, messages)
        ));
    }
    Ok(())
}

/// The connections and messages a summary line (`evloop::Stats`'s `Display`, after the log
/// line's prefix) counts: `served C connections (...), M messages, ...`.
fn summary_counts(line: &str) -> Option<(u64, u64)> {
    let (_, rest) = line.split_once("served ")?;
    let (connections, rest) = rest.split_once(" connections (")?;
    let (_, rest) = rest.split_once("), ")?;
    let (messages, _) = rest.split_once(" messages, ")?;
    Some((connections.parse().ok()?, messages.parse().ok()?))
}

fn run_case(addr: SocketAddr, case: &Case) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let io = |e: io::Error| e.to_string();
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    for (i, bytes) in case.writes.iter().enumerate() {
        if i > 0 {
            thread::sleep(BETWEEN_WRITES);
        }
        stream.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    }
    if case.eof {
        stream.shutdown(Shutdown::Write).map_err(io)?;
    }
    let mut got = Vec::new();
    if let Err(e) = stream.read_to_end(&mut got) {
        return Err(format!("{e} after reading {}", shown(&got)));
    }
    compare(&case.expect, &got)
}

fn udp_case(addr: SocketAddr, datagram: &[u8], reply: &[u8]) -> Result<(), String> {
    let io = |e: io::Error| e.to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    socket.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    socket.send_to(datagram, addr).map_err(io)?;
    let mut buffer = [0; 256];
    let (n, _) = socket.recv_from(&mut buffer).map_err(io)?;
    compare(reply, &buffer[..n])
}

/// `Ok` if `got` is `expected`; else where they part.
fn compare(expected: &[u8], got: &[u8]) -> Result<(), String> {
    if got == expected {
        return Ok(());
    }
    let at = expected
        .iter()
        .zip(got)
        .position(|(e, g)| e != g)
        .unwrap_or(expected.len().min(got.len()));
    Err(format!(
        "{} bytes instead of {}, differing from byte {at}: expected {}, got {}",
        got.len(),
        expected.len(),
        shown(&expected[at..]),
        shown(&got[at..])
    ))
}

/// Bytes as a short escaped string.
fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let more = if bytes.len() > MAX { "..." } else { "" };
    format!("{text:?}{more}")
}
