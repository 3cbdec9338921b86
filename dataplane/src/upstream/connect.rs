//! TCP connect and TLS handshake, each under its own timeout: the one code
//! path behind both the pooled HTTP client and raw TLS streams.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::{error_chain, UpstreamError, UpstreamErrorKind};

/// `[::1]` (as in a URI) → `::1`.
pub(crate) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Resolves `host` and connects to its addresses in turn, all within
/// `timeout`.
pub(crate) async fn tcp(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let host = bare_host(host);
    let attempt = async {
        let addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
            UpstreamError::new(
                UpstreamErrorKind::Dns,
                format!("resolving {host}: {}", error_chain(&e)),
            )
        })?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Requests are small and latency-bound.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => UpstreamError::connect(&e),
            None => UpstreamError::new(
                UpstreamErrorKind::Dns,
                format!("{host} resolved to no address"),
            ),
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_elapsed) => Err(UpstreamError::new(
            UpstreamErrorKind::ConnectTimeout,
            format!("no TCP connection to {host}:{port} within {timeout:?}"),
        )),
    }
}

/// The TLS handshake over `io`, verifying the certificate for `host`.
pub(crate) async fn tls<IO>(
    config: Arc<ClientConfig>,
    host: &str,
    io: IO,
    timeout: Duration,
) -> Result<TlsStream<IO>, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let host = bare_host(host);
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        UpstreamError::new(
            UpstreamErrorKind::Tls,
            format!("{host:?} is not a valid TLS server name: {e}"),
        )
    })?;
    let handshake = TlsConnector::from(config).connect(name, io);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(UpstreamError::handshake(&e)),
        Err(_elapsed) => Err(UpstreamError::new(
            UpstreamErrorKind::TlsTimeout,
            format!("no TLS handshake with {host} within {timeout:?}"),
        )),
    }
}
