//! What the bench's TLS servers (`tls-echo`, `sink-peer`) share: the server
//! configuration from PEM files and an accept loop bounded in time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A server configuration (aws-lc-rs, safe default versions, no client
/// certificates) from a PEM certificate chain and its PEM key.
pub(crate) fn config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}", cert.display()))?
        .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}", key.display()))?;
    Ok(rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?)
}

/// Hands every connection accepted on `listener` to `each` until
/// `max_seconds` have passed (runs stay bounded).
pub(crate) async fn accept_until(
    listener: &TcpListener,
    max_seconds: u64,
    mut each: impl FnMut(TcpStream),
) -> anyhow::Result<()> {
    let deadline = tokio::time::sleep(Duration::from_secs(max_seconds));
    tokio::pin!(deadline);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => r?,
            () = &mut deadline => return Ok(()),
        };
        each(tcp);
    }
}
