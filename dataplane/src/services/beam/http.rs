//! The I/O driver of Beam's HTTP entry (:8888, and Host `beam.*` on :8080)
//! and website entry (:18080).
//!
//! Ingress has already identified the sender (and counts, limits and shuts
//! down the connection); this module picks the entry ([`super::route`]),
//! rewrites the headers ([`super::headers`] plus the hop-by-hop headers of
//! RFC 9110 §7.6.1), and streams the request body to the destination and
//! the response back: nothing is buffered whole. Upstream failures become
//! `502` (`504` when a step ran out of time), each counted with its reason
//! and logged once with the entry's name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use simgate_control::clock::now_ms;
use simgate_control::{BeamConfig, BeamEntryPoint, Identity, Snapshot};

use super::headers::BeamIdentity;
use super::{entry_label, failure_status, signing_key, Beam};
use super::{prepare_request_headers, select_http_entry, website_entry, website_url};
use crate::upstream::{full_body, Body, BoxError};

/// Which Beam entry point a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpEntryPoint {
    /// `http://beam.soracom.io:8888/<path>`: chosen by path prefix.
    Http,
    /// `http://beam.soracom.io:18080`: the whole path appended.
    Website,
}

/// The `entry` label when no enabled entry matched.
pub(crate) const NO_ENTRY: &str = "none";

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and
/// are never forwarded. `Proxy-*` headers are removed by prefix.
const HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Removes the hop-by-hop headers: the fixed list, every `Proxy-*` header,
/// and the headers the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

impl Beam {
    /// Serves one HTTP request from an identified device.
    pub async fn serve_http(
        &self,
        point: HttpEntryPoint,
        req: Request<Incoming>,
        identity: &Identity,
        snapshot: &Snapshot,
    ) -> Response<Body> {
        let empty = BeamConfig::default();
        let config = identity.group.as_deref().map_or(&empty, |g| &g.beam);
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let (entry, key, url) = match point {
            HttpEntryPoint::Http => match select_http_entry(config, &path_and_query) {
                Some(r) => (
                    r.entry,
                    BeamEntryPoint::Http {
                        path_prefix: r.path_prefix.to_owned(),
                    },
                    r.upstream_url,
                ),
                None if config.http_entries().next().is_none() => {
                    return self.refuse(
                        StatusCode::BAD_REQUEST,
                        "Beam HTTP entry is not enabled for this SIM's group",
                    );
                }
                None => {
                    return self.refuse(
                        StatusCode::NOT_FOUND,
                        "no enabled Beam HTTP entry of this SIM's group matches this path",
                    );
                }
            },
            HttpEntryPoint::Website => match website_entry(config) {
                Some(e) => (e, BeamEntryPoint::Website, website_url(e, &path_and_query)),
                None => {
                    return self.refuse(
                        StatusCode::BAD_REQUEST,
                        "Beam website entry is not enabled for this SIM's group",
                    );
                }
            },
        };
        let label = entry_label(entry, &key);

        let psk = match signing_key(entry, snapshot, &identity.subscriber.imsi) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(entry = %label, error = %e, "Beam psk credential unavailable");
                return self.fail(
                    &label,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Beam signature key is unavailable",
                );
            }
        };
        let Ok(uri) = url.parse::<Uri>() else {
            return self.fail(&label, StatusCode::BAD_REQUEST, "invalid request target");
        };

        let (mut parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            self.metrics.beam_device_error(&label, "body_too_large");
            return self.fail(&label, StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
        }
        strip_hop_by_hop(&mut parts.headers);
        let imei15 = identity.imei.as_ref().map(|i| i.imei15());
        let id = BeamIdentity::new(identity, imei15.as_deref());
        let prepared = prepare_request_headers(
            &mut parts.headers,
            &id,
            entry,
            psk.as_ref().map(|k| k.expose().as_bytes()),
            now_ms(),
        );
        if let Err(e) = prepared {
            tracing::warn!(entry = %label, error = %e, "Beam request headers refused");
            return self.fail(
                &label,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Beam entry misconfigured: custom header",
            );
        }
        // The device's Host named simgate. The client writes the upstream's
        // authority: `Host` on HTTP/1.1, `:authority` on HTTP/2 (where a
        // `Host` header as well would be a duplicate).
        parts.headers.remove(HOST);
        parts.uri = uri;
        // The client speaks HTTP/1.1 or HTTP/2 (ALPN) whatever the device used.
        parts.version = Version::HTTP_11;
        // A chunked body is cut at the limit (the upstream sees an aborted
        // request); `sent` tells that case from an upstream failure.
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        let body = body
            .map_err(|e| Box::new(e) as BoxError)
            .map_frame(move |f| {
                if let Some(d) = f.data_ref() {
                    counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                f
            });
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        let body = Limited::new(body, limit).boxed_unsync();
        let req = Request::from_parts(parts, body);

        let upstream = match self.upstream().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(entry = %label, error = %e, "Beam cannot set up outbound TLS");
                return self.fail(
                    &label,
                    StatusCode::BAD_GATEWAY,
                    "Bad Gateway: outbound TLS is not configured",
                );
            }
        };
        let started = Instant::now();
        let result = upstream.http().request(req).await;
        self.observe_upstream(&label, started);
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                self.metrics.beam_served(&label, parts.status.as_u16());
                let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
                Response::from_parts(parts, body)
            }
            Err(_) if sent.load(Ordering::Relaxed) > self.max_body => {
                self.metrics.beam_device_error(&label, "body_too_large");
                self.fail(&label, StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large")
            }
            Err(e) => {
                self.metrics.beam_upstream_error(&label, &e);
                let (status, what) = failure_status(&e);
                self.fail(&label, status, &format!("{what}: upstream {}", e.label()))
            }
        }
    }

    /// No entry: counted under `entry="none"`.
    fn refuse(&self, status: StatusCode, message: &str) -> Response<Body> {
        self.fail(NO_ENTRY, status, message)
    }

    fn fail(&self, label: &str, status: StatusCode, message: &str) -> Response<Body> {
        self.metrics.beam_served(label, status.as_u16());
        text(status, message)
    }
}

/// A plain-text answer of simgate's own.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(full_body(Bytes::from(message.to_owned())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, X-Private"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "X-Sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-private", "1"),
            ("x-kept", "2"),
            ("content-length", "3"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }
}
