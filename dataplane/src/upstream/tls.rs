//! The rustls client configuration: which roots are trusted, which client
//! certificate (if any) is shown, which protocols ALPN offers.
//!
//! Verification is always on: there is deliberately no way to build a
//! configuration that skips it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest as _, Sha256};

/// The environment variable naming an extra PEM bundle of trusted roots
/// (the OpenSSL convention).
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// Where Debian/Ubuntu, RHEL/Fedora, SUSE and Alpine keep the system bundle.
/// Only read when `SSL_CERT_FILE` is set: rustls-native-certs then loads
/// that file *instead of* the system store, and we want both.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// ALPN for HTTP: HTTP/2 when the server offers it, else HTTP/1.1.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why the outbound TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamConfigError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("client certificate {id}: {reason}")]
    ClientCertificate { id: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Which roots are trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootSources {
    /// The operating system's store (or, if it has none, the webpki roots).
    pub system: bool,
    /// A PEM bundle from `SSL_CERT_FILE`, added to the system roots.
    pub ssl_cert_file: Option<PathBuf>,
    /// `[upstream] ca_file`: a PEM bundle added to the others.
    pub ca_file: Option<PathBuf>,
}

impl RootSources {
    /// System roots, `SSL_CERT_FILE` if set, and `ca_file`.
    pub fn from_env(ca_file: Option<PathBuf>) -> Self {
        Self {
            system: true,
            ssl_cert_file: std::env::var_os(SSL_CERT_FILE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ca_file,
        }
    }

    /// Reads the roots. A `ca_file` that cannot be read or holds no
    /// certificate is an error (it was configured on purpose); a bad
    /// `SSL_CERT_FILE` is logged and skipped, as OpenSSL does.
    pub fn load(&self) -> Result<RootCertStore, UpstreamConfigError> {
        let mut roots = RootCertStore::empty();
        if self.system {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "could not load some system root certificates");
            }
            roots.add_parsable_certificates(native.certs);
            let env_replaced_store = std::env::var_os(SSL_CERT_FILE).is_some()
                || std::env::var_os("SSL_CERT_DIR").is_some();
            if env_replaced_store {
                if let Some(bundle) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.exists()) {
                    match read_pem_certs(bundle) {
                        Ok(certs) => {
                            roots.add_parsable_certificates(certs);
                        }
                        Err(reason) => {
                            tracing::warn!(path = %bundle.display(), %reason, "cannot read the system CA bundle");
                        }
                    }
                }
            }
            if roots.is_empty() {
                tracing::warn!(
                    "no usable system root certificates; verifying TLS with the webpki roots"
                );
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
        if let Some(path) = &self.ssl_cert_file {
            match read_pem_certs(path) {
                Ok(certs) => {
                    roots.add_parsable_certificates(certs);
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "ignoring SSL_CERT_FILE");
                }
            }
        }
        if let Some(path) = &self.ca_file {
            let certs = read_pem_certs(path).map_err(|reason| UpstreamConfigError::CaFile {
                path: path.clone(),
                reason,
            })?;
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(UpstreamConfigError::CaFile {
                    path: path.clone(),
                    reason: format!("no usable certificate ({ignored} unparsable)"),
                });
            }
        }
        Ok(roots)
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".to_owned());
    }
    Ok(certs)
}

/// A client certificate chain and its key, for mTLS (an `x509` credential).
///
/// Built from PEM text; `id` names the credential, and the SHA-256 of the
/// PEM text tells a rotated credential from the one already cached.
#[derive(Clone)]
pub struct ClientIdentity {
    id: Arc<str>,
    fingerprint: [u8; 32],
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// The credential's own `ca`: trusted, besides the usual roots, by
    /// connections presenting this identity (a private broker's CA).
    extra_roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately no key.
        f.debug_struct("ClientIdentity")
            .field("id", &self.id)
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// `cert_chain_pem`: the client certificate first, then intermediates;
    /// `key_pem`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(
        id: impl Into<Arc<str>>,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> Result<Self, UpstreamConfigError> {
        let id = id.into();
        let invalid = |reason: String| UpstreamConfigError::ClientCertificate {
            id: id.to_string(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(invalid("no PEM certificate".to_owned()));
        }
        // The error may quote the input; say only what kind it was.
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| invalid("no usable PEM private key".to_owned()))?;
        let mut digest = Sha256::new();
        digest.update(cert_chain_pem.as_bytes());
        digest.update([0]);
        digest.update(key_pem.as_bytes());
        Ok(Self {
            id,
            fingerprint: digest.finalize().into(),
            chain,
            key: Arc::new(key),
            extra_roots: Vec::new(),
        })
    }

