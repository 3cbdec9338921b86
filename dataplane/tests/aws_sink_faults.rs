//! Kinesis and Firehose faults that their emulators cannot produce, against
//! a local HTTPS peer that answers with the services' own shapes: an outage
//! (`InternalFailure` answers, spending no record's attempts), per-record
//! throttling inside a 200 answer (`ProvisionedThroughputExceededException`,
//! `ServiceUnavailableException` with `FailedPutCount`), a whole request
//! throttled, a record refused for good (dead letter), and a key rotation
//! after which every request is signed with the new key. Outages with the
//! real emulators are in `funnel_outage.rs` (Kinesis) and
//! `e2e_aws_iot.rs` (moto).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::certs::Certs;
use support::https_peer::{HttpsPeer, PeerRequest, PeerResponse};

fn sim_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 6, 1))
}

const IMSI: &str = "001010000000601";

#[derive(Clone, Copy)]
enum Service {
    Kinesis,
    Firehose,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Self::Kinesis => "kinesis",
            Self::Firehose => "firehose",
        }
    }

    /// (per-record throttling code, request throttling error type, a
    /// success entry)
    fn shape(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Kinesis => (
                "ProvisionedThroughputExceededException",
                "ProvisionedThroughputExceededException",
                r#"{"SequenceNumber":"1","ShardId":"shardId-000000000000"}"#,
            ),
            Self::Firehose => (
                "ServiceUnavailableException",
                "ServiceUnavailableException",
                r#"{"RecordId":"r1"}"#,
            ),
        }
    }
}

/// The JSON records of one PutRecords / PutRecordBatch body.
fn records(body: &[u8]) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["Data"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&data).unwrap()
        })
        .collect()
}

fn seq(record: &serde_json::Value) -> u64 {
    record["payloads"]["seq"].as_u64().unwrap()
}

fn access_key(req: &PeerRequest) -> String {
    let auth = req.header("authorization").unwrap_or_default();
    auth.split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_owned()
}

/// The peer: requests 0–2 fail with 500 InternalFailure (an outage),
/// request 3 is throttled as a whole; in the next two, every other record
/// is throttled; a record with `"poison"` is refused for good; keys other
/// than `accepted_key` are refused with 400 UnrecognizedClientException.
fn handler(
    service: Service,
    accepted_key: Arc<Mutex<String>>,
    delivered: Arc<Mutex<BTreeMap<u64, usize>>>,
) -> impl Fn(&PeerRequest) -> PeerResponse + Send + Sync + 'static {
    let (record_throttle, request_throttle, ok_entry) = service.shape();
    let n = AtomicUsize::new(0);
    move |req| {
        let target = req.header("x-amz-target").unwrap_or_default().to_owned();
        let expected = match service {
            Service::Kinesis => "Kinesis_20131202.PutRecords",
            Service::Firehose => "Firehose_20150804.PutRecordBatch",
        };
        assert_eq!(target, expected);
        if access_key(req) != *accepted_key.lock().unwrap() {
            return PeerResponse::json(
                400,
                &serde_json::json!({"__type": "UnrecognizedClientException",
                    "message": "The security token included in the request is invalid."}),
            );
        }
        let i = n.fetch_add(1, Ordering::SeqCst);
        if i < 3 {
            return PeerResponse::json(
                500,
                &serde_json::json!({"__type": "InternalFailure", "message": "Internal service failure."}),
            )
            .with_header("x-amzn-ErrorType", "InternalFailure");
        }
        let i = i - 3;
        if i == 0 {
            return PeerResponse::json(
                400,
                &serde_json::json!({"__type": request_throttle, "message": "Rate exceeded"}),
            )
            .with_header("x-amzn-ErrorType", request_throttle);
        }
        let recs = records(&req.body);
        let mut failed = 0;
        let mut entries = Vec::new();
        let mut delivered = delivered.lock().unwrap();
        for (k, r) in recs.iter().enumerate() {
            let poison = r["payloads"].get("poison").is_some();
            if poison {
                failed += 1;
                let code = match service {
                    Service::Kinesis => "KMSAccessDeniedException",
                    Service::Firehose => "InvalidKMSResourceException",
                };
                entries.push(format!(
                    r#"{{"ErrorCode":"{code}","ErrorMessage":"refused"}}"#
                ));
            } else if i <= 2 && k % 2 == 1 {
                failed += 1;
                entries.push(format!(
                    r#"{{"ErrorCode":"{record_throttle}","ErrorMessage":"Slow down."}}"#
                ));
            } else {
                *delivered.entry(seq(r)).or_default() += 1;
                entries.push(ok_entry.to_owned());
            }
        }
        let body = match service {
            Service::Kinesis => format!(
                r#"{{"FailedRecordCount":{failed},"Records":[{}]}}"#,
                entries.join(",")
            ),
            Service::Firehose => format!(
                r#"{{"FailedPutCount":{failed},"Encrypted":false,"RequestResponses":[{}]}}"#,
                entries.join(",")
            ),
        };
        PeerResponse::new(200, body).with_header("content-type", "application/x-amz-json-1.1")
    }
}

