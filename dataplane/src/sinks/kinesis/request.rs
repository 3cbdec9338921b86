//! The sans-IO half of the Kinesis sink: the PutRecords request body, the
//! per-record outcomes of its response, the classification of error
//! responses, and the SORACOM-style resource URL. No sockets, no clock, no
//! tokio: everything here is a function of its arguments.

use base64::Engine as _;
use serde::Deserialize;

use crate::sinks::{BatchOutcome, FailureKind, RecordOutcome, RetryReason, SinkError, SinkRecord};

/// `X-Amz-Target` of PutRecords.
pub const PUT_RECORDS_TARGET: &str = "Kinesis_20131202.PutRecords";

/// Content type of the Kinesis JSON protocol.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Longest error message kept from a response, so that a misbehaving peer
/// cannot make us carry (or log) megabytes per failure.
const MAX_MESSAGE_CHARS: usize = 300;

// ---------------------------------------------------------------------------
// Request body
// ---------------------------------------------------------------------------

/// Where each record's `PartitionKey` comes from.
pub enum PartitionKeys<'a> {
    /// The record's own key (the IMSI).
    Record,
    /// SORACOM's `randomizePartitionKey`: a random key per record, as many
    /// lowercase hex digits as the record's own key (at least 1), so that
    /// every size limit computed from the record still holds. `bits` gives
    /// 128 random bits per call.
    Random { bits: &'a mut dyn FnMut() -> u128 },
}

/// Appends the PutRecords request body for `records` to `out`:
/// `{"StreamName":"..","Records":[{"Data":"<base64>","PartitionKey":".."},..]}`.
///
/// Written by hand straight into the buffer: this runs once per batch of up
/// to 5 MiB, and a `serde_json::Value` tree would copy every payload twice.
pub fn encode_put_records(stream: &str, records: &[SinkRecord], out: &mut Vec<u8>) {
    encode_put_records_keyed(stream, records, &mut PartitionKeys::Record, out);
}

