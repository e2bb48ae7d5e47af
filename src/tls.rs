//! TLS for the reactor's TCP connections, with rustls (`--tls-cert`, `--tls-key`): the
//! certificate and key ([`Identity`]), and [`TlsStream`], a TLS connection over a non-blocking
//! socket that a [`Connection`](crate::connection::Connection) drives as it drives a socket.
//!
//! rustls does no I/O of its own: every byte moves because this module moved it, in this
//! order, on every readable event (the connection calls [`TlsStream::read`] until the socket
//! would block or its read budget is spent):
//!
//! 1. plaintext rustls decrypted already is handed out first, so `read_tls` is never called
//!    while rustls's plaintext buffer is full;
//! 2. `read_tls`: one read of ciphertext from the socket;
//! 3. `process_new_packets`: decrypts it, and queues what the handshake or an alert needs;
//! 4. `write_tls` while rustls wants to write, until the socket would block. A blocked write
//!    only leaves records queued: it never stops the reading (only the connection's output
//!    bound does that).
//!
//! This module owns that order, what rustls holds and how much ([`Stream::unsent`],
//! [`Stream::unread`]), the TLS connection's beginning (with the bytes that came behind a PROXY
//! header, read from the socket beneath it) and its end (`close_notify`), and what a TLS
//! client is refused with ([`REFUSAL`]). The connection's state
//! machine owns when: `Handshaking` before the greeting, `close_notify` after the last
//! reply, and the bounds, which count what rustls holds as they count the connection's own
//! buffers. It must not know about the poll or read the clock.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;

use crate::config::TlsFiles;
use crate::connection::Stream;
use crate::transport::Transport;

/// Bytes a TLS record adds to the plaintext it carries, at most: TLS 1.2 with AES-GCM adds a
/// 5-byte header, an 8-byte explicit nonce and a 16-byte tag (TLS 1.3 adds 22). What the
/// connection counts of the records rustls holds, until the socket has taken them all.
const RECORD_OVERHEAD: usize = 29;

/// The most plaintext one TLS record carries.
const RECORD_PAYLOAD: usize = 16 * 1024;

/// Records rustls may hold unsent before it refuses more plaintext (rustls's
/// `set_buffer_limit`). What it refuses waits in the connection's own output buffer, which
/// the output bound watches; the bound counts both, so a TLS client that never reads holds
/// no more than a plain one. 64 KiB is a few socket writes' worth, enough to keep a fast
/// reader busy between two events.
const SEND_LIMIT: usize = 64 * 1024;

/// What a client that expects TLS is turned away with before its handshake, at
/// `--max-connections` or `--max-connections-per-ip`: one record holding a fatal
/// `internal_error` alert (RFC 8446, section 6), which any TLS client reads where it expects
/// the server's first record, while the plain refusal's `ERR server busy` would read to it
/// as a record of no known version. TLS has no alert for "busy": `internal_error` is the one
/// for a failure that is not the peer's, and the server's log says which limit it was. The
/// record version is TLS 1.2's, which TLS 1.3 also writes on its records.
// The bytes: content type 21 (alert), record version 3.3, length 2; level 2 (fatal),
// description 80 (internal_error).
pub const REFUSAL: [u8; 7] = [21, 3, 3, 0, 2, 2, 80];

