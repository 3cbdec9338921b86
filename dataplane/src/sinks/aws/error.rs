//! Classification of AWS JSON-protocol error responses, shared by every AWS
//! sink: which failures are worth another attempt, which mean slow down, and
//! which will not fix themselves.

use serde::Deserialize;

use crate::sinks::{FailureKind, SinkError};

/// Longest error message kept from a response, so that a misbehaving peer
/// cannot make us carry (or log) megabytes per failure.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// The AWS JSON error shape; services disagree on the case of `message`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(rename = "__type")]
    kind: Option<String>,
    message: Option<String>,
    #[serde(rename = "Message")]
    message_upper: Option<String>,
}

/// Strips the namespace and URI decorations AWS puts around error codes:
/// `com.amazonaws.kinesis.v20131202#ResourceNotFoundException` and
/// `ValidationException:http://internal.amazon.com/...` both become the
/// bare code.
fn bare_error_code(raw: &str) -> &str {
    let after_hash = raw.rsplit('#').next().unwrap_or(raw);
    after_hash.split(':').next().unwrap_or(after_hash).trim()
}

/// Classifies a non-2xx response of any AWS JSON-protocol action (Kinesis,
/// Firehose, …).
///
/// `error_type_header` is the `x-amzn-ErrorType` header if the response had
/// one; it takes precedence over the body's `__type`, as the AWS JSON
/// protocol specifies. The body need not be JSON (proxies, emulators).
pub fn classify_error(status: u16, error_type_header: Option<&str>, body: &[u8]) -> SinkError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = error_type_header
        .map(bare_error_code)
        .filter(|c| !c.is_empty())
        .or_else(|| parsed.kind.as_deref().map(bare_error_code))
        .filter(|c| !c.is_empty());
    let message = parsed.message.or(parsed.message_upper).unwrap_or_else(|| {
        if code.is_some() {
            String::new()
        } else {
            String::from_utf8_lossy(body).trim().to_owned()
        }
    });

    let (kind, reason) = classify_code(status, code, &message);
    let message = match code {
        Some(code) if message.is_empty() => format!("HTTP {status} {code}"),
        Some(code) => format!("HTTP {status} {code}: {message}"),
        None if message.is_empty() => format!("HTTP {status}"),
        None => format!("HTTP {status}: {message}"),
    };
    SinkError {
        kind,
        reason,
        message: truncate(message),
    }
}

fn classify_code(status: u16, code: Option<&str>, message: &str) -> (FailureKind, &'static str) {
    code.and_then(|c| code_class(c, message))
        .unwrap_or_else(|| status_class(status))
}

/// The class of a known error code; `None` lets the status decide.
pub fn code_class(code: &str, message: &str) -> Option<(FailureKind, &'static str)> {
    use FailureKind::{Permanent, Throttled, Transient};

    Some(match code {
        "ProvisionedThroughputExceededException" => (Throttled, "throughput_exceeded"),
        "LimitExceededException" => (Throttled, "limit_exceeded"),
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" => {
            (Throttled, "throttling")
        }
        "InternalFailure" | "InternalFailureException" | "InternalServerError" => {
            (Transient, "internal_failure")
        }
        "ServiceUnavailable" | "ServiceUnavailableException" => (Transient, "service_unavailable"),
        // The next attempt is signed afresh with the time of that attempt
        // (and, after a config push, possibly with new credentials).
        "ExpiredTokenException" | "ExpiredToken" => (Transient, "expired_token"),
        "RequestExpired" | "RequestTimeTooSkewed" => (Transient, "clock_skew"),
        "InvalidSignatureException" if is_clock_skew_message(message) => (Transient, "clock_skew"),
        "InvalidSignatureException" | "IncompleteSignatureException" => {
            (Permanent, "invalid_signature")
        }
        "ResourceNotFoundException" => (Permanent, "resource_not_found"),
        "AccessDeniedException" => (Permanent, "access_denied"),
        "UnrecognizedClientException" => (Permanent, "unrecognized_client"),
        "ValidationException"
        | "InvalidArgumentException"
        | "InvalidSourceException"
        | "InvalidRequestException" => (Permanent, "validation"),
        // AWS IoT Data: the message is over the broker's payload limit.
        "RequestEntityTooLargeException" => (Permanent, "too_large"),
        "UnauthorizedException" => (Permanent, "unauthorized"),
        // Firehose: the stream's KMS key is unusable (disabled, deleted,
        // access revoked); someone has to fix the key first.
        "InvalidKMSResourceException"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSNotFoundException"
        | "KMSInvalidStateException" => (Permanent, "kms"),
        _ => return None,
    })
}

