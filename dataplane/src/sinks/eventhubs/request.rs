//! The sans-IO half of the Event Hubs sink: the SORACOM resource URL, the
//! "Send batch events" body and how a batch is split into requests that
//! fit, and the classification of responses.
//!
//! Event Hubs' batch send is all-or-nothing: a 201 accepted every event of
//! the request and any other answer accepted none. The response carries no
//! per-event status, so a request's outcome applies to each of its records.

use std::ops::Range;

use crate::sinks::aws::error::truncate;
use crate::sinks::aws::json::write_json_str;
use crate::sinks::{BatchOutcome, FailureKind, RecordOutcome, SinkError, SinkRecord};

use super::MAX_REQUEST_BYTES;

/// `Content-Type` of a batch of events.
pub const CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";

/// Query of the send request: the REST API version Event Hubs documents,
/// and the server-side timeout in seconds.
pub const QUERY: &str = "timeout=60&api-version=2014-01";

/// Longest event hub name (Microsoft Learn, "Azure Event Hubs quotas and
/// limits": 256 characters).
pub const MAX_HUB_NAME: usize = 256;

// ---------------------------------------------------------------------------
// Resource URL
// ---------------------------------------------------------------------------

/// Why an Event Hubs resource URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventHubsUrlError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("resource URL must use https, not {0:?}")]
    NotHttps(String),
    #[error("host {0:?} is not <namespace>.servicebus.windows.net")]
    NotServiceBusHost(String),
    #[error("resource URL has no event hub (expected https://<namespace>.servicebus.windows.net/<event hub>/messages)")]
    MissingHub,
    #[error("invalid event hub name {0:?}: 1 to 256 letters, digits, '.', '-', '_', starting and ending with a letter or digit")]
    InvalidHub(String),
    #[error("resource URL must end in /<event hub>/messages, not {0:?}")]
    MissingMessages(String),
    #[error("resource URL must not have a query string or fragment")]
    HasQuery,
}

/// A SORACOM Event Hubs resource URL,
/// `https://{namespace}.servicebus.windows.net/{hub}/messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubUrl {
    /// `{namespace}.servicebus.windows.net`, lower case.
    pub host: String,
    pub hub: String,
}

impl EventHubUrl {
    /// The URI the SAS token is for (`sr`): the resource URL itself, which
    /// is the URI posted to (Event Hubs accepts a token whose `sr` is a
    /// prefix of the request URI).
    pub fn resource_uri(&self) -> String {
        format!("https://{}/{}/messages", self.host, self.hub)
    }

    /// The send path and query, `/{hub}/messages?timeout=60&api-version=2014-01`.
    pub fn path_and_query(&self) -> String {
        format!("/{}/messages?{QUERY}", self.hub)
    }
}

fn is_valid_hub_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=MAX_HUB_NAME).contains(&bytes.len())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Parses SORACOM's `FunnelAzureEventHubDestination` resource URL.
pub fn parse_resource_url(url: &str) -> Result<EventHubUrl, EventHubsUrlError> {
    let url = url.trim();
    if url.contains('#') {
        return Err(EventHubsUrlError::HasQuery);
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| EventHubsUrlError::Invalid(format!("{url:?}: {e}")))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => {}
        Some(other) => return Err(EventHubsUrlError::NotHttps(other.to_owned())),
        None => return Err(EventHubsUrlError::Invalid(format!("{url:?}: no scheme"))),
    }
    if uri.query().is_some() {
        return Err(EventHubsUrlError::HasQuery);
    }
    let authority = uri
        .authority()
        .ok_or_else(|| EventHubsUrlError::Invalid(format!("{url:?}: no host")))?;
    let host = authority.host().to_ascii_lowercase();
    let namespace_ok = host
        .strip_suffix(".servicebus.windows.net")
        .is_some_and(|ns| !ns.is_empty() && !ns.contains('.'));
    if !namespace_ok || authority.port_u16().is_some_and(|p| p != 443) {
        return Err(EventHubsUrlError::NotServiceBusHost(
            authority.as_str().to_owned(),
        ));
    }
    let mut segments = uri.path().trim_start_matches('/').split('/');
    let hub = segments.next().unwrap_or_default();
    if hub.is_empty() {
        return Err(EventHubsUrlError::MissingHub);
    }
    if !is_valid_hub_name(hub) {
        return Err(EventHubsUrlError::InvalidHub(hub.to_owned()));
    }
    match (segments.next(), segments.next()) {
        (Some("messages"), None) => {}
        _ => return Err(EventHubsUrlError::MissingMessages(uri.path().to_owned())),
    }
    Ok(EventHubUrl {
        host,
        hub: hub.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Request body
// ---------------------------------------------------------------------------

/// Appends one event: `{"Body":"<data>","BrokerProperties":{"PartitionKey":"<key>"}}`.
/// The record's data (the envelope, or with `payloadsOnly` the payload) is
/// the event body as a string, so a consumer reads back exactly those
/// bytes; the IMSI as partition key keeps one SIM's records in order on one
/// partition.
fn write_event(out: &mut Vec<u8>, record: &SinkRecord) {
    out.extend_from_slice(b"{\"Body\":");
    write_json_str(out, &String::from_utf8_lossy(&record.data));
    out.extend_from_slice(b",\"BrokerProperties\":{\"PartitionKey\":");
    write_json_str(out, &record.partition_key);
    out.extend_from_slice(b"}}");
}

/// The body for `records`: a JSON array of events.
pub fn batch_body(records: &[SinkRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + records.iter().map(|r| r.data.len() + 64).sum::<usize>());
    out.push(b'[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(&mut out, record);
    }
    out.push(b']');
    out
}

/// One request of a [`Plan`]: the records it carries and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub records: Range<usize>,
    pub body: Vec<u8>,
}

/// How one batch is sent: requests of consecutive records, each body at
/// most `max_request_bytes`, and the records too large to send at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub requests: Vec<PlannedRequest>,
    /// Records whose single event does not fit one request.
    pub too_large: Vec<usize>,
}

