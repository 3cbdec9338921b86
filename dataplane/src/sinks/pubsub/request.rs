//! The sans-IO half of the Pub/Sub sink: the `topics.publish` body, the
//! outcomes of its response, the classification of Google's error responses,
//! and the topic named by SORACOM's `resourceUrl`.

use serde::Deserialize;

use crate::sinks::aws::error::truncate;
use crate::sinks::aws::json::{base64_len, write_base64};
use crate::sinks::{BatchOutcome, FailureKind, RecordOutcome, RetryReason, SinkError, SinkRecord};

/// Host of the global Pub/Sub endpoint; regional ones are
/// `{region}-pubsub.googleapis.com`.
pub const DEFAULT_ENDPOINT: &str = "https://pubsub.googleapis.com";

/// Bytes of a publish body around its messages: `{"messages":[]}`.
pub const BATCH_OVERHEAD: usize = r#"{"messages":[]}"#.len();
/// Bytes of one message around its base64 data: `{"data":""},`.
pub const MESSAGE_OVERHEAD: usize = r#"{"data":""},"#.len();

// ---------------------------------------------------------------------------
// Request body
// ---------------------------------------------------------------------------

/// The `topics.publish` body for `records`:
/// `{"messages":[{"data":"<base64>"},..]}`.
///
/// Only `data`: SORACOM documents no message attributes for Funnel to
/// Pub/Sub, and the envelope already carries the IMSI. An `orderingKey`
/// would need message ordering enabled on the subscription side and would
/// serialise each SIM's messages, so none is set.
pub fn publish_body(records: &[SinkRecord]) -> Vec<u8> {
    let hint = records.iter().fold(BATCH_OVERHEAD, |acc, r| {
        acc + MESSAGE_OVERHEAD + base64_len(r.data.len())
    });
    let mut out = Vec::with_capacity(hint);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"data\":\"");
        write_base64(&mut out, &record.data);
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
    out
}

// ---------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct PublishResponse {
    #[serde(rename = "messageIds")]
    message_ids: Option<Vec<String>>,
}

