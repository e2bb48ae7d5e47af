//! loadgen's TLS (`--tls`): the client configuration, and the TLS state over one non-blocking
//! TCP connection that the TCP client reads and writes through as it would a socket.
//!
//! rustls does no I/O of its own. Every byte moves because a call here moved it:
//! [`TlsState::read`] hands out the plaintext rustls already decrypted, and only when there
//! is none reads ciphertext (`read_tls`), decrypts it (`process_new_packets`) and sends
//! what that queued (the handshake's replies, an alert); [`TlsState::write`] gives rustls
//! plaintext and sends the records it makes; [`TlsState::flush`] sends what is queued until
//! the socket would block. So a client drives its handshake just by reading.
//!
//! Without the `tls` feature the types still exist but cannot be made: an
//! `Option<ClientTls>` is always `None`, and the client's code needs no `cfg` of its own.

use std::io;

use mio::net::TcpStream;

/// What `--tls` connects with: the verifier (`--tls-ca`, or none with `--tls-insecure`)
/// and the name the certificate must carry.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct ClientTls {
    config: std::sync::Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
    verified: bool,
}

/// TLS is not built in (the `tls` feature is off): there is nothing to connect with.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub enum ClientTls {}

#[cfg(feature = "tls")]
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientTls({:?}, verified: {})",
            self.server_name, self.verified
        )
    }
}

#[cfg(not(feature = "tls"))]
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

#[cfg(feature = "tls")]
impl ClientTls {
    /// Trusts the certificates in the PEM file `ca`, or, with `None`, any certificate at
    /// all (`--tls-insecure`: encrypted, not authenticated). The server's certificate must
    /// name `server_name` (a DNS name or an IP address). Errors are one line naming the
    /// file or the name.
    pub fn new(ca: Option<&std::path::Path>, server_name: &str) -> Result<ClientTls, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};

        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match ca {
            Some(path) => {
                let named =
                    |what: &dyn std::fmt::Display| format!("--tls-ca {}: {what}", path.display());
                let pem = std::fs::read(path).map_err(|e| named(&e))?;
                let mut roots = rustls::RootCertStore::empty();
                let mut pinned = Vec::new();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| named(&e))?;
                    roots.add(cert.clone()).map_err(|e| named(&e))?;
                    pinned.push(cert);
                }
                if roots.is_empty() {
                    return Err(named(&"no certificate in it"));
                }
                let chained = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| named(&e))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(std::sync::Arc::new(PinnedOrChained {
                        pinned,
                        chained,
                    }))
                    .with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("--tls-server-name {server_name:?}: {e}"))?;
        Ok(ClientTls {
            config: std::sync::Arc::new(config),
            server_name,
            verified: ca.is_some(),
        })
    }

    /// Whether the server's certificate is checked (`--tls-ca`) or not (`--tls-insecure`).
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The TLS state for one new connection: its ClientHello is queued, sent by the first
    /// [`TlsState::flush`].
    pub(super) fn start(&self) -> io::Result<TlsState> {
        rustls::ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map(|conn| TlsState(Box::new(conn)))
            .map_err(io::Error::other)
    }
}

#[cfg(not(feature = "tls"))]
impl ClientTls {
    /// Without the `tls` feature there is none to ask.
    pub fn verified(&self) -> bool {
        match *self {}
    }

    pub(super) fn start(&self) -> io::Result<TlsState> {
        match *self {}
    }
}

/// `--tls-ca`'s verifier. A server certificate that is itself in the file is pinned: its
/// bytes are trusted as they are, as `openssl s_client -CAfile` and curl's `--cacert` trust
/// them, and only its name and its validity period are checked. That is how the usual
/// self-signed test certificate (`openssl req -x509`, which marks it `CA:TRUE`) is accepted,
/// where a chain check refuses a CA certificate as the server's own. Any other certificate
/// must chain to one in the file, checked by rustls's own verifier.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct PinnedOrChained {
    /// Every certificate in the `--tls-ca` file, DER.
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The chain check, and the handshake signatures for both.
    chained: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
}

#[cfg(feature = "tls")]
impl rustls::client::danger::ServerCertVerifier for PinnedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if !self
            .pinned
            .iter()
            .any(|cert| cert.as_ref() == end_entity.as_ref())
        {
            return self.chained.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        check_pinned(end_entity, server_name, now)?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chained.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chained.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chained.supported_verify_schemes()
    }
}

