//! The Endorse service's I/O: route the request; for a token, identify the
//! sender (before anything is read), check the group's `SoracomEndorse`,
//! read the query or the form, sign; the public keys need no identity.
//!
//! An unknown or refused source gets `403` and the connection closes, as
//! for Metadata, counted in `ingress_rejected`; everything answered after
//! that is counted in `served{service="endorse"}`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::claims::{self, Op, ParamError, RouteError, Settings, Sim};
use crate::services::metadata::handler::{closing, error, BodyLimits};
use crate::services::metadata::route::Refusal;
use crate::services::Services;
use crate::upstream::{full_body, Body};

const SERVICE: &str = "endorse";
const PROTOCOL: &str = "http";
const JSON: &str = "application/json";
const PEM: &str = "application/x-pem-file";
const FORM: &str = "application/x-www-form-urlencoded";
const HTML: &str = "text/html; charset=utf-8";

/// Serves one Endorse request from `peer`.
pub async fn serve(
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: BodyLimits,
    services: &Services,
) -> Response<Body> {
    let r = match claims::parse(req.method().as_str(), req.uri().path()) {
        Ok(Op::Token) => return token(req, peer, limits, services).await,
        Ok(Op::Jwks) => {
            let jwks = services.endorse.keys.keys().jwks();
            respond(StatusCode::OK, JSON, Bytes::from(jwks.to_string()))
        }
        Ok(Op::Key(kid)) => match services.endorse.keys.keys().get(&kid) {
            Some(k) => respond(StatusCode::OK, PEM, Bytes::from(k.public_pem.clone())),
            None => error(&Refusal::new(404, "not_found", format!("no key {kid}"))),
        },
        Err(RouteError::NotFound) => error(&Refusal::new(
            404,
            "not_found",
            "no such Endorse call; try GET or POST /, GET /.well-known/jwks.json \
             or GET /v1/endorse/keys/{kid}",
        )),
        Err(RouteError::MethodNotAllowed(allow)) => error(&Refusal {
            allow: Some(allow),
            ..Refusal::new(
                405,
                "method_not_allowed",
                format!("this path takes {allow}"),
            )
        }),
    };
    services
        .metrics
        .served(SERVICE, PROTOCOL, r.status().as_u16());
    r
}

async fn token(
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
    let mut r = token_for(req, peer, limits, services, &identity, &settings).await;
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

async fn token_for(
    req: Request<Incoming>,
    peer: SocketAddr,
    limits: BodyLimits,
    services: &Services,
    identity: &simgate_control::Identity,
    settings: &Settings,
) -> Response<Body> {
    if !settings.enabled {
        return error(&Refusal::new(
            403,
            "endorse_disabled",
            "the Endorse service is not enabled for this SIM's group \
             (SoracomEndorse enabled)",
        ));
    }
    let req_is_post = req.method() == Method::POST;
    let text = if req_is_post {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM));
        let query = req.uri().query().map(|q| Bytes::from(q.to_owned()));
        let body = match crate::services::metadata::handler::read_body(req, peer, limits, services)
            .await
        {
            Ok(b) => b,
            Err(r) => return r,
        };
        // A POST without a form may still carry a query.
        if is_form {
            body
        } else {
            query.unwrap_or_default()
        }
    } else {
        Bytes::from(req.uri().query().unwrap_or("").to_owned())
    };
    let is_post = req_is_post;
    let mut params = match claims::parse_params(&text) {
        Ok(p) => p,
        Err(e) => {
            let message = match e {
                ParamError::BadEncoding => "the parameters' percent-escapes are not UTF-8".into(),
                ParamError::TooMany => {
                    format!("at most {} request parameters", claims::MAX_PARAMETERS)
                }
            };
            return error(&Refusal::new(400, "invalid_request", message));
        }
    };
    let redirect = match settings.redirect_target(&mut params) {
        Ok(r) => r,
        Err(e) => return error(&Refusal::new(400, "redirect_not_authorized", e.to_string())),
    };
    // What the form re-posts to a redirect target besides the token.
    let posted = (is_post && redirect.is_some()).then(|| params.clone());
    let s = &identity.subscriber;
    let imei = identity.imei.as_ref().map(|i| i.imei15());
    let sim = Sim {
        imsi: s.imsi.as_str(),
        imei: imei.as_deref(),
        msisdn: s.msisdn.as_ref().map(|m| m.as_str()),
        sim_id: s.sim_id.as_ref().map(|m| m.as_str()),
    };
    let now = simgate_control::clock::now_ms() / 1000;
    let jti = format!("{:032x}", rand::random::<u128>());
    let endorse = &services.endorse;
    let c = claims::claims(&endorse.issuer, &sim, settings, params, now, &jti);
    match endorse.keys.keys().current.sign(&c) {
        Ok(token) => match (redirect, posted) {
            (None, _) => respond(
                StatusCode::OK,
                JSON,
                Bytes::from(json!({ "token": token }).to_string()),
            ),
            (Some(url), Some(params)) => respond(
                StatusCode::OK,
                HTML,
                Bytes::from(claims::redirect_form(&url, &token, &params)),
            ),
            (Some(url), None) => {
                let location = claims::redirect_location(&url, &token);
                match HeaderValue::from_str(&location) {
                    Ok(v) => {
                        let mut r = respond(StatusCode::FOUND, "text/plain", Bytes::new());
                        r.headers_mut().insert(header::LOCATION, v);
                        r
                    }
                    Err(_) => error(&Refusal::new(
                        400,
                        "redirect_not_authorized",
                        "the redirect_url cannot be sent in a Location header",
                    )),
                }
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an Endorse token");
            error(&Refusal::new(
                500,
                "internal_error",
                "cannot sign the token",
            ))
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(full_body(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
