//! The sans-IO half of the Firehose sink: the PutRecordBatch request body,
//! the per-record outcomes of its response, the classification of error
//! responses, and the SORACOM-style resource URL.

use serde::Deserialize;

use crate::sinks::aws::error::truncate;
use crate::sinks::aws::json::{base64_len, write_base64, write_json_str};
use crate::sinks::aws::resource_url::{self, ResourceUrlError};
use crate::sinks::{BatchOutcome, FailureKind, RecordOutcome, RetryReason, SinkError, SinkRecord};

/// `X-Amz-Target` of PutRecordBatch.
pub const PUT_RECORD_BATCH_TARGET: &str = "Firehose_20150804.PutRecordBatch";

/// SigV4 signing name of Firehose.
pub const SIGNING_NAME: &str = "firehose";

/// Longest delivery stream name.
pub const MAX_DELIVERY_STREAM_NAME: usize = 64;

// ---------------------------------------------------------------------------
// Request body
// ---------------------------------------------------------------------------

/// The PutRecordBatch body for `records`:
/// `{"DeliveryStreamName":"..","Records":[{"Data":"<base64>"},..]}`.
/// Firehose has no partition key; the records' keys are not sent.
pub fn put_record_batch_body(delivery_stream: &str, records: &[SinkRecord]) -> Vec<u8> {
    const BATCH_OVERHEAD: usize = r#"{"DeliveryStreamName":"","Records":[]}"#.len();
    const RECORD_OVERHEAD: usize = r#"{"Data":""},"#.len();
    let hint = records
        .iter()
        .fold(BATCH_OVERHEAD + delivery_stream.len(), |acc, r| {
            acc + RECORD_OVERHEAD + base64_len(r.data.len())
        });
    let mut out = Vec::with_capacity(hint);
    out.extend_from_slice(b"{\"DeliveryStreamName\":");
    write_json_str(&mut out, delivery_stream);
    out.extend_from_slice(b",\"Records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
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
struct PutRecordBatchResponse {
    #[serde(rename = "RequestResponses")]
    responses: Option<Vec<ResponseEntry>>,
}

/// Only the fields that decide the outcome (`RecordId` is skipped).
#[derive(Deserialize)]
struct ResponseEntry {
    #[serde(rename = "ErrorCode")]
    error_code: Option<String>,
    #[serde(rename = "ErrorMessage")]
    error_message: Option<String>,
}

/// Record error codes that a later attempt may fix, and their metric label.
/// AWS documents `ServiceUnavailableException` (the delivery stream's
/// throughput limit: back off) and `InternalFailure` per record.
pub fn record_retry_reason(code: &str) -> Option<RetryReason> {
    match code {
        "ServiceUnavailableException" => Some(RetryReason::throttled("service_unavailable")),
        "InternalFailure" | "InternalFailureException" => {
            Some(RetryReason::transient("internal_failure"))
        }
        _ => None,
    }
}

/// Turns a successful (2xx) PutRecordBatch response body into one outcome
/// per record, in request order. The per-record `ErrorCode` decides, never
/// `FailedPutCount`; a body that does not answer for exactly `expected`
/// records fails the whole batch as transient.
pub fn parse_put_record_batch_response(body: &[u8], expected: usize) -> BatchOutcome {
    let bad = |message: String| {
        BatchOutcome::Failed(SinkError {
            kind: FailureKind::Transient,
            reason: "bad_response",
            message: truncate(message),
        })
    };
    let parsed: PutRecordBatchResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad(format!("PutRecordBatch response is not valid JSON: {e}")),
    };
    let Some(entries) = parsed.responses else {
        return bad("PutRecordBatch response has no RequestResponses array".to_owned());
    };
    if entries.len() != expected {
        return bad(format!(
            "PutRecordBatch response has {} results for {expected} records",
            entries.len()
        ));
    }
    BatchOutcome::PerRecord(
        entries
            .into_iter()
            .map(|e| match e.error_code {
                Some(code) if !code.is_empty() => match record_retry_reason(&code) {
                    Some(reason) => RecordOutcome::Retryable(reason),
                    None => {
                        let message = e.error_message.unwrap_or_default();
                        RecordOutcome::Rejected(truncate(format!("{code}: {message}")))
                    }
                },
                _ => RecordOutcome::Delivered,
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Error responses
// ---------------------------------------------------------------------------

/// Classifies a non-2xx Firehose response as Kinesis's are
/// ([`crate::sinks::aws::classify_error`]), except that a whole-request
/// `ServiceUnavailableException` means "back off" for Firehose (its
/// throughput limit), so it halves the sending concurrency.
pub fn classify_error(status: u16, error_type_header: Option<&str>, body: &[u8]) -> SinkError {
    let mut e = crate::sinks::aws::classify_error(status, error_type_header, body);
    if e.reason == "service_unavailable" {
        e.kind = FailureKind::Throttled;
    }
    e
}

// ---------------------------------------------------------------------------
// Resource URL
// ---------------------------------------------------------------------------

/// Whether `name` is a valid delivery stream name.
pub fn is_valid_delivery_stream_name(name: &str) -> bool {
    resource_url::is_valid_name(name, MAX_DELIVERY_STREAM_NAME)
}

/// Splits `https://firehose.ap-northeast-1.amazonaws.com/my-stream` into
/// `("ap-northeast-1", "my-stream")` (SORACOM's `FunnelAWSFirehoseDestination`).
pub fn parse_resource_url(url: &str) -> Result<(String, String), ResourceUrlError> {
    resource_url::parse_service_url(url, "firehose", MAX_DELIVERY_STREAM_NAME)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine as _;
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn rec(pk: &str, data: &[u8]) -> SinkRecord {
        SinkRecord {
            partition_key: pk.into(),
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn body_is_exact_json() {
        let body = put_record_batch_body(
            "devices",
            &[rec("440101234567890", b"{\"a\":1}"), rec("k", b"")],
        );
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"DeliveryStreamName":"devices","Records":[{"Data":"eyJhIjoxfQ=="},{"Data":""}]}"#
        );
        assert_eq!(
            &put_record_batch_body("s\"x", &[])[..],
            br#"{"DeliveryStreamName":"s\"x","Records":[]}"#
        );
    }

    #[test]
    fn per_record_outcomes_in_order() {
        let body = br#"{"FailedPutCount":3,"Encrypted":false,"RequestResponses":[
            {"RecordId":"49543463076548007577105092703039560359975228518395012686"},
            {"ErrorCode":"ServiceUnavailableException","ErrorMessage":"Slow down."},
            {"ErrorCode":"InternalFailure","ErrorMessage":"Internal service failure."},
            {"ErrorCode":"InvalidKMSResourceException","ErrorMessage":"key disabled"},
            {"RecordId":"2","ErrorCode":null}
        ]}"#;
        assert_eq!(
            parse_put_record_batch_response(body, 5),
            BatchOutcome::PerRecord(vec![
                RecordOutcome::Delivered,
                RecordOutcome::Retryable(RetryReason::throttled("service_unavailable")),
                RecordOutcome::Retryable(RetryReason::transient("internal_failure")),
                RecordOutcome::Rejected("InvalidKMSResourceException: key disabled".into()),
                RecordOutcome::Delivered,
            ])
        );
        // FailedPutCount is not trusted.
        let body = br#"{"FailedPutCount":0,"RequestResponses":[{"ErrorCode":"ServiceUnavailableException"}]}"#;
        assert_eq!(
            parse_put_record_batch_response(body, 1),
            BatchOutcome::PerRecord(vec![RecordOutcome::Retryable(RetryReason::throttled(
                "service_unavailable"
            ))])
        );
    }

    #[test]
    fn malformed_responses_fail_the_batch_transiently() {
        for body in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"RequestResponses":null}"#,
            br#"{"RequestResponses":[{}]}"#,
            br#"{"Records":[{},{}]}"#,
            b"[]",
        ] {
            match parse_put_record_batch_response(body, 2) {
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
        let cases: &[(u16, &str, FailureKind, &str)] = &[
            (
                400,
                r#"{"__type":"ServiceUnavailableException","message":"Slow down."}"#,
                Throttled,
                "service_unavailable",
            ),
            (
                503,
                r#"{"__type":"ServiceUnavailableException"}"#,
                Throttled,
                "service_unavailable",
            ),
            (
                400,
                r#"{"__type":"LimitExceededException"}"#,
                Throttled,
                "limit_exceeded",
            ),
            (429, "", Throttled, "throttling"),
            (
                500,
                r#"{"__type":"InternalFailure"}"#,
                Transient,
                "internal_failure",
            ),
            (502, "<html>Bad Gateway</html>", Transient, "http_502"),
            (
                400,
                r#"{"__type":"ExpiredTokenException"}"#,
                Transient,
                "expired_token",
            ),
            (
                400,
                r#"{"__type":"ResourceNotFoundException","message":"Firehose x under account 1 not found."}"#,
                Permanent,
                "resource_not_found",
            ),
            (
                400,
                r#"{"__type":"com.amazonaws.firehose.v20150804#ResourceNotFoundException"}"#,
                Permanent,
                "resource_not_found",
            ),
            (
                400,
                r#"{"__type":"InvalidArgumentException"}"#,
                Permanent,
                "validation",
            ),
            (
                400,
                r#"{"__type":"InvalidSourceException"}"#,
                Permanent,
                "validation",
            ),
            (
                400,
                r#"{"__type":"InvalidKMSResourceException"}"#,
                Permanent,
                "kms",
            ),
            (
                400,
                r#"{"__type":"AccessDeniedException"}"#,
                Permanent,
                "access_denied",
            ),
            (
                403,
                r#"{"__type":"UnrecognizedClientException"}"#,
                Permanent,
                "unrecognized_client",
            ),
        ];
        for &(status, body, kind, reason) in cases {
            let e = classify_error(status, None, body.as_bytes());
            assert_eq!((e.kind, e.reason), (kind, reason), "{status} {body}");
        }
    }

    #[test]
    fn resource_urls() {
        assert_eq!(
            parse_resource_url("https://firehose.ap-northeast-1.amazonaws.com/my-stream").unwrap(),
            ("ap-northeast-1".to_owned(), "my-stream".to_owned())
        );
        assert_eq!(
            parse_resource_url("https://firehose.cn-north-1.amazonaws.com.cn/s/").unwrap(),
            ("cn-north-1".to_owned(), "s".to_owned())
        );
        assert!(matches!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com/s"),
            Err(ResourceUrlError::NotServiceHost {
                service: "firehose",
                ..
            })
        ));
        assert!(matches!(
            parse_resource_url("http://firehose.us-east-1.amazonaws.com/s"),
            Err(ResourceUrlError::NotHttps(_))
        ));
        assert!(matches!(
            parse_resource_url(&format!(
                "https://firehose.us-east-1.amazonaws.com/{}",
                "a".repeat(65)
            )),
            Err(ResourceUrlError::InvalidName { max: 64, .. })
        ));
        assert!(matches!(
            parse_resource_url("https://firehose.us-east-1.amazonaws.com/"),
            Err(ResourceUrlError::MissingName { .. })
        ));
    }

    proptest! {
        #[test]
        fn body_round_trips(
            stream in "(?s).{0,40}",
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
        ) {
            let records: Vec<_> = data.iter().map(|d| rec("k", d)).collect();
            let body = put_record_batch_body(&stream, &records);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(v["DeliveryStreamName"].as_str().unwrap(), stream.as_str());
            let decoded: Vec<Vec<u8>> = v["Records"].as_array().unwrap().iter().map(|r| {
                base64::engine::general_purpose::STANDARD.decode(r["Data"].as_str().unwrap()).unwrap()
            }).collect();
            prop_assert_eq!(decoded, data);
        }

        #[test]
        fn response_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..8) {
            match parse_put_record_batch_response(&body, n) {
                BatchOutcome::PerRecord(v) => prop_assert_eq!(v.len(), n),
                BatchOutcome::Failed(e) => prop_assert_eq!(e.kind, FailureKind::Transient),
            }
        }
    }
}