/// What is still checked of a pinned certificate: that `now` is within its validity period
/// and that it names `server_name`, by its subjectAltName as rustls checks it or, when it
/// has none, by its subject's common name, as OpenSSL (and so curl) does.
#[cfg(feature = "tls")]
fn check_pinned(
    cert: &rustls::pki_types::CertificateDer<'_>,
    server_name: &rustls::pki_types::ServerName<'_>,
    now: rustls::pki_types::UnixTime,
) -> Result<(), rustls::Error> {
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::CertificateError;

    let facts = super::certificate::read(cert).ok_or(CertificateError::BadEncoding)?;
    let at = |secs| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    if now.as_secs() < facts.not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: at(facts.not_before),
        }
        .into());
    }
    if now.as_secs() > facts.not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: at(facts.not_after),
        }
        .into());
    }
    if facts.has_subject_alt_name {
        let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
        return rustls::client::verify_server_name(&parsed, server_name);
    }
    match (server_name, &facts.common_name) {
        (ServerName::DnsName(dns), Some(common_name))
            if common_name.eq_ignore_ascii_case(dns.as_ref()) =>
        {
            Ok(())
        }
        _ => Err(CertificateError::NotValidForNameContext {
            expected: server_name.to_owned(),
            presented: facts
                .common_name
                .iter()
                .map(|name| format!("{name} (its common name)"))
                .collect(),
        }
        .into()),
    }
}

/// The name of the TLS error inside `e`, if it is one: its variant and, for a certificate
/// error, the certificate error's (`InvalidCertificate(UnknownIssuer)`), without the
/// details that differ from one connection to the next.
#[cfg(feature = "tls")]
pub(super) fn error_name(e: &io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    // Debug names the variants; what is nested two deep (names, times) is dropped.
    let mut name = String::new();
    let mut depth = 0usize;
    for c in format!("{tls:?}").chars() {
        match c {
            '(' | '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    name.push('(');
                }
            }
            ')' | '}' | ']' => {
                if depth == 1 {
                    name = name.trim_end().to_string();
                    name.push(')');
                }
                depth = depth.saturating_sub(1);
            }
            _ if depth <= 1 => name.push(c),
            _ => {}
        }
    }
    Some(name)
}

/// Without TLS no error is a TLS error.
#[cfg(not(feature = "tls"))]
pub(super) fn error_name(_: &io::Error) -> Option<String> {
    None
}

/// `--tls-insecure`: accepts any certificate, and still checks the handshake's signatures
/// (so the connection is encrypted to whoever holds the certificate's key, whoever that is).
#[cfg(feature = "tls")]
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

#[cfg(feature = "tls")]
impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection's TLS state (boxed: rustls's state is large, and a client that is not
/// using TLS should not carry its size).
#[cfg(feature = "tls")]
pub(super) struct TlsState(Box<rustls::ClientConnection>);

#[cfg(not(feature = "tls"))]
pub(super) enum TlsState {}

#[cfg(feature = "tls")]
impl TlsState {
    /// Still handshaking: no plaintext can flow yet.
    pub(super) fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    /// Plaintext into `buf`, as a socket's `read`: `Ok(0)` is the server's `close_notify`
    /// (a clean end), `UnexpectedEof` a TCP EOF without it, `WouldBlock` nothing more for
    /// now. Plaintext rustls holds comes first: only when there is none is the socket
    /// read, so its edge-triggered readiness is only ever waited for once it is drained.
    pub(super) fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        let mut eof = false;
        loop {
            match self.0.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && eof => {
                    return Err(io::ErrorKind::UnexpectedEof.into())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            // At the EOF rustls learns of it, and the reader says how the TLS connection ended.
            eof = self.0.read_tls(stream)? == 0;
            let processed = self.0.process_new_packets();
            // An alert rustls queued on an error is sent before the error is returned.
            self.flush(stream)?;
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Gives rustls plaintext and sends the records it makes, as a socket's `write`:
    /// `WouldBlock` when rustls holds as much unsent as it may (its buffer limit); the
    /// caller keeps the rest for the next writable event, as it would for a socket.
    pub(super) fn write(&mut self, stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
        use std::io::Write;
        self.flush(stream)?;
        let taken = self.0.writer().write(bytes)?;
        self.flush(stream)?;
        if taken == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Sends the records rustls holds until the socket would block (the rest goes on the
    /// next writable event).
    pub(super) fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        while self.0.wants_write() {
            match self.0.write_tls(stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the TLS connection cleanly: `close_notify`, sent before the TCP half-close.
    pub(super) fn close(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        self.0.send_close_notify();
        self.flush(stream)
    }
}

#[cfg(not(feature = "tls"))]
impl TlsState {
    pub(super) fn is_handshaking(&self) -> bool {
        match *self {}
    }
    pub(super) fn read(&mut self, _: &mut TcpStream, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
    pub(super) fn write(&mut self, _: &mut TcpStream, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }
    pub(super) fn flush(&mut self, _: &mut TcpStream) -> io::Result<()> {
        match *self {}
    }
    pub(super) fn close(&mut self, _: &mut TcpStream) -> io::Result<()> {
        match *self {}
    }
}
