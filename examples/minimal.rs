//! The whole idea in one file, to read before the real reactor: one `Poll`, a `Slab` of
//! connections, and each connection a small state machine, greeting → reading → reply →
//! closed. It speaks the crate's protocol (`Welcome!`, `Hello, <line>!`, `exit`) over TCP.
//!
//! What it leaves out, on purpose, is what the real reactor adds (see the README's tour):
//! budgets, so one client cannot hold the loop; bounds on lines and output; timers; UDP;
//! signals and a graceful shutdown; lingering closes; closing in a sweep after the batch.
//!
//! `cargo run --example minimal -- 127.0.0.1:9999`, then `nc 127.0.0.1 9999`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The listener's token; connections take theirs from the slab, which starts at 0.
const LISTENER: Token = Token(usize::MAX);

#[derive(PartialEq)]
enum State {
    Greeting, // `Welcome!` is not fully written yet
    Reading,  // waiting for a line
    Replying, // replies wait for the socket to take them
    Closed,   // the peer left, `exit` was answered, or an error
}

struct Connection {
    stream: TcpStream,
    state: State,
    /// A line that has not seen its `\n` yet (unbounded here; `--max-line` in the reactor).
    line: Vec<u8>,
    /// Bytes the socket has not taken yet.
    output: Vec<u8>,
    /// `exit` was seen: close once the output is written.
    closing: bool,
}

impl Connection {
    /// Readable: read until WouldBlock (edge-triggered: no new event comes before that),
    /// in every state but closed, so input that arrives while the greeting or a reply is
    /// still going out is not left behind without an event to announce it.
    fn on_readable(&mut self) {
        let mut buf = [0; 4096];
        while self.state != State::Closed && !self.closing {
            match self.stream.read(&mut buf) {
                Ok(0) => self.state = State::Closed,
                Ok(n) => {
                    for &byte in &buf[..n] {
                        if byte != b'\n' {
                            self.line.push(byte);
                        } else if self.line == b"exit" {
                            self.closing = true;
                            break;
                        } else {
                            let line = std::mem::take(&mut self.line);
                            self.output.extend_from_slice(b"Hello, ");
                            self.output.extend_from_slice(&line);
                            self.output.extend_from_slice(b"!\n");
                        }
                    }
                    self.on_writable();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.state = State::Closed,
            }
        }
    }

    /// Writable (or new output): write until done or WouldBlock. A short write is not an
    /// error: what is left waits for the next WRITABLE event.
    fn on_writable(&mut self) {
        while !self.output.is_empty() && self.state != State::Closed {
            match self.stream.write(&self.output) {
                Ok(n) => drop(self.output.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.state = State::Closed,
            }
        }
        self.state = match self.state {
            State::Closed => State::Closed,
            _ if !self.output.is_empty() => State::Replying,
            _ if self.closing => State::Closed,
            _ => State::Reading,
        };
    }
}

/// Serves on `listener` until `stop_after` connections have closed (`None`: forever).
pub fn run(listener: std::net::TcpListener, stop_after: Option<usize>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut connections: Slab<Connection> = Slab::new();
    let mut events = Events::with_capacity(256);
    let mut closed = 0;
    while stop_after.is_none_or(|n| closed < n) {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                // Accept until WouldBlock, for the same reason as reads.
                loop {
                    match listener.accept() {
                        Ok((stream, _peer)) => {
                            let entry = connections.vacant_entry();
                            let output = b"Welcome!\n".to_vec();
                            let (state, line, closing) = (State::Greeting, Vec::new(), false);
                            let mut conn = Connection {
                                stream,
                                state,
                                line,
                                output,
                                closing,
                            };
                            // Both interests once, for good: with edge-triggered events a
                            // quiet socket costs nothing, so there is nothing to re-register.
                            let interest = Interest::READABLE | Interest::WRITABLE;
                            poll.registry().register(
                                &mut conn.stream,
                                Token(entry.key()),
                                interest,
                            )?;
                            conn.on_writable();
                            entry.insert(conn);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e), // out of descriptors: the real one backs off
                    }
                }
                continue;
            }
            // A late event for a key already removed is possible: ignore it.
            let Some(conn) = connections.get_mut(event.token().0) else {
                continue;
            };
            if event.is_writable() {
                conn.on_writable();
            }
            if event.is_readable() {
                conn.on_readable();
            }
            if conn.state == State::Closed {
                // Dropping the stream closes it and takes it out of the poll.
                connections.remove(event.token().0);
                closed += 1;
            }
        }
    }
    Ok(())
}

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".into())
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("error: not an address (IP:PORT): {e}");
            std::process::exit(2)
        });
    let served = std::net::TcpListener::bind(addr).and_then(|listener| {
        println!("listening tcp={}", listener.local_addr()?);
        run(listener, None)
    });
    if let Err(e) = served {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