/// Splits `records` into requests of at most `max_request_bytes`
/// ([`MAX_REQUEST_BYTES`] for Event Hubs), measuring the escaped events
/// themselves. With the sink's [`super::LIMITS`] a batch of JSON records is
/// always one request; the split is for data that escapes worse.
pub fn plan(records: &[SinkRecord], max_request_bytes: usize) -> Plan {
    let mut plan = Plan::default();
    let mut body = vec![b'['];
    let mut start = 0;
    let mut event = Vec::new();
    for (i, record) in records.iter().enumerate() {
        event.clear();
        write_event(&mut event, record);
        // `[` + event + `]`: alone in a request.
        if event.len() + 2 > max_request_bytes {
            if body.len() > 1 {
                close(&mut plan, &mut body, start..i);
            }
            plan.too_large.push(i);
            start = i + 1;
            continue;
        }
        let separator = usize::from(body.len() > 1);
        if body.len() + separator + event.len() + 1 > max_request_bytes {
            close(&mut plan, &mut body, start..i);
            start = i;
        }
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(&event);
    }
    if body.len() > 1 {
        close(&mut plan, &mut body, start..records.len());
    }
    plan
}

fn close(plan: &mut Plan, body: &mut Vec<u8>, records: Range<usize>) {
    body.push(b']');
    plan.requests.push(PlannedRequest {
        records,
        body: std::mem::replace(body, vec![b'[']),
    });
}

/// Whether [`plan`] made exactly one request carrying every record, whose
/// outcome is then the batch's outcome as it is.
pub fn is_single_request(plan: &Plan, records: usize) -> bool {
    plan.too_large.is_empty()
        && matches!(&plan.requests[..], [only] if only.records == (0..records))
}

/// The outcome of a record too large for any request.
pub fn too_large_outcome(max_request_bytes: usize) -> RecordOutcome {
    RecordOutcome::Rejected(format!(
        "too_large: the event does not fit one Event Hubs request of {max_request_bytes} bytes"
    ))
}

/// The per-record outcomes of a batch sent as several requests:
/// `outcomes[i]` of each request, spread over its records; records of
/// requests never sent (`None`) take `unsent`.
pub fn merge_outcomes(
    total: usize,
    plan: &Plan,
    outcomes: &[Option<BatchOutcome>],
    unsent: &RecordOutcome,
) -> BatchOutcome {
    let mut per_record = vec![unsent.clone(); total];
    for &i in &plan.too_large {
        if let Some(slot) = per_record.get_mut(i) {
            *slot = too_large_outcome(MAX_REQUEST_BYTES);
        }
    }
    for (request, outcome) in plan.requests.iter().zip(outcomes) {
        let Some(outcome) = outcome else { continue };
        for (j, i) in request.records.clone().enumerate() {
            if let Some(slot) = per_record.get_mut(i) {
                *slot = outcome.record(j);
            }
        }
    }
    BatchOutcome::PerRecord(per_record)
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// The `Detail` of Service Bus's error body,
/// `<Error><Code>401</Code><Detail>…</Detail></Error>`, or the body itself.
fn detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let inner = text
        .split_once("<Detail>")
        .and_then(|(_, rest)| rest.split_once("</Detail>"))
        .map_or(text.as_ref(), |(d, _)| d);
    inner.trim().to_owned()
}