/// A certificate chain and its private key, loaded and checked against each other, as
/// rustls serves them; with the files' paths, to read them again. Clones share what is
/// served: every loop of a server holds one, and a [`reload`](Identity::reload) through
/// any of them changes what all of them hand to the connections they accept next.
#[derive(Clone)]
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    /// Replaced whole by a reload. A TLS connection keeps the `Arc` it was made with, so an
    /// established connection goes on with the certificate it was accepted with. Read once
    /// per accepted connection: an uncontended read lock and a reference count, beside a
    /// handshake's hundreds of microseconds.
    served: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Reads a PEM certificate chain (the server's certificate first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1), and checks that the key is the certificate's. The error is
    /// one line naming the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, String> {
        let named = |flag: &str, path: &Path, what: &dyn fmt::Display| {
            format!("--{flag} {}: {what}", path.display())
        };
        let cert_pem = std::fs::read(cert).map_err(|e| named("tls-cert", cert, &e))?;
        let key_pem = std::fs::read(key).map_err(|e| named("tls-key", key, &e))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| named("tls-cert", cert, &format_args!("not PEM: {e}")))?;
        if chain.is_empty() {
            return Err(named("tls-cert", cert, &"no CERTIFICATE in it"));
        }
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                named("tls-key", key, &"no PRIVATE KEY in it")
            }
            e => named("tls-key", key, &format_args!("not PEM: {e}")),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => named(
                    "tls-key",
                    key,
                    &format_args!("not the key of the certificate in {}", cert.display()),
                ),
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    named(
                        "tls-cert",
                        cert,
                        &format_args!("not a usable certificate: {e}"),
                    )
                }
                e => named(
                    "tls-key",
                    key,
                    &format_args!("not a usable private key: {e}"),
                ),
            })?;
        Ok(Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            served: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// [`load`](Identity::load) for a server that binds: the files the config names, and
    /// what is wrong with them as an error of kind `InvalidInput`.
    pub fn from_files(files: &TlsFiles) -> io::Result<Identity> {
        Identity::load(&files.cert, &files.key)
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))
    }

    /// The same files read again (a renewed certificate) and checked as at startup. On
    /// success every clone serves them from its next connection on; on an error (one line
    /// naming the file, as at startup) nothing changes and the old pair stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let renewed = Identity::load(&self.cert, &self.key)?.config();
        // Nothing that can panic runs under this lock, so a poisoned one still holds a
        // whole config.
        *self.served.write().unwrap_or_else(PoisonError::into_inner) = renewed;
        Ok(())
    }

    /// What rustls serves new TLS connections with, as of now.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.served.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A TLS connection over a non-blocking socket: plaintext in and out through `Read` and
/// `Write`, ciphertext moved to and from the socket on the way, in the order the module
/// documentation gives.
pub struct TlsStream {
    socket: TcpStream,
    rustls: ServerConnection,
    /// Ciphertext rustls holds for the socket: exact after each processing, counted up by
    /// what each write adds (at most [`RECORD_OVERHEAD`] over), zero when rustls says it has
    /// nothing to write.
    unsent: usize,
    /// Plaintext rustls decrypted that has not been read out yet.
    unread: usize,
}

impl TlsStream {
    /// A server-side TLS connection, its handshake not begun, over a freshly accepted socket.
    pub fn new(socket: TcpStream, identity: &Identity) -> io::Result<TlsStream> {
        let mut rustls = ServerConnection::new(identity.config()).map_err(io::Error::other)?;
        rustls.set_buffer_limit(Some(SEND_LIMIT));
        Ok(TlsStream {
            socket,
            rustls,
            unsent: 0,
            unread: 0,
        })
    }

    /// Who is at the other end, for a log line.
    fn peer_name(&self) -> String {
        self.socket
            .peer_addr()
            .map_or_else(|_| "a client gone already".into(), |a| a.to_string())
    }

    /// `process_new_packets`, then whatever it queued (the handshake's next flight, an alert,
    /// an answer to a key update) is sent at once, as far as the socket takes it. A TLS error
    /// comes back as `InvalidData`, after its alert was sent.
    fn process(&mut self) -> io::Result<()> {
        let processed = self.rustls.process_new_packets();
        if let Ok(state) = &processed {
            self.unsent = state.tls_bytes_to_write();
            self.unread = state.plaintext_bytes_to_read();
        }
        let sent = self.send();
        match processed {
            Ok(_) => sent.map(drop),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// `write_tls` while rustls wants to write, until the socket would block; returns the
    /// ciphertext bytes it took. WouldBlock is not an error here: the records wait.
    fn send(&mut self) -> io::Result<usize> {
        let mut sent = 0;
        while self.rustls.wants_write() {
            match self.rustls.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.unsent = match self.rustls.wants_write() {
            true => self.unsent.saturating_sub(sent),
            false => 0,
        };
        Ok(sent)
    }
}

impl Read for TlsStream {
    /// Plaintext: what rustls holds decrypted, else one `read_tls` and its processing, again
    /// until there is plaintext or the socket would block. `Ok(0)` is the end of the TLS connection:
    /// the peer's `close_notify`, or a TCP EOF without one, which is logged as a truncated
    /// TLS connection (a peer that cut the connection, or an attacker who did, looks the same).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.rustls.reader().read(buf) {
                Ok(n) => {
                    self.unread = self.unread.saturating_sub(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    log::info!(
                        "{}: TCP EOF without a TLS close_notify: a truncated session",
                        self.peer_name()
                    );
                    return Ok(0);
                }
                Err(e) => return Err(e),
            }
            // Ok(0), the socket's EOF, is noted by rustls; the reader reports it above.
            self.rustls.read_tls(&mut self.socket)?;
            self.process()?;
        }
    }
}

impl Write for TlsStream {
    /// Plaintext in, as records rustls holds until the socket takes them. Records already
    /// held go out first, to make room; when rustls holds `SEND_LIMIT` and the socket takes
    /// none of it, this is WouldBlock, as a full socket would be.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send()?;
        let accepted = self.rustls.writer().write(buf)?;
        self.unsent += accepted + accepted.div_ceil(RECORD_PAYLOAD) * RECORD_OVERHEAD;
        self.send()?;
        if accepted == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send().map(drop)
    }
}

