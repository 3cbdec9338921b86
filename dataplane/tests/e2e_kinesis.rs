//! The foundation's acceptance test: 10,000 records from 100 SIMs (source
//! addresses 127.0.1.1–100, one session each) over UDP, TCP and HTTP reach a
//! real Kinesis API (kinesalite) exactly once, with the right envelope.
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
