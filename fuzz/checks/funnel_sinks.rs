//! Properties of the sans-IO halves of the Funnel sinks: Firehose, AWS IoT,
//! Event Hubs, Pub/Sub and https (`simgate::sinks::*::request`, and
//! `sinks::pubsub::token`).
//!
//! Input: byte 0 selects the parser (modulo [`PARSERS`]), the rest is its
//! input. `status` is two bytes, big-endian; "records" are the lines of the
//! rest (`\n`-separated), each `key<TAB>data` or just `data` (key
//! `440101234567890`); "text" is the rest as UTF-8 (invalid bytes replaced).
//!
//! | sel | input                         | code under test and property |
//! |-----|-------------------------------|------------------------------|
//! | 0   | expected, body                | `firehose::parse_put_record_batch_response`: `expected` outcomes agreeing with `RequestResponses[i].ErrorCode`, or a bounded transient `bad_response` |
//! | 1   | status, header len + 1, body  | `firehose::classify_error`: message starts `HTTP {status}`, bounded, reason non-empty; `ServiceUnavailableException` throttles |
//! | 2   | text                          | `firehose::parse_resource_url`: a valid name and region, re-assembling to the same parts |
//! | 3   | text                          | `aws_iot::parse_resource_url`: https endpoint, topic without wildcards or control characters within AWS's limits for any IMSI, re-assembling to the same parts; `publish_path` (of any text) is ASCII, `/topics/…?qos=1`, and percent-decodes to the topic |
//! | 4   | status, header len + 1, body  | `aws_iot::outcome`: 2xx is `Ok`, else a classified error; `record_outcome` follows its kind |
//! | 5   | text                          | `eventhubs::parse_resource_url`: a `*.servicebus.windows.net` host and a valid hub; `resource_uri` parses back to the same |
//! | 6   | max byte, records             | `eventhubs::{batch_body, plan, merge_outcomes}`: the body is a JSON array of the records; the plan covers each record once, its bodies are `batch_body` of their ranges and fit, requests are greedy, too-large is exact |
//! | 7   | status, records count, body   | `eventhubs::classify_response`: 2xx delivers every record, else a classified error |
//! | 8   | text (line 1: default project, then the URL) | `pubsub::parse_resource_url`: valid project and topic, re-assembling to the same; a full URL's endpoint is a `*.googleapis.com` host as `http::Uri` reads it |
//! | 9   | records                       | `pubsub::publish_body`: JSON whose `messages[i].data` is base64 of record `i` |
//! | 10  | expected, body                | `pubsub::parse_publish_response`: `expected` outcomes, delivered for each `messageIds` entry and `missing_result` beyond, or a bounded `bad_response` |
//! | 11  | status, body                  | `pubsub::classify_error`: as 1, and `token_rejected` iff `unauthenticated` |
//! | 12  | text                          | `pubsub::ServiceAccountKey::parse`: never panics; an error never shows the `private_key`; a parsed key has trimmed non-empty fields, an https token URI, and a `Debug` without the key |
//! | 13  | status, now byte, body        | `pubsub::parse_token_response`: a token only for 2xx, refreshed per `expires_in`; errors bounded and classified by status |
//! | 14  | text                          | `https::parse_url`: http(s) with a host |
//! | 15  | lines `name: value`           | `https::extra_headers`: accepted headers convert exactly (names lower-cased, values as given, no duplicates) |
//! | 16  | records                       | `https::batch_body`: records that are JSON (others wrapped as `{"payload":"<base64>"}`, as the sink does) parse back as the array of them |
//! | 17  | status, body                  | `https::classify`: 2xx is `Ok`, else kind by status, a fixed label, a message of at most 200 body characters |
//! | 18  | statuses (2 bytes each)       | `https::record_mode_outcome`: a batch fails whole iff every request failed retryably (throttled if any was), else one outcome per record |
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;
use simgate::sinks::{
    aws_iot, eventhubs, firehose, https, pubsub, pubsub::KeyFileError, BatchOutcome, FailureKind,
    RecordOutcome, RetryReason, SinkError, SinkRecord,
};

