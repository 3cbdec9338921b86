//! The sans-IO half of the https sink: request bodies, the HMAC signature,
//! the checks of the URL and extra headers, and the classification of
//! responses.

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Uri;

use crate::sinks::{BatchOutcome, FailureKind, RecordOutcome, RetryReason, SinkError, SinkRecord};

/// Header with the unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-simgate-timestamp";
/// Header with `sha256=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-simgate-signature";

/// Why an https destination cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsConfigError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("URL {0:?} must be https:// (or http:// with [funnel] allow_insecure_endpoints)")]
    UnsupportedScheme(String),
    /// The destination's `headers` (checked when configured; this catches
    /// a stored destination that bypassed the check).
    #[error("destination.headers: {0}")]
    InvalidHeader(String),
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

/// The batch-mode body: `[` + the records' data joined by `,` + `]`. Each
/// record is already a JSON value (an envelope, a JSON payload, or a
/// non-JSON payload wrapped as `{"payload":"<base64>"}`), so nothing is
/// parsed again.
pub fn batch_body(records: &[SinkRecord]) -> Bytes {
    let len = records.iter().map(|r| r.data.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&r.data);
    }
    out.push(b']');
    Bytes::from(out)
}

/// The record-mode body: the record itself, not copied.
pub fn record_body(record: &SinkRecord) -> Bytes {
    record.data.clone()
}

// ---------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------

/// An HMAC-SHA256 signing key (a `psk` credential's key).
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// The key's bytes are the psk as given, UTF-8.
    pub fn new(psk: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, psk.as_bytes()))
    }

    /// `sha256=<hex HMAC-SHA256(key, "<timestamp>." + body)>`.
    pub fn signature(&self, timestamp: u64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("sha256={}", hex::encode(ctx.sign().as_ref()))
    }

    /// The two signature headers for a request with `body` sent at unix
    /// second `timestamp`.
    pub fn headers(&self, timestamp: u64, body: &[u8]) -> [(HeaderName, HeaderValue); 2] {
        let sig = self.signature(timestamp, body);
        [
            (
                HeaderName::from_static(TIMESTAMP_HEADER),
                HeaderValue::from(timestamp),
            ),
            (
                HeaderName::from_static(SIGNATURE_HEADER),
                // Only `sha256=` and hex digits: always a valid value.
                HeaderValue::from_str(&sig).unwrap_or(HeaderValue::from_static("sha256=")),
            ),
        ]
    }
}

// ---------------------------------------------------------------------------
// URL and headers
// ---------------------------------------------------------------------------

