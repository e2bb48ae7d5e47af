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

use crate::config::Stats;
use crate::connection::Interest;
use crate::protocol::{udp_reply, Mode};

/// The most datagrams answered per readiness event before the loop serves other sources,
/// so a UDP flood cannot starve TCP clients (and the other way round).
pub const DATAGRAM_BUDGET: usize = 64;

/// Replies held while the socket's send buffer is full. Beyond this they are dropped and
/// counted: UDP promises no delivery, and a client flooding us must not grow our memory.
pub const SEND_QUEUE_LIMIT: usize = 1024;

/// The UDP socket and its replies not yet sent.
pub struct UdpEndpoint {
    socket: UdpSocket,
    unsent: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Errors are logged once per kind of trouble, then counted quietly, so a flood of bad
    /// sends cannot flood the log.
    warned_send_error: bool,
    warned_queue_full: bool,
    registered_writable: bool,
}

impl UdpEndpoint {
    /// Serves datagrams on `socket` (already non-blocking).
    pub fn new(socket: UdpSocket) -> UdpEndpoint {
        UdpEndpoint {
            socket,
            unsent: VecDeque::new(),
            warned_send_error: false,
            warned_queue_full: false,
            registered_writable: false,
        }
    }

    /// The socket, for the reactor to register with its poll.
    pub fn socket(&mut self) -> &mut UdpSocket {
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
        Some(Interest {
            readable: true,
            writable,
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
