//! One metrics client: its state machine (`Reading → (Gathering →) Writing → Lingering →
//! Closed`) over its non-blocking socket, and the bytes it holds.
//!
//! This module owns a client's reads and writes: the request head, read into a buffer of at
//! most [`MAX_REQUEST_HEAD`] bytes and handed to [`parse`]; its one
//! response, written and followed by a shutdown of our side; and the input read and dropped
//! until the client's EOF. It must not know the poll, the tokens, the clock or the other
//! clients: the endpoint (`endpoint.rs`) registers it, passes its events on, answers what a
//! read request asks for ([`Outcome`]) and closes it at its deadline. Every error closes
//! this client and no other.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use super::http::{parse, Parsed, Status};
use super::MAX_REQUEST_HEAD;

/// Bytes read and dropped after the response, while waiting for the client's EOF. A
/// scraper sends nothing more; this only stops a client that floods after its request from
/// keeping the loop reading.
const LINGER_DISCARD_LIMIT: usize = 64 * 1024;

/// Where a metrics client is in its life. It only ever moves down this list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientState {
    /// Reading the request head, until it is whole, too large or not HTTP.
    Reading,
    /// A scrape waiting for every loop's counts of this generation. Anything more the
    /// client sends waits in the socket.
    Gathering { generation: u64, head_only: bool },
    /// Writing the response.
    Writing,
    /// The response is written and our side shut down: input is read and dropped until the
    /// client's EOF, because closing a socket with unread input makes the kernel send a
    /// reset, which can destroy the response before the client reads it.
    Lingering,
    /// Finished; dropped (and so closed) at the end of the turn.
    Closed,
}

/// What a client's request, once read, asks the endpoint to do.
pub(super) enum Outcome {
    Wait,
    Scrape { head_only: bool },
    Reject { status: Status, head_only: bool },
}

/// One metrics client.
pub(super) struct Client {
    stream: TcpStream,
    /// Tells this client's deadline apart from that of an earlier one in the same place.
    pub(super) serial: u64,
    pub(super) state: ClientState,
    /// The request head as read so far ([`MAX_REQUEST_HEAD`] bytes); after it, the space
    /// input is read into to be dropped.
    head: Vec<u8>,
    filled: usize,
    response: Vec<u8>,
    sent: usize,
    discarded: usize,
}

impl Client {
    pub(super) fn new(stream: TcpStream, serial: u64) -> Client {
        Client {
            stream,
            serial,
            state: ClientState::Reading,
            head: vec![0; MAX_REQUEST_HEAD],
            filled: 0,
            response: Vec::new(),
            sent: 0,
            discarded: 0,
        }
    }

    /// Readiness of either kind: each state does the one thing it waits for, which copes
    /// with a spurious event as with a real one.
    pub(super) fn on_event(&mut self) -> Outcome {
        match self.state {
            ClientState::Reading => return self.read_request(),
            ClientState::Writing => self.write(),
            ClientState::Lingering => self.discard_input(),
            ClientState::Gathering { .. } | ClientState::Closed => {}
        }
        Outcome::Wait
    }

    /// Reads until the head is whole, too large, not HTTP, or the socket would block.
    fn read_request(&mut self) -> Outcome {
        loop {
            if self.filled == self.head.len() {
                log::debug!("metrics client: request head over {MAX_REQUEST_HEAD} bytes");
                return Outcome::Reject {
                    status: Status::BadRequest,
                    head_only: false,
                };
            }
            match self.stream.read(&mut self.head[self.filled..]) {
                Ok(0) => {
                    // Gone before a whole request: there is no one to answer.
                    self.state = ClientState::Closed;
                    return Outcome::Wait;
                }
                Ok(n) => {
                    self.filled += n;
                    match parse(&self.head[..self.filled]) {
                        Parsed::Incomplete => continue,
                        Parsed::Scrape { head_only } => return Outcome::Scrape { head_only },
                        Parsed::Reject { status, head_only } => {
                            return Outcome::Reject { status, head_only }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail("read", e);
                    return Outcome::Wait;
                }
            }
        }
    }

    /// Starts writing `response`, the only one this connection gets.
    pub(super) fn respond(&mut self, response: Vec<u8>) {
        self.response = response;
        self.sent = 0;
        self.state = ClientState::Writing;
        self.write();
    }

    /// Writes what is left of the response; once it is all written, shuts down our side
    /// and lingers.
    fn write(&mut self) {
        while self.sent < self.response.len() {
            match self.stream.write(&self.response[self.sent..]) {
                Ok(0) => return self.fail("write", io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail("write", e),
            }
        }
        self.response = Vec::new();
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            return self.fail("shutdown", e);
        }
        self.state = ClientState::Lingering;
        // Input may have waited since the head was read, with no new edge to announce it.
        self.discard_input();
    }

    /// Lingering: reads and drops input until the client's EOF, which ends it cleanly.
    fn discard_input(&mut self) {
        loop {
            match self.stream.read(&mut self.head) {
                Ok(0) => break,
                Ok(n) => {
                    self.discarded += n;
                    if self.discarded > LINGER_DISCARD_LIMIT {
                        log::debug!("metrics client: still sending after its response");
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail("read", e),
            }
        }
        self.state = ClientState::Closed;
    }

    fn fail(&mut self, what: &str, e: io::Error) {
        log::debug!("metrics client: {what} failed, closing: {e}");
        self.state = ClientState::Closed;
    }
}