    /// Also trusts the CA certificates in `ca_pem` (the `x509`
    /// credential's `ca`) for connections presenting this identity.
    pub fn with_ca_pem(mut self, ca_pem: &str) -> Result<Self, UpstreamConfigError> {
        let roots = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| UpstreamConfigError::ClientCertificate {
                id: self.id.to_string(),
                reason: format!("ca: {e}"),
            })?;
        let mut digest = Sha256::new();
        digest.update(self.fingerprint);
        digest.update(ca_pem.as_bytes());
        self.fingerprint = digest.finalize().into();
        self.extra_roots = roots;
        Ok(self)
    }

    /// The credential this identity came from.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

/// The two configurations of one identity (or of none): HTTP offers ALPN
/// `h2, http/1.1`; raw streams (TCP→TLS, MQTTS) offer nothing.
#[derive(Debug, Clone)]
pub(crate) struct TlsConfigs {
    pub(crate) http: Arc<ClientConfig>,
    pub(crate) stream: Arc<ClientConfig>,
}

impl TlsConfigs {
    pub(crate) fn build(
        roots: &Arc<RootCertStore>,
        identity: Option<&ClientIdentity>,
    ) -> Result<Self, UpstreamConfigError> {
        // The provider is passed explicitly, so nothing depends on (or sets)
        // a process-wide default.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = match identity {
            Some(id) if !id.extra_roots.is_empty() => {
                let mut store = RootCertStore::clone(roots);
                let (_, ignored) = store.add_parsable_certificates(id.extra_roots.iter().cloned());
                if ignored > 0 {
                    tracing::warn!(id = %id.id, ignored, "unusable CA certificates in the credential's ca");
                }
                Arc::new(store)
            }
            _ => Arc::clone(roots),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let stream = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| UpstreamConfigError::ClientCertificate {
                    id: id.id.to_string(),
                    reason: e.to_string(),
                })?,
        };
        let mut http = stream.clone();
        http.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            http: Arc::new(http),
            stream: Arc::new(stream),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RootSources {
            system: false,
            ssl_cert_file: None,
            ca_file: Some(dir.path().join("nope.pem")),
        };
        assert!(matches!(
            missing.load(),
            Err(UpstreamConfigError::CaFile { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = RootSources {
            ca_file: Some(empty),
            ..missing.clone()
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        // A broken SSL_CERT_FILE is skipped, not fatal.
        let roots = RootSources {
            system: false,
            ssl_cert_file: Some(dir.path().join("nope.pem")),
            ca_file: None,
        }
        .load()
        .unwrap();
        assert!(roots.is_empty());
    }

    #[test]
    fn system_roots_are_never_empty() {
        let roots = RootSources {
            system: true,
            ssl_cert_file: None,
            ca_file: None,
        }
        .load()
        .unwrap();
        assert!(!roots.is_empty());
    }

    #[test]
    fn client_identity_refuses_garbage_and_hides_the_key() {
        let e = ClientIdentity::from_pem("cred-1", "garbage", "garbage").unwrap_err();
        assert!(e.to_string().contains("cred-1"), "{e}");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["device".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let e =
            ClientIdentity::from_pem("cred-1", &cert.pem(), "-----BEGIN NOTHING-----").unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        let id = ClientIdentity::from_pem("cred-1", &cert.pem(), &key.serialize_pem()).unwrap();
        assert_eq!(id.id(), "cred-1");
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
        // Same PEM, same fingerprint; a rotated key, another one.
        let again = ClientIdentity::from_pem("cred-1", &cert.pem(), &key.serialize_pem()).unwrap();
        assert_eq!(id.fingerprint(), again.fingerprint());
        let other = rcgen::KeyPair::generate().unwrap();
        let rotated =
            ClientIdentity::from_pem("cred-1", &cert.pem(), &other.serialize_pem()).unwrap();
        assert_ne!(id.fingerprint(), rotated.fingerprint());
    }
}
