//! The whole idea in one file, to read before the real reactor: one `Poll`, a `Slab` of
//! connections, and each connection a small state machine, greeting → reading → replying →
//! closing → closed. It speaks the crate's protocol (`Welcome!`, `Hello, <line>!`, `exit`)
//! over TCP, and answers everything it owes before it closes, after `exit` or when the
//! client half-closes.
//!
//! What it leaves out, on purpose, is what the real reactor adds (see the README's tour):
//! budgets, so one client cannot hold the loop; bounds on lines and output; timers; UDP;
//! signals and a graceful shutdown; lingering closes; closing in a sweep after the batch.
//!
//! `cargo run --example minimal -- 127.0.0.1:9999`, then `nc 127.0.0.1 9999`. Port 0 picks a
//! free port; the startup line says which.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The listener's token; connections take theirs from the slab, which starts at 0.
const LISTENER: Token = Token(usize::MAX);

#[derive(Clone, Copy, PartialEq)]
enum State {
    Greeting, // `Welcome!` (and what was answered behind it) has not all gone out yet
    Reading,  // nothing owed: waiting for a line
    Replying, // replies wait for the socket; input is still read and answered
    Closing,  // input ended (`exit` or a half-close): no more reading; what is owed goes out
    Closed,   // everything owed went out, or an error: the loop drops it
}

struct Connection {
    stream: TcpStream,
    state: State,
    /// A line that has not seen its `\n` yet (unbounded here; `--max-line` in the reactor).
    line: Vec<u8>,
    /// Bytes the socket has not taken yet.
    output: Vec<u8>,
}

impl Connection {
    /// Readable: read until WouldBlock (edge-triggered: no new event comes before that),
    /// in every state that still takes input, so input that arrives while the greeting or
    /// a reply is going out is not left behind without an event to announce it.
    fn on_readable(&mut self) {
        let mut buf = [0; 4096];
        while matches!(
            self.state,
            State::Greeting | State::Reading | State::Replying
        ) {
            match self.stream.read(&mut buf) {
                // The client half-closed: it may still be reading. Its last line counts
                // even without a `\n`; then everything owed goes out before the close.
                Ok(0) => {
                    let line = std::mem::take(&mut self.line);
                    if !line.is_empty() {
                        self.answer(&line);
                    }
                    self.state = State::Closing;
                }
                Ok(n) => {
                    for &byte in &buf[..n] {
                        if byte != b'\n' {
                            self.line.push(byte);
                            continue;
                        }
                        let line = std::mem::take(&mut self.line);
                        if !self.answer(&line) {
                            break; // what follows `exit` is not answered
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => self.state = State::Closed,
            }
        }
        self.on_writable();
    }

    /// Appends the reply to one line; `false` (and closing) for `exit`.
    fn answer(&mut self, line: &[u8]) -> bool {
        if line == b"exit" {
            self.state = State::Closing;
            return false;
        }
        self.output.extend_from_slice(b"Hello, ");
        self.output.extend_from_slice(line);
        self.output.extend_from_slice(b"!\n");
        true
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
        let owed = !self.output.is_empty();
        self.state = match self.state {
            State::Closed => State::Closed,
            State::Closing if owed => State::Closing,
            State::Closing => State::Closed,
            State::Greeting if owed => State::Greeting,
            _ if owed => State::Replying,
            _ => State::Reading,
        };
    }
}

/// Serves on `listener` until an error the loop cannot go on from.
fn run(listener: std::net::TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut connections: Slab<Connection> = Slab::new();
    let mut events = Events::with_capacity(256);
    loop {
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
                            let mut conn = Connection {
                                stream,
                                state: State::Greeting,
                                line: Vec::new(),
                                output: b"Welcome!\n".to_vec(),
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
            }
        }
    }
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
        run(listener)
    });
    if let Err(e) = served {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
