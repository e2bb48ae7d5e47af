//! What a connection thread reads requests from and writes replies to: its socket, or with
//! `--tls-cert` a rustls connection over it (`tls.rs`).
//!
//! This module owns the choice between the two and the dispatch to either, so the
//! connection thread (`connection.rs`) has one code path for both; the steps only TLS has
//! (the handshake, truncation, `close_notify`) do nothing on a plain socket. It must not
//! frame lines, log or decide what an error means, and it must not drive the TLS connection
//! itself: that is `tls.rs`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ServerConfig;

#[cfg(feature = "tls")]
use super::tls;

/// What a connection thread reads requests from and writes replies to: the socket itself,
/// or a TLS connection over it. The steps only TLS has do nothing on a plain socket.
// One per connection thread, on its stack: the bytes a plain connection leaves unused are
// its own, and boxing the TLS connection would cost every TLS connection an allocation.
#[allow(clippy::large_enum_variant)]
pub(super) enum Channel<'a> {
    Plain(&'a TcpStream),
    /// `--tls-cert`.
    #[cfg(feature = "tls")]
    Tls(tls::TlsChannel<'a>),
}

/// What the accept loop begins connections' TLS connections with: with `--tls-cert`, the
/// certificate, read at bind and read again at SIGHUP; `None` serves plain TCP.
#[cfg(feature = "tls")]
pub(super) type Acceptor = Option<crate::tls::Identity>;

/// Built without the `tls` feature, every connection is plain TCP: always `None`.
#[cfg(not(feature = "tls"))]
pub(super) type Acceptor = Option<std::convert::Infallible>;

/// What a connection thread needs to begin a TLS connection: rustls's config as of its
/// accept, shared by every connection; `None` serves plain TCP.
#[cfg(feature = "tls")]
pub(super) type TlsConfig = Option<Arc<rustls::ServerConfig>>;

/// Built without the `tls` feature, every connection is plain TCP: always `None`.
#[cfg(not(feature = "tls"))]
pub(super) type TlsConfig = Option<std::convert::Infallible>;

/// Reads the certificate `config` names, if any: once, when the server binds.
pub(super) fn acceptor(config: &ServerConfig) -> io::Result<Acceptor> {
    #[cfg(feature = "tls")]
    return config
        .tls
        .as_ref()
        .map(crate::tls::Identity::from_files)
        .transpose();
    #[cfg(not(feature = "tls"))]
    {
        let _ = config;
        Ok(None)
    }
}

/// The TLS config for a connection accepted now.
pub(super) fn tls_config(acceptor: &Acceptor) -> TlsConfig {
    #[cfg(feature = "tls")]
    return acceptor.as_ref().map(crate::tls::Identity::config);
    #[cfg(not(feature = "tls"))]
    acceptor.map(|never| match never {})
}

/// What a client turned away before it is served is sent in place of `message`: the
/// message, or over TLS an alert a TLS client can read ([`crate::tls::REFUSAL`]).
pub(super) fn refusal(tls: bool, message: &'static [u8]) -> &'static [u8] {
    #[cfg(feature = "tls")]
    if tls {
        return &crate::tls::REFUSAL;
    }
    let _ = tls;
    message
}

impl<'a> Channel<'a> {
    /// A TLS connection over `socket`, its handshake not begun, if the server has a
    /// certificate; else the socket itself.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub(super) fn open(socket: &'a TcpStream, tls: TlsConfig) -> io::Result<Channel<'a>> {
        #[cfg(feature = "tls")]
        if let Some(config) = tls {
            return tls::TlsChannel::new(socket, config).map(Channel::Tls);
        }
        Ok(Channel::Plain(socket))
    }

    /// The socket's bytes that arrived before the TLS connection began (behind a PROXY header):
    /// over TLS they are the start of the ClientHello, which the TLS connection reads first, and
    /// nothing is left; on a plain socket they are the client's first input, returned.
    pub(super) fn begin(&mut self, early: Vec<u8>) -> Vec<u8> {
        match self {
            Channel::Plain(_) => early,
            #[cfg(feature = "tls")]
            Channel::Tls(tls) => {
                tls.begin(early);
                Vec::new()
            }
        }
    }

    /// What a client turned away before it is served is sent in place of `message`.
    pub(super) fn refusal(&self, message: &'static [u8]) -> &'static [u8] {
        refusal(!matches!(self, Channel::Plain(_)), message)
    }

    /// TLS: completes the handshake within `timeout` of `accepted`, or says why not (a
    /// client that sent something else than a ClientHello has been sent an alert).
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    pub(super) fn handshake(&mut self, accepted: Instant, timeout: Duration) -> io::Result<()> {
        match self {
            Channel::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            Channel::Tls(tls) => tls.handshake(accepted, timeout),
        }
    }

    /// TLS: the TLS connection ended with a TCP EOF and no `close_notify` before it.
    pub(super) fn truncated(&self) -> bool {
        match self {
            Channel::Plain(_) => false,
            #[cfg(feature = "tls")]
            Channel::Tls(tls) => tls.truncated(),
        }
    }

    /// TLS: sends `close_notify`, after the last reply and before the lingering close.
    pub(super) fn send_close_notify(&mut self) {
        match self {
            Channel::Plain(_) => {}
            #[cfg(feature = "tls")]
            Channel::Tls(tls) => tls.send_close_notify(),
        }
    }
}

impl Read for Channel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(socket) => socket.read(buf),
            #[cfg(feature = "tls")]
            Channel::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Channel<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(socket) => socket.write(buf),
            #[cfg(feature = "tls")]
            Channel::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Channel::Plain(socket) => socket.flush(),
            #[cfg(feature = "tls")]
            Channel::Tls(tls) => tls.flush(),
        }
    }
}
