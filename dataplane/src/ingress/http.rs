//! HTTP ingress. Port 8080 routes by `Host` as SORACOM's `funnel.`,
//! `harvest.`, `beam.`, `metadata.`, `endorse.`, `uni.` names do; any other Host is the
//! Unified Endpoint. Ports 8888 and 18080 are Beam's HTTP and website entries.
//!
//! Every request's sender is identified here, before its body is read;
//! Funnel, Harvest and Funk (`funk.`) then get the whole (limited) body, Beam the request
//! itself, streamed ([`crate::services::beam::http`]); Metadata the request
//! too ([`crate::services::metadata`]), which identifies its sender first,
//! and Endorse ([`crate::services::endorse`]), which identifies it for a
//! token only (its public keys are for anyone).
//!
//! A refused sender gets `403` with `Connection: close` and the connection
//! ends (it cannot keep it open to try again for free). Headers must arrive
//! within `header_timeout`; a Funnel/Harvest body within `body_timeout`,
//! else `408` (counted as `body_timeout`) and the connection is closed.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::request_head;
use crate::metrics::ListenerLabels;
use crate::services::beam::http::{text as beam_text, HttpEntryPoint};
use crate::services::funnel::SourceProtocol;
use crate::services::{endorse, krypton, metadata};
use crate::services::{Entry, Handled, Message, Reply, Services};
use crate::upstream::{full_body, Body};

/// Which HTTP listener this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListener {
    /// :8080, routed by `Host`.
    Devices,
    /// :8888, Beam's HTTP entry.
    BeamHttp,
    /// :18080, Beam's website entry.
    BeamWebsite,
}

impl HttpListener {
    /// The `listener` metric label, and the name in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Devices => "http",
            Self::BeamHttp => "beam_http",
            Self::BeamWebsite => "beam_website",
        }
    }
}

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// From the end of the headers to the end of a Funnel/Harvest body.
    pub body_timeout: Duration,
}

/// What the `Host` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Service(Entry),
    /// Beam's HTTP entry, as on :8888.
    Beam,
    /// SORACOM Air Metadata (`metadata.*`).
    Metadata,
    /// SORACOM Endorse (`endorse.*`).
    Endorse,
    /// SORACOM Krypton (`krypton.*`).
    Krypton,
    /// SORACOM Harvest Files (`harvest-files.*`).
    HarvestFiles,
}

/// Routes by the first label of `Host` (port ignored).
pub fn route(host: Option<&str>) -> Route {
    let host = host.unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let first = name.split('.').next().unwrap_or("").to_ascii_lowercase();
    // Only a Host with a dot names a service; `localhost` is Unified.
    if !name.contains('.') {
        return Route::Service(Entry::Unified);
    }
    match first.as_str() {
        "funnel" => Route::Service(Entry::Funnel),
        "harvest" => Route::Service(Entry::Harvest),
        "metadata" => Route::Metadata,
        "endorse" => Route::Endorse,
        "krypton" => Route::Krypton,
        "harvest-files" => Route::HarvestFiles,
        "funk" => Route::Service(Entry::Funk),
        "beam" => Route::Beam,
        _ => Route::Service(Entry::Unified),
    }
}

