//! The device side of Harvest Files (HTTP Host `harvest-files.*`): the
//! sender is identified before anything is read, its group's
//! `SoracomHarvestFiles` must be enabled, and its path is resolved under
//! its own prefix ([`super::path::device_op`]) before the store is asked.
//!
//! Answers: `PUT`/`POST` → `201` (created) or `200` (replaced), as
//! SORACOM's putFile; `GET` → the file (or, for a path ending in `/`, the
//! listing as JSON `FileEntry`s with paths relative to the SIM's prefix);
//! `DELETE` → `204`. An unknown source gets `403` and the connection
//! closes (counted in `ingress_rejected`); Harvest Files off for the group
//! → `403` (SORACOM documents no code for it; Metadata and Endorse answer
//! the same here). Errors are `{"code","message"}` JSON.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};

use super::path::{self, DeviceError, DeviceOp, Settings};
use super::{method_label, FilesError, ListQuery, PutOutcome, Scope, DEFAULT_CONTENT_TYPE, DEVICE};
use crate::services::Services;
use crate::upstream::{full_body, Body};

const JSON: &str = "application/json";
/// The paging header, as SORACOM names it.
pub const NEXT_KEY: &str = "x-soracom-next-key";

/// Serves one Harvest Files request from `peer`; the body must arrive
/// within `body_timeout`.
pub async fn serve(
    req: Request<Incoming>,
    peer: SocketAddr,
    body_timeout: Duration,
    services: &Services,
) -> Response<Body> {
    let method = method_label(req.method());
    let files = &services.harvest_files;
    let identity = match services.identify(peer) {
        Ok((identity, _)) => identity,
        Err(e) => {
            services.metrics.reject("http", e.reason(), peer);
            files.metrics.answered(DEVICE, method, 403, e.reason());
            return closing(error(403, "forbidden", &format!("Forbidden: {e}")));
        }
    };
    let (r, reason) = serve_identified(req, &identity, body_timeout, services).await;
    let status = r.status().as_u16();
    files.metrics.answered(DEVICE, method, status, reason);
    services.metrics.served("harvest_files", "http", status);
    r
}

async fn serve_identified(
    req: Request<Incoming>,
    identity: &simgate_control::Identity,
    body_timeout: Duration,
    services: &Services,
) -> (Response<Body>, &'static str) {
    let settings = Settings::of(identity.group.as_deref());
    if !settings.enabled {
        let r = error(
            403,
            "harvest_files_disabled",
            "Harvest Files is not enabled for this SIM's group (SoracomHarvestFiles enabled)",
        );
        return (r, "disabled");
    }
    let imsi = identity.subscriber.imsi.as_str();
    let now = simgate_control::clock::now_ms();
    let op = match path::device_op(
        req.method().as_str(),
        req.uri().path(),
        &settings,
        imsi,
        now,
    ) {
        Ok(op) => op,
        Err(e) => {
            let mut r = error(e.status(), e.code(), &e.to_string());
            if matches!(e, DeviceError::Method) {
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE"),
                );
            }
            return (r, e.code());
        }
    };
    let files = &services.harvest_files;
    let head = req.method() == Method::HEAD;
    let result = match op {
        DeviceOp::Put(at) => {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_owned();
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            files
                .put(
                    Scope::Private,
                    at,
                    content_type,
                    declared,
                    req.into_body(),
                    body_timeout,
                )
                .await
                .map(|outcome| match outcome {
                    PutOutcome::Created => empty(StatusCode::CREATED),
                    PutOutcome::Replaced => empty(StatusCode::OK),
                })
        }
        DeviceOp::Get(at) => match files.get(Scope::Private, at).await {
            Ok((meta, content)) => {
                let body = if head {
                    full_body(Bytes::new())
                } else {
                    http_body_util::StreamBody::new(futures_util::StreamExt::map(content, |r| {
                        r.map(Frame::data)
                    }))
                    .map_err(Into::into)
                    .boxed_unsync()
                };
                let mut r = Response::new(body);
                let h = r.headers_mut();
                super::file_headers(&meta, h);
                Ok(r)
            }
            Err(e) => Err(e),
        },
        DeviceOp::List(dir) => {
            let query = match axum::extract::Query::<ListQuery>::try_from_uri(req.uri()) {
                Ok(q) => q.0,
                Err(e) => return (error(400, "invalid_query", &e.body_text()), "invalid_query"),
            };
            let limit = match query.limit() {
                Ok(n) => n,
                Err(m) => return (error(400, "invalid_query", &m), "invalid_query"),
            };
            let base = path::expand(&settings.prefix, imsi, None).unwrap_or_default();
            match files
                .list(Scope::Private, dir, base, query.last_evaluated_key, limit)
                .await
            {
                Ok((entries, next)) => {
                    let text = serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into());
                    let mut r = respond(StatusCode::OK, JSON, Bytes::from(text));
                    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
                        r.headers_mut().insert(NEXT_KEY, v);
                    }
                    Ok(r)
                }
                Err(e) => Err(e),
            }
        }
        DeviceOp::Delete(at) => files
            .delete(Scope::Private, at)
            .await
            .map(|()| empty(StatusCode::NO_CONTENT)),
        DeviceOp::DeleteDir(at) => files
            .delete_dir(Scope::Private, at)
            .await
            .map(|()| empty(StatusCode::NO_CONTENT)),
    };
    match result {
        Ok(r) => (r, "ok"),
        Err(e) => (failure(&e), e.code()),
    }
}

/// The error answer; a body the device may still be sending is not read,
/// so the connection closes after a refused upload.
fn failure(e: &FilesError) -> Response<Body> {
    let r = error(e.status(), e.code(), &e.message());
    if matches!(e.status(), 408 | 413) || matches!(e, FilesError::BodyRead) {
        closing(r)
    } else {
        r
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(full_body(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full_body(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn error(status: u16, code: &str, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    respond(status, JSON, Bytes::from(body))
}

/// Asks hyper to close the connection once this response is written.
fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
