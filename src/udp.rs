//! The UDP endpoint, served by the same poll loop as TCP.
//!
//! This module owns the datagram socket and the short queue of replies the kernel could not
//! take at once. Each datagram gets one reply to its sender (see
//! [`protocol::udp_reply`](crate::protocol::udp_reply)). It must never stop the loop: a
//! reply that cannot be sent is queued (a bounded number), then counted and dropped, and
//! errors from `recv_from` are logged and skipped.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;
use mio::Interest;

use crate::protocol::{udp_reply, Mode};
use crate::stats::Stats;

/// The most datagrams answered per readiness event before the loop serves other sources,
/// so a UDP flood cannot starve TCP clients (and the other way round).
pub const DATAGRAM_BUDGET: usize = 64;

/// Replies held while the socket's send buffer is full. Beyond this they are dropped and
/// counted: UDP promises no delivery, and a client flooding us must not grow our memory.
pub const SEND_QUEUE_LIMIT: usize = 1024;

/// A datagram socket the endpoint can drive: a non-blocking `mio::net::UdpSocket` in the
/// reactor, a scripted fake in the tests below (loopback never makes a send wait).
pub trait Datagrams {
    /// Receives one datagram, as `UdpSocket::recv_from`.
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Sends one datagram, as `UdpSocket::send_to`.
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize>;
}

impl Datagrams for UdpSocket {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf)
    }
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        UdpSocket::send_to(self, buf, target)
    }
}

/// The UDP socket and its replies not yet sent.
pub struct UdpEndpoint<S = UdpSocket> {
    socket: S,
    unsent: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Errors are logged once per kind of trouble, then counted quietly, so a flood of bad
    /// sends cannot flood the log.
    warned_send_error: bool,
    warned_queue_full: bool,
    registered_writable: bool,
}

impl<S: Datagrams> UdpEndpoint<S> {
    /// Serves datagrams on `socket` (already non-blocking).
    pub fn new(socket: S) -> UdpEndpoint<S> {
        UdpEndpoint {
            socket,
            unsent: VecDeque::new(),
            warned_send_error: false,
            warned_queue_full: false,
            registered_writable: false,
        }
    }

    /// The socket, for the reactor to register with its poll.
    pub fn socket(&mut self) -> &mut S {
        &mut self.socket
    }

