//! The Metadata service's I/O: identify the sender (before anything is
//! read), let [`route::decide`] say what it may do, then read the stored
//! record or run the control plane's tag mutation, and answer — with the
//! group's `allowOrigin` on every answer.
//!
//! An unknown or refused source gets `403` and the connection closes, as
//! for the other services, counted in `ingress_rejected`; everything
//! answered after that is counted in `served{service="metadata"}`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use simgate_control::api::{delete_tag_of, put_tags_from_body, render_subscriber, ApiError};
use simgate_control::snapshot::canonical_ip;
use simgate_control::Identity;

use super::route::{self, Op, Refusal, Settings};
use crate::services::Services;
use crate::upstream::{full_body, Body};

const SERVICE: &str = "metadata";
const PROTOCOL: &str = "http";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// How much of a request body (`PUT …/tags`) is read, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_body: usize,
    pub timeout: Duration,
}

/// Serves one Metadata request from `peer`.
pub async fn serve(
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: BodyLimits,
    services: &Services,
) -> Response<Body> {
    let identity = match services.identify(peer) {
        Ok((identity, _)) => identity,
        Err(e) => {
            services.metrics.reject(PROTOCOL, e.reason(), peer);
            let r = Refusal::new(403, "forbidden", format!("Forbidden: {e}"));
            return closing(error(&r));
        }
    };
    let settings = Settings::of(identity.group.as_deref());
    let parsed = route::parse(req.method().as_str(), req.uri().path());
    let mut r = match route::decide(parsed, identity.subscriber.imsi.as_str(), &settings) {
        Ok(op) => perform(op, req, peer, limits, &identity, &settings, services).await,
        Err(refusal) => error(&refusal),
    };
    if let Some(origin) = settings
        .allow_origin
        .as_deref()
        .and_then(|o| HeaderValue::from_str(o).ok())
    {
        r.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    services
        .metrics
        .served(SERVICE, PROTOCOL, r.status().as_u16());
    r
}

async fn perform(
    op: Op,
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: BodyLimits,
    identity: &Identity,
    settings: &Settings,
    services: &Services,
) -> Response<Body> {
    let imsi = identity.subscriber.imsi.clone();
    let plane = &services.metadata.plane;
    let session = || {
        services
            .sessions
            .lookup(peer.ip())
            .map(|s| (canonical_ip(peer.ip()), s))
    };
    let current = || {
        plane
            .subscriber(&imsi)
            .map(|s| render_subscriber(&s, session()))
    };
    match op {
        Op::Preflight => {
            let mut r = respond(StatusCode::NO_CONTENT, JSON, Bytes::new());
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(settings.allow_methods()),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        }
        Op::Subscriber => match current() {
            Some(v) => respond(StatusCode::OK, JSON, Bytes::from(v.to_string())),
            None => error(&gone(&imsi)),
        },
        Op::Field(name) => match current() {
            Some(v) => match route::field(&v, &name) {
                Some(value) => respond(StatusCode::OK, TEXT, Bytes::from(value)),
                None => error(&Refusal::new(
                    404,
                    "not_found",
                    format!("the subscriber has no {name:?}"),
                )),
            },
            None => error(&gone(&imsi)),
        },
        Op::Userdata => match route::userdata(identity.group.as_deref()) {
            Some(u) => respond(StatusCode::OK, TEXT, Bytes::from(u)),
            None => error(&Refusal::new(
                404,
                "not_found",
                "the SIM's group sets no userdata (SoracomAir userdata)",
            )),
        },
        Op::PutTags => {
            let body = match read_body(req, peer, limits, services).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match put_tags_from_body(plane, imsi, &body).await {
                Ok(s) => respond(
                    StatusCode::OK,
                    JSON,
                    Bytes::from(render_subscriber(&s, session()).to_string()),
                ),
                Err(e) => error(&from_api(e)),
            }
        }
        Op::DeleteTag(name) => match delete_tag_of(plane, imsi, name).await {
            Ok(_) => respond(StatusCode::NO_CONTENT, JSON, Bytes::new()),
            Err(e) => error(&from_api(e)),
        },
    }
}

/// The tags body (and Endorse's form), bounded in size and time (as
/// Funnel's and Harvest's).
pub(crate) async fn read_body(
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: BodyLimits,
    services: &Services,
) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        services.metrics.reject(PROTOCOL, "body_too_large", peer);
        error(&Refusal::new(
            413,
            "payload_too_large",
            format!("request bodies may be at most {} bytes", limits.max_body),
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limits.max_body).collect();
    match tokio::time::timeout(limits.timeout, body).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(closing(error(&Refusal::new(
            400,
            "invalid_body",
            format!("the body could not be read: {e}"),
        )))),
        Err(_) => {
            services.metrics.reject(PROTOCOL, "body_timeout", peer);
            Err(closing(error(&Refusal::new(
                408,
                "request_timeout",
                "the body did not arrive in time",
            ))))
        }
    }
}

/// The SIM was removed between its identification and the read.
fn gone(imsi: &impl std::fmt::Display) -> Refusal {
    Refusal::new(
        404,
        "not_found",
        format!("subscriber {imsi} does not exist"),
    )
}

fn from_api(e: ApiError) -> Refusal {
    Refusal::new(e.status.as_u16(), e.code, e.message)
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let empty = body.is_empty();
    let mut r = Response::new(full_body(body));
    *r.status_mut() = status;
    if !empty {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    r
}

/// A refusal as the device services answer it: `{"code","message"}` JSON,
/// with `Allow` when it names the methods.
pub(crate) fn error(refusal: &Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = respond(status, JSON, Bytes::from(refusal.body()));
    if let Some(allow) = refusal.allow {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

/// Asks hyper to close the connection once this response is written.
pub(crate) fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