fn status_class(status: u16) -> (FailureKind, &'static str) {
    use FailureKind::{Permanent, Throttled, Transient};

    match status {
        429 => (Throttled, "throttling"),
        400 => (Permanent, "http_400"),
        401 => (Permanent, "http_401"),
        403 => (Permanent, "http_403"),
        404 => (Permanent, "http_404"),
        413 => (Permanent, "http_413"),
        // The request never completed: try again.
        408 => (Transient, "http_408"),
        s if (400..500).contains(&s) => (Permanent, "http_4xx"),
        500 => (Transient, "http_500"),
        502 => (Transient, "http_502"),
        503 => (Transient, "http_503"),
        504 => (Transient, "http_504"),
        s if (500..600).contains(&s) => (Transient, "http_5xx"),
        // 1xx/3xx/odd codes: Kinesis never answers so; a misconfigured
        // endpoint (say, a redirecting proxy) will not fix itself.
        _ => (Permanent, "unexpected_status"),
    }
}

/// AWS words a clock problem as "Signature expired: 20240101T000000Z is now
/// earlier than …" (our clock behind) or "Signature not yet current: … is
/// still later than …" (our clock ahead).
fn is_clock_skew_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("signature expired") || m.contains("not yet current") || m.contains("skew")
}

/// Cuts `s` to [`MAX_MESSAGE_CHARS`] characters (plus an ellipsis).
pub fn truncate(mut s: String) -> String {
    if let Some((idx, _)) = s.char_indices().nth(MAX_MESSAGE_CHARS) {
        s.truncate(idx);
        s.push('…');
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn classify(status: u16, body: &str) -> (FailureKind, &'static str) {
        let e = classify_error(status, None, body.as_bytes());
        (e.kind, e.reason)
    }

    #[test]
    fn error_classification() {
        use FailureKind::{Permanent, Throttled, Transient};
        let cases: &[(u16, &str, FailureKind)] = &[
            (400, r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded"}"#, Throttled),
            (400, r#"{"__type":"LimitExceededException"}"#, Throttled),
            (400, r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#, Throttled),
            (429, "", Throttled),
            (500, r#"{"__type":"InternalFailure"}"#, Transient),
            (503, r#"{"__type":"ServiceUnavailable"}"#, Transient),
            (502, "<html>Bad Gateway</html>", Transient),
            (504, "", Transient),
            (599, "", Transient),
            (400, r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#, Transient),
            (400, r#"{"__type":"InvalidSignatureException","message":"Signature expired: 20240101T000000Z is now earlier than 20240101T000500Z (20240101T001000Z - 15 min.)"}"#, Transient),
            (400, r#"{"__type":"InvalidSignatureException","message":"Signature not yet current: 20240101T003000Z is still later than 20240101T001500Z (20240101T001000Z + 15 min.)"}"#, Transient),
            (403, r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match the signature you provided."}"#, Permanent),
            (400, r#"{"__type":"ResourceNotFoundException","message":"Stream x under account 000000000000 not found."}"#, Permanent),
            (400, r#"{"__type":"com.amazonaws.kinesis.v20131202#ResourceNotFoundException","message":"x"}"#, Permanent),
            (400, r#"{"__type":"AccessDeniedException","Message":"User is not authorized"}"#, Permanent),
            (403, r#"{"__type":"UnrecognizedClientException"}"#, Permanent),
            (400, r#"{"__type":"ValidationException","message":"1 validation error detected"}"#, Permanent),
            (400, r#"{"__type":"SerializationException"}"#, Permanent),
            (413, "", Permanent),
            (403, "<UnrecognizedClientException>\n  <Message>x</Message>\n</UnrecognizedClientException>\n", Permanent),
            (301, "", Permanent),
        ];
        for &(status, body, kind) in cases {
            assert_eq!(classify(status, body).0, kind, "{status} {body}");
        }
        assert_eq!(
            classify(
                400,
                r#"{"__type":"com.amazonaws.kinesis.v20131202#ResourceNotFoundException"}"#
            )
            .1,
            "resource_not_found"
        );
        assert_eq!(classify(503, "").1, "http_503");
    }

    #[test]
    fn error_header_wins_and_message_is_kept() {
        let e = classify_error(
            400,
            Some(
                "ResourceNotFoundException:http://internal.amazon.com/coral/com.amazonaws.kinesis/",
            ),
            br#"{"message":"Stream devices under account 1 not found."}"#,
        );
        assert_eq!(e.kind, FailureKind::Permanent);
        assert_eq!(e.reason, "resource_not_found");
        assert_eq!(
            e.message,
            "HTTP 400 ResourceNotFoundException: Stream devices under account 1 not found."
        );
    }

    #[test]
    fn error_messages_are_bounded() {
        let body = format!(
            r#"{{"__type":"ValidationException","message":"{}"}}"#,
            "x".repeat(100_000)
        );
        let e = classify_error(400, None, body.as_bytes());
        assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        let e = classify_error(500, None, "é".repeat(10_000).as_bytes());
        assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    proptest! {
        #[test]
        fn classifier_never_panics(status in 0u16..1000, header in proptest::option::of(".{0,40}"), body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let e = classify_error(status, header.as_deref(), &body);
            prop_assert!(!e.reason.is_empty());
            prop_assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        }
    }
}