async fn post(run: &common::Running, body: &str) {
    let (status, _, resp) = common::http_request(
        sim_ip(),
        run.server.bound.http.unwrap(),
        "POST",
        "funnel.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&resp));
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn faults(service: Service) {
    let certs = Certs::generate();
    let key = Arc::new(Mutex::new("AKIDFIRST".to_owned()));
    let delivered = Arc::new(Mutex::new(BTreeMap::new()));
    let peer = HttpsPeer::start(
        &certs,
        handler(service, Arc::clone(&key), Arc::clone(&delivered)),
    )
    .await;
    let name = service.name();
    let body = format!(
        r#"
[upstream]
ca_file = {ca:?}

[funnel]
linger_ms = 50
retry_base_ms = 50
retry_max_ms = 400
max_attempts = 4

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "aws"
type = "aws"
access_key_id = "AKIDFIRST"
secret_access_key = "first-secret"

[[groups]]
id = "g"
[groups.funnel]
enabled = true
credentialsId = "aws"
destination = {{ provider = "aws", service = "{name}", resourceUrl = "https://{name}.us-east-1.amazonaws.com/devices", endpoint = "{url}" }}

[[subscribers]]
imsi = "{IMSI}"
group_id = "g"

[[sessions]]
ip = "{ip}"
imsi = "{IMSI}"
"#,
        ca = certs.ca().display().to_string(),
        url = peer.url(),
        ip = sim_ip(),
    );
    let run = common::start(&body).await;

    // Throttled as a whole, then record by record: everything arrives once.
    for seq in 0..40 {
        post(&run, &format!(r#"{{"seq":{seq}}}"#)).await;
    }
    // One record the service refuses for good.
    post(&run, r#"{"seq":1000,"poison":true}"#).await;
    wait_until("40 records once each", || {
        let d = delivered.lock().unwrap();
        (0..40).all(|s| d.get(&s) == Some(&1))
    })
    .await;
    let label = format!("sink=\"{name}\"");
    let retries = common::metric(&run, "simgate_funnel_retries_total", &[&label]).await;
    assert!(retries >= 2.0, "throttled records were retried ({retries})");
    let outage = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &[&label, "result=\"internal_failure\""],
    )
    .await;
    assert!(outage >= 1.0, "the outage was retried ({outage})");
    let token = run.token();
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let (_, _, b) = common::api_get(&run, "/v1/funnel/dead_letters", Some(&token)).await;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&b).unwrap();
        if !list.is_empty() || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "only the refused record: {dead:?}");
    assert!(
        dead[0]["detail"].as_str().unwrap().contains("KMS"),
        "{}",
        dead[0]
    );
    // The window was halved by the whole-request throttle at least once.
    let throttled = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &[&label, "result=\"throughput_exceeded\""],
    )
    .await
        + common::metric(
            &run,
            "simgate_funnel_retries_total",
            &[&label, "result=\"service_unavailable\""],
        )
        .await;
    assert!(throttled >= 1.0, "throttling counted ({throttled})");

    // Rotation: the service now knows only the new key.
    *key.lock().unwrap() = "AKIDSECOND".to_owned();
    let auth = format!("Bearer {token}");
    let (status, _, resp) = common::http_request(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        run.server.bound.api.unwrap(),
        "PUT",
        "localhost",
        "/v1/credentials/aws",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        br#"{"type":"aws-credentials","credentials":{"accessKeyId":"AKIDSECOND","secretAccessKey":"second-secret"}}"#,
    )
    .await;
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        String::from_utf8_lossy(&resp)
    );
    let before = peer.requests().len();
    for seq in 100..120 {
        post(&run, &format!(r#"{{"seq":{seq}}}"#)).await;
    }
    wait_until("20 records signed with the new key", || {
        let d = delivered.lock().unwrap();
        (100..120).all(|s| d.get(&s) == Some(&1))
    })
    .await;
    assert!(peer.requests()[before..]
        .iter()
        .all(|r| access_key(r) == "AKIDSECOND"));
    let d = delivered.lock().unwrap().clone();
    assert!(d.values().all(|&n| n == 1), "exactly once: {d:?}");
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_throttling_refusal_and_rotation() {
    faults(Service::Kinesis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_throttling_refusal_and_rotation() {
    faults(Service::Firehose).await;
}
