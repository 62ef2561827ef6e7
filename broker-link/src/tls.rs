//! TLS for `amqps://` URLs: which CA bundle to trust and which client
//! certificate to present, read from PEM files.
//!
//! An `amqps://` URL with no CA bundle trusts the system's CA store (the
//! `ca-certificates` bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), read once
//! per process. A CA bundle (`ca`, `--tls-ca`) replaces that store, as
//! `curl --cacert` does: a broker with a certificate from a private CA is
//! trusted for that CA alone, and no system store is needed. (lapin is built
//! without a root store of its own; the roots go to it as its `cert_chain`.)
//!
//! A client certificate (`cert` and `key`, both or neither) is presented
//! when the broker asks for one (`ssl_options.verify = verify_peer`).
//!
//! The files are read again on every connection, so a reconnect picks up
//! certificates rotated on disk. Each read checks them as rustls will use
//! them (certificates parse, the key matches the certificate), so a bad file
//! is reported by name instead of as a failed handshake. Only paths are ever
//! shown, never what the files hold.
//!
//! The binary sets the process's TLS settings once, with [`install`], before
//! anything connects: every component (producer, worker, sink, gateway)
//! connects through [`connect`](crate::connect()), which reads them, so none
//! of their configs has to carry them.

use crate::error::LinkError;
use base64::Engine as _;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

/// Where the TLS files are. Empty (the default) means the system's CA store
/// and no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA certificates to trust instead of the system's store.
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate (its chain may follow it).
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// The process's TLS settings, set by [`install`].
static INSTALLED: RwLock<Option<TlsConfig>> = RwLock::new(None);

/// Sets the TLS settings every later [`connect`](crate::connect()) of this
/// process uses. The binary calls it once, after merging its settings;
/// calling it again replaces them.
pub fn install(config: TlsConfig) {
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(config);
}

/// The settings [`install`] set, or the default ones.
pub fn installed() -> TlsConfig {
    INSTALLED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

impl TlsConfig {
    /// True when no file is set: system roots, no client certificate.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// Reads and checks the files, and returns them as lapin takes them:
    /// the CA bundle (or the system's store) as the roots to trust, and the
    /// client certificate with its key.
    ///
    /// Fails with [`LinkError::TlsFile`], naming the file, when one cannot
    /// be read, holds no certificate (or key), or when the key does not
    /// belong to the certificate; and when only one of `cert` and `key` is
    /// set. Without a CA bundle, fails with [`LinkError::Tls`] when the
    /// system's store holds no certificate.
    pub fn load(&self) -> Result<OwnedTLSConfig, LinkError> {
        let cert_chain = match &self.ca {
            Some(path) => read_ca(path)?,
            None => system_roots()?.to_owned(),
        };
        let identity = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), None) => {
                return Err(file_error(
                    cert,
                    "a client certificate needs its private key too (--tls-key)",
                ));
            }
            (None, Some(key)) => {
                return Err(file_error(
                    key,
                    "a private key needs its client certificate too (--tls-cert)",
                ));
            }
            (Some(cert), Some(key)) => Some(read_identity(cert, key)?),
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain: Some(cert_chain),
        })
    }
}

/// The system's CA certificates as PEM text (how lapin takes roots), read
/// once per process: the store changes with a package update, not while
/// chit runs, and reading it means a file per certificate on some systems.
fn system_roots() -> Result<&'static str, LinkError> {
    static ROOTS: OnceLock<Result<String, String>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let why = found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(format!(
                "the system's CA store holds no certificate{why}: install ca-certificates, \
                 set SSL_CERT_FILE, or give the broker's CA with --tls-ca"
            ));
        }
        let mut pem = String::new();
        for cert in &found.certs {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        Ok(pem)
    });
    roots.as_deref().map_err(|reason| LinkError::Tls {
        context: "loading the trusted CA certificates".into(),
        reason: reason.clone(),
    })
}

