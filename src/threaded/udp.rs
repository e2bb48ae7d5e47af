//! The UDP thread of the threaded baseline: one blocking socket, one datagram answered at a
//! time with [`crate::protocol::udp_reply`].
//!
//! This module owns the UDP thread's loop and its read timeout. It must not frame or build
//! replies itself (that is `protocol.rs`), nor bind the socket or start the thread
//! (`threaded.rs` does both); it counts in a [`Stats`] of its own and adds it to the
//! server's counts once, when it ends.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

use log::{debug, warn};

use super::Shared;
use crate::net::MAX_DATAGRAM;
use crate::protocol;
use crate::stats::Stats;

/// The UDP thread's read timeout: a backstop that bounds how long it can miss a stop if the
/// wake-up datagram `Stop::stop` sends is lost (it never is
/// on loopback, but UDP promises nothing).
pub(super) const UDP_STOP_CHECK: Duration = Duration::from_secs(1);

/// Answers datagrams until the server stops. A reply that cannot be sent is counted and
/// logged; nothing a peer sends ends this thread.
pub(super) fn serve_udp(socket: &UdpSocket, mode: &protocol::Mode, shared: &Shared) {
    if let Err(e) = socket.set_read_timeout(Some(UDP_STOP_CHECK)) {
        warn!("udp: cannot set a read timeout ({e}); stopping relies on the wake-up datagram");
    }
    let mut datagram = vec![0; MAX_DATAGRAM];
    let mut reply = Vec::new();
    let mut counts = Stats::default();
    while !shared.is_stopping() {
        let (n, peer) = match socket.recv_from(&mut datagram) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                // Linux can report an ICMP error from an earlier send here; the socket is
                // still fine.
                debug!("udp: receive failed: {e}");
                continue;
            }
        };
        // The datagram that wakes us at stop must not be answered.
        if shared.is_stopping() {
            break;
        }
        counts.udp_datagrams += 1;
        counts.bytes_in += n as u64;
        reply.clear();
        protocol::udp_reply(mode, &datagram[..n], &mut reply);
        counts.messages += 1;
        match socket.send_to(&reply, peer) {
            Ok(sent) => counts.bytes_out += sent as u64,
            Err(e) => {
                counts.udp_dropped += 1;
                debug!("udp: reply to {peer} dropped: {e}");
            }
        }
    }
    shared.add_counts(&counts);
}
