//! HTTP ingress (port 8080): routes by `Host` as SORACOM's `funnel.`,
//! `harvest.`, `uni.` names do; any other Host is the Unified Endpoint.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::ListenerLabels;
use crate::services::funnel::SourceProtocol;
use crate::services::{Entry, Handled, Message, Reply, Services};

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// What the `Host` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Service(Entry),
    /// A SORACOM service simgate does not offer yet (Beam, Metadata, …).
    NotAvailable(&'static str),
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
        "metadata" => Route::NotAvailable("Metadata"),
        "endorse" => Route::NotAvailable("Endorse"),
        "funk" => Route::NotAvailable("Funk"),
        "beam" => Route::NotAvailable("Beam"),
        _ => Route::Service(Entry::Unified),
    }
}

pub fn spawn(
    addr: SocketAddr,
    limits: HttpLimits,
    services: Arc<Services>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> io::Result<SocketAddr> {
    let socket = super::bind_socket(addr, false)?;
    let listener = TcpListener::from_std(socket.into())?;
    let bound = listener.local_addr()?;
    tasks.spawn(accept_loop(listener, limits, services, shutdown));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    limits: HttpLimits,
    services: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            services
                .metrics
                .reject("http", "too_many_connections", peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc_services = Arc::clone(&services);
        let svc = service_fn(move |req| {
            let services = Arc::clone(&svc_services);
            async move { Ok::<_, Infallible>(handle(req, peer, limits.max_body, &services).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
    // Finish requests in progress, but not forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    max_body: usize,
    services: &Services,
) -> Response<Full<Bytes>> {
    services
        .metrics
        .ingress_messages
        .get_or_create(&ListenerLabels {
            listener: "http",
            protocol: "http",
        })
        .inc();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .map(str::to_owned);
    let entry = match route(host.as_deref()) {
        Route::Service(e) => e,
        Route::NotAvailable(name) => {
            services
                .metrics
                .reject("http", "service_not_available", peer);
            return text(
                StatusCode::NOT_IMPLEMENTED,
                format!("{name} is not available on this simgate yet"),
            );
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
            return text(StatusCode::FORBIDDEN, format!("Forbidden: {e}"));
        }
    };
    let (parts, body) = req.into_parts();
    let declared_too_big = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max_body as u64);
    let body = if declared_too_big {
        None
    } else {
        Limited::new(body, max_body)
            .collect()
            .await
            .ok()
            .map(|c| c.to_bytes())
    };
    let Some(body) = body else {
        services.metrics.reject("http", "body_too_large", peer);
        return text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large".into());
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
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
        Handled::Refused(e) => return text(StatusCode::FORBIDDEN, format!("Forbidden: {e}")),
    };
    to_response(reply)
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(reply.body));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !r.body().size_hint_is_zero() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(reply.content_type),
        );
    }
    if let Some(s) = reply.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

trait SizeHintZero {
    fn size_hint_is_zero(&self) -> bool;
}

impl SizeHintZero for Full<Bytes> {
    fn size_hint_is_zero(&self) -> bool {
        hyper::body::Body::size_hint(self).exact() == Some(0)
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
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
        assert_eq!(
            route(Some("metadata.soracom.io")),
            Route::NotAvailable("Metadata")
        );
    }
}
