//! The Krypton service's I/O: route the request, identify the sender
//! (before anything is read), check the group's `SoracomKrypton`, read the
//! body, issue off the async workers, answer.
//!
//! An unknown or refused source gets `403` and the connection closes, as
//! for Metadata and Endorse, counted in `ingress_rejected`; every refusal
//! is also counted in `krypton_refused{reason}`, every answer in
//! `served{service="krypton"}`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use simgate_control::Identity;

use super::request::{self, BootstrapRequest, Op, RouteError, Settings};
use crate::services::metadata::handler::{closing, read_body, BodyLimits};
use crate::services::metadata::route::Refusal;
use crate::services::Services;
use crate::upstream::{full_body, Body};

const SERVICE: &str = "krypton";
const PROTOCOL: &str = "http";
const JSON: &str = "application/json";

/// Serves one Krypton request from `peer`.
pub async fn serve(
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: BodyLimits,
    services: &Services,
) -> Response<Body> {
    let krypton = &services.krypton;
    let op = match request::parse(req.method().as_str(), req.uri().path()) {
        Ok(op) => op,
        Err(e) => {
            let r = match e {
                RouteError::NotFound => {
                    krypton.metrics.refuse("not_found");
                    Refusal::new(
                        404,
                        "not_found",
                        "no such Krypton call; try POST /v1/provisioning/x509/bootstrap, \
                         POST /v1/provisioning/x509/register or \
                         GET /v1/provisioning/x509/registrations/{operationId}",
                    )
                }
                RouteError::MethodNotAllowed(allow) => {
                    krypton.metrics.refuse("method_not_allowed");
                    Refusal {
                        allow: Some(allow),
                        ..Refusal::new(
                            405,
                            "method_not_allowed",
                            format!("this path takes {allow}"),
                        )
                    }
                }
                RouteError::ProviderNotAvailable(name) => {
                    krypton.metrics.refuse("provider_not_available");
                    Refusal::new(
                        501,
                        "provider_not_available",
                        format!(
                            "simgate's Krypton does not provision {name}; \
                             use the X.509 provider, /v1/provisioning/x509/…"
                        ),
                    )
                }
            };
            return finish(services, error(&r));
        }
    };
    let identity = match services.identify(peer) {
        Ok((identity, _)) => identity,
        Err(e) => {
            services.metrics.reject(PROTOCOL, e.reason(), peer);
            krypton.metrics.refuse("forbidden");
            let r = Refusal::new(403, "forbidden", format!("Forbidden: {e}"));
            return closing(error(&r));
        }
    };
    let r = identified(req, op, peer, limits, services, &identity).await;
    finish(services, r)
}

async fn identified(
    req: Request<Incoming>,
    op: Op,
    peer: SocketAddr,
    limits: BodyLimits,
    services: &Services,
    identity: &Identity,
) -> Response<Body> {
    let krypton = &services.krypton;
    let refuse = |reason: &'static str, r: Refusal| {
        krypton.metrics.refuse(reason);
        error(&r)
    };
    let settings = match Settings::of(identity.group.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, imsi = %identity.subscriber.imsi.as_str(),
                "the SIM's group has an unusable SoracomKrypton configuration");
            return refuse(
                "bad_settings",
                Refusal::new(
                    500,
                    "krypton_misconfigured",
                    format!("this SIM's group's Krypton configuration is unusable: {e}"),
                ),
            );
        }
    };
    if !settings.enabled {
        return refuse(
            "disabled",
            Refusal::new(
                403,
                "krypton_disabled",
                "the Krypton service is not enabled for this SIM's group \
                 (SoracomKrypton enabled)",
            ),
        );
    }
    let imsi = identity.subscriber.imsi.clone();
    let register = match op {
        Op::Registration(id) => {
            return match krypton.operation(&id, &imsi) {
                Some(body) => respond(StatusCode::OK, Bytes::from(body.to_string())),
                None => refuse(
                    "unknown_operation",
                    Refusal::new(
                        404,
                        "not_found",
                        format!(
                            "no operation {} for this SIM (operations are kept for {} s)",
                            id.as_str(),
                            request::OPERATION_TTL_MS / 1000
                        ),
                    ),
                ),
            };
        }
        Op::Bootstrap => false,
        Op::Register => true,
    };
    let body = match read_body(req, peer, limits, services).await {
        Ok(b) => b,
        Err(r) => {
            krypton.metrics.refuse("bad_body");
            return r;
        }
    };
    let wish = match BootstrapRequest::parse(&body) {
        Ok(w) => w,
        Err(e) => {
            return refuse(
                "bad_request",
                Refusal::new(400, "invalid_request", e.to_string()),
            )
        }
    };
    let days = wish.validity_days(&settings);
    let k = std::sync::Arc::clone(krypton);
    // Key generation (RSA takes tens of ms) and fsynced writes: off the
    // async workers.
    let issued = tokio::task::spawn_blocking(move || k.provision(&imsi, &settings, days)).await;
    match issued {
        Ok(Ok((op, body))) => {
            let body = if register {
                json!({"operationId": op.as_str(), "status": "assigned"})
            } else {
                body
            };
            respond(StatusCode::OK, Bytes::from(body.to_string()))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Krypton could not issue a certificate");
            refuse(
                "issue_failed",
                Refusal::new(
                    500,
                    "internal_error",
                    "the certificate could not be issued; see the server log",
                ),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "Krypton issuance panicked");
            refuse(
                "issue_failed",
                Refusal::new(
                    500,
                    "internal_error",
                    "the certificate could not be issued; see the server log",
                ),
            )
        }
    }
}

fn finish(services: &Services, r: Response<Body>) -> Response<Body> {
    services
        .metrics
        .served(SERVICE, PROTOCOL, r.status().as_u16());
    r
}

fn respond(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(full_body(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    // Carries a private key: no cache may keep it.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(refusal: &Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = respond(status, Bytes::from(refusal.body()));
    if let Some(allow) = refusal.allow {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}