pub fn spawn(
    addr: SocketAddr,
    kind: HttpListener,
    limits: HttpLimits,
    services: Arc<Services>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> io::Result<SocketAddr> {
    let socket = super::bind_socket(addr, false)?;
    let listener = TcpListener::from_std(socket.into())?;
    let bound = listener.local_addr()?;
    tasks.spawn(accept_loop(listener, kind, limits, services, shutdown));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    kind: HttpListener,
    limits: HttpLimits,
    services: Arc<Services>,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = Arc::clone(&services.metrics);
    let accept = AcceptLimits {
        name: kind.name(),
        protocol: "http",
        max_connections: limits.max_connections,
        header_timeout: limits.header_timeout,
    };
    serve_http1(listener, accept, &metrics, shutdown, move |peer| {
        let services = Arc::clone(&services);
        service_fn(move |req| {
            let services = Arc::clone(&services);
            async move { Ok::<_, Infallible>(handle(req, kind, peer, limits, &services).await) }
        })
    })
    .await;
}

/// What every HTTP/1.1 listener (devices, Beam, API) bounds.
#[derive(Debug, Clone, Copy)]
struct AcceptLimits {
    /// Listener name, for logs.
    name: &'static str,
    /// `protocol` label of `too_many_connections` refusals.
    protocol: &'static str,
    max_connections: usize,
    header_timeout: Duration,
}

/// The accept loop shared by the HTTP listeners: at most
/// `max_connections` connections (more are closed at once and counted),
/// a header read timeout, graceful shutdown (requests in progress get up
/// to 10 s). `service` makes each connection's hyper service.
async fn serve_http1<S, B>(
    listener: TcpListener,
    limits: AcceptLimits,
    metrics: &crate::metrics::Metrics,
    mut shutdown: watch::Receiver<bool>,
    service: impl Fn(SocketAddr) -> S,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = limits.name, error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.reject(limits.protocol, "too_many_connections", peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service(peer));
        let conn = graceful.watch(conn);
        let name = limits.name;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, %peer, error = %e, "http connection ended with an error");
            }
        });
    }
    // Finish requests in progress, but not forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// Limits of the API listener ([`serve_api`]).
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// From the end of the headers to the end of the body.
    pub body_timeout: Duration,
}

/// Serves the API router (`config.listen.api`) on `listener` until
/// `shutdown`: HTTP/1.1 through hyper as the device listeners, with a
/// header read timeout, a body read timeout (a body that stalls fails its
/// read; the handler answers 4xx) and at most `max_connections` connections
/// (more are closed at once, counted as `too_many_connections`, protocol
/// `api`). Replaces `axum::serve`, which has none of the three.
pub async fn serve_api(
    listener: TcpListener,
    app: axum::Router,
    limits: ApiLimits,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    use tower::ServiceExt as _;
    let accept = AcceptLimits {
        name: "api",
        protocol: "api",
        max_connections: limits.max_connections,
        header_timeout: limits.header_timeout,
    };
    serve_http1(listener, accept, &metrics, shutdown, move |_peer| {
        let app = app.clone();
        service_fn(move |req: Request<Incoming>| {
            let req = req.map(|b| axum::body::Body::new(TimedBody::new(b, limits.body_timeout)));
            app.clone().oneshot(req)
        })
    })
    .await;
}

/// A request body that fails (`TimedOut`) if it has not ended by its
/// deadline.
struct TimedBody {
    inner: Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => return Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "request body did not arrive in time",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

async fn handle(
    req: Request<Incoming>,
    kind: HttpListener,
    peer: SocketAddr,
    limits: HttpLimits,
    services: &Services,
) -> Response<Body> {
    let max_body = limits.max_body;
    services
        .metrics
        .ingress_messages
        .get_or_create(&ListenerLabels {
            listener: kind.name(),
            protocol: "http",
        })
        .inc();
    let host_route = || route(request_head::host_of(req.headers(), req.uri()));
    let route = match kind {
        HttpListener::Devices => host_route(),
        HttpListener::BeamHttp => Route::Beam,
        HttpListener::BeamWebsite => {
            return beam(req, HttpEntryPoint::Website, peer, services).await
        }
    };
    let entry = match route {
        Route::Service(e) => e,
        Route::Beam => return beam(req, HttpEntryPoint::Http, peer, services).await,
        Route::Metadata => {
            let limits = metadata::handler::BodyLimits {
                max_body,
                timeout: limits.body_timeout,
            };
            return metadata::serve(req, peer, limits, services).await;
        }
        Route::Endorse => {
            let limits = metadata::handler::BodyLimits {
                max_body,
                timeout: limits.body_timeout,
            };
            return endorse::serve(req, peer, limits, services).await;
        }
        Route::Krypton => {
            let limits = metadata::handler::BodyLimits {
                max_body,
                timeout: limits.body_timeout,
            };
            return krypton::serve(req, peer, limits, services).await;
        }
        Route::HarvestFiles => {
            return crate::services::harvest_files::handler::serve(
                req,
                peer,
                limits.body_timeout,
                services,
            )
            .await;
        }
    };
    if req.method() != Method::POST && req.method() != Method::PUT {
        services.metrics.reject("http", "method_not_allowed", peer);
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "send data with POST".into());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
        return r;
    }
    // Refuse unknown sources before reading a body they might use to pin memory.
    let identity = match services.identify(peer) {
        Ok((identity, _)) => identity,
        Err(e) => {
            services.metrics.reject("http", e.reason(), peer);
            return closing(text(StatusCode::FORBIDDEN, format!("Forbidden: {e}")));
        }
    };
    let (parts, body) = req.into_parts();
    let declared_too_big = request_head::declared_too_big(&parts.headers, max_body);
    let body = if declared_too_big {
        None
    } else {
        // A device that stops sending mid-body must not hold this task (and
        // a connection permit) forever.
        match tokio::time::timeout(limits.body_timeout, Limited::new(body, max_body).collect())
            .await
        {
            Ok(collected) => collected.ok().map(|c| c.to_bytes()),
            Err(_) => {
                services.metrics.reject("http", "body_timeout", peer);
                return closing(text(
                    StatusCode::REQUEST_TIMEOUT,
                    "Request Timeout: the body did not arrive in time".into(),
                ));
            }
        }
    };
    let Some(body) = body else {
        services.metrics.reject("http", "body_too_large", peer);
        return text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large".into());
    };
    let header = |name: &str| request_head::header_text(&parts.headers, name);
    let msg = Message {
        peer,
        protocol: SourceProtocol::Http,
        entry,
        payload: &body,
        content_type: header("content-type"),
        timestamp: header("x-soracom-timestamp"),
    };
    // The snapshot is loaded afresh (not held across the body read); the
    // identity is the one checked before the body was accepted.
    let handled = services.handle_identified(&msg, &identity, &services.snapshot.load());
    let reply = match handled {
        Handled::Now(r) => r,
        Handled::Later(f) => f.await,
        Handled::Refused(e) => {
            return closing(text(StatusCode::FORBIDDEN, format!("Forbidden: {e}")))
        }
    };
    to_response(reply)
}