/// The AWS, Event Hubs and Pub/Sub sinks keep 300 characters of a message,
/// plus an ellipsis.
const MAX_MESSAGE_CHARS: usize = 301;

/// `https::classify` keeps 200 characters of the body after `HTTP {status}: `.
const MAX_HTTPS_MESSAGE_CHARS: usize = "HTTP 65535: ".len() + 200;

/// The partition key of a record line without a tab.
const DEFAULT_KEY: &str = "440101234567890";

const PARSERS: u8 = 19;

pub(crate) fn check(data: &[u8]) {
    let [selector, rest @ ..] = data else {
        return;
    };
    match selector % PARSERS {
        0 => firehose_response(rest),
        1 => firehose_error(rest),
        2 => firehose_url(&text(rest)),
        3 => iot_url(&text(rest)),
        4 => iot_outcome(rest),
        5 => eventhubs_url(&text(rest)),
        6 => eventhubs_plan(rest),
        7 => eventhubs_response(rest),
        8 => pubsub_url(&text(rest)),
        9 => pubsub_body(rest),
        10 => pubsub_response(rest),
        11 => pubsub_error(rest),
        12 => pubsub_key_file(&text(rest)),
        13 => pubsub_token(rest),
        14 => https_url(&text(rest)),
        15 => https_headers(&text(rest)),
        16 => https_body(rest),
        17 => https_classify(rest),
        _ => https_record_mode(rest),
    }
}

// ---------------------------------------------------------------------------
// Input helpers
// ---------------------------------------------------------------------------

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn status_and(data: &[u8]) -> Option<(u16, &[u8])> {
    match data {
        [hi, lo, rest @ ..] => Some((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => None,
    }
}

/// Status, optional `x-amzn-ErrorType` header (length byte `n`: 0 = none,
/// else the next `n - 1` bytes), body.
fn status_header_body(data: &[u8]) -> Option<(u16, Option<String>, &[u8])> {
    let (status, rest) = status_and(data)?;
    let (header_len, rest) = rest.split_first()?;
    Some(match usize::from(*header_len) {
        0 => (status, None, rest),
        n => {
            let (h, b) = rest.split_at((n - 1).min(rest.len()));
            (status, Some(String::from_utf8_lossy(h).into_owned()), b)
        }
    })
}

fn records(data: &[u8]) -> Vec<SinkRecord> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == b'\n')
        .map(|line| {
            let (key, data) = match line.iter().position(|&b| b == b'\t') {
                Some(i) => (
                    String::from_utf8_lossy(&line[..i]).into_owned(),
                    &line[i + 1..],
                ),
                None => (DEFAULT_KEY.to_owned(), line),
            };
            SinkRecord {
                partition_key: key.into(),
                data: data.to_vec().into(),
            }
        })
        .collect()
}

fn assert_bounded(message: &str, max: usize) {
    let n = message.chars().count();
    assert!(n <= max, "message of {n} characters (at most {max})");
}

/// The common shape of a classified whole-request error.
fn assert_classified(e: &SinkError, status: u16, max: usize) {
    let head = format!("HTTP {status}");
    assert!(
        e.message.starts_with(&head)
            && matches!(
                e.message[head.len()..].chars().next(),
                None | Some(' ' | ':')
            ),
        "message {:?} does not start with the status",
        e.message
    );
    assert_bounded(&e.message, max);
    assert!(!e.reason.is_empty(), "empty reason label");
    assert!(
        e.reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "reason label {:?} is not a fixed lower_snake label",
        e.reason
    );
}

fn assert_bad_response(e: &SinkError) {
    assert_eq!(e.kind, FailureKind::Transient, "{e:?}");
    assert_eq!(e.reason, "bad_response", "{e:?}");
    assert_bounded(&e.message, MAX_MESSAGE_CHARS);
}

/// `%XX`-decodes `s`, `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Firehose
// ---------------------------------------------------------------------------

