//! One request to a sink's service and its whole (bounded) response, with
//! the failures every HTTP sink classifies the same way.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};

use crate::sinks::{FailureKind, SinkError};
use crate::upstream::error::error_chain;
use crate::upstream::{full_body, HttpClient, UpstreamError};

/// A response read completely.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends `req` and reads the whole response (at most `max_response` bytes
/// of body) within `timeout`. Timeouts, connection, TLS and transport
/// errors are [`FailureKind::Transient`]: a broken endpoint (a certificate
/// problem included) breaks the destination, not the records, so they wait
/// for it to be fixed instead of being dead-lettered one by one. The status
/// is left to the caller.
pub async fn exchange(
    http: &HttpClient,
    req: Request<Bytes>,
    timeout: Duration,
    max_response: usize,
) -> Result<Response, SinkError> {
    let send = async {
        let resp = http
            .request(req.map(full_body))
            .await
            .map_err(transport_failure)?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, max_response)
            .collect()
            .await
            .map_err(|e| {
                let too_large = e.is::<http_body_util::LengthLimitError>();
                SinkError {
                    kind: FailureKind::Transient,
                    reason: if too_large {
                        "response_too_large"
                    } else {
                        "http"
                    },
                    message: format!("reading response body: {}", error_chain(&*e)),
                }
            })?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(result) => result,
        Err(_elapsed) => Err(SinkError {
            kind: FailureKind::Transient,
            reason: "timeout",
            message: format!("no complete response within {timeout:?}"),
        }),
    }
}

/// A failed exchange with the endpoint: always transient (see [`exchange`]).
pub fn transport_failure(e: UpstreamError) -> SinkError {
    SinkError {
        kind: FailureKind::Transient,
        reason: e.label(),
        message: e.message().to_owned(),
    }
}
