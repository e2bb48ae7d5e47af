//! What a connection reads and writes through: [`Stream`], a non-blocking byte stream with
//! the few steps a TLS layer adds, which a plain socket does not have. It owns no
//! policy: when to call each step is the connection's.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

/// A byte stream the connection can drive: a non-blocking socket in the reactor, a TLS
/// TLS connection over one ([`TlsStream`](crate::tls::TlsStream)), an in-memory fake in tests.
///
/// Everything past `shutdown_write` is what a TLS layer adds to a socket. The defaults
/// are a socket's, which has none: they do nothing and compile away, so plain TCP runs the
/// same instructions as if they were not there.
pub trait Stream: Read + Write {
    /// The peer's address, for a log line; `None` if the socket cannot tell.
    fn peer(&self) -> Option<SocketAddr>;

    /// Shuts down the write side: the peer reads EOF after the bytes already sent.
    fn shutdown_write(&self) -> io::Result<()>;

    /// A read shorter than asked for means nothing more is waiting, where the platform
    /// promises it ([`SHORT_READ_DRAINS`](crate::net::SHORT_READ_DRAINS)).
    const SHORT_READ_DRAINS: bool = true;

    /// A handshake must complete before the greeting.
    fn handshaking(&self) -> bool {
        false
    }

    /// Moves the handshake on as far as the socket allows: `true` once it is complete.
    fn handshake(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Logs, with the peer's address, why its handshake ended the connection.
    fn log_handshake_failure(&self, _why: &dyn fmt::Display) {}

    /// Bytes written to the stream that it holds, not yet in the socket (TLS records).
    /// They are output the connection owes, under the same bound as its own.
    fn unsent(&self) -> usize {
        0
    }

    /// Bytes the stream took from the socket that have not been read out of it yet
    /// (decrypted plaintext). No socket event will announce them.
    fn unread(&self) -> usize {
        0
    }

    /// Writes what the stream holds, as far as the socket takes it; returns how much went.
    fn send_unsent(&mut self) -> io::Result<usize> {
        Ok(0)
    }

    /// Queues the end of the TLS connection (TLS `close_notify`) behind everything written.
    fn queue_close_notify(&mut self) {}

    /// Reads the socket beneath any TLS: the bytes that come before the TLS connection begins
    /// (a PROXY header), and those dropped unread after it ended (lingering).
    fn read_beneath(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    /// Begins the TLS connection with `early`, bytes read from the socket before it (what came
    /// behind a PROXY header: the start of a ClientHello), and moves the handshake on as far
    /// as they take it. Called only while [`handshaking`](Stream::handshaking). An error is
    /// the handshake's.
    fn begin_handshake(&mut self, _early: &[u8]) -> io::Result<()> {
        Ok(())
    }

    /// Turns away a client not served yet (its PROXY header named an address at its
    /// limit): writes `message` on the socket, or what a client of the TLS connection reads in
    /// its place (for TLS an alert, [`tls::REFUSAL`](crate::tls)); returns how much the
    /// socket took. A new connection's empty send buffer takes it whole.
    fn refuse(&mut self, message: &[u8]) -> io::Result<usize> {
        self.write(message)
    }
}

impl Stream for mio::net::TcpStream {
    fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
