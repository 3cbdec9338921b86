//! Funnel to Amazon Data Firehose, end to end against moto: an S3 bucket and
//! two DirectPut delivery streams to it (one per group: SORACOM's envelope,
//! and `payloadsOnly`), records from SIMs over UDP and HTTP through simgate,
//! then the objects Firehose wrote, read back from S3 and checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use simgate::sinks::aws::AwsJsonClient;
use simgate::upstream::Upstream;
use support::moto::Moto;

const BUCKET: &str = "funnel-records";
const PER_SIM: u32 = 20;

fn sim_ip(sim: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 3, sim))
}

fn imsi(sim: u8) -> String {
    format!("0010100000{:05}", 300 + u32::from(sim))
}

/// One S3 REST request to moto from 127.0.0.1. moto does not check
/// signatures (and S3's REST protocol is not what the sinks speak), but it
/// refuses anonymous reads of private objects: the Authorization header has
/// the SigV4 shape and a dummy signature.
async fn s3(moto: &Moto, method: &str, path: &str) -> (u16, Vec<u8>) {
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), moto.port());
    let host = format!("127.0.0.1:{}", moto.port());
    let (status, _, body) = common::http_request(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        to,
        method,
        &host,
        path,
        &[(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDSIMGATETEST/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=00",
        )],
        b"",
    )
    .await;
    (status, body)
}