/// Beam: any method; the sender is identified before anything is read or
/// sent upstream, then the request is handed over, body unread.
async fn beam(
    req: Request<Incoming>,
    point: HttpEntryPoint,
    peer: SocketAddr,
    services: &Services,
) -> Response<Body> {
    let (identity, snapshot) = match services.identify(peer) {
        Ok((identity, snapshot)) => (identity, arc_swap::Guard::into_inner(snapshot)),
        Err(e) => {
            services.metrics.reject("http", e.reason(), peer);
            return closing(beam_text(StatusCode::FORBIDDEN, &format!("Forbidden: {e}")));
        }
    };
    services
        .beam
        .serve_http(point, req, &identity, &snapshot)
        .await
}

fn to_response(reply: Reply) -> Response<Body> {
    let empty = reply.body.is_empty();
    let mut r = Response::new(full_body(reply.body));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !empty {
        let value = match reply.content_type {
            Cow::Borrowed(s) => HeaderValue::from_static(s),
            // Checked printable when the group's settings were written.
            Cow::Owned(s) => HeaderValue::try_from(s)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
        };
        r.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if let Some(s) = reply.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// Asks hyper to close the connection once this response is written.
fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full_body(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_host() {
        assert_eq!(
            route(Some("funnel.soracom.io")),
            Route::Service(Entry::Funnel)
        );
        assert_eq!(
            route(Some("harvest.localhost:8080")),
            Route::Service(Entry::Harvest)
        );
        assert_eq!(
            route(Some("uni.soracom.io")),
            Route::Service(Entry::Unified)
        );
        assert_eq!(
            route(Some("127.0.0.1:8080")),
            Route::Service(Entry::Unified)
        );
        assert_eq!(route(Some("localhost")), Route::Service(Entry::Unified));
        assert_eq!(route(None), Route::Service(Entry::Unified));
        assert_eq!(route(Some("metadata.soracom.io")), Route::Metadata);
        assert_eq!(route(Some("endorse.soracom.io")), Route::Endorse);
        assert_eq!(route(Some("krypton.soracom.io:8036")), Route::Krypton);
        assert_eq!(route(Some("harvest-files.soracom.io")), Route::HarvestFiles);
        assert_eq!(route(Some("funk.soracom.io")), Route::Service(Entry::Funk));
        assert_eq!(route(Some("beam.soracom.io:8080")), Route::Beam);
    }
}