/// Turns a successful (2xx) publish response into one outcome per record.
///
/// Pub/Sub publishes a request all or nothing and answers with one id per
/// message, in order. Fewer ids than messages should not happen; the
/// messages without an id are retried (`missing_result`) rather than
/// assumed delivered, since losing them is worse than a duplicate in an
/// at-least-once service. A body that is not the documented shape fails the
/// batch as transient.
pub fn parse_publish_response(body: &[u8], expected: usize) -> BatchOutcome {
    let bad = |message: String| {
        BatchOutcome::Failed(SinkError {
            kind: FailureKind::Transient,
            reason: "bad_response",
            message: truncate(message),
        })
    };
    let parsed: PublishResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad(format!("publish response is not valid JSON: {e}")),
    };
    let Some(ids) = parsed.message_ids else {
        return bad("publish response has no messageIds array".to_owned());
    };
    BatchOutcome::PerRecord(
        (0..expected)
            .map(|i| {
                if i < ids.len() {
                    RecordOutcome::Delivered
                } else {
                    RecordOutcome::Retryable(RetryReason::transient("missing_result"))
                }
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Error responses
// ---------------------------------------------------------------------------

/// Google's error shape (AIP-193):
/// `{"error":{"code":429,"message":"…","status":"RESOURCE_EXHAUSTED"}}`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    message: Option<String>,
    status: Option<String>,
}

/// A classified publish error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    pub error: SinkError,
    /// The access token was refused: drop it so that the next attempt gets
    /// a new one.
    pub token_rejected: bool,
}

/// Classifies a non-2xx publish response by its canonical `status` (the
/// gRPC code name), else by the HTTP status; the body need not be JSON
/// (load balancers answer 502/503 in HTML).
///
/// 401 `UNAUTHENTICATED` is transient: a cached token can be revoked or
/// invalidated before its `expires_in` (key rotated or deleted, account
/// disabled), and a fresh exchange either works or fails at the token
/// endpoint, where a broken credential is classified for good. The client
/// makes a second 401 in a row, with a freshly issued token, permanent.
pub fn classify_error(status: u16, body: &[u8]) -> PublishError {
    use FailureKind::{Permanent, Throttled, Transient};

    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let detail = parsed.error.unwrap_or_default();
    let code = detail.status.as_deref().filter(|s| !s.is_empty());
    let by_code = code.and_then(|c| {
        Some(match c {
            "RESOURCE_EXHAUSTED" => (Throttled, "resource_exhausted"),
            "UNAUTHENTICATED" => (Transient, "unauthenticated"),
            "PERMISSION_DENIED" => (Permanent, "permission_denied"),
            "NOT_FOUND" => (Permanent, "not_found"),
            "INVALID_ARGUMENT" => (Permanent, "invalid_argument"),
            "FAILED_PRECONDITION" => (Permanent, "failed_precondition"),
            "OUT_OF_RANGE" => (Permanent, "out_of_range"),
            "UNIMPLEMENTED" => (Permanent, "unimplemented"),
            "UNAVAILABLE" => (Transient, "unavailable"),
            "INTERNAL" => (Transient, "internal"),
            "DEADLINE_EXCEEDED" => (Transient, "deadline_exceeded"),
            "ABORTED" => (Transient, "aborted"),
            "CANCELLED" => (Transient, "cancelled"),
            "UNKNOWN" => (Transient, "unknown"),
            _ => return None,
        })
    });
    let (kind, reason) = by_code.unwrap_or_else(|| status_class(status));
    let message = detail.message.unwrap_or_else(|| {
        if code.is_some() {
            String::new()
        } else {
            String::from_utf8_lossy(body).trim().to_owned()
        }
    });
    let message = match code {
        Some(code) if message.is_empty() => format!("HTTP {status} {code}"),
        Some(code) => format!("HTTP {status} {code}: {message}"),
        None if message.is_empty() => format!("HTTP {status}"),
        None => format!("HTTP {status}: {message}"),
    };
    PublishError {
        token_rejected: reason == "unauthenticated",
        error: SinkError {
            kind,
            reason,
            message: truncate(message),
        },
    }
}

/// The class of a response whose body names no known status.
fn status_class(status: u16) -> (FailureKind, &'static str) {
    use FailureKind::{Permanent, Throttled, Transient};
    match status {
        429 => (Throttled, "resource_exhausted"),
        401 => (Transient, "unauthenticated"),
        403 => (Permanent, "permission_denied"),
        404 => (Permanent, "not_found"),
        400 => (Permanent, "invalid_argument"),
        413 => (Permanent, "request_too_large"),
        408 => (Transient, "http_408"),
        500 => (Transient, "internal"),
        502 => (Transient, "http_502"),
        503 => (Transient, "unavailable"),
        504 => (Transient, "deadline_exceeded"),
        s if (500..600).contains(&s) => (Transient, "http_5xx"),
        // Redirects and other 4xx: the same request will not fare better.
        _ => (Permanent, "http_status"),
    }
}

// ---------------------------------------------------------------------------
// Topic resource
// ---------------------------------------------------------------------------

/// A topic: `projects/{project}/topics/{topic}`, and the endpoint a full
/// URL named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub project: String,
    pub topic: String,
    /// `https://{host}` when the resource URL was a full
    /// `https://….googleapis.com/v1/projects/…` URL.
    pub endpoint: Option<String>,
}

impl Topic {
    /// `/v1/projects/{project}/topics/{topic}:publish`. `%` is the one topic
    /// character that is not literal in a URL path.
    pub fn publish_path(&self) -> String {
        format!(
            "/v1/projects/{}/topics/{}:publish",
            self.project,
            self.topic.replace('%', "%25")
        )
    }
}

/// Why a `resourceUrl` names no usable topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    #[error(
        "invalid topic name {0:?}: 3 to 255 characters of A-Z, a-z, 0-9, '-', '_', '.', '~', \
         '+', '%', starting with a letter and not with \"goog\""
    )]
    InvalidTopic(String),
    #[error(
        "invalid project id {0:?}: lower-case letters, digits, '-' (and '.', ':' for \
         domain-scoped projects), starting with a letter"
    )]
    InvalidProject(String),
    #[error(
        "resourceUrl {0:?} is not a topic: expected `topic`, `projects/{{p}}/topics/{{t}}` or \
         `https://pubsub.googleapis.com/v1/projects/{{p}}/topics/{{t}}`"
    )]
    Malformed(String),
    /// A full URL must point at Google: the sink sends its access token
    /// there. Other hosts go in the destination's `endpoint`.
    #[error("resourceUrl {0:?} must be an https://….googleapis.com URL")]
    NotGoogleHost(String),
}

/// Pub/Sub's topic name rule (resource names, "Resource name rules").
pub fn is_valid_topic_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.starts_with("goog")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+%".contains(&b))
}

