//! The TLS rows' certificate: self-signed for `localhost`, made by the bench at start with
//! rcgen and written to `target/bench/tls/`, so no key is checked in and each run has a
//! fresh one. The servers get it as `--tls-cert` and `--tls-key`, loadgen as `--tls-ca`
//! (with `--tls-server-name localhost`), so every handshake verifies the certificate as a
//! real client would.

use std::path::{Path, PathBuf};

/// The name the certificate is for, and the one loadgen checks.
pub const SERVER_NAME: &str = "localhost";

/// The certificate and its key, as PEM files.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a certificate and its key in `dir`.
#[cfg(target_os = "linux")]
pub fn make(dir: &Path) -> Result<Certificate, String> {
    let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| format!("cannot make the TLS rows' certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let certificate = Certificate {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    for (path, pem) in [
        (&certificate.cert, made.cert.pem()),
        (&certificate.key, made.signing_key.serialize_pem()),
    ] {
        std::fs::write(path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(certificate)
}

/// rcgen signs with ring, whose C the cross-target check cannot build, so it is a
/// dev-dependency on Linux only, and so are the TLS rows.
#[cfg(not(target_os = "linux"))]
pub fn make(_dir: &Path) -> Result<Certificate, String> {
    Err("the TLS rows run on Linux only (rcgen, which makes their certificate, is a Linux-only dev-dependency)".into())
}
