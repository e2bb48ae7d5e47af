//! What the reactor's loop serves on an accepted socket: the socket itself (plain TCP), or a
//! rustls connection over it ([`TlsStream`](crate::tls::TlsStream), with `--tls-cert`).
//!
//! This module owns only that seam. The loop is generic over [`Transport`] and a server runs
//! one kind of loop or the other, so plain TCP is compiled on its own: every TLS-only step a
//! [`Stream`] may take has a default that does nothing and compiles away for a socket. It
//! must not do I/O of its own.

use std::io;

use mio::net::TcpStream;

use crate::connection::Stream;

/// What a connection of the loop runs over.
pub trait Transport: Stream + mio::event::Source + Sized {
    /// What makes one from an accepted socket: nothing for plain TCP, the certificate for TLS.
    type Acceptor;

    /// Wraps a freshly accepted socket.
    fn accept(socket: TcpStream, acceptor: &Self::Acceptor) -> io::Result<Self>;

    /// What a client turned away at the accept is sent in place of `message` (`ERR server
    /// busy`): the message itself, or for TLS an alert ([`tls::REFUSAL`](crate::tls)),
    /// which a client that expects a TLS record can read.
    fn refusal(message: &'static [u8]) -> &'static [u8];

    /// SIGHUP: reads again what [`accept`](Transport::accept) wraps a socket with, for the
    /// connections accepted from now on, and logs in one line what came of it.
    fn reload(acceptor: &Self::Acceptor);
}

impl Transport for TcpStream {
    type Acceptor = ();

    #[inline]
    fn accept(socket: TcpStream, _: &()) -> io::Result<TcpStream> {
        Ok(socket)
    }

    #[inline]
    fn refusal(message: &'static [u8]) -> &'static [u8] {
        message
    }

    fn reload(_: &()) {
        log::info!("SIGHUP ignored: plain TCP has no certificate to reload");
    }
}