/// [`encode_put_records`] with the partition keys chosen by `keys`.
pub fn encode_put_records_keyed(
    stream: &str,
    records: &[SinkRecord],
    keys: &mut PartitionKeys<'_>,
    out: &mut Vec<u8>,
) {
    out.reserve(put_records_body_len_hint(stream, records));
    out.extend_from_slice(b"{\"StreamName\":");
    write_json_str(out, stream);
    out.extend_from_slice(b",\"Records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
        write_base64(out, &record.data);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        match keys {
            PartitionKeys::Record => write_json_str(out, &record.partition_key),
            PartitionKeys::Random { bits } => {
                write_random_key(out, record.partition_key.len().max(1), bits)
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// `len` random lowercase hex digits, quoted.
fn write_random_key(out: &mut Vec<u8>, len: usize, bits: &mut dyn FnMut() -> u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut left = len;
    while left > 0 {
        let mut r = bits();
        for _ in 0..left.min(32) {
            out.push(HEX[(r & 0xf) as usize]);
            r >>= 4;
        }
        left = left.saturating_sub(32);
    }
    out.push(b'"');
}

/// [`encode_put_records`] into a fresh, exactly-sized buffer.
pub fn put_records_body(stream: &str, records: &[SinkRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_put_records(stream, records, &mut out);
    out
}

/// [`encode_put_records_keyed`] into a fresh buffer.
pub fn put_records_body_keyed(
    stream: &str,
    records: &[SinkRecord],
    keys: &mut PartitionKeys<'_>,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_put_records_keyed(stream, records, keys, &mut out);
    out
}

/// Size of the body when no character needs escaping (the usual case:
/// stream names are `[a-zA-Z0-9_.-]`, partition keys are IMSIs).
fn put_records_body_len_hint(stream: &str, records: &[SinkRecord]) -> usize {
    const BATCH_OVERHEAD: usize = r#"{"StreamName":"","Records":[]}"#.len();
    const RECORD_OVERHEAD: usize = r#"{"Data":"","PartitionKey":""},"#.len();
    records
        .iter()
        .fold(BATCH_OVERHEAD + stream.len(), |acc, r| {
            acc + RECORD_OVERHEAD + base64_len(r.data.len()) + r.partition_key.len()
        })
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    let engine = &base64::engine::general_purpose::STANDARD;
    let start = out.len();
    out.resize(start + base64_len(data.len()), 0);
    match engine.encode_slice(data, &mut out[start..]) {
        Ok(written) => out.truncate(start + written),
        // Cannot happen (the slice is exactly the padded length); stay
        // correct rather than panic if the crate ever disagrees.
        Err(_) => {
            out.truncate(start);
            out.extend_from_slice(engine.encode(data).as_bytes());
        }
    }
}

/// Writes `s` as a JSON string literal (quotes included).
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

// ---------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct PutRecordsResponse {
    #[serde(rename = "Records")]
    records: Option<Vec<PutRecordsResultEntry>>,
}

/// Only the fields that decide the outcome; `SequenceNumber` and `ShardId`
/// are skipped without allocating.
#[derive(Deserialize)]
struct PutRecordsResultEntry {
    #[serde(rename = "ErrorCode")]
    error_code: Option<String>,
    #[serde(rename = "ErrorMessage")]
    error_message: Option<String>,
}

/// Record error codes that a later attempt may fix, and their metric label.
pub fn record_retry_reason(code: &str) -> Option<RetryReason> {
    match code {
        "ProvisionedThroughputExceededException" => {
            Some(RetryReason::throttled("throughput_exceeded"))
        }
        "InternalFailure" => Some(RetryReason::transient("internal_failure")),
        _ => None,
    }
}

/// Turns a successful (2xx) PutRecords response body into one outcome per
/// record, in request order. `expected` is the number of records sent.
///
/// The per-record `ErrorCode` decides, never `FailedRecordCount`. A body that
/// does not answer for exactly `expected` records cannot be mapped back to
/// the records, so the whole batch is failed as transient.
pub fn parse_put_records_response(body: &[u8], expected: usize) -> BatchOutcome {
    let parsed: PutRecordsResponse = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return BatchOutcome::Failed(SinkError {
                kind: FailureKind::Transient,
                reason: "bad_response",
                message: truncate(format!("PutRecords response is not valid JSON: {e}")),
            })
        }
    };
    let Some(entries) = parsed.records else {
        return BatchOutcome::Failed(SinkError {
            kind: FailureKind::Transient,
            reason: "bad_response",
            message: "PutRecords response has no Records array".to_owned(),
        });
    };
    if entries.len() != expected {
        return BatchOutcome::Failed(SinkError {
            kind: FailureKind::Transient,
            reason: "bad_response",
            message: format!(
                "PutRecords response has {} results for {expected} records",
                entries.len()
            ),
        });
    }
    BatchOutcome::PerRecord(
        entries
            .into_iter()
            .map(|e| match e.error_code {
                Some(code) if !code.is_empty() => {
                    if let Some(reason) = record_retry_reason(&code) {
                        RecordOutcome::Retryable(reason)
                    } else {
                        let message = e.error_message.unwrap_or_default();
                        RecordOutcome::Rejected(truncate(format!("{code}: {message}")))
                    }
                }
                _ => RecordOutcome::Delivered,
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Error responses
// ---------------------------------------------------------------------------

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

/// Classifies a non-2xx response of any Kinesis action.
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
fn code_class(code: &str, message: &str) -> Option<(FailureKind, &'static str)> {
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
        "ValidationException" | "InvalidArgumentException" => (Permanent, "validation"),
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

fn truncate(mut s: String) -> String {
    if let Some((idx, _)) = s.char_indices().nth(MAX_MESSAGE_CHARS) {
        s.truncate(idx);
        s.push('…');
    }
    s
}

// ---------------------------------------------------------------------------
// Resource URL
// ---------------------------------------------------------------------------

/// Why a Kinesis resource URL (SORACOM Funnel's
/// `https://kinesis.{region}.amazonaws.com/{stream}`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceUrlError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("Kinesis resource URL must use https, not {0:?}")]
    NotHttps(String),
    #[error("host {0:?} is not kinesis.<region>.amazonaws.com")]
    NotKinesisHost(String),
    #[error("Kinesis resource URL has no stream name (expected https://kinesis.<region>.amazonaws.com/<stream>)")]
    MissingStreamName,
    #[error("invalid stream name {0:?}: 1 to 128 characters of a-z, A-Z, 0-9, '_', '.', '-'")]
    InvalidStreamName(String),
    #[error("Kinesis resource URL must not have a query string")]
    HasQuery,
}

/// Whether `name` is a valid Kinesis stream name.
pub fn is_valid_stream_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Splits `https://kinesis.ap-northeast-1.amazonaws.com/devices` into
/// `("ap-northeast-1", "devices")`. China regions
/// (`kinesis.cn-north-1.amazonaws.com.cn`) are accepted too.
pub fn parse_resource_url(url: &str) -> Result<(String, String), ResourceUrlError> {
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| ResourceUrlError::Invalid(format!("{url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some(other) => return Err(ResourceUrlError::NotHttps(other.to_owned())),
        None => return Err(ResourceUrlError::Invalid(format!("{url:?}: no scheme"))),
    }
    if uri.query().is_some() {
        return Err(ResourceUrlError::HasQuery);
    }
    let host = uri
        .host()
        .ok_or_else(|| ResourceUrlError::Invalid(format!("{url:?}: no host")))?
        .to_ascii_lowercase();
    let region = host
        .strip_prefix("kinesis.")
        .and_then(|rest| {
            rest.strip_suffix(".amazonaws.com")
                .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        })
        .filter(|r| is_valid_region(r))
        .ok_or_else(|| ResourceUrlError::NotKinesisHost(host.clone()))?;

    let path = uri.path();
    let stream = path.strip_prefix('/').unwrap_or(path);
    let stream = stream.strip_suffix('/').unwrap_or(stream);
    if stream.is_empty() {
        return Err(ResourceUrlError::MissingStreamName);
    }
    if !is_valid_stream_name(stream) {
        return Err(ResourceUrlError::InvalidStreamName(stream.to_owned()));
    }
    Ok((region.to_owned(), stream.to_owned()))
}

/// `ap-northeast-1`, `us-gov-west-1`, …: lowercase letters, digits and dashes.
fn is_valid_region(r: &str) -> bool {
    !r.is_empty()
        && !r.starts_with('-')
        && !r.ends_with('-')
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn rec(pk: &str, data: &[u8]) -> SinkRecord {
        SinkRecord {
            partition_key: pk.into(),
            data: Bytes::copy_from_slice(data),
        }
    }

    /// Decodes a body with serde_json, independently of the writer.
    fn decode(body: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 2, "only StreamName and Records: {v}");
        let stream = v["StreamName"].as_str().unwrap().to_owned();
        let records = v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r.as_object().unwrap().len(), 2);
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                (r["PartitionKey"].as_str().unwrap().to_owned(), data)
            })
            .collect();
        (stream, records)
    }

    #[test]
    fn random_partition_keys_replace_the_record_keys_size_for_size() {
        let records = [
            rec("440101234567890", b"{\"a\":1}"),
            rec("", b"x"),
            rec(&"k".repeat(70), b""),
        ];
        let mut n = 0u128;
        let mut bits = || {
            n += 1;
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        };
        let body = put_records_body_keyed(
            "devices",
            &records,
            &mut PartitionKeys::Random { bits: &mut bits },
        );
        let (stream, decoded) = decode(&body);
        assert_eq!(stream, "devices");
        for ((key, data), original) in decoded.iter().zip(&records) {
            assert_eq!(data.as_slice(), &original.data[..]);
            assert_ne!(key.as_str(), &*original.partition_key);
            assert_eq!(key.len(), original.partition_key.len().max(1));
            assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
        }
        // Two batches get different keys.
        let again = decode(&put_records_body_keyed(
            "devices",
            &records,
            &mut PartitionKeys::Random { bits: &mut bits },
        ))
        .1;
        assert_ne!(again[0].0, decoded[0].0);
        // Record keys are the default.
        assert_eq!(
            put_records_body("devices", &records),
            put_records_body_keyed("devices", &records, &mut PartitionKeys::Record)
        );
    }

    #[test]
    fn body_is_exact_json() {
        let body = put_records_body(
            "devices",
            &[rec("440101234567890", b"{\"a\":1}"), rec("k", b"")],
        );
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"StreamName":"devices","Records":[{"Data":"eyJhIjoxfQ==","PartitionKey":"440101234567890"},{"Data":"","PartitionKey":"k"}]}"#
        );
        assert_eq!(
            body.len(),
            put_records_body_len_hint(
                "devices",
                &[rec("440101234567890", b"{\"a\":1}"), rec("k", b"")]
            ) - 1
        );
    }

    #[test]
    fn empty_batch_is_valid_json() {
        let body = put_records_body("s", &[]);
        assert_eq!(&body[..], br#"{"StreamName":"s","Records":[]}"#);
    }

    #[test]
    fn partition_keys_are_escaped() {
        let pk = "a\"b\\c\nd\u{1}e\u{7f}é日本";
        let body = put_records_body("s", &[rec(pk, b"x")]);
        let (_, records) = decode(&body);
        assert_eq!(records[0].0, pk);
    }

    #[test]
    fn encode_appends_to_existing_buffer() {
        let mut out = b"prefix".to_vec();
        encode_put_records("s", &[rec("k", b"abc")], &mut out);
        assert!(out.starts_with(b"prefix{"));
        assert_eq!(decode(&out[6..]).1, vec![("k".to_owned(), b"abc".to_vec())]);
    }

    #[test]
    fn per_record_outcomes_in_order() {
        let body = br#"{"FailedRecordCount":3,"Records":[
            {"SequenceNumber":"1","ShardId":"shardId-000000000000"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"},
            {"ErrorCode":"InternalFailure","ErrorMessage":"Internal service failure."},
            {"ErrorCode":"KMSAccessDeniedException","ErrorMessage":"denied"},
            {"SequenceNumber":"2","ShardId":"shardId-000000000001","ErrorCode":null}
        ]}"#;
        assert_eq!(
            parse_put_records_response(body, 5),
            BatchOutcome::PerRecord(vec![
                RecordOutcome::Delivered,
                RecordOutcome::Retryable(RetryReason::throttled("throughput_exceeded")),
                RecordOutcome::Retryable(RetryReason::transient("internal_failure")),
                RecordOutcome::Rejected("KMSAccessDeniedException: denied".into()),
                RecordOutcome::Delivered,
            ])
        );
    }

    #[test]
    fn failed_record_count_is_not_trusted() {
        // FailedRecordCount says 0, the records say otherwise.
        let body = br#"{"FailedRecordCount":0,"Records":[{"ErrorCode":"InternalFailure"}]}"#;
        assert_eq!(
            parse_put_records_response(body, 1),
            BatchOutcome::PerRecord(vec![RecordOutcome::Retryable(RetryReason::transient(
                "internal_failure"
            ))])
        );
    }

    #[test]
    fn malformed_responses_fail_the_batch_transiently() {
        for body in [
            &b""[..],
            b"not json",
            b"{}",
            br#"{"Records":null}"#,
            br#"{"Records":[{}]}"#,
            br#"{"Records":[{},{},{}]}"#,
            br#"{"Records":"x"}"#,
            b"[]",
        ] {
            match parse_put_records_response(body, 2) {
                BatchOutcome::Failed(e) => {
                    assert_eq!(e.kind, FailureKind::Transient, "{body:?}");
                    assert_eq!(e.reason, "bad_response");
                }
                other => panic!("{:?} -> {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

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

    #[test]
    fn resource_urls() {
        assert_eq!(
            parse_resource_url("https://kinesis.ap-northeast-1.amazonaws.com/devices").unwrap(),
            ("ap-northeast-1".to_owned(), "devices".to_owned())
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com:443/my_stream.v2-x/")
                .unwrap(),
            ("us-east-1".to_owned(), "my_stream.v2-x".to_owned())
        );
        assert_eq!(
            parse_resource_url("https://kinesis.cn-north-1.amazonaws.com.cn/s").unwrap(),
            ("cn-north-1".to_owned(), "s".to_owned())
        );
        assert_eq!(
            parse_resource_url("http://kinesis.us-east-1.amazonaws.com/s"),
            Err(ResourceUrlError::NotHttps("http".into()))
        );
        assert_eq!(
            parse_resource_url("https://firehose.us-east-1.amazonaws.com/s"),
            Err(ResourceUrlError::NotKinesisHost(
                "firehose.us-east-1.amazonaws.com".into()
            ))
        );
        assert_eq!(
            parse_resource_url("https://kinesis.amazonaws.com/s"),
            Err(ResourceUrlError::NotKinesisHost(
                "kinesis.amazonaws.com".into()
            ))
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com"),
            Err(ResourceUrlError::MissingStreamName)
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com/"),
            Err(ResourceUrlError::MissingStreamName)
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com/a/b"),
            Err(ResourceUrlError::InvalidStreamName("a/b".into()))
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com/s?x=1"),
            Err(ResourceUrlError::HasQuery)
        );
        assert!(matches!(
            parse_resource_url("kinesis.us-east-1.amazonaws.com/s"),
            Err(ResourceUrlError::Invalid(_))
        ));
        assert!(matches!(
            parse_resource_url("::"),
            Err(ResourceUrlError::Invalid(_))
        ));
    }

    fn arb_record() -> impl Strategy<Value = SinkRecord> {
        (
            "(?s).{1,40}",
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(pk, data)| SinkRecord {
                partition_key: pk.into(),
                data: data.into(),
            })
    }

    proptest! {
        #[test]
        fn body_round_trips(
            stream in "(?s).{0,40}",
            records in proptest::collection::vec(arb_record(), 0..20),
        ) {
            let body = put_records_body(&stream, &records);
            let (s, decoded) = decode(&body);
            prop_assert_eq!(&s, &stream);
            let expected: Vec<_> = records
                .iter()
                .map(|r| (r.partition_key.to_string(), r.data.to_vec()))
                .collect();
            prop_assert_eq!(decoded, expected);
            if !body.contains(&b'\\') {
                // Without escapes the reservation is exact (the hint counts
                // a comma after every record, the body has one fewer).
                let hint = put_records_body_len_hint(&stream, &records);
                prop_assert_eq!(body.len(), hint - usize::from(!records.is_empty()));
            }
        }

        #[test]
        fn response_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..8) {
            match parse_put_records_response(&body, n) {
                BatchOutcome::PerRecord(v) => prop_assert_eq!(v.len(), n),
                BatchOutcome::Failed(e) => prop_assert_eq!(e.kind, FailureKind::Transient),
            }
        }

        #[test]
        fn response_parser_on_json_shapes(
            entries in proptest::collection::vec(
                (proptest::option::of("[A-Za-z]{0,12}"), proptest::option::of(".{0,20}")),
                0..8,
            ),
            n in 0usize..8,
        ) {
            let records: Vec<serde_json::Value> = entries
                .iter()
                .map(|(c, m)| serde_json::json!({"ErrorCode": c, "ErrorMessage": m, "SequenceNumber": "1"}))
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({"Records": records})).unwrap();
            match parse_put_records_response(&body, n) {
                BatchOutcome::PerRecord(v) => {
                    prop_assert_eq!(n, entries.len());
                    for (outcome, (code, _)) in v.iter().zip(&entries) {
                        let delivered = code.as_deref().is_none_or(str::is_empty);
                        prop_assert_eq!(delivered, *outcome == RecordOutcome::Delivered);
                    }
                }
                BatchOutcome::Failed(_) => prop_assert_ne!(n, entries.len()),
            }
        }

        #[test]
        fn classifier_never_panics(status in 0u16..1000, header in proptest::option::of(".{0,40}"), body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let e = classify_error(status, header.as_deref(), &body);
            prop_assert!(!e.reason.is_empty());
            prop_assert!(e.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        }

        #[test]
        fn resource_url_parser_never_panics(url in ".{0,80}") {
            let _ = parse_resource_url(&url);
        }
    }
}