/// The outcome of a response with `status` and `body` to a request of
/// `records` events. All or nothing (see the module comment).
pub fn classify_response(status: u16, body: &[u8], records: usize) -> BatchOutcome {
    if (200..300).contains(&status) {
        return BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; records]);
    }
    BatchOutcome::Failed(classify_error(status, body))
}

/// Classifies a non-2xx answer of Event Hubs.
pub fn classify_error(status: u16, body: &[u8]) -> SinkError {
    use FailureKind::{Permanent, Throttled, Transient};

    let detail = detail(body);
    let has = |needle: &str| detail.contains(needle);
    let (kind, reason) = match status {
        // The namespace's throughput units are used up: back off.
        403 if has("QuotaExceeded") || has("quota") => (Throttled, "quota_exceeded"),
        // Bad or expired SAS, or a policy without Send: a new credential
        // (a new sink) is needed. An expired token cannot happen for long,
        // as each request carries one refreshed ahead of expiry.
        401 | 403 => (Permanent, "unauthorized"),
        413 => (Permanent, "too_large"),
        // A status that says "slow down" is believed over any body: a
        // record dead-lettered as too large on a throttling answer would be
        // lost for nothing (found by the funnel_sinks fuzz target).
        429 => (Throttled, "throttled"),
        // Event Hubs answers 503 for ServerBusy: a partition or the
        // namespace is over its throughput; slow down.
        503 => (Throttled, "server_busy"),
        _ if has("MessageSizeExceeded") => (Permanent, "too_large"),
        404 => (Permanent, "not_found"),
        _ if has("ServerBusy") => (Throttled, "server_busy"),
        408 => (Transient, "timeout"),
        500 => (Transient, "internal_error"),
        s if (500..600).contains(&s) => (Transient, "http_5xx"),
        400 => (Permanent, "bad_request"),
        s if (400..500).contains(&s) => (Permanent, "http_4xx"),
        // 1xx/3xx: a redirecting proxy in the way will not fix itself.
        _ => (Permanent, "unexpected_status"),
    };
    let message = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    SinkError {
        kind,
        reason,
        message: truncate(message),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::sinks::RetryReason;

    fn rec(pk: &str, data: &[u8]) -> SinkRecord {
        SinkRecord {
            partition_key: pk.into(),
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn resource_urls() {
        let u =
            parse_resource_url("https://My-NS.servicebus.windows.net/devices/messages").unwrap();
        assert_eq!(u.host, "my-ns.servicebus.windows.net");
        assert_eq!(u.hub, "devices");
        assert_eq!(
            u.resource_uri(),
            "https://my-ns.servicebus.windows.net/devices/messages"
        );
        assert_eq!(
            u.path_and_query(),
            "/devices/messages?timeout=60&api-version=2014-01"
        );
        assert!(
            parse_resource_url("https://ns.servicebus.windows.net:443/a.b-c_1/messages").is_ok()
        );

        use EventHubsUrlError as E;
        type Check = fn(&E) -> bool;
        let bad: &[(&str, Check)] = &[
            ("http://ns.servicebus.windows.net/h/messages", |e| {
                matches!(e, E::NotHttps(_))
            }),
            ("https://ns.servicebus.example.com/h/messages", |e| {
                matches!(e, E::NotServiceBusHost(_))
            }),
            ("https://servicebus.windows.net/h/messages", |e| {
                matches!(e, E::NotServiceBusHost(_))
            }),
            ("https://.servicebus.windows.net/h/messages", |e| {
                matches!(e, E::NotServiceBusHost(_) | E::Invalid(_))
            }),
            ("https://a.b.servicebus.windows.net/h/messages", |e| {
                matches!(e, E::NotServiceBusHost(_))
            }),
            ("https://ns.servicebus.windows.net:8443/h/messages", |e| {
                matches!(e, E::NotServiceBusHost(_))
            }),
            ("https://ns.servicebus.windows.net/", |e| {
                matches!(e, E::MissingHub)
            }),
            ("https://ns.servicebus.windows.net", |e| {
                matches!(e, E::MissingHub)
            }),
            ("https://ns.servicebus.windows.net/h", |e| {
                matches!(e, E::MissingMessages(_))
            }),
            ("https://ns.servicebus.windows.net/h/", |e| {
                matches!(e, E::MissingMessages(_))
            }),
            ("https://ns.servicebus.windows.net/h/events", |e| {
                matches!(e, E::MissingMessages(_))
            }),
            ("https://ns.servicebus.windows.net/h/messages/x", |e| {
                matches!(e, E::MissingMessages(_))
            }),
            ("https://ns.servicebus.windows.net/-h/messages", |e| {
                matches!(e, E::InvalidHub(_))
            }),
            ("https://ns.servicebus.windows.net/h%20x/messages", |e| {
                matches!(e, E::InvalidHub(_))
            }),
            ("https://ns.servicebus.windows.net/h/messages?x=1", |e| {
                matches!(e, E::HasQuery)
            }),
            ("https://ns.servicebus.windows.net/h/messages#x", |e| {
                matches!(e, E::HasQuery)
            }),
            ("not a url", |e| matches!(e, E::Invalid(_))),
        ];
        for (url, ok) in bad {
            let e = parse_resource_url(url).unwrap_err();
            assert!(ok(&e), "{url}: {e:?}");
        }
        let long = format!(
            "https://ns.servicebus.windows.net/{}/messages",
            "a".repeat(257)
        );
        assert!(matches!(parse_resource_url(&long), Err(E::InvalidHub(_))));
    }

    #[test]
    fn body_is_the_documented_array_of_events() {
        let body = batch_body(&[
            rec(
                "440101234567890",
                br#"{"imsi":"440101234567890","payloads":{"t":1}}"#,
            ),
            rec("k\"", b"line\nbreak"),
        ]);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"[{"Body":"{\"imsi\":\"440101234567890\",\"payloads\":{\"t\":1}}","BrokerProperties":{"PartitionKey":"440101234567890"}},{"Body":"line\nbreak","BrokerProperties":{"PartitionKey":"k\""}}]"#
        );
        assert_eq!(batch_body(&[]), b"[]");
    }

    #[test]
    fn a_full_batch_at_the_limits_is_one_request() {
        // Worst-case JSON for escaping: quotes everywhere.
        let per = super::super::MAX_BATCH_BYTES / super::super::MAX_EVENTS_PER_REQUEST;
        let data = format!("[{}]", "\"\",".repeat((per - 2) / 3));
        let records: Vec<_> = (0..super::super::MAX_EVENTS_PER_REQUEST)
            .map(|_| rec("001010000000001", data.as_bytes()))
            .collect();
        let p = plan(&records, MAX_REQUEST_BYTES);
        assert!(is_single_request(&p, records.len()), "{:?}", p.too_large);
        assert!(p.requests[0].body.len() <= MAX_REQUEST_BYTES);
        assert_eq!(p.requests[0].body, batch_body(&records));
        // One record at the record limit, all quotes and backslashes.
        let big = "\"\\".repeat(super::super::MAX_RECORD_BYTES / 2);
        let p = plan(&[rec("001010000000001", big.as_bytes())], MAX_REQUEST_BYTES);
        assert!(is_single_request(&p, 1));
        assert!(p.requests[0].body.len() <= MAX_REQUEST_BYTES);
    }

    #[test]
    fn plan_splits_and_rejects_what_does_not_fit() {
        // Each event is 55 + data bytes; allow two small ones per request.
        let small = rec("k", b"0123456789");
        let huge = rec("k", &[1u8; 100]); // \u0001 ×100 = 600 bytes escaped
        let records = vec![small.clone(), small.clone(), small.clone(), huge, small];
        let p = plan(&records, 150);
        assert_eq!(p.too_large, vec![3]);
        let ranges: Vec<_> = p.requests.iter().map(|r| r.records.clone()).collect();
        assert_eq!(ranges, vec![0..2, 2..3, 4..5]);
        for r in &p.requests {
            assert!(r.body.len() <= 150);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v.as_array().unwrap().len(), r.records.len());
        }
        assert!(!is_single_request(&p, records.len()));

        // The requests' outcomes spread over their records.
        let merged = merge_outcomes(
            records.len(),
            &p,
            &[
                Some(classify_response(201, b"", 2)),
                Some(classify_response(503, b"", 1)),
                None,
            ],
            &RecordOutcome::Retryable(RetryReason::transient("not_sent")),
        );
        assert_eq!(
            merged,
            BatchOutcome::PerRecord(vec![
                RecordOutcome::Delivered,
                RecordOutcome::Delivered,
                RecordOutcome::Retryable(RetryReason::throttled("server_busy")),
                too_large_outcome(MAX_REQUEST_BYTES),
                RecordOutcome::Retryable(RetryReason::transient("not_sent")),
            ])
        );
        assert!(plan(&[], MAX_REQUEST_BYTES).requests.is_empty());
    }

    #[test]
    fn response_classification() {
        use FailureKind::{Permanent, Throttled, Transient};
        assert_eq!(
            classify_response(201, b"", 3),
            BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; 3])
        );
        // Bodies as Event Hubs (Service Bus) writes them.
        let cases: &[(u16, &str, FailureKind, &str)] = &[
            (401, "<Error><Code>401</Code><Detail>InvalidSignature: The token has an invalid signature. TrackingId:5a1c...,SystemTracker:ns.servicebus.windows.net:devices/messages</Detail></Error>", Permanent, "unauthorized"),
            (401, "<Error><Code>401</Code><Detail>ExpiredToken: The token is expired. Expiration time: '2026-01-01 00:00:00Z'. TrackingId:1</Detail></Error>", Permanent, "unauthorized"),
            (403, "<Error><Code>403</Code><Detail>Unauthorized access. 'Send' claim(s) are required to perform this operation. TrackingId:2</Detail></Error>", Permanent, "unauthorized"),
            (403, "<Error><Code>403</Code><Detail>QuotaExceeded: Number of messages or size of the namespace exceeds the quota. TrackingId:3</Detail></Error>", Throttled, "quota_exceeded"),
            (503, "<Error><Code>503</Code><Detail>The request was terminated because the entity is being throttled. Error code : 50002. Sub error: 102. Please wait 4 seconds and try again. ServerBusy TrackingId:4</Detail></Error>", Throttled, "server_busy"),
            (503, "", Throttled, "server_busy"),
            (429, "", Throttled, "throttled"),
            (429, "MessageSizeExceeded", Throttled, "throttled"),
            (503, "MessageSizeExceeded", Throttled, "server_busy"),
            (413, "<Error><Code>413</Code><Detail>The received message (delivery-id:0, size:1048600 bytes) exceeds the limit (1046528 bytes) currently allowed on the link. TrackingId:5</Detail></Error>", Permanent, "too_large"),
            (400, "<Error><Code>400</Code><Detail>MessageSizeExceeded: The batch is too large. TrackingId:6</Detail></Error>", Permanent, "too_large"),
            (404, "<Error><Code>404</Code><Detail>The messaging entity 'sb://ns.servicebus.windows.net/nohub' could not be found. TrackingId:7</Detail></Error>", Permanent, "not_found"),
            (500, "<Error><Code>500</Code><Detail>The server was unable to process the request; please retry the operation. TrackingId:8</Detail></Error>", Transient, "internal_error"),
            (502, "<html>Bad Gateway</html>", Transient, "http_5xx"),
            (504, "", Transient, "http_5xx"),
            (408, "", Transient, "timeout"),
            (400, "<Error><Code>400</Code><Detail>Bad request. TrackingId:9</Detail></Error>", Permanent, "bad_request"),
            (409, "", Permanent, "http_4xx"),
            (302, "", Permanent, "unexpected_status"),
        ];
        for &(status, body, kind, reason) in cases {
            match classify_response(status, body.as_bytes(), 2) {
                BatchOutcome::Failed(e) => {
                    assert_eq!((e.kind, e.reason), (kind, reason), "{status} {body}");
                    assert!(
                        e.message.starts_with(&format!("HTTP {status}")),
                        "{}",
                        e.message
                    );
                    assert!(!e.message.contains("<Detail>"), "{}", e.message);
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn every_record_is_planned_once_and_bodies_round_trip(
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..30),
            max in 64usize..2_000,
        ) {
            let records: Vec<_> = data.iter().map(|d| rec("001010000000001", d)).collect();
            let p = plan(&records, max);
            let mut covered = p.too_large.clone();
            for r in &p.requests {
                prop_assert!(r.body.len() <= max);
                prop_assert!(!r.records.is_empty());
                let v: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
                prop_assert_eq!(v.len(), r.records.len());
                for (event, i) in v.iter().zip(r.records.clone()) {
                    let expected = String::from_utf8_lossy(&data[i]).into_owned();
                    prop_assert_eq!(event["Body"].as_str().unwrap(), expected.as_str());
                    prop_assert_eq!(&event["BrokerProperties"]["PartitionKey"], "001010000000001");
                }
                covered.extend(r.records.clone());
            }
            covered.sort_unstable();
            prop_assert_eq!(covered, (0..records.len()).collect::<Vec<_>>());
        }
    }
}