    /// The interest to register if it changed since the last call: WRITABLE is wanted only
    /// while replies wait in the queue.
    pub fn interest_change(&mut self) -> Option<Interest> {
        let writable = !self.unsent.is_empty();
        if writable == self.registered_writable {
            return None;
        }
        self.registered_writable = writable;
        Some(if writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        })
    }

    /// Answers datagrams until WouldBlock or the budget is spent. Returns true if it stopped
    /// for the budget, so the loop must come back without waiting for a new edge.
    pub fn on_readable(
        &mut self,
        buf: &mut [u8],
        reply: &mut Vec<u8>,
        mode: &Mode,
        stats: &mut Stats,
    ) -> bool {
        for _ in 0..DATAGRAM_BUDGET {
            let (n, peer) = match self.socket.recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error from an earlier send can surface here; it concerns that
                // peer only.
                Err(e) => {
                    log::debug!("udp recv_from failed: {e}");
                    continue;
                }
            };
            stats.bytes_in += n as u64;
            stats.messages += 1;
            stats.udp_datagrams += 1;
            reply.clear();
            udp_reply(mode, &buf[..n], reply);
            self.send(peer, reply, stats);
        }
        true
    }

    /// Sends queued replies until the queue is empty or the socket would block.
    pub fn on_writable(&mut self, stats: &mut Stats) {
        while let Some((peer, datagram)) = self.unsent.front() {
            match self.socket.send_to(datagram, *peer) {
                Ok(n) => stats.bytes_out += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => self.dropped(stats, &e),
            }
            self.unsent.pop_front();
        }
    }

    /// Sends at once if nothing is queued ahead of it; otherwise (or on WouldBlock) queues.
    fn send(&mut self, peer: SocketAddr, reply: &[u8], stats: &mut Stats) {
        if self.unsent.is_empty() {
            loop {
                match self.socket.send_to(reply, peer) {
                    Ok(n) => {
                        stats.bytes_out += n as u64;
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return self.dropped(stats, &e),
                }
            }
        }
        if self.unsent.len() >= SEND_QUEUE_LIMIT {
            stats.udp_dropped += 1;
            if !self.warned_queue_full {
                self.warned_queue_full = true;
                log::warn!("udp send queue full ({SEND_QUEUE_LIMIT} replies): dropping replies");
            }
            return;
        }
        self.unsent.push_back((peer, reply.to_vec()));
    }

    fn dropped(&mut self, stats: &mut Stats, e: &io::Error) {
        stats.udp_dropped += 1;
        if !self.warned_send_error {
            self.warned_send_error = true;
            log::warn!("udp reply could not be sent, dropping it (further drops are counted): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Receives a scripted series of results; sends succeed until `full` is set.
    #[derive(Default)]
    struct FakeSocket {
        incoming: RefCell<VecDeque<io::Result<Vec<u8>>>>,
        sent: RefCell<Vec<Vec<u8>>>,
        full: std::cell::Cell<bool>,
    }

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7);

    impl Datagrams for FakeSocket {
        fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            match self.incoming.borrow_mut().pop_front() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(Err(e)) => Err(e),
                Some(Ok(d)) => {
                    buf[..d.len()].copy_from_slice(&d);
                    Ok((d.len(), PEER))
                }
            }
        }
        fn send_to(&self, buf: &[u8], _: SocketAddr) -> io::Result<usize> {
            if self.full.get() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.sent.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
    }

    fn serve(endpoint: &mut UdpEndpoint<FakeSocket>, stats: &mut Stats) -> bool {
        let mut buf = vec![0; 1024];
        endpoint.on_readable(&mut buf, &mut Vec::new(), &Mode::Hello, stats)
    }

    fn datagrams(n: usize) -> VecDeque<io::Result<Vec<u8>>> {
        (0..n).map(|i| Ok(format!("{i}").into_bytes())).collect()
    }

    #[test]
    fn replies_the_kernel_cannot_take_are_queued_then_sent_in_order() {
        let mut endpoint = UdpEndpoint::new(FakeSocket::default());
        let mut stats = Stats::default();
        endpoint.socket.full.set(true);
        *endpoint.socket.incoming.borrow_mut() = datagrams(3);
        serve(&mut endpoint, &mut stats);
        assert!(endpoint.socket.sent.borrow().is_empty());
        assert!(endpoint.interest_change().is_some_and(|i| i.is_writable()));
        endpoint.socket.full.set(false);
        endpoint.on_writable(&mut stats);
        let sent = endpoint.socket.sent.borrow().clone();
        assert_eq!(
            sent,
            [
                b"Hello, 0!".to_vec(),
                b"Hello, 1!".to_vec(),
                b"Hello, 2!".to_vec()
            ]
        );
        assert!(endpoint.interest_change().is_some_and(|i| !i.is_writable()));
        assert_eq!(stats.udp_dropped, 0);
    }

    #[test]
    fn beyond_the_queue_limit_replies_are_dropped_and_counted() {
        let mut endpoint = UdpEndpoint::new(FakeSocket::default());
        let mut stats = Stats::default();
        endpoint.socket.full.set(true);
        let extra = 10;
        *endpoint.socket.incoming.borrow_mut() = datagrams(SEND_QUEUE_LIMIT + extra);
        while serve(&mut endpoint, &mut stats) {}
        assert_eq!(endpoint.unsent.len(), SEND_QUEUE_LIMIT);
        assert_eq!(stats.udp_dropped, extra as u64);
        assert_eq!(stats.messages, (SEND_QUEUE_LIMIT + extra) as u64);
    }

    #[test]
    fn recv_errors_are_skipped_and_the_budget_is_kept() {
        let mut endpoint = UdpEndpoint::new(FakeSocket::default());
        let mut stats = Stats::default();
        let mut incoming = datagrams(1);
        incoming.push_back(Err(io::ErrorKind::ConnectionRefused.into()));
        incoming.push_back(Err(io::ErrorKind::Interrupted.into()));
        incoming.extend(datagrams(1));
        *endpoint.socket.incoming.borrow_mut() = incoming;
        assert!(!serve(&mut endpoint, &mut stats), "drained to WouldBlock");
        assert_eq!(endpoint.socket.sent.borrow().len(), 2);

        *endpoint.socket.incoming.borrow_mut() = datagrams(DATAGRAM_BUDGET + 1);
        assert!(
            serve(&mut endpoint, &mut stats),
            "stops at the budget, more to do"
        );
        assert_eq!(endpoint.socket.incoming.borrow().len(), 1);
    }
}
