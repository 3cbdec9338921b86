//! Properties of the Kinesis response parsers
//! (`simgate::sinks::kinesis::request`).
//!
//! Input:
//!
//! | bytes    | meaning                                                    |
//! |----------|------------------------------------------------------------|
//! | 0        | records sent (`expected`)                                  |
//! | 1-2      | HTTP status, big-endian                                    |
//! | 3        | `n`: 0 = no `x-amzn-ErrorType` header, else the header is  |
//! |          | the next `n - 1` bytes (invalid UTF-8 replaced)            |
//! | the rest | response body                                              |
//!
//! Properties:
//! * `parse_put_records_response(body, expected)`: a `PerRecord` outcome has
//!   exactly `expected` entries, and each agrees with the body's
//!   `Records[i].ErrorCode` as serde_json reads it (none or empty:
//!   delivered; a retryable code: retried with that code's label; any other:
//!   rejected, naming the code). Messages stay bounded.
//! * `classify_error(status, header, body)` never panics, and its message
//!   starts with `HTTP {status}` and stays bounded.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use serde_json::Value;
use simgate::sinks::kinesis::request::{classify_error, parse_put_records_response};
use simgate::sinks::{BatchOutcome, RecordOutcome};

/// `request.rs` keeps 300 characters of a message, plus an ellipsis.
const MAX_MESSAGE_CHARS: usize = 301;

/// Retryable record codes and the label the sink gives them.
const RETRYABLE: [(&str, &str); 2] = [
    (
        "ProvisionedThroughputExceededException",
        "throughput_exceeded",
    ),
    ("InternalFailure", "internal_failure"),
];

fn retry_label(code: &str) -> Option<&'static str> {
    RETRYABLE.iter().find(|(c, _)| *c == code).map(|(_, l)| *l)
}

pub(crate) fn check(data: &[u8]) {
    let [expected, status_hi, status_lo, header_len, rest @ ..] = data else {
        return;
    };
    let expected = usize::from(*expected);
    let status = u16::from_be_bytes([*status_hi, *status_lo]);
    let (header, body) = match usize::from(*header_len) {
        0 => (None, rest),
        n => {
            let (h, b) = rest.split_at((n - 1).min(rest.len()));
            (Some(String::from_utf8_lossy(h)), b)
        }
    };

    match parse_put_records_response(body, expected) {
        BatchOutcome::Failed(e) => assert_bounded(&e.message),
        BatchOutcome::PerRecord(outcomes) => {
            assert_eq!(outcomes.len(), expected, "one outcome per record sent");
            // serde_json's tree is the oracle where the body has the
            // documented shape. The parser is laxer elsewhere, harmlessly:
            // invalid UTF-8 in a skipped SequenceNumber, or serde's
            // struct-as-array form (`[[{}]]`).
            if let Ok(Value::Object(tree)) = serde_json::from_slice::<Value>(body) {
                let Some(Value::Array(records)) = tree.get("Records") else {
                    panic!("PerRecord without a Records array");
                };
                assert_eq!(records.len(), expected, "Records in the body");
                for (i, (outcome, record)) in outcomes.iter().zip(records).enumerate() {
                    if record.is_object() {
                        check_record(i, outcome, record);
                    }
                }
            }
        }
    }

    let e = classify_error(status, header.as_deref(), body);
    assert!(
        e.message.starts_with(&format!("HTTP {status}")),
        "message {:?} does not start with the status",
        e.message
    );
    assert_bounded(&e.message);
    assert!(!e.reason.is_empty(), "empty reason label");
}

fn check_record(i: usize, outcome: &RecordOutcome, record: &Value) {
    let code = record["ErrorCode"].as_str().filter(|c| !c.is_empty());
    match (outcome, code) {
        (RecordOutcome::Delivered, None) => {}
        (RecordOutcome::Retryable(got), Some(code)) if retry_label(code).is_some() => {
            assert_eq!(Some(got.label), retry_label(code), "record {i}");
        }
        (RecordOutcome::Rejected(message), Some(code)) if retry_label(code).is_none() => {
            let head: String = code.chars().take(MAX_MESSAGE_CHARS - 1).collect();
            assert!(
                message.starts_with(&head),
                "record {i}: {message:?} does not name {code:?}"
            );
            assert_bounded(message);
        }
        (outcome, code) => panic!("record {i}: {outcome:?} for ErrorCode {code:?}"),
    }
}

fn assert_bounded(message: &str) {
    assert!(
        message.chars().count() <= MAX_MESSAGE_CHARS,
        "message of {} characters",
        message.chars().count()
    );
}
