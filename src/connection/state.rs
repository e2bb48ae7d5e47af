//! The connection's state machine as a table: [`State`], [`Trigger`], and [`State::on`],
//! the one place a transition is decided. Pure: no I/O, no buffers, no clock; what a state
//! does with its socket is [`Connection`](super::Connection)'s.

#[allow(unused_imports)] // the docs' links
use super::{Connection, Stream, OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER};
#[allow(unused_imports)] // the docs' links
use crate::net::LINGER_TIMEOUT;
#[allow(unused_imports)] // the docs' links
use crate::proxy;

/// Where a connection is in its life. Every transition is in [`State::on`]; what each state
/// asks of the poll is in [`Connection::interest`], what its deadline is and what happens
/// then in [`Connection::deadline`] and [`Connection::on_deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// `--proxy-protocol`: waiting for the PROXY header, which must come whole within
    /// [`proxy::HEADER_TIMEOUT`] of the accept. It is read from the socket itself, before
    /// any TLS. Nothing is written and no line is read until it has; the loop decides,
    /// from the address in it, whether to go on (to the handshake or the greeting) or to
    /// refuse the client.
    ProxyHeader,
    /// `--tls-cert`: the TLS handshake is under way, and must be complete within
    /// `--handshake-timeout` of the accept (of the PROXY header's admission, behind one). Nothing is greeted or read as a line until it
    /// is; the stream moves the handshake's bytes ([`Stream::handshake`]).
    Handshaking,
    /// The greeting is not fully written yet (it almost always is at once: a new socket's
    /// send buffer is empty). Input waits in the socket until the client has been greeted.
    Greeting,
    /// Serving: input is read and answered. Replies the socket did not take at once wait in
    /// the output buffer, and WRITABLE is asked for while any do.
    Reading,
    /// Backpressure: unsent output passed [`OUTPUT_HIGH_WATER`], so the client is not
    /// reading its replies. Nothing more is read until the output drains below
    /// [`OUTPUT_LOW_WATER`]; a client that takes nothing for the idle timeout is cut off.
    Replying,
    /// Input is over (`exit`, a line too long, the peer's EOF, an idle timeout, server
    /// shutdown): writing what is owed, then closing. `peer_eof` remembers whether the peer
    /// already half-closed, in which case there is nothing to linger for.
    Closing {
        /// The peer half-closed already.
        peer_eof: bool,
    },
    /// Everything owed is written and our write side is shut down. Input is read and
    /// discarded until the peer's EOF, for at most [`LINGER_TIMEOUT`], because closing a
    /// socket with unread input makes the kernel send a reset that can destroy replies
    /// still in flight.
    Lingering,
    /// Finished. The loop drops it in the sweep after the event batch, so a late event for
    /// this slot cannot reach a new connection that reuses it.
    Closed,
}

/// What moves a connection from one state to another; the input of [`State::on`]. The
/// first three are the output buffer's level after a write: the one write path
/// (`Connection::write`) reports it, so no state copies what the buffer already knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A whole, valid PROXY header has arrived and the loop admitted its client.
    HeaderReceived,
    /// The same over TLS: the handshake begins, with the bytes that came behind the header.
    HandshakeBegun,
    /// A whole, valid PROXY header has arrived and the loop turned its client away
    /// (`--max-connections-per-ip`); the refusal is written.
    Refused,
    /// The TLS handshake is complete.
    HandshakeDone,
    /// Everything owed has been written, and no input is held unanswered.
    Flushed,
    /// Unsent output is above [`OUTPUT_HIGH_WATER`].
    AboveHighWater,
    /// Unsent output is below [`OUTPUT_LOW_WATER`] (but not empty, or input is still held).
    BelowLowWater,
    /// No more input will be answered: `exit`, a line too long, idle timeout, shutdown.
    InputEnded,
    /// The peer half-closed (a read returned 0).
    PeerEof,
    /// Stop waiting: a deadline passed with nothing moving, the server cannot wait any
    /// longer (shutdown grace over), or the peer sent no valid PROXY header.
    GiveUp,
    /// An I/O error (reset, broken pipe): nothing more can be delivered.
    Failed,
}

impl State {
    /// The state machine: the state a connection moves to when `trigger` happens in
    /// `self`. Pairs not listed change nothing: the output level only matters where a
    /// state waits for it.
    pub fn on(self, trigger: Trigger) -> State {
        use State::*;
        use Trigger::*;
        match (self, trigger) {
            (Closed, _) | (_, Failed | GiveUp) => Closed,
            // Nobody was greeted, so nothing is owed.
            (ProxyHeader, InputEnded | PeerEof) => Closed,
            (ProxyHeader, HeaderReceived) => Greeting,
            (ProxyHeader, HandshakeBegun) => Handshaking,
            // The refusal is all that is owed: linger, so that it is not lost to a reset.
            (ProxyHeader, Refused) => Lingering,
            (Handshaking, HandshakeDone) => Greeting,
            // A failed handshake (its alert is owed) or shutdown: what is owed is written,
            // then the close is the usual one.
            (Handshaking, InputEnded) => Closing { peer_eof: false },
            (Greeting, Flushed) => Reading,
            (Reading, AboveHighWater) => Replying,
            (Replying, BelowLowWater | Flushed) => Reading,
            (Greeting | Reading | Replying, InputEnded) => Closing { peer_eof: false },
            (Greeting | Reading | Replying, PeerEof) => Closing { peer_eof: true },
            (Closing { .. }, PeerEof) => Closing { peer_eof: true },
            (Closing { peer_eof: true }, Flushed) => Closed,
            (Closing { peer_eof: false }, Flushed) => Lingering,
            (Lingering, PeerEof) => Closed,
            (state, _) => state,
        }
    }
}
