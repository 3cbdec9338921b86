//! The foundation's acceptance test: 10,000 records from 100 SIMs (source
//! addresses 127.0.1.1–100, one session each) over UDP, TCP and HTTP reach a
//! real Kinesis API (kinesalite) exactly once, with the right envelope; and
//! a group configured in SORACOM's own `FunnelConfiguration` shape delivers
//! what SORACOM delivers (wrapped payloads, `simId`, the 15-digit IMEI,
//! `payloadsOnly` records, random partition keys).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use simgate::sinks::kinesis::admin::KinesisAdmin;
use support::kinesalite::Kinesalite;

const SIMS: u32 = 100;
const PER_SIM: u32 = 100;

fn imsi(sim: u32) -> String {
    format!("0010100000{:05}", 100 + sim)
}

fn sim_ip(sim: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, sim as u8))
}

fn proto_of(seq: u32) -> &'static str {
    ["udp", "tcp", "http"][(seq % 3) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_arrive_exactly_once() {
    let kinesalite = Kinesalite::start();
    let stream = "devices";
    let admin = KinesisAdmin::new(
        &kinesalite.endpoint(),
        Kinesalite::REGION.to_owned(),
        Kinesalite::credentials(),
        Duration::from_secs(10),
    )
    .unwrap();
    admin.create_stream(stream, 4).await.unwrap();
    admin.wait_active(stream).await.unwrap();

    let creds = Kinesalite::credentials();
    let mut body = format!(
        r#"
[funnel]
linger_ms = 20
allow_insecure_endpoints = true

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "kinesis-demo"
type = "aws"
access_key_id = "{}"
secret_access_key = "{}"

[[groups]]
id = "fleet"
[groups.funnel]
enabled = true
credentials_id = "kinesis-demo"
destination = {{ service = "kinesis", resource_url = "https://kinesis.{}.amazonaws.com/{stream}", endpoint = "{}" }}
"#,
        creds.access_key_id,
        creds.secret_access_key.expose(),
        Kinesalite::REGION,
        kinesalite.endpoint(),
    );
    for sim in 1..=SIMS {
        write!(
            body,
            "\n[[subscribers]]\nimsi = \"{}\"\nimei = \"3530000000{:05}\"\ngroup_id = \"fleet\"\n\n[[sessions]]\nip = \"{}\"\nimsi = \"{}\"\n",
            imsi(sim),
            sim,
            sim_ip(sim),
            imsi(sim)
        )
        .unwrap();
    }
    let run = Arc::new(common::start(&body).await);
    let b = run.server.bound.clone();

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for sim in 1..=SIMS {
        let b = b.clone();
        tasks.spawn(async move {
            let src = sim_ip(sim);
            let mut tcp = common::tcp_connect(src, b.unified_tcp.unwrap()).await;
            for seq in 0..PER_SIM {
                let payload = format!(r#"{{"sim":{sim},"seq":{seq}}}"#);
                match proto_of(seq) {
                    "udp" => {
                        let reply =
                            common::udp_request(src, b.unified_udp.unwrap(), payload.as_bytes())
                                .await;
                        assert_eq!(
                            reply.as_deref(),
                            Some(&b"200"[..]),
                            "udp sim {sim} seq {seq}"
                        );
                    }
                    "tcp" => {
                        let reply = common::tcp_exchange(&mut tcp, payload.as_bytes()).await;
                        assert_eq!(reply, b"200", "tcp sim {sim} seq {seq}");
                    }
                    _ => {
                        let (status, _, body) = common::http_request(
                            src,
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
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let sent_in = started.elapsed();

    // Every record was acknowledged; wait until they are all in the stream.
    let total = (SIMS * PER_SIM) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = admin.read_all(stream).await.unwrap();
        if records.len() >= total || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
    for (partition_key, data) in &records {
        let v: serde_json::Value = serde_json::from_slice(data).unwrap();
        let sim = v["payloads"]["sim"].as_u64().unwrap() as u32;
        let seq = v["payloads"]["seq"].as_u64().unwrap() as u32;
        assert_eq!(v["imsi"], imsi(sim));
        assert_eq!(partition_key, &imsi(sim));
        assert_eq!(v["imei"], format!("3530000000{sim:05}"));
        assert_eq!(v["sourceProtocol"], proto_of(seq), "sim {sim} seq {seq}");
        assert_eq!(v["operatorId"], "OP0000000001");
        assert_eq!(v["credentialsId"], "kinesis-demo");
        assert_eq!(v["destination"]["service"], "kinesis");
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        *seen.entry((sim, seq)).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated: {duplicates:?}");
    assert_eq!(
        seen.len(),
        total,
        "{} of {total} records arrived",
        seen.len()
    );
    eprintln!(
        "{total} of {total} records exactly once; sent in {:.1} s",
        sent_in.as_secs_f64()
    );
    let delivered = common::metric(
        &run,
        "simgate_funnel_records_out_total",
        &["result=\"delivered\""],
    )
    .await;
    assert_eq!(delivered, total as f64);
    match Arc::try_unwrap(run) {
        Ok(run) => run.server.shutdown().await,
        Err(_) => panic!("server still shared"),
    }
}

/// Reads `stream` until `n` records are there (or 30 s passed).
async fn read_n(admin: &KinesisAdmin, stream: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = admin.read_all(stream).await.unwrap();
        if records.len() >= n || Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soracom_shaped_configuration_delivers_as_soracom() {
    let kinesalite = Kinesalite::start();
    let admin = KinesisAdmin::new(
        &kinesalite.endpoint(),
        Kinesalite::REGION.to_owned(),
        Kinesalite::credentials(),
        Duration::from_secs(10),
    )
    .unwrap();
    for stream in ["enveloped", "bare"] {
        admin.create_stream(stream, 1).await.unwrap();
        admin.wait_active(stream).await.unwrap();
    }
    let creds = Kinesalite::credentials();
    let region = Kinesalite::REGION;
    let endpoint = kinesalite.endpoint();
    // The [groups.funnel] tables use SORACOM's FunnelConfiguration names.
    let body = format!(
        r#"
[funnel]
linger_ms = 10
allow_insecure_endpoints = true

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "kinesis-demo"
type = "aws"
access_key_id = "{key}"
secret_access_key = "{secret}"

[[groups]]
id = "enveloped"
[groups.funnel]
enabled = true
credentialsId = "kinesis-demo"
contentType = "unspecified"
addSimId = true
destination = {{ provider = "aws", service = "kinesis", resourceUrl = "https://kinesis.{region}.amazonaws.com/enveloped", randomizePartitionKey = true, payloadsOnly = false, endpoint = "{endpoint}" }}

[[groups]]
id = "bare"
[groups.funnel]
enabled = true
credentialsId = "kinesis-demo"
contentType = "binary"
destination = {{ provider = "aws", service = "kinesis", resourceUrl = "https://kinesis.{region}.amazonaws.com/bare", payloadsOnly = true, endpoint = "{endpoint}" }}

[[subscribers]]
imsi = "001010000000201"
sim_id = "8942310000000000201"
group_id = "enveloped"

[[subscribers]]
imsi = "001010000000202"
group_id = "bare"

[[sessions]]
ip = "127.0.2.1"
imsi = "001010000000201"
imei = "4901542032375101"

[[sessions]]
ip = "127.0.2.2"
imsi = "001010000000202"
"#,
        key = creds.access_key_id,
        secret = creds.secret_access_key.expose(),
    );
    let run = common::start(&body).await;
    let b = run.server.bound.clone();
    let (a, bare) = (
        IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 2, 2)),
    );
    let udp = |src: IpAddr, payload: &'static [u8]| {
        let to = b.unified_udp.unwrap();
        async move {
            let reply = common::udp_request(src, to, payload).await;
            assert_eq!(reply.as_deref(), Some(&b"200"[..]), "{payload:?}");
        }
    };
    let http = |src: IpAddr, content_type: &'static str, payload: &'static [u8]| {
        let to = b.http.unwrap();
        async move {
            let (status, _, body) = common::http_request(
                src,
                to,
                "POST",
                "funnel.soracom.io",
                "/",
                // Honoured by Harvest only: Funnel stamps the arrival time.
                &[
                    ("Content-Type", content_type),
                    ("X-Soracom-Timestamp", "1000"),
                ],
                payload,
            )
            .await;
            assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
        }
    };
    // One at a time, so the stream keeps the order.
    udp(a, br#"{"temp":21}"#).await;
    udp(a, b"\x01\x02hi").await;
    udp(a, b"42").await;
    http(a, "text/plain", b"hello").await;
    http(a, "application/json", br#"{"h":1}"#).await;
    let mut tcp = common::tcp_connect(a, b.unified_tcp.unwrap()).await;
    assert_eq!(common::tcp_exchange(&mut tcp, b"[1,2]").await, b"200");
    udp(bare, br#"{"a":1}"#).await;
    http(bare, "application/json", br#"{"b":2}"#).await;

    let records = read_n(&admin, "enveloped", 6).await;
    let envelopes: Vec<serde_json::Value> = records
        .iter()
        .map(|(_, d)| serde_json::from_slice(d).unwrap())
        .collect();
    let payloads: Vec<_> = envelopes.iter().map(|v| v["payloads"].clone()).collect();
    assert_eq!(
        payloads,
        vec![
            serde_json::json!({"temp": 21}),
            serde_json::json!({"payload": "AQJoaQ=="}),
            serde_json::json!({"payload": "NDI="}),
            serde_json::json!({"payload": "aGVsbG8="}),
            serde_json::json!({"h": 1}),
            serde_json::json!([1, 2]),
        ]
    );
    for (v, proto) in envelopes
        .iter()
        .zip(["udp", "udp", "udp", "http", "http", "tcp"])
    {
        assert_eq!(v["sourceProtocol"], proto, "{v}");
        assert_eq!(v["imsi"], "001010000000201");
        // The session's IMEISV, sent as the 15-digit IMEI.
        assert_eq!(v["imei"], "490154203237518");
        assert_eq!(v["simId"], "8942310000000000201");
        assert_eq!(
            v["destination"],
            serde_json::json!({"provider": "aws", "service": "kinesis",
                "resourceUrl": format!("https://kinesis.{region}.amazonaws.com/enveloped")})
        );
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
    }
    // randomizePartitionKey: not the IMSI, and not one key for every record.
    let keys: std::collections::HashSet<_> = records.iter().map(|(k, _)| k.clone()).collect();
    assert!(!keys.contains("001010000000201"), "{keys:?}");
    assert!(keys.len() > 1, "{keys:?}");

    // payloadsOnly: the record is the payload alone; `binary` wraps even
    // JSON bytes from UDP, while HTTP JSON is embedded.
    let records = read_n(&admin, "bare", 2).await;
    let bare_records: Vec<(String, serde_json::Value)> = records
        .iter()
        .map(|(k, d)| (k.clone(), serde_json::from_slice(d).unwrap()))
        .collect();
    assert_eq!(
        bare_records,
        vec![
            (
                "001010000000202".to_owned(),
                serde_json::json!({"payload": "eyJhIjoxfQ=="})
            ),
            ("001010000000202".to_owned(), serde_json::json!({"b": 2})),
        ]
    );
    drop(tcp);
    run.server.shutdown().await;
}