fn firehose_response(data: &[u8]) {
    use firehose::request::{parse_put_record_batch_response, record_retry_reason};
    let [expected, body @ ..] = data else {
        return;
    };
    let expected = usize::from(*expected);
    match parse_put_record_batch_response(body, expected) {
        BatchOutcome::Failed(e) => assert_bad_response(&e),
        BatchOutcome::PerRecord(outcomes) => {
            assert_eq!(outcomes.len(), expected, "one outcome per record sent");
            // serde_json's tree is the oracle where the body has the
            // documented shape (the typed parser also takes serde's
            // struct-as-array form).
            let Ok(Value::Object(tree)) = serde_json::from_slice::<Value>(body) else {
                return;
            };
            let Some(Value::Array(entries)) = tree.get("RequestResponses") else {
                panic!("PerRecord without a RequestResponses array");
            };
            assert_eq!(entries.len(), expected, "RequestResponses in the body");
            for (i, (outcome, entry)) in outcomes.iter().zip(entries).enumerate() {
                if !entry.is_object() {
                    continue;
                }
                let code = entry["ErrorCode"].as_str().filter(|c| !c.is_empty());
                match (outcome, code) {
                    (RecordOutcome::Delivered, None) => {}
                    (RecordOutcome::Retryable(got), Some(code)) => {
                        assert_eq!(Some(*got), record_retry_reason(code), "record {i}");
                    }
                    (RecordOutcome::Rejected(message), Some(code)) => {
                        assert!(record_retry_reason(code).is_none(), "record {i}: {code}");
                        let head: String = code.chars().take(MAX_MESSAGE_CHARS - 1).collect();
                        assert!(
                            message.starts_with(&head),
                            "record {i}: {message:?} does not name {code:?}"
                        );
                        assert_bounded(message, MAX_MESSAGE_CHARS);
                    }
                    (outcome, code) => panic!("record {i}: {outcome:?} for ErrorCode {code:?}"),
                }
            }
        }
    }
}

fn firehose_error(data: &[u8]) {
    let Some((status, header, body)) = status_header_body(data) else {
        return;
    };
    let e = firehose::request::classify_error(status, header.as_deref(), body);
    assert_classified(&e, status, MAX_MESSAGE_CHARS);
    let generic = simgate::sinks::aws::classify_error(status, header.as_deref(), body);
    assert_eq!(
        (e.reason, &e.message),
        (generic.reason, &generic.message),
        "Firehose classifies as every AWS sink"
    );
    if e.reason == "service_unavailable" {
        assert_eq!(e.kind, FailureKind::Throttled);
    } else {
        assert_eq!(e.kind, generic.kind);
    }
}

fn firehose_url(url: &str) {
    let Ok((region, name)) = firehose::request::parse_resource_url(url) else {
        return;
    };
    assert!(
        firehose::request::is_valid_delivery_stream_name(&name),
        "{name:?}"
    );
    assert!(
        !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "region {region:?}"
    );
    let again = format!("https://firehose.{region}.amazonaws.com/{name}");
    assert_eq!(
        firehose::request::parse_resource_url(&again),
        Ok((region, name)),
        "{url:?} re-assembled as {again:?}"
    );
}

// ---------------------------------------------------------------------------
// AWS IoT
// ---------------------------------------------------------------------------

fn iot_url(url: &str) {
    use aws_iot::request::{
        parse_resource_url, topic_for, IMSI_PLACEHOLDER, MAX_TOPIC_BYTES, MAX_TOPIC_SLASHES,
    };
    check_publish_path(url);
    let Ok(r) = parse_resource_url(url) else {
        return;
    };
    let host = r
        .endpoint
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("endpoint {:?} is not https", r.endpoint));
    assert!(
        host.contains(".iot.")
            && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
            && !host.contains(['/', '?', '#', '@', ':'])
            && host.bytes().all(|b| !b.is_ascii_uppercase()),
        "endpoint {:?}",
        r.endpoint
    );
    assert!(
        host.contains(&format!(".iot.{}.amazonaws.com", r.region)),
        "region {:?} not in {host:?}",
        r.region
    );
    assert!(!r.topic.is_empty());
    for imsi in ["", "001010000000001", "440101234567890", "999999999999999"] {
        let topic = topic_for(&r.topic, imsi);
        assert!(!topic.contains(['#', '+']), "wildcard in {topic:?}");
        assert!(!topic.chars().any(char::is_control), "{topic:?}");
        assert!(topic.len() <= MAX_TOPIC_BYTES, "{} bytes", topic.len());
        assert!(topic.matches('/').count() <= MAX_TOPIC_SLASHES, "{topic:?}");
        check_publish_path(&topic);
        if !r.topic.contains(IMSI_PLACEHOLDER) {
            assert_eq!(topic, r.topic);
        }
    }
    // Re-assembly: the URL is trimmed and its trailing `/` dropped once, so
    // a topic that itself ends in `/` or a blank would lose it again.
    if !r.topic.ends_with('/') && r.topic.trim_end() == r.topic {
        let again = format!("{}/{}", r.endpoint, r.topic);
        assert_eq!(
            parse_resource_url(&again).as_ref(),
            Ok(&r),
            "{url:?} re-assembled as {again:?}"
        );
    }
}

