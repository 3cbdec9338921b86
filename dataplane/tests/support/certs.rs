//! Throwaway TLS material for one test, made by `scripts/certs.sh` in a
//! temporary directory (removed on drop), plus rustls configs built from it.
//!
//! The peers (nginx, mosquitto, the TLS echo) copy what they need into their
//! own directories, so a `Certs` may be dropped before them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Which server certificate a peer presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerCert {
    /// `server.crt`: DNS `localhost` and IP `127.0.0.1`; verifies.
    Localhost,
    /// `wrong.crt`: DNS `wrong.example` only, by the same CA; a verifying
    /// client connecting to 127.0.0.1 or localhost must reject it.
    WrongName,
}

impl ServerCert {
    /// File stem in the certificate directory.
    pub(crate) fn stem(self) -> &'static str {
        match self {
            Self::Localhost => "server",
            Self::WrongName => "wrong",
        }
    }
}

/// A CA, two server certificates and a client certificate.
#[derive(Debug)]
pub(crate) struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Runs `scripts/certs.sh` into a new temporary directory.
    ///
    /// # Panics
    /// If openssl is missing or the script fails.
    pub(crate) fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir for certificates");
        let script = workspace_root().join("scripts/certs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}); is openssl installed (package openssl)? \
             run scripts/setup.sh. stderr: {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM) every peer's certificate chains to.
    pub(crate) fn ca(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    pub(crate) fn server_cert(&self, which: ServerCert) -> PathBuf {
        self.dir().join(format!("{}.crt", which.stem()))
    }

    pub(crate) fn server_key(&self, which: ServerCert) -> PathBuf {
        self.dir().join(format!("{}.key", which.stem()))
    }

    /// Client certificate (CN `simgate-test-client`) for mTLS.
    pub(crate) fn client_cert(&self) -> PathBuf {
        self.dir().join("client.crt")
    }

    pub(crate) fn client_key(&self) -> PathBuf {
        self.dir().join("client.key")
    }

    /// A verifying rustls client config that trusts only the test CA, with
    /// the client certificate when `with_client_cert`.
    pub(crate) fn rustls_client(&self, with_client_cert: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(&self.ca()) {
            roots.add(cert).expect("CA certificate accepted");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = if with_client_cert {
            builder
                .with_client_auth_cert(
                    read_certs(&self.client_cert()),
                    read_key(&self.client_key()),
                )
                .expect("client certificate accepted")
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(crate) fn read_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn read_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The workspace root (the parent of `dataplane/`).
pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Copies `from` to `dir/name` and returns the new path.
pub(crate) fn copy_into(dir: &Path, from: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    to
}
