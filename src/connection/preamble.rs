//! What happens before a connection is greeted, in order on the raw socket, each step a
//! state of its own: the PROXY header a load balancer sends (`--proxy-protocol`), read from
//! the socket beneath any TLS; the admission of the client it names, which the loop
//! decides ([`Connection::admitted`] or [`Connection::refuse`]); the TLS handshake
//! (`--tls-cert`), which reads first what came behind the header; then the greeting, after
//! which the connection is served as any other. This file must not know about the loop.

use std::io;

use super::{Connection, Context, Progress, State, Stream, Trigger};
use crate::proxy::{self, Parsed};

/// What reading a PROXY header came to ([`Connection::read_proxy_header`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderRead {
    /// Not all of it yet: wait for the next event (or the header's deadline).
    Waiting,
    /// A whole header, with the client's address (`None`: the header carries none, so the
    /// socket's peer stands). Bytes that came behind it are kept for the next step: the
    /// client's first input after the greeting, or over TLS the TLS connection's first bytes.
    /// The loop now calls [`Connection::admitted`], or [`Connection::refuse`].
    Received(Option<std::net::SocketAddr>),
    /// No valid header (the reason says why), or the peer closed first: the connection
    /// is closed, without a greeting.
    Rejected(String),
}

impl<S: Stream> Connection<S> {
    /// `--proxy-protocol`: reads until the PROXY header is whole, the socket would block,
    /// or the header is found invalid. The header is gathered in `held` (bounded by
    /// [`proxy::MAX_HEADER`]); what follows it stays there, answered after the greeting.
    pub fn read_proxy_header(&mut self, ctx: &mut Context<'_>) -> HeaderRead {
        while self.state == State::ProxyHeader {
            let limit = proxy::MAX_HEADER
                .saturating_sub(self.held.len())
                .clamp(1, ctx.read_buf.len());
            match self.stream.read_beneath(&mut ctx.read_buf[..limit]) {
                Ok(0) => {
                    ctx.stats.proxy_rejected += 1;
                    self.transition(Trigger::PeerEof, ctx.now);
                    return HeaderRead::Rejected("closed before its PROXY header was whole".into());
                }
                Ok(n) => {
                    ctx.stats.bytes_in += n as u64;
                    self.held.extend_from_slice(&ctx.read_buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let why = format!("read failed: {e}");
                    self.fail("read", e);
                    return HeaderRead::Rejected(why);
                }
            }
            match proxy::parse(&self.held) {
                Parsed::Incomplete => continue,
                Parsed::Header { len, source } => {
                    self.held.drain(..len);
                    if self.held.is_empty() {
                        self.held = Vec::new();
                    }
                    return HeaderRead::Received(source);
                }
                Parsed::Invalid(why) => {
                    ctx.stats.proxy_rejected += 1;
                    self.transition(Trigger::GiveUp, ctx.now);
                    return HeaderRead::Rejected(why);
                }
            }
        }
        HeaderRead::Waiting
    }

    /// After a PROXY header whose client the loop admitted: the next step. Over TLS the
    /// handshake begins, and what came behind the header, the start of the ClientHello, is
    /// the TLS connection's first input; anything more the socket holds is read at once, since no
    /// edge will announce bytes that already arrived. Otherwise the client is greeted, and
    /// what came behind the header is answered on the next turn, as a new connection's
    /// input would be.
    pub fn admitted(&mut self, ctx: &mut Context<'_>) -> Progress {
        if !self.stream.handshaking() {
            return self.greet_after(Trigger::HeaderReceived, ctx);
        }
        self.transition(Trigger::HandshakeBegun, ctx.now);
        let early = std::mem::take(&mut self.held);
        match self.stream.begin_handshake(&early) {
            Ok(()) => self.handshake(ctx),
            Err(e) => self.handshake_failed(e, ctx),
        }
    }

    /// After a PROXY header whose client the loop turned away (`--max-connections-per-ip`):
    /// `message`, or what a TLS client reads in its place (an alert), on the socket, then
    /// the lingering close, so that a reset does not destroy the refusal before the client
    /// reads it. What the socket already holds is read and dropped at once: no edge will
    /// announce it.
    pub fn refuse(&mut self, message: &[u8], ctx: &mut Context<'_>) -> Progress {
        match self.stream.refuse(message) {
            Ok(n) => ctx.stats.bytes_out += n as u64,
            Err(e) => {
                self.fail("write", e);
                return Progress::Wait;
            }
        }
        self.held = Vec::new();
        self.transition(Trigger::Refused, ctx.now);
        self.discard_input(ctx)
    }

    pub(super) fn greet_after(&mut self, trigger: Trigger, ctx: &mut Context<'_>) -> Progress {
        self.transition(trigger, ctx.now);
        self.write(ctx.greeting, ctx.stats, ctx.now);
        match self.state {
            State::Reading => Progress::ReadAgain,
            _ => Progress::Wait,
        }
    }

    /// TLS: moves the handshake on; once it is complete, greets. Plaintext that came in
    /// the handshake's last flight is inside the stream already, and no socket edge will
    /// announce it, so the caller comes back to read.
    pub(super) fn handshake(&mut self, ctx: &mut Context<'_>) -> Progress {
        match self.stream.handshake() {
            Ok(false) => Progress::Wait,
            Ok(true) => self.greet_after(Trigger::HandshakeDone, ctx),
            Err(e) => self.handshake_failed(e, ctx),
        }
    }

    /// A client that is not speaking TLS is sent an alert and closed as after `exit`; one
    /// that closes midway is closed.
    fn handshake_failed(&mut self, e: io::Error, ctx: &mut Context<'_>) -> Progress {
        ctx.stats.tls_rejected += 1;
        self.stream.log_handshake_failure(&e);
        if e.kind() == io::ErrorKind::InvalidData {
            // The alert is sent or queued: deliver it, then close without a reset.
            self.transition(Trigger::InputEnded, ctx.now);
            self.write(&[], ctx.stats, ctx.now);
        } else {
            self.transition(Trigger::Failed, ctx.now);
        }
        Progress::Wait
    }
}