fn check_publish_path(topic: &str) {
    let path = aws_iot::request::publish_path(topic);
    assert!(path.is_ascii(), "{path:?}");
    let inner = path
        .strip_prefix("/topics/")
        .and_then(|p| p.strip_suffix("?qos=1"))
        .unwrap_or_else(|| panic!("publish path {path:?}"));
    assert!(
        !inner.contains(['/', '?', '#', '+', ' ']),
        "unescaped in {path:?}"
    );
    assert_eq!(
        percent_decode(inner).as_deref(),
        Some(topic.as_bytes()),
        "{path:?} does not decode to the topic"
    );
}

fn iot_outcome(data: &[u8]) {
    let Some((status, header, body)) = status_header_body(data) else {
        return;
    };
    match aws_iot::request::outcome(status, header.as_deref(), body) {
        Ok(()) => assert!((200..300).contains(&status), "{status} delivered"),
        Err(e) => {
            assert!(!(200..300).contains(&status), "{status} failed");
            assert_classified(&e, status, MAX_MESSAGE_CHARS);
            let expected = match e.kind {
                FailureKind::Permanent => RecordOutcome::Rejected(e.message.clone()),
                FailureKind::Throttled => {
                    RecordOutcome::Retryable(RetryReason::throttled(e.reason))
                }
                FailureKind::Transient => {
                    RecordOutcome::Retryable(RetryReason::transient(e.reason))
                }
            };
            assert_eq!(aws_iot::request::record_outcome(&e), expected);
        }
    }
}

// ---------------------------------------------------------------------------
// Event Hubs
// ---------------------------------------------------------------------------

fn eventhubs_url(url: &str) {
    let Ok(u) = eventhubs::parse_resource_url(url) else {
        return;
    };
    let ns = u
        .host
        .strip_suffix(".servicebus.windows.net")
        .unwrap_or_else(|| panic!("host {:?}", u.host));
    assert!(!ns.is_empty() && !ns.contains('.'), "namespace {ns:?}");
    assert!(
        !u.host.contains(['/', '?', '#', '@', ':'])
            && !u.host.bytes().any(|b| b.is_ascii_uppercase()),
        "host {:?}",
        u.host
    );
    assert!(
        (1..=eventhubs::request::MAX_HUB_NAME).contains(&u.hub.len())
            && u.hub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
        "hub {:?}",
        u.hub
    );
    let uri = u.resource_uri();
    assert_eq!(
        eventhubs::parse_resource_url(&uri).as_ref(),
        Ok(&u),
        "{url:?} re-assembled as {uri:?}"
    );
    assert_eq!(
        u.path_and_query(),
        format!("/{}/messages?{}", u.hub, eventhubs::request::QUERY)
    );
}

/// The events of an Event Hubs body, as `(Body, PartitionKey)`.
fn events(body: &[u8]) -> Vec<(String, String)> {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)));
    let Value::Array(events) = v else {
        panic!("body is not an array");
    };
    events
        .iter()
        .map(|e| {
            let body = e["Body"].as_str().expect("Body is a string");
            let key = e["BrokerProperties"]["PartitionKey"]
                .as_str()
                .expect("PartitionKey is a string");
            (body.to_owned(), key.to_owned())
        })
        .collect()
}

fn expected_events(records: &[SinkRecord]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.data).into_owned(),
                r.partition_key.to_string(),
            )
        })
        .collect()
}