/// The keys under `prefix` (ListObjectsV2; a test writes far fewer than
/// 1,000 objects).
async fn list(moto: &Moto, prefix: &str) -> Vec<String> {
    let (status, body) = s3(
        moto,
        "GET",
        &format!("/{BUCKET}?list-type=2&prefix={prefix}"),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let xml = String::from_utf8(body).unwrap();
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
        .collect()
}

/// Every record Firehose wrote under `prefix`: each object is its records'
/// data concatenated, here JSON values back to back.
async fn read_records(moto: &Moto, prefix: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for key in list(moto, prefix).await {
        let (status, body) = s3(moto, "GET", &format!("/{BUCKET}/{key}")).await;
        assert_eq!(status, 200, "{key}");
        for v in serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>() {
            out.push(
                v.unwrap_or_else(|e| panic!("{key}: {e}: {}", String::from_utf8_lossy(&body))),
            );
        }
    }
    out
}

/// Reads `prefix` until `n` records are there (or 30 s passed).
async fn read_n(moto: &Moto, prefix: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = read_records(moto, prefix).await;
        if records.len() >= n || Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn create_delivery_stream(firehose: &AwsJsonClient, name: &str, prefix: &str) {
    let body = serde_json::json!({
        "DeliveryStreamName": name,
        "DeliveryStreamType": "DirectPut",
        "ExtendedS3DestinationConfiguration": {
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": format!("arn:aws:s3:::{BUCKET}"),
            "Prefix": prefix,
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        },
    });
    let resp = firehose
        .call(
            "Firehose_20150804.CreateDeliveryStream",
            Bytes::from(serde_json::to_vec(&body).unwrap()),
            1 << 20,
        )
        .await
        .unwrap();
    assert!(
        resp.status.is_success(),
        "CreateDeliveryStream {name}: {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_s3_through_firehose() {
    let moto = Moto::start();
    let creds = Moto::credentials();
    let (status, body) = s3(&moto, "PUT", &format!("/{BUCKET}")).await;
    assert_eq!(
        status,
        200,
        "CreateBucket: {}",
        String::from_utf8_lossy(&body)
    );
    let firehose = AwsJsonClient::new(
        &Upstream::shared_default().unwrap(),
        &moto.endpoint(),
        Moto::REGION.to_owned(),
        "firehose",
        &creds,
        Duration::from_secs(10),
    )
    .unwrap();
    create_delivery_stream(&firehose, "devices", "envelopes/").await;
    create_delivery_stream(&firehose, "raw", "payloads/").await;

    // Group "fleet" (SIMs 1, 2) sends envelopes; group "raw" (SIM 3) only
    // payloads, configured with SORACOM's own field names.
    let body = format!(
        r#"
[funnel]
linger_ms = 20
allow_insecure_endpoints = true

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "firehose-demo"
type = "aws"
access_key_id = "{key}"
secret_access_key = "{secret}"

[[groups]]
id = "fleet"
[groups.funnel]
enabled = true
credentials_id = "firehose-demo"
destination = {{ service = "firehose", resource_url = "https://firehose.{region}.amazonaws.com/devices", endpoint = "{endpoint}" }}

[[groups]]
id = "raw"
[groups.funnel]
enabled = true
credentialsId = "firehose-demo"
destination = {{ provider = "aws", service = "firehose", resourceUrl = "https://firehose.{region}.amazonaws.com/raw", payloadsOnly = true, endpoint = "{endpoint}" }}
"#,
        key = creds.access_key_id,
        secret = creds.secret_access_key.expose(),
        region = Moto::REGION,
        endpoint = moto.endpoint(),
    );
    let mut body = body;
    for (sim, group) in [(1u8, "fleet"), (2, "fleet"), (3, "raw")] {
        body.push_str(&format!(
            "\n[[subscribers]]\nimsi = \"{imsi}\"\nimei = \"35300000000{sim:04}\"\ngroup_id = \"{group}\"\n\n[[sessions]]\nip = \"{ip}\"\nimsi = \"{imsi}\"\n",
            imsi = imsi(sim),
            ip = sim_ip(sim),
        ));
    }
    let run = common::start(&body).await;
    let b = run.server.bound.clone();

    for sim in 1..=3u8 {
        for seq in 0..PER_SIM {
            let payload = format!(r#"{{"sim":{sim},"seq":{seq}}}"#);
            if seq % 2 == 0 {
                let reply =
                    common::udp_request(sim_ip(sim), b.unified_udp.unwrap(), payload.as_bytes())
                        .await;
                assert_eq!(
                    reply.as_deref(),
                    Some(&b"200"[..]),
                    "udp sim {sim} seq {seq}"
                );
            } else {
                let (status, _, resp) = common::http_request(
                    sim_ip(sim),
                    b.http.unwrap(),
                    "POST",
                    "funnel.soracom.io",
                    "/",
                    &[("Content-Type", "application/json")],
                    payload.as_bytes(),
                )
                .await;
                assert_eq!(
                    status,
                    204,
                    "http sim {sim} seq {seq}: {}",
                    String::from_utf8_lossy(&resp)
                );
            }
        }
    }

    // Envelopes, exactly once each.
    let n = 2 * PER_SIM as usize;
    let envelopes = read_n(&moto, "envelopes/", n).await;
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for v in &envelopes {
        let sim = v["payloads"]["sim"].as_u64().unwrap();
        let seq = v["payloads"]["seq"].as_u64().unwrap();
        let sim8 = u8::try_from(sim).unwrap();
        assert_eq!(v["imsi"], imsi(sim8), "{v}");
        assert_eq!(v["imei"].as_str().unwrap().len(), 15, "{v}");
        assert_eq!(v["operatorId"], "OP0000000001");
        assert_eq!(v["credentialsId"], "firehose-demo");
        assert_eq!(
            v["destination"],
            serde_json::json!({
                "provider": "aws",
                "service": "firehose",
                "resourceUrl": format!("https://firehose.{}.amazonaws.com/devices", Moto::REGION),
            })
        );
        assert_eq!(
            v["sourceProtocol"],
            if seq % 2 == 0 { "udp" } else { "http" },
            "{v}"
        );
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        *seen.entry((sim, seq)).or_default() += 1;
    }
    assert_eq!(seen.len(), n, "{} of {n} envelopes arrived", seen.len());
    assert!(seen.values().all(|&c| c == 1), "duplicates: {seen:?}");

    // payloadsOnly: the record is the payload itself.
    let payloads = read_n(&moto, "payloads/", PER_SIM as usize).await;
    let mut seqs: Vec<u64> = payloads
        .iter()
        .map(|v| {
            assert_eq!(v["sim"], 3, "{v}");
            assert_eq!(v.as_object().unwrap().len(), 2, "payload only: {v}");
            v["seq"].as_u64().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..u64::from(PER_SIM)).collect::<Vec<_>>());

    let delivered = common::metric(
        &run,
        "simgate_funnel_records_out_total",
        &["sink=\"firehose\"", "result=\"delivered\""],
    )
    .await;
    assert_eq!(delivered, f64::from(3 * PER_SIM));
    run.server.shutdown().await;
}
