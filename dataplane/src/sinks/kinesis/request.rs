//! The sans-IO half of the Kinesis sink: the PutRecords request body, the
//! per-record outcomes of its response, the classification of error
//! responses, and the SORACOM-style resource URL. No sockets, no clock, no
//! tokio: everything here is a function of its arguments.

use serde::Deserialize;

use crate::sinks::aws::error::truncate;
use crate::sinks::aws::json::{base64_len, write_base64, write_json_str};
use crate::sinks::aws::resource_url;
use crate::sinks::{BatchOutcome, FailureKind, RecordOutcome, RetryReason, SinkError, SinkRecord};

/// `X-Amz-Target` of PutRecords.
pub const PUT_RECORDS_TARGET: &str = "Kinesis_20131202.PutRecords";

/// Content type of the Kinesis JSON protocol.
pub const CONTENT_TYPE: &str = crate::sinks::aws::CONTENT_TYPE;

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
// ---------------------------------------------------------------------------
// Error responses
// ---------------------------------------------------------------------------

pub use crate::sinks::aws::error::classify_error;

// ---------------------------------------------------------------------------
// Resource URL
// ---------------------------------------------------------------------------

pub use crate::sinks::aws::ResourceUrlError;

/// Longest Kinesis stream name.
pub const MAX_STREAM_NAME: usize = 128;

/// Whether `name` is a valid Kinesis stream name.
pub fn is_valid_stream_name(name: &str) -> bool {
    resource_url::is_valid_name(name, MAX_STREAM_NAME)
}

/// Splits `https://kinesis.ap-northeast-1.amazonaws.com/devices` into
/// `("ap-northeast-1", "devices")`. China regions
/// (`kinesis.cn-north-1.amazonaws.com.cn`) are accepted too.
pub fn parse_resource_url(url: &str) -> Result<(String, String), ResourceUrlError> {
    resource_url::parse_service_url(url, "kinesis", MAX_STREAM_NAME)
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
            Err(ResourceUrlError::NotServiceHost {
                service: "kinesis",
                host: "firehose.us-east-1.amazonaws.com".into()
            })
        );
        assert_eq!(
            parse_resource_url("https://kinesis.amazonaws.com/s"),
            Err(ResourceUrlError::NotServiceHost {
                service: "kinesis",
                host: "kinesis.amazonaws.com".into()
            })
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com"),
            Err(ResourceUrlError::MissingName { service: "kinesis" })
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com/"),
            Err(ResourceUrlError::MissingName { service: "kinesis" })
        );
        assert_eq!(
            parse_resource_url("https://kinesis.us-east-1.amazonaws.com/a/b"),
            Err(ResourceUrlError::InvalidName {
                name: "a/b".into(),
                max: MAX_STREAM_NAME
            })
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
        fn resource_url_parser_never_panics(url in ".{0,80}") {
            let _ = parse_resource_url(&url);
        }
    }
}