fn eventhubs_plan(data: &[u8]) {
    use eventhubs::request::{
        batch_body, is_single_request, merge_outcomes, plan, too_large_outcome,
    };
    let [max, rest @ ..] = data else {
        return;
    };
    let max = 2 + usize::from(*max) * 8;
    let records = records(rest);
    let n = records.len();

    let body = batch_body(&records);
    assert_eq!(events(&body), expected_events(&records), "batch body");

    let p = plan(&records, max);
    let mut covered = vec![0u8; n];
    for &i in &p.too_large {
        covered[i] += 1;
        assert!(
            batch_body(&records[i..=i]).len() > max,
            "record {i} fits alone but is too large"
        );
    }
    assert!(
        p.too_large.windows(2).all(|w| w[0] < w[1]),
        "too_large order"
    );
    for (k, request) in p.requests.iter().enumerate() {
        let range = request.records.clone();
        assert!(
            !range.is_empty() && range.end <= n,
            "request {k}: {range:?}"
        );
        for i in range.clone() {
            covered[i] += 1;
        }
        assert_eq!(
            request.body,
            batch_body(&records[range.clone()]),
            "request {k}"
        );
        assert!(request.body.len() <= max, "request {k} over {max} bytes");
        if let Some(next) = p.requests.get(k + 1) {
            assert!(next.records.start >= range.end, "requests out of order");
            // Greedy: the next request starts where this one could not grow.
            if next.records.start == range.end {
                assert!(
                    batch_body(&records[range.start..=range.end]).len() > max,
                    "request {k} could have taken record {}",
                    range.end
                );
            }
        }
    }
    assert!(covered.iter().all(|&c| c == 1), "coverage {covered:?}");
    assert_eq!(
        is_single_request(&p, n),
        p.too_large.is_empty() && p.requests.len() == 1,
        "is_single_request"
    );
    if n > 0 && body.len() <= max {
        assert!(is_single_request(&p, n), "a fitting batch is one request");
    }

    // Request k answered: delivered, throttled, or never sent.
    let throttled = SinkError {
        kind: FailureKind::Throttled,
        reason: "server_busy",
        message: "HTTP 503".into(),
    };
    let outcomes: Vec<Option<BatchOutcome>> = (0..p.requests.len())
        .map(|k| match k % 3 {
            0 => Some(BatchOutcome::PerRecord(vec![
                RecordOutcome::Delivered;
                p.requests[k].records.len()
            ])),
            1 => Some(BatchOutcome::Failed(throttled.clone())),
            _ => None,
        })
        .collect();
    let unsent = RecordOutcome::Retryable(RetryReason::transient("unsent"));
    let BatchOutcome::PerRecord(merged) = merge_outcomes(n, &p, &outcomes, &unsent) else {
        panic!("merge_outcomes failed the batch");
    };
    assert_eq!(merged.len(), n);
    for &i in &p.too_large {
        assert_eq!(
            merged[i],
            too_large_outcome(eventhubs::MAX_REQUEST_BYTES),
            "{i}"
        );
    }
    for (k, request) in p.requests.iter().enumerate() {
        let want = match k % 3 {
            0 => RecordOutcome::Delivered,
            1 => RecordOutcome::Retryable(RetryReason::throttled("server_busy")),
            _ => unsent.clone(),
        };
        for i in request.records.clone() {
            assert_eq!(merged[i], want, "record {i} of request {k}");
        }
    }
}

