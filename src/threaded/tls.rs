//! TLS for the threaded baseline (`--tls-cert`, `--tls-key`): rustls's own blocking stream,
//! [`rustls::StreamOwned`], over a connection thread's socket, which the thread reads and
//! writes as it would the socket itself.
//!
//! A blocking socket is what `StreamOwned` is made for: a read waits for its bytes (up to
//! the socket's read timeout, whose WouldBlock it passes on), and a write waits until the
//! socket has taken its records. So the thread's own timeouts are the socket's timeouts,
//! as over plain TCP, and no plaintext waits inside rustls without the thread knowing. What
//! this module adds is what a server needs beyond it: a deadline for the handshake, bytes
//! that came before the TLS connection (behind a PROXY header), a TCP EOF without `close_notify`
//! told apart from a clean end, and `close_notify` sent before the lingering close.
//!
//! It must not frame lines or log: the connection thread decides what an error or a
//! truncated TLS connection means.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};

use crate::net::LINGER_TIMEOUT;

/// A TLS connection, server side, over a connection's blocking socket.
pub(super) struct TlsChannel<'a> {
    stream: StreamOwned<ServerConnection, Beneath<'a>>,
    /// The TLS connection ended with a TCP EOF and no `close_notify` before it.
    truncated: bool,
}

/// The socket as the TLS connection reads it: first the bytes that arrived before the TLS connection
/// began (the start of a ClientHello, read with the PROXY header in front of it), then the
/// socket itself. Writes go straight to the socket.
///
/// While a deadline is set (the handshake's), every read and write waits only for what is
/// left of it. `complete_io` goes on reading for as long as bytes keep coming, so a
/// timeout set once before it would restart with every byte of a client that dribbles.
struct Beneath<'a> {
    early: Vec<u8>,
    socket: &'a TcpStream,
    deadline: Option<Instant>,
}

impl Beneath<'_> {
    /// Applies the deadline, if one is set, to the next read and write.
    fn time_left(&self) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.socket.set_read_timeout(Some(left))?;
        self.socket.set_write_timeout(Some(left))
    }
}

impl Read for Beneath<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.early.is_empty() {
            self.time_left()?;
            return (&mut self.socket).read(buf);
        }
        let n = buf.len().min(self.early.len());
        buf[..n].copy_from_slice(&self.early[..n]);
        self.early.drain(..n);
        Ok(n)
    }
}

impl Write for Beneath<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.time_left()?;
        (&mut self.socket).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> TlsChannel<'a> {
    /// A TLS connection whose handshake has not begun, over a freshly accepted socket.
    pub(super) fn new(
        socket: &'a TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsChannel<'a>> {
        let rustls = ServerConnection::new(config).map_err(io::Error::other)?;
        let beneath = Beneath {
            early: Vec::new(),
            socket,
            deadline: None,
        };
        Ok(TlsChannel {
            stream: StreamOwned::new(rustls, beneath),
            truncated: false,
        })
    }

    /// Bytes read from the socket before the TLS connection began (what came behind a PROXY
    /// header): the TLS connection reads them first.
    pub(super) fn begin(&mut self, early: Vec<u8>) {
        self.stream.sock.early = early;
    }

    /// Completes the handshake within `timeout` (`--handshake-timeout`) of `accepted`: each
    /// read and write may wait only for what is left of it, so a client that dribbles its
    /// ClientHello a byte at a time is closed at the deadline all the same. A client that
    /// sent plaintext or garbage has been sent an alert when this returns its error
    /// (`complete_io` writes it before it reports the error).
    pub(super) fn handshake(&mut self, accepted: Instant, timeout: Duration) -> io::Result<()> {
        let deadline = accepted + timeout;
        self.stream.sock.deadline = Some(deadline);
        let done = self.complete_handshake(deadline, timeout);
        // From here on the thread's own timeouts (idle, line) are the socket's.
        self.stream.sock.deadline = None;
        done
    }

    fn complete_handshake(&mut self, deadline: Instant, timeout: Duration) -> io::Result<()> {
        let StreamOwned { conn, sock } = &mut self.stream;
        while conn.is_handshaking() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("not complete within {timeout:?}"),
                ));
            }
            match conn.complete_io(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed in the middle of the handshake",
                    ))
                }
                // A read or write that ran out of the handshake's time (EAGAIN, which std
                // calls WouldBlock, or the deadline `Beneath` found passed): the check above
                // says so.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queues `close_notify` behind the last reply and sends it, before the connection's
    /// lingering close sends FIN. Nothing after a failed handshake (its alert said enough;
    /// rustls sends nothing after a fatal alert). A client that has stopped reading must not
    /// hold the thread for another write timeout: this write waits [`LINGER_TIMEOUT`] at
    /// most, and a `close_notify` that cannot go out is only a less polite close.
    pub(super) fn send_close_notify(&mut self) {
        if self.stream.conn.is_handshaking() {
            return;
        }
        self.stream.conn.send_close_notify();
        if self
            .stream
            .sock
            .socket
            .set_write_timeout(Some(LINGER_TIMEOUT))
            .is_ok()
        {
            let _ = self.stream.flush();
        }
    }

    /// Whether the TLS connection ended with a TCP EOF that no `close_notify` came before.
    pub(super) fn truncated(&self) -> bool {
        self.truncated
    }
}

impl Read for TlsChannel<'_> {
    /// Plaintext, as `StreamOwned` reads it (waiting up to the socket's read timeout, whose
    /// WouldBlock it returns). `Ok(0)` ends the TLS connection: the client's `close_notify`, or a
    /// TCP EOF without one, which rustls reports as `UnexpectedEof` and
    /// [`truncated`](TlsChannel::truncated) then says.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.truncated = true;
                Ok(0)
            }
            done => done,
        }
    }
}

impl Write for TlsChannel<'_> {
    /// Plaintext in as records, written to the socket as far as it takes them; a write that
    /// failed is reported by the next call, or by [`flush`](Write::flush), which the thread
    /// calls after every batch of replies.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    /// Every record out to the socket, or the error that stopped it.
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
