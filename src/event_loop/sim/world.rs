//! The simulated world the loop is driven in: a seeded generator, both ends of each TCP
//! connection with buffers that fill, the server's end as a connection's `Stream`, and an
//! edge-triggered epoll over them. It decides nothing of the loop's.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use mio::{Interest, Token};

use super::super::serve::{Readiness, Register};
use super::super::EVENTS_CAPACITY;
use crate::connection::Stream;

/// The kernel's buffers, each way, of a simulated socket: small, so that they fill.
pub(super) const SOCKET_BUFFER: usize = 16 * 1024;

/// Splitmix64: a small seeded generator, so a seed is all a run depends on.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(super) fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    pub(super) fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.range(low, high))
    }

    pub(super) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// Both ends of one simulated TCP connection.
#[derive(Default)]
pub(super) struct Socket {
    /// Sent by the client, not read by the server yet (its receive buffer).
    pub(super) to_server: VecDeque<u8>,
    /// Written by the server, not read by the client yet (its send buffer).
    pub(super) to_client: VecDeque<u8>,
    pub(super) client_fin: bool,
    pub(super) server_fin: bool,
    /// The client reset the connection: every call of the server's fails.
    pub(super) reset: bool,
    /// The server closed its descriptor.
    pub(super) dropped: bool,
    /// It closed with input unread, which resets the connection (and destroys what the
    /// client had not read yet).
    pub(super) server_reset: bool,
    pub(super) token: Option<Token>,
    pub(super) interest: Option<Interest>,
    /// An event for it is waiting in the simulated epoll's ready list.
    pub(super) queued: bool,
    /// The server's calls on it this turn.
    pub(super) calls: u32,
    /// Reads in a row that asked for one byte while it held more.
    pub(super) byte_reads: u32,
    /// Bytes the server took from it and gave it, ever: what a turn moved.
    pub(super) moved: u64,
}

impl Socket {
    pub(super) fn readable(&self) -> bool {
        !self.to_server.is_empty() || self.client_fin || self.reset
    }

    pub(super) fn writable(&self) -> bool {
        self.to_client.len() < SOCKET_BUFFER || self.reset
    }
}

pub(super) type Shared = Rc<RefCell<Socket>>;

/// The server's end, as the connection sees it.
pub(super) struct SimStream(pub(super) Shared);

impl Read for SimStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        s.calls += 1;
        if s.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if s.to_server.is_empty() {
            return if s.client_fin {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        if buf.len() == 1 && s.to_server.len() > 1 {
            s.byte_reads += 1;
        } else {
            s.byte_reads = 0;
        }
        let n = buf.len().min(s.to_server.len());
        s.moved += n as u64;
        for (to, from) in buf[..n].iter_mut().zip(s.to_server.drain(..n)) {
            *to = from;
        }
        Ok(n)
    }
}

impl Write for SimStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        s.calls += 1;
        if s.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if s.server_fin {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(SOCKET_BUFFER - s.to_client.len());
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.to_client.extend(&buf[..n]);
        s.moved += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for SimStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        None
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.0.borrow_mut().server_fin = true;
        Ok(())
    }
}

impl Drop for SimStream {
    /// Closing the descriptor sends a FIN, or a reset when input is left unread.
    fn drop(&mut self) {
        let mut s = self.0.borrow_mut();
        s.dropped = true;
        if s.to_server.is_empty() || s.reset {
            s.server_fin = true;
        } else {
            s.server_reset = true;
            s.to_client.clear();
        }
    }
}

/// epoll, edge-triggered, as far as the loop can tell: a socket is put on the ready list
/// when something arrives, when room frees, and when registering finds it ready; what an
/// event says is read from the socket when it is handed over.
#[derive(Default)]
pub(super) struct SimPoll {
    pub(super) pending: RefCell<VecDeque<Shared>>,
    /// Readiness changes a client made: what a turn may be woken for.
    pub(super) client_changes: std::cell::Cell<u64>,
}

impl SimPoll {
    /// A client changed something on `socket`: new data, room, a FIN or a reset.
    pub(super) fn client_changed(&self, socket: &Shared) {
        self.client_changes.set(self.client_changes.get() + 1);
        self.notify(socket);
    }

    pub(super) fn notify(&self, socket: &Shared) {
        let mut s = socket.borrow_mut();
        let Some(interest) = s.interest else {
            return;
        };
        let ready =
            (interest.is_readable() && s.readable()) || (interest.is_writable() && s.writable());
        if ready && !s.dropped && !s.queued {
            s.queued = true;
            self.pending.borrow_mut().push_back(Rc::clone(socket));
        }
    }

    /// Up to [`EVENTS_CAPACITY`] events, oldest first.
    pub(super) fn poll(&self) -> Vec<(Token, Readiness)> {
        let mut events = Vec::new();
        let mut pending = self.pending.borrow_mut();
        while events.len() < EVENTS_CAPACITY {
            let Some(socket) = pending.pop_front() else {
                break;
            };
            let mut s = socket.borrow_mut();
            s.queued = false;
            let (Some(token), Some(interest)) = (s.token, s.interest) else {
                continue;
            };
            if s.dropped {
                continue;
            }
            let readiness = Readiness {
                readable: interest.is_readable() && s.readable(),
                writable: interest.is_writable() && s.writable(),
                read_closed: interest.is_readable() && s.client_fin,
                error: s.reset,
            };
            if readiness != Readiness::default() {
                events.push((token, readiness));
            }
        }
        events
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.borrow().is_empty()
    }
}

impl Register<SimStream> for SimPoll {
    fn register(&self, stream: &mut SimStream, token: Token, interest: Interest) -> io::Result<()> {
        self.reregister(stream, token, interest)
    }

    fn reregister(
        &self,
        stream: &mut SimStream,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        {
            let mut s = stream.0.borrow_mut();
            s.token = Some(token);
            s.interest = Some(interest);
        }
        self.notify(&stream.0);
        Ok(())
    }
}

/// The kinds of simulated client, each a way a real client behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Sends a line, waits for its reply, a few times, then half-closes.
    Honest,
    /// Sends many lines at once, reads every reply, then half-closes or says `exit`.
    Pipeliner,
    /// Sends lines and never reads.
    NonReader,
    /// Sends one byte of a line now and then.
    Dribbler,
    /// Sends one unfinished line of some length, and waits.
    Partial,
    /// Sends a few lines and resets the connection.
    Resetter,
}

pub(super) const KINDS: [Kind; 6] = [
    Kind::Honest,
    Kind::Pipeliner,
    Kind::NonReader,
    Kind::Dribbler,
    Kind::Partial,
    Kind::Resetter,
];
