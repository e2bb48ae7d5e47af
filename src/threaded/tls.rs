//! TLS for the threaded baseline (`--tls-cert`, `--tls-key`): a rustls session over a
//! connection thread's blocking socket, which the thread reads and writes as it would the
//! socket itself.
//!
//! The calls are the reactor's, in the reactor's order (see `crate::tls`): `read_tls`,
//! `process_new_packets`, then `write_tls` while rustls wants to write. What differs is what
//! a blocking socket makes simple: a read waits for its bytes (up to the socket's read
//! timeout) instead of returning WouldBlock, and a write waits until the socket has taken
//! every record, so rustls never holds more than one write's worth of ciphertext and no
//! plaintext waits without the thread knowing. The thread's own timeouts are the socket's
//! timeouts, as over plain TCP; only the handshake has a deadline of its own.
//!
//! This module owns the handshake, the order of calls and `close_notify`. It must not frame
//! lines or log: the connection thread decides what an error or a truncated session means.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use crate::net::LINGER_TIMEOUT;

/// A TLS session, server side, over a connection's blocking socket.
pub(super) struct TlsChannel<'a> {
    socket: &'a TcpStream,
    session: ServerConnection,
    /// The session ended with a TCP EOF and no `close_notify` before it.
    truncated: bool,
}

impl<'a> TlsChannel<'a> {
    /// A session whose handshake has not begun, over a freshly accepted socket.
    pub(super) fn new(
        socket: &'a TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsChannel<'a>> {
        let session = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsChannel {
            socket,
            session,
            truncated: false,
        })
    }

    /// Completes the handshake within `timeout` (`--handshake-timeout`) of `accepted`: each
    /// read and write may wait only for what is left of it, so a client that dribbles its
    /// ClientHello a byte at a time is closed at the deadline all the same. A client that
    /// sent plaintext or garbage has been sent an alert when this returns its error.
    pub(super) fn handshake(&mut self, accepted: Instant, timeout: Duration) -> io::Result<()> {
        let deadline = accepted + timeout;
        while self.session.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("not complete within {timeout:?}"),
                ));
            }
            // Writes too: a client that does not read the server's flight is as stuck as
            // one that does not send.
            self.socket.set_read_timeout(Some(left))?;
            self.socket.set_write_timeout(Some(left))?;
            match self.session.read_tls(&mut self.socket) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed in the middle of the handshake",
                    ))
                }
                Ok(_) => self.process()?,
                // A read timeout (EAGAIN, which std calls WouldBlock): the deadline check
                // above says whether that was the last of the time.
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

    /// `process_new_packets`, then whatever it queued goes out at once: the handshake's next
    /// flight, an answer to a key update, or the alert that says why processing failed. A
    /// TLS error comes back as `InvalidData`, after its alert was sent.
    fn process(&mut self) -> io::Result<()> {
        let processed = self.session.process_new_packets();
        let sent = self.send();
        processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        sent
    }

    /// `write_tls` until rustls has nothing left to write; each write blocks up to the
    /// socket's write timeout.
    fn send(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                // Retried here, not by the caller: the plaintext is in rustls already, and
                // `write_all` retrying the whole write would send it twice.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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
    pub(super) fn end_session(&mut self) {
        if self.session.is_handshaking() {
            return;
        }
        self.session.send_close_notify();
        if self.socket.set_write_timeout(Some(LINGER_TIMEOUT)).is_ok() {
            let _ = self.send();
        }
    }

    /// Whether the session ended with a TCP EOF that no `close_notify` came before.
    pub(super) fn truncated(&self) -> bool {
        self.truncated
    }
}

impl Read for TlsChannel<'_> {
    /// Plaintext: what rustls holds decrypted, else `read_tls` (which waits up to the
    /// socket's read timeout and returns its WouldBlock) and its processing, until there is
    /// plaintext or the session has ended. `Ok(0)` ends it: the client's `close_notify`, or a
    /// TCP EOF without one, which [`truncated`](TlsChannel::truncated) then says.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                // rustls's way of saying it holds no plaintext: read some ciphertext.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.truncated = true;
                    return Ok(0);
                }
                done => return done,
            }
            // Ok(0), the socket's EOF, is noted by rustls, and its reader reports it above.
            self.session.read_tls(&mut self.socket)?;
            self.process()?;
        }
    }
}

impl Write for TlsChannel<'_> {
    /// Plaintext in as records, and every record out to the socket before this returns, so
    /// that a write that fails fails here and not on the next call. rustls takes at most
    /// its buffer limit (64 KiB) per call; `write_all` calls again for the rest.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let accepted = self.session.writer().write(buf)?;
        self.send()?;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