fn file_error(path: &Path, reason: impl Into<String>) -> LinkError {
    LinkError::TlsFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot read it: {e}")))
}

/// The certificates of a PEM file, each checked to parse as X.509.
fn certificates(
    path: &Path,
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM file of {what}: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            format!("no PEM certificate in it (expected {what})"),
        ));
    }
    Ok(certs)
}

/// The CA bundle as lapin takes it (PEM text), once every certificate in it
/// has been accepted as a trust anchor: rustls would skip one it cannot use
/// and the handshake would fail later with an unknown issuer.
fn read_ca(path: &Path) -> Result<String, LinkError> {
    let pem = read(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certificates(path, &pem, "CA certificates")?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            file_error(
                path,
                format!("certificate {} cannot be a trust anchor: {e}", i + 1),
            )
        })?;
    }
    String::from_utf8(pem).map_err(|_| file_error(path, "not a PEM text file"))
}

/// The client certificate and key, checked by building the rustls client
/// config they will go into (which rejects a key that does not belong to
/// the certificate).
fn read_identity(cert_path: &Path, key_path: &Path) -> Result<OwnedIdentity, LinkError> {
    let cert_pem = read(cert_path)?;
    let chain = certificates(cert_path, &cert_pem, "a client certificate")?;
    let key_pem = read(key_path)?;
    let key = private_key(key_path, &key_pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(cert_path, e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            file_error(
                key_path,
                format!(
                    "cannot be used with the certificate in {}: {e}",
                    cert_path.display()
                ),
            )
        })?;
    Ok(OwnedIdentity::PKCS8 {
        pem: cert_pem,
        key: key_pem,
    })
}

/// The private key of a PEM file. The parser's own message is not
/// repeated: it may quote the file.
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, LinkError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        file_error(
            path,
            "no PEM private key in it (PKCS#8, PKCS#1 or SEC1, unencrypted)",
        )
    })
}

/// The TLS failure behind a lapin error, if it is one: a certificate the
/// client or the broker rejected, an alert, no common protocol. Decided by
/// the error's type (rustls's own), never by its text.
pub(crate) fn tls_failure(err: &lapin::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chit-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn no_ca_bundle_means_the_systems_store() {
        let c = TlsConfig::default();
        assert!(c.is_empty());
        match c.load() {
            Ok(loaded) => {
                assert!(loaded.identity.is_none());
                let roots = loaded.cert_chain.expect("the system's roots");
                let n = CertificateDer::pem_slice_iter(roots.as_bytes())
                    .filter(Result::is_ok)
                    .count();
                assert!(n > 0, "the system's roots, as PEM");
            }
            // A machine without ca-certificates: said, and not retried.
            Err(e) => assert!(matches!(e, LinkError::Tls { .. }), "{e}"),
        }
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let c = TlsConfig {
            ca: Some("/nonexistent/chit-ca.pem".into()),
            ..TlsConfig::default()
        };
        let err = c.load().unwrap_err();
        assert!(matches!(err, LinkError::TlsFile { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/chit-ca.pem"),
            "{err}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn a_file_without_certificates_is_named() {
        let path = temp("not-a-ca.pem", "hello\n");
        let c = TlsConfig {
            ca: Some(path.clone()),
            ..TlsConfig::default()
        };
        let err = c.load().unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_certificate_needs_its_key_and_a_bad_key_is_not_quoted() {
        let cert = temp("c.pem", "x");
        let c = TlsConfig {
            cert: Some(cert.clone()),
            ..TlsConfig::default()
        };
        let err = c.load().unwrap_err().to_string();
        assert!(err.contains("--tls-key"), "{err}");
        let pem = "-----BEGIN PRIVATE KEY-----\nsecret-material!\n-----END PRIVATE KEY-----\n";
        let err = private_key(Path::new("/k.pem"), pem.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/k.pem") && err.contains("no PEM private key"),
            "{err}"
        );
        assert!(!err.contains("secret-material"), "{err}");
    }
}