impl Stream for TlsStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.socket.peer_addr().ok()
    }

    /// The socket's write side; `close_notify` went out before (see
    /// [`queue_close_notify`](Stream::queue_close_notify)).
    fn shutdown_write(&self) -> io::Result<()> {
        self.socket.shutdown(Shutdown::Write)
    }

    /// A short read of plaintext says nothing about the socket: rustls hands out what one
    /// read of ciphertext decrypted to, while more may wait in the socket.
    const SHORT_READ_DRAINS: bool = false;

    fn handshaking(&self) -> bool {
        self.rustls.is_handshaking()
    }

    /// `read_tls` and `process_new_packets` (which sends each flight) until the handshake is
    /// done or the socket would block. A handshake message may not exceed 64 KiB (rustls's
    /// bound), so this reads a bounded amount.
    fn handshake(&mut self) -> io::Result<bool> {
        while self.rustls.is_handshaking() {
            match self.rustls.read_tls(&mut self.socket) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed in the middle of the handshake",
                    ))
                }
                Ok(_) => self.process()?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn log_handshake_failure(&self, why: &dyn fmt::Display) {
        log::info!("{}: TLS handshake failed, closing: {why}", self.peer_name());
    }

    fn unsent(&self) -> usize {
        self.unsent
    }

    fn unread(&self) -> usize {
        self.unread
    }

    fn send_unsent(&mut self) -> io::Result<usize> {
        self.send()
    }

    /// Queues `close_notify` behind every record already held (rustls sends it once, and
    /// not at all after a fatal alert); [`send_unsent`](Stream::send_unsent) sends it.
    fn queue_close_notify(&mut self) {
        self.rustls.send_close_notify();
        if self.rustls.wants_write() {
            self.unsent = self.unsent.max(RECORD_OVERHEAD);
        }
    }

    /// Before the TLS connection (a PROXY header), and after `close_notify` or a failed handshake
    /// (lingering drops the socket's bytes without decrypting them): the socket itself.
    fn read_beneath(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.socket).read(buf)
    }

    /// The bytes that came behind a PROXY header are the first of the TLS connection's: each
    /// `read_tls` from them is processed as one from the socket would be (an alert is sent
    /// for plaintext). A header is at most `proxy::MAX_HEADER` bytes, so these are fewer,
    /// well within what rustls buffers.
    fn begin_handshake(&mut self, early: &[u8]) -> io::Result<()> {
        let mut rest = early;
        while !rest.is_empty() {
            self.rustls.read_tls(&mut rest)?;
            self.process()?;
        }
        Ok(())
    }

    /// [`REFUSAL`], beneath the TLS connection, which has not begun: a TLS client reads it where
    /// it expects the server's first record.
    fn refuse(&mut self, _message: &[u8]) -> io::Result<usize> {
        (&self.socket).write(&REFUSAL)
    }
}

impl mio::event::Source for TlsStream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}

impl Transport for TlsStream {
    type Acceptor = Identity;

    fn accept(socket: TcpStream, identity: &Identity) -> io::Result<TlsStream> {
        TlsStream::new(socket, identity)
    }

    fn refusal(_message: &'static [u8]) -> &'static [u8] {
        &REFUSAL
    }

    fn reload(identity: &Identity) {
        identity.reload_on_sighup();
    }
}

impl Identity {
    /// SIGHUP, in either server: [`reload`](Identity::reload), and one log line saying
    /// what came of it.
    pub fn reload_on_sighup(&self) {
        match self.reload() {
            Ok(()) => log::info!(
                "SIGHUP: new connections get the certificate in {} (key {}); established ones \
                 keep theirs",
                self.cert.display(),
                self.key.display()
            ),
            Err(e) => log::error!(
                "SIGHUP: certificate not reloaded: {e}; new connections still get the \
                 previous one"
            ),
        }
    }
}