/// The URL records are POSTed to: `http` or `https` with a host. Whether
/// plain `http` is allowed is the configuration's decision
/// (`[funnel] allow_insecure_endpoints`), checked when the group is set.
pub fn parse_url(url: &str) -> Result<Uri, HttpsConfigError> {
    let invalid = |reason: String| HttpsConfigError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url.trim().parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("http") => {}
        Some(other) => return Err(HttpsConfigError::UnsupportedScheme(other.to_owned())),
        None => return Err(invalid("no scheme (expected https://)".into())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    Ok(uri)
}

/// The destination's extra headers, checked as at configuration time
/// ([`simgate_control::check_https_headers`]) and converted.
pub fn extra_headers(
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, HttpsConfigError> {
    simgate_control::check_https_headers(headers).map_err(HttpsConfigError::InvalidHeader)?;
    headers
        .iter()
        .map(|(n, v)| {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|e| HttpsConfigError::InvalidHeader(format!("{n}: {e}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|e| HttpsConfigError::InvalidHeader(format!("{n}: {e}")))?;
            Ok((name, value))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// The metric label of a refusing status: a fixed set, so that a receiver
/// cannot grow the label space.
pub fn status_label(status: u16) -> &'static str {
    match status {
        429 => "throttled",
        400..=499 => match status {
            400 => "http_400",
            401 => "http_401",
            403 => "http_403",
            404 => "http_404",
            405 => "http_405",
            408 => "http_408",
            409 => "http_409",
            410 => "http_410",
            413 => "http_413",
            415 => "http_415",
            422 => "http_422",
            _ => "http_4xx",
        },
        500..=599 => match status {
            500 => "http_500",
            502 => "http_502",
            503 => "http_503",
            504 => "http_504",
            _ => "http_5xx",
        },
        _ => "http_other",
    }
}

/// Most characters of a response body kept in a failure message.
const MAX_BODY_IN_MESSAGE: usize = 200;

/// What a response with `status` (and, for the message, `body`) means:
/// `Ok` for 2xx, else the failure. 429 asks us to slow down; 408, 5xx and
/// anything outside 2xx–5xx may pass; other 4xx are the receiver's final
/// word on this request.
pub fn classify(status: u16, body: &[u8]) -> Result<(), SinkError> {
    let kind = match status {
        200..=299 => return Ok(()),
        429 => FailureKind::Throttled,
        408 | 500..=599 => FailureKind::Transient,
        400..=499 => FailureKind::Permanent,
        // 1xx and 3xx: redirects are not followed (a signed body must not
        // travel to a place nobody configured); the next attempt may find
        // the receiver fixed.
        _ => FailureKind::Transient,
    };
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .take(MAX_BODY_IN_MESSAGE)
        .collect();
    Err(SinkError {
        kind,
        reason: status_label(status),
        message: match text.trim() {
            "" => format!("HTTP {status}"),
            t => format!("HTTP {status}: {t}"),
        },
    })
}

/// One record's outcome in record mode, from its own request's result.
pub fn record_outcome(result: Result<(), SinkError>) -> RecordOutcome {
    match result {
        Ok(()) => RecordOutcome::Delivered,
        Err(e) => match e.kind {
            FailureKind::Throttled => RecordOutcome::Retryable(RetryReason::throttled(e.reason)),
            FailureKind::Transient => RecordOutcome::Retryable(RetryReason::transient(e.reason)),
            FailureKind::Permanent => RecordOutcome::Rejected(e.message),
        },
    }
}

/// The outcome of a record-mode batch from its requests' results, in
/// record order. When no request got an answer about its record (all
/// failed as throttled or transient: the receiver is down or overloaded),
/// the batch failed as a whole, so that an outage spends no record's
/// attempts; otherwise each record has its own outcome.
pub fn record_mode_outcome(results: Vec<Result<(), SinkError>>) -> BatchOutcome {
    let whole_failure = !results.is_empty()
        && results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.kind != FailureKind::Permanent));
    if whole_failure {
        let mut errors = results.into_iter().filter_map(Result::err);
        let mut first = errors.next();
        // Throttling anywhere is the signal that matters: slow down.
        if let Some(throttled) = errors.find(|e| e.kind == FailureKind::Throttled) {
            if first
                .as_ref()
                .is_some_and(|f| f.kind != FailureKind::Throttled)
            {
                first = Some(throttled);
            }
        }
        if let Some(e) = first {
            return BatchOutcome::Failed(e);
        }
        return BatchOutcome::PerRecord(Vec::new());
    }
    BatchOutcome::PerRecord(results.into_iter().map(record_outcome).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rec(data: &str) -> SinkRecord {
        SinkRecord {
            partition_key: "001010000000001".into(),
            data: Bytes::copy_from_slice(data.as_bytes()),
        }
    }

    #[test]
    fn batch_body_is_a_json_array_of_the_records() {
        assert_eq!(&batch_body(&[])[..], b"[]");
        assert_eq!(&batch_body(&[rec(r#"{"a":1}"#)])[..], br#"[{"a":1}]"#);
        let body = batch_body(&[
            rec(r#"{"imsi":"001","payloads":{"t":21}}"#),
            rec(r#"{"payload":"AAE="}"#),
            rec("42"),
        ]);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"[{"imsi":"001","payloads":{"t":21}},{"payload":"AAE="},42]"#
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
    }

    #[test]
    fn record_body_is_the_record_itself() {
        let r = rec(r#"{"a":1}"#);
        let body = record_body(&r);
        assert_eq!(body, r.data);
        // Shares the record's buffer.
        assert_eq!(body.as_ptr(), r.data.as_ptr());
    }

    /// Values computed with openssl, not with the code under test:
    /// `printf '1700000000.[{"a":1},{"b":2}]' | openssl dgst -sha256 -hmac 'wJalrXUtnFEMI'`
    /// and `printf '0.' | openssl dgst -sha256 -hmac 'topsecret'`.
    #[test]
    fn signature_matches_openssl() {
        let key = SigningKey::new("wJalrXUtnFEMI");
        assert_eq!(
            key.signature(1_700_000_000, br#"[{"a":1},{"b":2}]"#),
            "sha256=3a76654760e20703446724e560481be06209a9062783cb389472fe6f7ea66dea"
        );
        assert_eq!(
            SigningKey::new("topsecret").signature(0, b""),
            "sha256=beabe94079456d618a93a586f046abcaf8b9390b82a02683124ac13f295e6f46"
        );
        // Another key, timestamp or body gives another signature.
        assert_ne!(
            SigningKey::new("other").signature(1_700_000_000, br#"[{"a":1},{"b":2}]"#),
            key.signature(1_700_000_000, br#"[{"a":1},{"b":2}]"#)
        );
        assert_ne!(
            key.signature(1_700_000_001, br#"[{"a":1},{"b":2}]"#),
            key.signature(1_700_000_000, br#"[{"a":1},{"b":2}]"#)
        );
        let [(tn, tv), (sn, sv)] = key.headers(1_700_000_000, br#"[{"a":1},{"b":2}]"#);
        assert_eq!(
            (tn.as_str(), tv.to_str().unwrap()),
            (TIMESTAMP_HEADER, "1700000000")
        );
        assert_eq!(sn.as_str(), SIGNATURE_HEADER);
        assert_eq!(
            sv.to_str().unwrap(),
            "sha256=3a76654760e20703446724e560481be06209a9062783cb389472fe6f7ea66dea"
        );
        assert_eq!(format!("{key:?}"), "SigningKey(..)");
    }

    #[test]
    fn urls() {
        let u = parse_url("https://hooks.example.com:8443/in?x=1").unwrap();
        assert_eq!(u.host(), Some("hooks.example.com"));
        assert_eq!(u.path_and_query().unwrap().as_str(), "/in?x=1");
        parse_url("http://127.0.0.1:8080/").unwrap();
        assert!(matches!(
            parse_url("ftp://x/"),
            Err(HttpsConfigError::UnsupportedScheme(_))
        ));
        for bad in ["", "hooks.example.com/in", "https:///in", "https://a b/"] {
            assert!(
                matches!(parse_url(bad), Err(HttpsConfigError::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn extra_headers_are_checked_and_converted() {
        let mut h = BTreeMap::new();
        h.insert("X-Tenant".to_owned(), "acme".to_owned());
        h.insert("User-Agent".to_owned(), "fleet/1".to_owned());
        let converted = extra_headers(&h).unwrap();
        assert_eq!(converted.len(), 2);
        assert!(converted
            .iter()
            .any(|(n, v)| n.as_str() == "x-tenant" && v == "acme"));
        for (name, value) in [
            ("Authorization", "Bearer t"),
            ("Content-Type", "text/plain"),
            ("X-Simgate-Timestamp", "1"),
            ("Bad Name", "v"),
            ("X-A", "a\r\nX-Injected: 1"),
        ] {
            let h = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            assert!(
                matches!(extra_headers(&h), Err(HttpsConfigError::InvalidHeader(_))),
                "{name}: {value:?}"
            );
        }
    }

    #[test]
    fn classification() {
        use FailureKind::{Permanent, Throttled, Transient};
        for s in [200u16, 201, 202, 204, 299] {
            assert!(classify(s, b"").is_ok(), "{s}");
        }
        let cases: &[(u16, FailureKind, &str)] = &[
            (429, Throttled, "throttled"),
            (408, Transient, "http_408"),
            (500, Transient, "http_500"),
            (502, Transient, "http_502"),
            (503, Transient, "http_503"),
            (504, Transient, "http_504"),
            (599, Transient, "http_5xx"),
            (400, Permanent, "http_400"),
            (401, Permanent, "http_401"),
            (403, Permanent, "http_403"),
            (404, Permanent, "http_404"),
            (413, Permanent, "http_413"),
            (418, Permanent, "http_4xx"),
            (301, Transient, "http_other"),
        ];
        for &(status, kind, reason) in cases {
            let e = classify(status, b"  no such hook \n").unwrap_err();
            assert_eq!((e.kind, e.reason), (kind, reason), "{status}");
            assert_eq!(e.message, format!("HTTP {status}: no such hook"));
        }
        let long = classify(400, "é".repeat(1000).as_bytes()).unwrap_err();
        assert!(long.message.chars().count() <= MAX_BODY_IN_MESSAGE + 10);
    }

    #[test]
    fn record_outcomes() {
        assert_eq!(record_outcome(Ok(())), RecordOutcome::Delivered);
        assert_eq!(
            record_outcome(classify(429, b"")),
            RecordOutcome::Retryable(RetryReason::throttled("throttled"))
        );
        assert_eq!(
            record_outcome(classify(503, b"")),
            RecordOutcome::Retryable(RetryReason::transient("http_503"))
        );
        assert_eq!(
            record_outcome(classify(400, b"bad marker")),
            RecordOutcome::Rejected("HTTP 400: bad marker".into())
        );
    }

    #[test]
    fn record_mode_outcomes() {
        assert_eq!(record_mode_outcome(vec![]), BatchOutcome::PerRecord(vec![]));
        // Answers about records: one outcome each.
        assert_eq!(
            record_mode_outcome(vec![Ok(()), classify(400, b"marker"), classify(503, b"")]),
            BatchOutcome::PerRecord(vec![
                RecordOutcome::Delivered,
                RecordOutcome::Rejected("HTTP 400: marker".into()),
                RecordOutcome::Retryable(RetryReason::transient("http_503")),
            ])
        );
        assert_eq!(
            record_mode_outcome(vec![classify(400, b""), classify(503, b"")]),
            BatchOutcome::PerRecord(vec![
                RecordOutcome::Rejected("HTTP 400".into()),
                RecordOutcome::Retryable(RetryReason::transient("http_503")),
            ])
        );
        // Nobody answered about a record: the batch failed as a whole,
        // throttled if any request was.
        match record_mode_outcome(vec![classify(503, b""), classify(503, b"")]) {
            BatchOutcome::Failed(e) => {
                assert_eq!((e.kind, e.reason), (FailureKind::Transient, "http_503"))
            }
            other => panic!("{other:?}"),
        }
        match record_mode_outcome(vec![
            classify(503, b""),
            classify(429, b""),
            classify(500, b""),
        ]) {
            BatchOutcome::Failed(e) => {
                assert_eq!((e.kind, e.reason), (FailureKind::Throttled, "throttled"))
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn batch_body_parses_back_to_the_records(
            values in proptest::collection::vec(
                prop_oneof![
                    any::<i64>().prop_map(|n| serde_json::json!(n)),
                    "(?s).{0,40}".prop_map(|s| serde_json::json!({"payload": s})),
                    proptest::collection::vec(any::<bool>(), 0..5).prop_map(|v| serde_json::json!(v)),
                ],
                0..20,
            ),
        ) {
            let records: Vec<SinkRecord> = values.iter().map(|v| SinkRecord {
                partition_key: "k".into(),
                data: Bytes::from(serde_json::to_vec(v).unwrap()),
            }).collect();
            let body = batch_body(&records);
            let back: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(back, values);
        }
    }
}
