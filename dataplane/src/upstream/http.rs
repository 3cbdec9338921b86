//! The pooled HTTP client: hyper-util's legacy `Client` over our own
//! connector, so HTTP and raw TLS streams share one connect path, one TLS
//! configuration and one error classification.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::net::TcpStream;

use super::connect;
use super::error::{UpstreamError, UpstreamErrorKind};
use super::Limits;

/// Boxed error of a request body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body: whole bytes ([`full_body`]) or a stream (a device's
/// request body, forwarded as it arrives).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of `bytes`, sent in one piece.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Opens the connections of the pool: `https://` with TLS (ALPN `h2`,
/// `http/1.1`), `http://` in the clear (emulators such as kinesalite).
#[derive(Clone)]
pub(crate) struct Connector {
    tls: Arc<ClientConfig>,
    connect_timeout: Duration,
    tls_timeout: Duration,
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<Io, UpstreamError> {
        let invalid = |m: &str| UpstreamError::new(UpstreamErrorKind::Other, format!("{m}: {uri}"));
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("scheme must be http or https")),
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = connect::tcp(host, port, self.connect_timeout).await?;
        if !https {
            return Ok(MaybeHttpsStream::Http(TokioIo::new(tcp)));
        }
        let tls = connect::tls(
            self.tls,
            host,
            TokioIo::new(TokioIo::new(tcp)),
            self.tls_timeout,
        )
        .await?;
        Ok(MaybeHttpsStream::from(tls))
    }
}

impl tower::Service<Uri> for Connector {
    type Response = Io;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A pooled HTTP/1.1 and HTTP/2 client for one client identity (or none).
/// Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<Connector, Body>,
    response_timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    pub(crate) fn new(tls: Arc<ClientConfig>, limits: &Limits) -> Self {
        let connector = Connector {
            tls,
            connect_timeout: limits.connect_timeout,
            tls_timeout: limits.tls_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(limits.pool_idle_timeout)
            .pool_max_idle_per_host(limits.pool_max_idle_per_host)
            .build(connector);
        Self {
            client,
            response_timeout: limits.response_timeout,
        }
    }

    /// Sends `req` on a pooled connection (or a new one) and waits for the
    /// response headers, at most `response_timeout_ms` from now (connecting
    /// included). The body is the caller's to read, under its own deadline;
    /// a connection goes back to the pool once its body has been read to
    /// the end.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::from_client(&e)),
            Err(_elapsed) => Err(UpstreamError::new(
                UpstreamErrorKind::ResponseTimeout,
                format!("no response within {:?}", self.response_timeout),
            )),
        }
    }
}
