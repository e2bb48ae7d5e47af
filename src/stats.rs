//! What a server did: the one type that counts, in both servers. Each reactor loop, each
//! connection thread of the baseline, its accept loop and its UDP thread keep a [`Stats`]
//! of their own (plain integers no other thread touches) and add them up at the end; the
//! sum is the one-line summary logged at shutdown (its `Display`), what
//! [`Running::shutdown`](crate::running::Running::shutdown) returns, and, added up at a
//! scrape, what the reactor's metrics show. Plain data, no I/O.

use std::time::Duration;

/// What a server did, logged as the one-line summary at shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted (busy refusals not included).
    pub connections: u64,
    /// TCP connections refused with `ERR server busy`.
    pub refused: u64,
    /// TCP connections refused because their address was at `--max-connections-per-ip`.
    pub refused_per_ip: u64,
    /// Lingering connections (owing nothing, waiting only for their peer's EOF) closed at
    /// `--max-connections` to admit a new client.
    pub lingering_closed: u64,
    /// Lingering connections closed at `--max-connections-per-ip` to admit a new client
    /// from the same address.
    pub lingering_closed_per_ip: u64,
    /// Messages answered, TCP and UDP.
    pub messages: u64,
    /// Bytes read from clients, TCP and UDP.
    pub bytes_in: u64,
    /// Bytes written to clients, TCP and UDP.
    pub bytes_out: u64,
    /// UDP replies dropped because they could not be sent.
    pub udp_dropped: u64,
    /// `--proxy-protocol`: TCP connections closed without a greeting because their PROXY
    /// header was invalid, or did not arrive whole in time or before the peer closed.
    pub proxy_rejected: u64,
    /// UDP datagrams received.
    pub udp_datagrams: u64,
    /// `--tls-cert`: TCP connections closed before their TLS handshake completed: not
    /// TLS at all (they were sent an alert), a failed or cut-off handshake, or one not
    /// complete within `--handshake-timeout`.
    pub tls_rejected: u64,
    /// The longest loop turn, from `poll` returning to the end of the turn (the reactor
    /// only: the threaded server has no turns). What a fresh client or a UDP ping may have
    /// had to wait on top of its own turn.
    pub longest_turn: Duration,
    /// The most bytes all connections' buffers held at the end of a turn, server-wide
    /// (the reactor only), against `--max-buffer-memory`.
    pub peak_buffered: usize,
}

impl Stats {
    /// Adds another loop's (or thread's) counts to these.
    pub fn add(&mut self, other: &Stats) {
        self.connections += other.connections;
        self.refused += other.refused;
        self.refused_per_ip += other.refused_per_ip;
        self.lingering_closed += other.lingering_closed;
        self.lingering_closed_per_ip += other.lingering_closed_per_ip;
        self.messages += other.messages;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.udp_dropped += other.udp_dropped;
        self.proxy_rejected += other.proxy_rejected;
        self.udp_datagrams += other.udp_datagrams;
        self.tls_rejected += other.tls_rejected;
        self.longest_turn = self.longest_turn.max(other.longest_turn);
        self.peak_buffered = self.peak_buffered.max(other.peak_buffered);
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "served {} connections ({} refused busy, {} refused per address), {} messages, {} bytes in, {} bytes out, {} udp replies dropped",
            self.connections, self.refused, self.refused_per_ip, self.messages, self.bytes_in, self.bytes_out, self.udp_dropped
        )?;
        let lingering_closed = self.lingering_closed + self.lingering_closed_per_ip;
        if lingering_closed > 0 {
            write!(
                f,
                ", {lingering_closed} lingering closed to admit new clients"
            )?;
        }
        if self.proxy_rejected > 0 {
            write!(f, ", {} without a valid PROXY header", self.proxy_rejected)?;
        }
        if self.tls_rejected > 0 {
            write!(
                f,
                ", {} without a complete TLS handshake",
                self.tls_rejected
            )?;
        }
        if !self.longest_turn.is_zero() {
            write!(
                f,
                ", longest loop turn {:.1} ms, at most {} bytes held in buffers",
                self.longest_turn.as_secs_f64() * 1e3,
                self.peak_buffered
            )?;
        }
        Ok(())
    }
}