fn eventhubs_response(data: &[u8]) {
    let Some((status, rest)) = status_and(data) else {
        return;
    };
    let Some((records, body)) = rest.split_first() else {
        return;
    };
    let records = usize::from(*records);
    match eventhubs::request::classify_response(status, body, records) {
        BatchOutcome::PerRecord(v) => {
            assert!((200..300).contains(&status), "{status} delivered");
            assert_eq!(v, vec![RecordOutcome::Delivered; records]);
        }
        BatchOutcome::Failed(e) => {
            assert!(!(200..300).contains(&status), "{status} failed");
            assert_classified(&e, status, MAX_MESSAGE_CHARS);
            assert_eq!(e, eventhubs::request::classify_error(status, body));
            match status {
                429 | 503 => assert_eq!(e.kind, FailureKind::Throttled, "{status}"),
                401 | 404 | 413 => assert_eq!(e.kind, FailureKind::Permanent, "{status}"),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pub/Sub
// ---------------------------------------------------------------------------

fn pubsub_url(input: &str) {
    use pubsub::request::{is_valid_project_id, is_valid_topic_name, parse_resource_url};
    let (default_project, url) = input.split_once('\n').unwrap_or(("default-project", input));
    let Ok(t) = parse_resource_url(url, default_project) else {
        return;
    };
    assert!(is_valid_project_id(&t.project), "project {:?}", t.project);
    assert!(is_valid_topic_name(&t.topic), "topic {:?}", t.topic);

    let path = t.publish_path();
    assert!(path.is_ascii(), "{path:?}");
    let topic = path
        .strip_prefix(&format!("/v1/projects/{}/topics/", t.project))
        .and_then(|p| p.strip_suffix(":publish"))
        .unwrap_or_else(|| panic!("publish path {path:?}"));
    assert_eq!(
        percent_decode(topic).as_deref(),
        Some(t.topic.as_bytes()),
        "{path:?} does not decode to the topic"
    );

    let name = format!("projects/{}/topics/{}", t.project, t.topic);
    let bare = parse_resource_url(&name, "unused").unwrap_or_else(|e| panic!("{name:?}: {e}"));
    assert_eq!((&bare.project, &bare.topic), (&t.project, &t.topic));
    if let Some(endpoint) = &t.endpoint {
        // The access token goes to this endpoint: it must be Google's, as
        // an HTTP client reads the URL. (One that is no URL at all is
        // refused when the sink builds its request URI.)
        if let Ok(uri) = https::request::parse_url(endpoint) {
            let host = uri.host().unwrap_or_default();
            assert!(
                uri.scheme_str() == Some("https") && host.ends_with(".googleapis.com"),
                "endpoint {endpoint:?} (host {host:?}) is not a googleapis.com host"
            );
        }
        let again = format!("{endpoint}/v1/{name}");
        assert_eq!(
            parse_resource_url(&again, "unused").as_ref(),
            Ok(&t),
            "{url:?} re-assembled as {again:?}"
        );
    } else {
        assert_eq!(bare, t);
    }
}

fn pubsub_body(data: &[u8]) {
    let records = records(data);
    let body = pubsub::request::publish_body(&records);
    let v: Value = serde_json::from_slice(&body).expect("publish body is JSON");
    let messages = v["messages"].as_array().expect("messages array");
    assert_eq!(messages.len(), records.len());
    for (i, (m, r)) in messages.iter().zip(&records).enumerate() {
        let b64 = m["data"].as_str().expect("data is a string");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(decoded, r.data.as_ref(), "message {i}");
        assert_eq!(
            m.as_object().map(|o| o.len()),
            Some(1),
            "message {i}: only data"
        );
    }
}

fn pubsub_response(data: &[u8]) {
    let [expected, body @ ..] = data else {
        return;
    };
    let expected = usize::from(*expected);
    match pubsub::request::parse_publish_response(body, expected) {
        BatchOutcome::Failed(e) => assert_bad_response(&e),
        BatchOutcome::PerRecord(outcomes) => {
            assert_eq!(outcomes.len(), expected, "one outcome per record sent");
            let Ok(Value::Object(tree)) = serde_json::from_slice::<Value>(body) else {
                return;
            };
            let Some(Value::Array(ids)) = tree.get("messageIds") else {
                panic!("PerRecord without a messageIds array");
            };
            for (i, outcome) in outcomes.iter().enumerate() {
                let want = if i < ids.len() {
                    RecordOutcome::Delivered
                } else {
                    RecordOutcome::Retryable(RetryReason::transient("missing_result"))
                };
                assert_eq!(outcome, &want, "record {i} of {} ids", ids.len());
            }
        }
    }
}

fn pubsub_error(data: &[u8]) {
    let Some((status, body)) = status_and(data) else {
        return;
    };
    let e = pubsub::request::classify_error(status, body);
    assert_classified(&e.error, status, MAX_MESSAGE_CHARS);
    assert_eq!(e.token_rejected, e.error.reason == "unauthenticated");
    // A body that is not JSON (a load balancer's page): the status decides.
    if serde_json::from_slice::<Value>(body).is_err() {
        match status {
            429 => assert_eq!(e.error.kind, FailureKind::Throttled),
            401 => assert!(e.token_rejected),
            500..=599 => assert_eq!(e.error.kind, FailureKind::Transient),
            _ => {}
        }
    }
}

fn pubsub_key_file(json: &str) {
    let tree: Option<Value> = serde_json::from_str(json).ok();
    let field = |name: &str| -> Option<String> {
        tree.as_ref()?
            .get(name)?
            .as_str()
            .map(|s| s.trim().to_owned())
    };
    let private_key = field("private_key").filter(|k| k.len() >= 16);
    match pubsub::ServiceAccountKey::parse(json) {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let Some(key) = private_key else { return };
            // What the error carries besides its fixed text: the fields
            // checked before the key may be echoed (they are not secret),
            // anything else must not show the key, even when the key is
            // what failed.
            match &e {
                KeyFileError::NotJson(s) | KeyFileError::InvalidPrivateKey(s) => {
                    assert!(!s.contains(&key), "the error shows the private key: {e}");
                }
                KeyFileError::WrongType(s) => assert_eq!(Some(s), field("type").as_ref()),
                KeyFileError::InvalidTokenUri(s) => {
                    assert_eq!(Some(s), field("token_uri").as_ref());
                }
                _ => {}
            }
        }
        Ok(key) => {
            assert_eq!(field("type").as_deref(), Some("service_account"));
            for (name, value) in [
                ("client_email", &key.client_email),
                ("private_key_id", &key.private_key_id),
                ("project_id", &key.project_id),
            ] {
                assert!(
                    !value.is_empty() && value.trim() == value,
                    "{name} {value:?}"
                );
                assert_eq!(field(name).as_deref(), Some(value.as_str()), "{name}");
            }
            assert_eq!(key.token_uri.scheme_str(), Some("https"));
            assert!(key.token_uri.host().is_some_and(|h| !h.is_empty()));
            let pk = private_key.expect("a parsed key file has a private_key");
            assert!(!format!("{key:?}").contains(&pk), "Debug shows the key");
        }
    }
}

fn pubsub_token(data: &[u8]) {
    let Some((status, rest)) = status_and(data) else {
        return;
    };
    let Some((now, body)) = rest.split_first() else {
        return;
    };
    let now = match now {
        0 => 1_700_000_000,
        n => u64::MAX - u64::from(*n),
    };
    match pubsub::token::parse_token_response(status, body, now) {
        Ok(token) => {
            assert!((200..300).contains(&status), "token from HTTP {status}");
            // serde_json's tree is the oracle where it reads the body; the
            // typed parser skips unknown fields without validating them.
            let Ok(tree) = serde_json::from_slice::<Value>(body) else {
                return;
            };
            let access = tree["access_token"].as_str().expect("access_token string");
            assert!(!access.is_empty());
            if access.len() > 60 {
                assert!(
                    !format!("{token:?}").contains(access),
                    "Debug shows the token"
                );
            }
            let expires_in = tree["expires_in"].as_u64().unwrap_or(3600);
            let margin = pubsub::token::REFRESH_MARGIN_SECS.min(expires_in / 2);
            assert_eq!(
                token.refresh_at(),
                now.saturating_add(expires_in - margin),
                "expires_in {expires_in}"
            );
            assert_eq!(token.is_usable(now), token.refresh_at() > now);
        }
        Err(e) => {
            assert_bounded(&e.message, MAX_MESSAGE_CHARS);
            assert!(!e.reason.is_empty());
            if (200..300).contains(&status) {
                assert_eq!(
                    (e.kind, e.reason),
                    (FailureKind::Transient, "token_bad_response")
                );
            } else {
                let head = format!("token endpoint answered HTTP {status}");
                assert!(e.message.starts_with(&head), "{:?}", e.message);
                let kind = match status {
                    429 => FailureKind::Throttled,
                    500..=599 => FailureKind::Transient,
                    _ => FailureKind::Permanent,
                };
                assert_eq!(e.kind, kind, "HTTP {status}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// https
// ---------------------------------------------------------------------------

fn https_url(url: &str) {
    let Ok(uri) = https::request::parse_url(url) else {
        return;
    };
    let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
    assert!(scheme == "https" || scheme == "http", "scheme {scheme:?}");
    assert!(
        uri.host().is_some_and(|h| !h.is_empty()),
        "no host in {uri}"
    );
}

fn https_headers(input: &str) {
    let mut headers = BTreeMap::new();
    for line in input.lines() {
        let (name, value) = line.split_once(": ").unwrap_or((line, ""));
        headers.insert(name.to_owned(), value.to_owned());
    }
    match https::request::extra_headers(&headers) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(converted) => {
            assert_eq!(converted.len(), headers.len());
            let mut seen = std::collections::BTreeSet::new();
            for ((name, value), (n, v)) in converted.iter().zip(&headers) {
                assert_eq!(name.as_str(), n.to_ascii_lowercase(), "name");
                assert_eq!(value.as_bytes(), v.as_bytes(), "value of {n}");
                assert!(seen.insert(name.as_str().to_owned()), "{n} twice");
            }
        }
    }
}

fn https_body(data: &[u8]) {
    let records: Vec<SinkRecord> = records(data)
        .into_iter()
        .map(|r| {
            // A JSON value, also as an array element (serde_json's nesting
            // limit counts the batch's array).
            let in_array = [&b"["[..], &r.data, b"]"].concat();
            if serde_json::from_slice::<Value>(&r.data).is_ok()
                && serde_json::from_slice::<Value>(&in_array).is_ok()
            {
                r
            } else {
                let wrapped = serde_json::json!({
                    "payload": base64::engine::general_purpose::STANDARD.encode(&r.data),
                });
                SinkRecord {
                    partition_key: r.partition_key,
                    data: serde_json::to_vec(&wrapped).expect("JSON").into(),
                }
            }
        })
        .collect();
    let body = https::request::batch_body(&records);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "batch body is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    let expected: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_slice(&r.data).expect("JSON record"))
        .collect();
    assert_eq!(parsed, Value::Array(expected));
    if let [only] = &records[..] {
        assert_eq!(https::request::record_body(only), only.data);
    }
}

fn https_classify(data: &[u8]) {
    let Some((status, body)) = status_and(data) else {
        return;
    };
    match https::request::classify(status, body) {
        Ok(()) => assert!((200..300).contains(&status), "{status} delivered"),
        Err(e) => {
            assert!(!(200..300).contains(&status), "{status} failed");
            assert_classified(&e, status, MAX_HTTPS_MESSAGE_CHARS);
            assert_eq!(e.reason, https::request::status_label(status));
            let kind = match status {
                429 => FailureKind::Throttled,
                400..=499 if status != 408 => FailureKind::Permanent,
                _ => FailureKind::Transient,
            };
            assert_eq!(e.kind, kind, "HTTP {status}");
        }
    }
}

fn https_record_mode(data: &[u8]) {
    use https::request::{classify, record_mode_outcome, record_outcome};
    let results: Vec<Result<(), SinkError>> = data
        .chunks_exact(2)
        .map(|s| classify(u16::from_be_bytes([s[0], s[1]]), b"refused"))
        .collect();
    let whole = !results.is_empty()
        && results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.kind != FailureKind::Permanent));
    let any_throttled = results
        .iter()
        .any(|r| r.as_ref().is_err_and(|e| e.kind == FailureKind::Throttled));
    match record_mode_outcome(results.clone()) {
        BatchOutcome::Failed(e) => {
            assert!(whole, "a batch with an answer failed whole");
            assert_ne!(e.kind, FailureKind::Permanent);
            assert_eq!(e.kind == FailureKind::Throttled, any_throttled);
            assert!(results.iter().any(|r| r.as_ref().err() == Some(&e)));
        }
        BatchOutcome::PerRecord(v) => {
            assert!(!whole, "an outage answered per record");
            let want: Vec<RecordOutcome> = results.into_iter().map(record_outcome).collect();
            assert_eq!(v, want);
        }
    }
}