/// Google project ids: 6–30 lower-case letters, digits and hyphens starting
/// with a letter; older domain-scoped ids (`example.com:proj`) add `.` and
/// `:`. Checked loosely (1–100 characters): the service has the last word,
/// this only keeps the id from breaking the request path.
pub fn is_valid_project_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b))
}

/// The topic of SORACOM's `resourceUrl`: a bare topic name (SORACOM's own
/// example, `your_topic_name`, in `default_project`, the key file's
/// `project_id`), `projects/{p}/topics/{t}`, or the REST URL
/// `https://pubsub.googleapis.com/v1/projects/{p}/topics/{t}` (a regional
/// `https://{region}-pubsub.googleapis.com/…` becomes the endpoint).
pub fn parse_resource_url(url: &str, default_project: &str) -> Result<Topic, TopicError> {
    let raw = url.trim();
    let (endpoint, path) = if let Some(rest) = raw.strip_prefix("https://") {
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::Malformed(raw.to_owned()))?;
        // Only a host name and a port: anything else (`?`, `#`, `@`, `\`)
        // would make the authority that `http::Uri` sends the token to
        // differ from the text checked here (found by the fuzzer:
        // `https://evil.example?.googleapis.com/v1/…`).
        let (host_name, port) = host.split_once(':').unwrap_or((host, ""));
        let is_name = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        if !host_name.to_ascii_lowercase().ends_with(".googleapis.com")
            || !is_name(host_name)
            || !port.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(TopicError::NotGoogleHost(raw.to_owned()));
        }
        let path = path
            .strip_prefix("v1/")
            .ok_or_else(|| TopicError::Malformed(raw.to_owned()))?;
        // Host names are case-insensitive; the endpoint is kept in one
        // spelling, so it compares (and reads) as Google's.
        (Some(format!("https://{}", host.to_ascii_lowercase())), path)
    } else if raw.contains("://") {
        return Err(TopicError::NotGoogleHost(raw.to_owned()));
    } else {
        (None, raw)
    };
    let path = path.trim_end_matches('/');
    let (project, topic) = match path.split('/').collect::<Vec<_>>()[..] {
        [topic] if endpoint.is_none() => (default_project, topic),
        ["projects", project, "topics", topic] => (project, topic),
        _ => return Err(TopicError::Malformed(raw.to_owned())),
    };
    if !is_valid_project_id(project) {
        return Err(TopicError::InvalidProject(project.to_owned()));
    }
    if !is_valid_topic_name(topic) {
        return Err(TopicError::InvalidTopic(topic.to_owned()));
    }
    Ok(Topic {
        project: project.to_owned(),
        topic: topic.to_owned(),
        endpoint,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine as _;
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::sinks::pubsub::{LIMITS, MAX_REQUEST_BYTES};

    fn rec(data: &[u8]) -> SinkRecord {
        SinkRecord {
            partition_key: "440101234567890".into(),
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn body_is_exact_json() {
        let body = publish_body(&[rec(b"{\"a\":1}"), rec(b"")]);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"messages":[{"data":"eyJhIjoxfQ=="},{"data":""}]}"#
        );
        assert_eq!(&publish_body(&[])[..], br#"{"messages":[]}"#);
    }

    #[test]
    fn largest_batch_fits_the_request_limit() {
        // The worst case for base64 padding: every record 1 byte over a
        // multiple of 3, the raw budget spread over the most messages.
        let n = LIMITS.max_records;
        let each = LIMITS.max_bytes / n;
        let each = each - each % 3 + 1;
        let records: Vec<_> = (0..n).map(|_| rec(&vec![b'x'; each])).collect();
        assert!(records.iter().map(|r| r.data.len()).sum::<usize>() <= LIMITS.max_bytes);
        assert!(publish_body(&records).len() <= MAX_REQUEST_BYTES);
        // One record of the largest size alone.
        let one = publish_body(&[rec(&vec![0u8; LIMITS.max_record_bytes])]);
        assert!(one.len() <= MAX_REQUEST_BYTES, "{}", one.len());
        // And the budget is not needlessly small: within 1% of the limit.
        const { assert!(4 * LIMITS.max_bytes / 3 > MAX_REQUEST_BYTES * 99 / 100) };
    }

    #[test]
    fn message_ids_deliver_each_record() {
        let body = br#"{"messageIds":["4286471946830214","4286471946830215"]}"#;
        assert_eq!(
            parse_publish_response(body, 2),
            BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; 2])
        );
        // Fewer ids: the rest are retried, not assumed delivered.
        assert_eq!(
            parse_publish_response(br#"{"messageIds":["1"]}"#, 3),
            BatchOutcome::PerRecord(vec![
                RecordOutcome::Delivered,
                RecordOutcome::Retryable(RetryReason::transient("missing_result")),
                RecordOutcome::Retryable(RetryReason::transient("missing_result")),
            ])
        );
        assert_eq!(
            parse_publish_response(br#"{"messageIds":[]}"#, 0),
            BatchOutcome::PerRecord(vec![])
        );
    }

    #[test]
    fn malformed_responses_fail_the_batch_transiently() {
        for body in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"messageIds":null}"#,
            br#"{"messageIds":[1,2]}"#,
            b"[]",
        ] {
            match parse_publish_response(body, 2) {
                BatchOutcome::Failed(e) => {
                    assert_eq!(e.kind, FailureKind::Transient, "{body:?}");
                    assert_eq!(e.reason, "bad_response");
                }
                other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn error_classification() {
        use FailureKind::{Permanent, Throttled, Transient};
        // Bodies as Google sends them (AIP-193 JSON errors).
        let cases: &[(u16, &str, FailureKind, &str, bool)] = &[
            (
                429,
                r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
                Throttled,
                "resource_exhausted",
                false,
            ),
            (
                401,
                r#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED"}}"#,
                Transient,
                "unauthenticated",
                true,
            ),
            (
                403,
                r#"{"error":{"code":403,"message":"User not authorized to perform this action.","status":"PERMISSION_DENIED"}}"#,
                Permanent,
                "permission_denied",
                false,
            ),
            (
                404,
                r#"{"error":{"code":404,"message":"Resource not found (resource=devices).","status":"NOT_FOUND"}}"#,
                Permanent,
                "not_found",
                false,
            ),
            (
                400,
                r#"{"error":{"code":400,"message":"The value for message_count is too large. You passed 1001 in the request, but the maximum value is 1000.","status":"INVALID_ARGUMENT"}}"#,
                Permanent,
                "invalid_argument",
                false,
            ),
            (
                503,
                r#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#,
                Transient,
                "unavailable",
                false,
            ),
            (
                500,
                r#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#,
                Transient,
                "internal",
                false,
            ),
            (
                504,
                r#"{"error":{"code":504,"message":"Deadline exceeded","status":"DEADLINE_EXCEEDED"}}"#,
                Transient,
                "deadline_exceeded",
                false,
            ),
            // No JSON: the HTTP status decides.
            (
                502,
                "<html>Bad Gateway</html>",
                Transient,
                "http_502",
                false,
            ),
            (503, "", Transient, "unavailable", false),
            (
                429,
                "Too Many Requests",
                Throttled,
                "resource_exhausted",
                false,
            ),
            (401, "", Transient, "unauthenticated", true),
            (418, "teapot", Permanent, "http_status", false),
            (599, "", Transient, "http_5xx", false),
            // An unknown status name falls back to the HTTP status.
            (
                503,
                r#"{"error":{"code":503,"status":"SOMETHING_NEW"}}"#,
                Transient,
                "unavailable",
                false,
            ),
        ];
        for &(status, body, kind, reason, token_rejected) in cases {
            let e = classify_error(status, body.as_bytes());
            assert_eq!(
                (e.error.kind, e.error.reason, e.token_rejected),
                (kind, reason, token_rejected),
                "{status} {body}"
            );
        }
        let e = classify_error(
            429,
            br#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.error.message, "HTTP 429 RESOURCE_EXHAUSTED: slow down");
        let e = classify_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(e.error.message, "HTTP 502: <html>Bad Gateway</html>");
        let long = "x".repeat(10_000);
        assert!(classify_error(500, long.as_bytes()).error.message.len() < 1000);
    }

    #[test]
    fn resource_urls() {
        let t = |project: &str, topic: &str, endpoint: Option<&str>| Topic {
            project: project.into(),
            topic: topic.into(),
            endpoint: endpoint.map(str::to_owned),
        };
        assert_eq!(
            parse_resource_url("your_topic_name", "my-project").unwrap(),
            t("my-project", "your_topic_name", None)
        );
        assert_eq!(
            parse_resource_url("projects/other-proj/topics/devices", "my-project").unwrap(),
            t("other-proj", "devices", None)
        );
        assert_eq!(
            parse_resource_url(
                "https://pubsub.googleapis.com/v1/projects/p-123456/topics/a.b~c+d%20",
                "x"
            )
            .unwrap(),
            t(
                "p-123456",
                "a.b~c+d%20",
                Some("https://pubsub.googleapis.com")
            )
        );
        assert_eq!(
            parse_resource_url(
                "https://europe-west1-pubsub.googleapis.com/v1/projects/p/topics/dev/",
                "x"
            )
            .unwrap()
            .endpoint
            .as_deref(),
            Some("https://europe-west1-pubsub.googleapis.com")
        );
        assert_eq!(
            t("p", "a%2Fb", None).publish_path(),
            "/v1/projects/p/topics/a%252Fb:publish"
        );
        assert_eq!(
            t("p", "dev", None).publish_path(),
            "/v1/projects/p/topics/dev:publish"
        );

        for bad_topic in [
            "ab",
            "1abc",
            "goog-devices",
            "has space",
            "slash/x",
            &"a".repeat(256),
            "",
        ] {
            let r = parse_resource_url(&format!("projects/p/topics/{bad_topic}"), "p");
            assert!(
                matches!(
                    r,
                    Err(TopicError::InvalidTopic(_)) | Err(TopicError::Malformed(_))
                ),
                "{bad_topic:?} -> {r:?}"
            );
        }
        assert!(matches!(
            parse_resource_url("goog", "p"),
            Err(TopicError::InvalidTopic(_))
        ));
        assert!(parse_resource_url(&"a".repeat(255), "p").is_ok());
        assert!(matches!(
            parse_resource_url("devices", ""),
            Err(TopicError::InvalidProject(_))
        ));
        assert!(matches!(
            parse_resource_url("projects/Upper/topics/devices", "p"),
            Err(TopicError::InvalidProject(_))
        ));
        for malformed in [
            "projects/p/subscriptions/s",
            "projects/p/topics",
            "p/topics/t",
            "https://pubsub.googleapis.com/projects/p/topics/t",
            "https://pubsub.googleapis.com/v1/devices",
            "https://pubsub.googleapis.com",
        ] {
            assert!(
                matches!(
                    parse_resource_url(malformed, "p"),
                    Err(TopicError::Malformed(_))
                ),
                "{malformed}"
            );
        }
        for foreign in [
            "https://evil.example/v1/projects/p/topics/t",
            "https://googleapis.com.evil.example/v1/projects/p/topics/t",
            "http://pubsub.googleapis.com/v1/projects/p/topics/t",
            "https://evil.example?.googleapis.com/v1/projects/p/topics/t",
            "https://evil.example#.googleapis.com/v1/projects/p/topics/t",
            "https://evil.example@x.googleapis.com/v1/projects/p/topics/t",
            "https://evil.example\\.googleapis.com/v1/projects/p/topics/t",
            "https://pubsub.googleapis.com:44x/v1/projects/p/topics/t",
        ] {
            assert!(
                matches!(
                    parse_resource_url(foreign, "p"),
                    Err(TopicError::NotGoogleHost(_))
                ),
                "{foreign}"
            );
        }
    }

    #[test]
    fn the_endpoint_host_is_lower_case() {
        // Found by the fuzzer: a host spelled `googleapis.cOm` is Google's,
        // and is kept as `googleapis.com`.
        let t = parse_resource_url(
            "https://asia-northeast1-pubsub.googleapis.cOm/v1/projects/p-1234/topics/topic-1",
            "unused",
        )
        .unwrap();
        assert_eq!(
            t.endpoint.as_deref(),
            Some("https://asia-northeast1-pubsub.googleapis.com")
        );
    }

    proptest! {
        #[test]
        fn body_round_trips(
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
        ) {
            let records: Vec<_> = data.iter().map(|d| rec(d)).collect();
            let body = publish_body(&records);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let decoded: Vec<Vec<u8>> = v["messages"].as_array().unwrap().iter().map(|m| {
                prop_assert_eq!(m.as_object().unwrap().len(), 1);
                Ok(base64::engine::general_purpose::STANDARD.decode(m["data"].as_str().unwrap()).unwrap())
            }).collect::<Result<_, TestCaseError>>()?;
            prop_assert_eq!(decoded, data);
        }

        #[test]
        fn response_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..8) {
            match parse_publish_response(&body, n) {
                BatchOutcome::PerRecord(v) => prop_assert_eq!(v.len(), n),
                BatchOutcome::Failed(e) => prop_assert_eq!(e.kind, FailureKind::Transient),
            }
        }

        #[test]
        fn classifier_never_panics(status in 300u16..600, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let e = classify_error(status, &body);
            prop_assert!(!e.error.message.is_empty());
        }
    }
}
