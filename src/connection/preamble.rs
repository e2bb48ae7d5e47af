//! What happens before a connection is greeted, when something must come first: the PROXY
//! header a load balancer sends (`--proxy-protocol`), or the TLS handshake. Each ends in
//! [`Connection::greet`] (or its TLS twin), after which the connection is served as any
//! other. The loop decides between the header and the greeting (admission by the header's
//! address); this file must not know about the loop.

use std::io;

use super::{Connection, Context, Progress, State, Stream, Trigger};
use crate::proxy::{self, Parsed};

/// What reading a PROXY header came to ([`Connection::read_proxy_header`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderRead {
    /// Not all of it yet: wait for the next event (or the header's deadline).
    Waiting,
    /// A whole header, with the client's address (`None`: the header carries none, so the
    /// socket's peer stands). Bytes that came behind it are kept for after the greeting.
    /// The loop now calls [`Connection::greet`], or refuses the client.
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
            match self.stream.read(&mut ctx.read_buf[..limit]) {
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

    /// After a PROXY header the loop admitted: greets. What came behind the header, and
    /// anything more the socket holds, is answered on the next turn, as a new connection's
    /// input would be: no edge will announce bytes that already arrived.
    pub fn greet(&mut self, ctx: &mut Context<'_>) -> Progress {
        self.greet_after(Trigger::HeaderReceived, ctx)
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
    /// announce it, so the caller comes back to read. A client that is not speaking TLS is
    /// sent an alert and closed as after `exit`; one that closes midway is closed.
    pub(super) fn handshake(&mut self, ctx: &mut Context<'_>) -> Progress {
        match self.stream.handshake() {
            Ok(false) => Progress::Wait,
            Ok(true) => self.greet_after(Trigger::HandshakeDone, ctx),
            Err(e) => {
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
    }
}
