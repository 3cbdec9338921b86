//! Beam UDP/TCP → HTTP(S) (:23080, keys `udp://beam.soracom.io:23080` and
//! `tcp://beam.soracom.io:23080`): one datagram, or one TCP message, becomes
//! one `POST destination` with `User-Agent: SORACOM Beam`, the body
//! `{"payload":"<base64>"}` and the entry's identity headers and signature.
//! The device hears `{status} {body}` back (`{body}` alone with
//! `skipStatusCode`), with no end-of-data byte, as SORACOM answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt as _, Limited};
use simgate_control::clock::now_ms;
use simgate_control::{BeamEntry, BeamEntryPoint, Identity, Snapshot};

use super::headers::BeamIdentity;
use super::{entry_label, failure_status, prepare_request_headers, signing_key, Beam};
use crate::services::{Handled, Reply};
use crate::upstream::full_body;

/// What Beam calls itself to the upstream (SORACOM's value).
pub const USER_AGENT_VALUE: &str = "SORACOM Beam";

/// Largest upstream response body relayed to the device: what fits in one
/// UDP datagram with the status in front.
pub const MAX_RESPONSE_BODY: usize = 65_000;

/// The JSON body of one forwarded message: `{"payload":"<base64>"}`.
pub fn payload_body(payload: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
    let mut out = Vec::with_capacity(b64.len() + 14);
    out.extend_from_slice(b"{\"payload\":\"");
    out.extend_from_slice(b64.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// What the device receives: `{status} {body}`, or the body alone.
pub fn device_line(status: u16, body: &[u8], skip_status_code: bool) -> Bytes {
    if skip_status_code {
        return Bytes::copy_from_slice(body);
    }
    let mut line = Vec::with_capacity(body.len() + 4);
    line.extend_from_slice(status.to_string().as_bytes());
    if !body.is_empty() {
        line.push(b' ');
        line.extend_from_slice(body);
    }
    Bytes::from(line)
}

fn reply(status: u16, body: Bytes, skip_status_code: bool) -> Reply {
    Reply {
        status,
        line: device_line(status, &body, skip_status_code),
        body,
        content_type: "text/plain".into(),
        retry_after: None,
        close: false,
        silent_on_udp: false,
    }
}

impl Beam {
    /// Forwards one message from an identified device to `point`'s entry
    /// (the caller checked it is enabled).
    pub(crate) fn forward_payload(
        self: &Arc<Self>,
        point: &BeamEntryPoint,
        entry: &BeamEntry,
        payload: &[u8],
        identity: &Identity,
        snapshot: &Snapshot,
    ) -> Handled {
        let label = entry_label(entry, point);
        let skip = entry.skip_status_code;
        let psk = match signing_key(entry, snapshot, &identity.subscriber.imsi) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(entry = %label, error = %e, "Beam psk credential unavailable");
                return Handled::Now(self.payload_failed(
                    &label,
                    500,
                    "Beam signature key is unavailable",
                ));
            }
        };
        let Ok(uri) = entry.destination.parse::<Uri>() else {
            return Handled::Now(self.payload_failed(
                &label,
                500,
                "Beam entry misconfigured: destination",
            ));
        };
        let mut headers = HeaderMap::new();
        let imei15 = identity.imei.as_ref().map(|i| i.imei15());
        let id = BeamIdentity::new(identity, imei15.as_deref());
        let psk_bytes = psk.as_ref().map(|k| k.expose().as_bytes());
        if let Err(e) = prepare_request_headers(&mut headers, &id, entry, psk_bytes, now_ms()) {
            tracing::warn!(entry = %label, error = %e, "Beam request headers refused");
            return Handled::Now(self.payload_failed(
                &label,
                500,
                "Beam entry misconfigured: custom header",
            ));
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut req = Request::new(full_body(payload_body(payload)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;

        let beam = Arc::clone(self);
        Handled::Later(Box::pin(async move {
            let upstream = match beam.upstream().await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(entry = %label, error = %e, "Beam cannot set up outbound TLS");
                    return beam.payload_failed(
                        &label,
                        502,
                        "Bad Gateway: outbound TLS is not configured",
                    );
                }
            };
            let started = Instant::now();
            let timeout = upstream.limits().response_timeout;
            let result = upstream.http().request(req).await;
            let answer = match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BODY).collect();
                    match tokio::time::timeout(timeout.max(Duration::from_millis(1)), body).await {
                        Ok(Ok(b)) => {
                            beam.metrics.beam_served(&label, status);
                            reply(status, b.to_bytes(), skip)
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(entry = %label, error = %e, "Beam upstream response body unusable");
                            beam.payload_failed(
                                &label,
                                502,
                                "Bad Gateway: upstream response body too large or broken",
                            )
                        }
                        Err(_) => beam.payload_failed(
                            &label,
                            504,
                            "Gateway Timeout: upstream response body",
                        ),
                    }
                }
                Err(e) => {
                    beam.metrics.beam_upstream_error(&label, &e);
                    let (status, what) = failure_status(&e);
                    beam.payload_failed(
                        &label,
                        status.as_u16(),
                        &format!("{what}: upstream {}", e.label()),
                    )
                }
            };
            beam.observe_upstream(&label, started);
            answer
        }))
    }

    /// simgate's own error answer, counted under the entry.
    fn payload_failed(&self, label: &str, status: u16, message: &str) -> Reply {
        self.metrics.beam_served(label, status);
        Reply::error(status, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_base64_json() {
        let b = payload_body(b"test\n");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, serde_json::json!({"payload": "dGVzdAo="}));
        assert_eq!(payload_body(b""), br#"{"payload":""}"#);
    }

    #[test]
    fn device_lines() {
        assert_eq!(device_line(200, b"", false), "200");
        assert_eq!(device_line(200, b"ok", false), "200 ok");
        assert_eq!(device_line(404, b"nope", true), "nope");
    }
}
