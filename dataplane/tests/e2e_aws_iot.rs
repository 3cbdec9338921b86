//! Funnel to AWS IoT Core, end to end.
//!
//! Against moto's IoT Data (read back through `support/moto_server.py`):
//! envelopes to `devices/#{imsi}` and, for a `sendPayloadsAsBinary` group,
//! the device's bytes; a record over IoT's 128 KiB limit dead-lettered; an
//! outage (moto killed, then back on the same port) that loses nothing.
//!
//! Against a local HTTPS peer answering as IoT Core does (moto cannot
//! throttle nor show the signature): `ThrottlingException` answers that
//! halve the window, then a credential rotation after which every publish
//! is signed with the new key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::certs::Certs;
use support::https_peer::{HttpsPeer, PeerResponse};
use support::moto::Moto;

const PER_SIM: u32 = 10;
const IOT_URL: &str = "https://a1b2c3d4e5-ats.iot.us-east-1.amazonaws.com";

fn sim_ip(sim: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 5, sim))
}

fn imsi(sim: u8) -> String {
    format!("0010100000{:05}", 500 + u32::from(sim))
}

/// The config: `groups` as (id, extra destination fields); SIMs 1–3 in
/// `fleet`, 4 in the second group if any.
fn config(endpoint: &str, extra_top: &str, groups: &[(&str, &str)]) -> String {
    let creds = Moto::credentials();
    let mut body = format!(
        r#"
{extra_top}
[funnel]
linger_ms = 20
allow_insecure_endpoints = true
retry_base_ms = 50
retry_max_ms = 400

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "iot"
type = "aws"
access_key_id = "{key}"
secret_access_key = "{secret}"
"#,
        key = creds.access_key_id,
        secret = creds.secret_access_key.expose(),
    );
    for (id, extra) in groups {
        body.push_str(&format!(
            r#"
[[groups]]
id = "{id}"
[groups.funnel]
enabled = true
credentialsId = "iot"
destination = {{ provider = "aws", service = "aws-iot", resourceUrl = "{IOT_URL}/devices/#{{imsi}}/up", endpoint = "{endpoint}"{extra} }}
"#
        ));
    }
    for sim in 1..=4u8 {
        let group = if sim <= 3 {
            groups[0].0
        } else {
            groups[groups.len() - 1].0
        };
        body.push_str(&format!(
            "\n[[subscribers]]\nimsi = \"{imsi}\"\nimei = \"35300000000{sim:04}\"\ngroup_id = \"{group}\"\n\n[[sessions]]\nip = \"{ip}\"\nimsi = \"{imsi}\"\n",
            imsi = imsi(sim),
            ip = sim_ip(sim),
        ));
    }
    body
}

/// Sends `payload` from `sim` to Funnel over HTTP and expects 204.
async fn post(run: &common::Running, sim: u8, payload: &[u8]) {
    let (status, _, resp) = common::http_request(
        sim_ip(sim),
        run.server.bound.http.unwrap(),
        "POST",
        "funnel.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        payload,
    )
    .await;
    assert_eq!(status, 204, "sim {sim}: {}", String::from_utf8_lossy(&resp));
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The envelopes moto received, keyed by (sim, seq), with their topics.
fn envelopes(moto: &Moto) -> BTreeMap<(u64, u64), Vec<(String, serde_json::Value)>> {
    let mut out: BTreeMap<(u64, u64), Vec<_>> = BTreeMap::new();
    for (_, topic, payload) in moto.iot_published() {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) else {
            continue;
        };
        let (Some(sim), Some(seq)) = (v["payloads"]["sim"].as_u64(), v["payloads"]["seq"].as_u64())
        else {
            continue;
        };
        out.entry((sim, seq)).or_default().push((topic, v));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_aws_iot_data() {
    let mut moto = Moto::start();
    let run = common::start(&config(
        &moto.endpoint(),
        "",
        &[("fleet", ""), ("bin", ", sendPayloadsAsBinary = true")],
    ))
    .await;
    let b = run.server.bound.clone();

    // Envelopes from SIMs 1–3, half over UDP, half over HTTP.
    for sim in 1..=3u8 {
        for seq in 0..PER_SIM {
            let payload = format!(r#"{{"sim":{sim},"seq":{seq}}}"#);
            if seq % 2 == 0 {
                let reply =
                    common::udp_request(sim_ip(sim), b.unified_udp.unwrap(), payload.as_bytes())
                        .await;
                assert_eq!(reply.as_deref(), Some(&b"200"[..]), "udp {sim}/{seq}");
            } else {
                post(&run, sim, payload.as_bytes()).await;
            }
        }
    }
    // Raw bytes from SIM 4 (binary group), over UDP.
    let raw: Vec<u8> = vec![0x00, 0xff, 0x10, b'{', 0x80];
    let reply = common::udp_request(sim_ip(4), b.unified_udp.unwrap(), &raw).await;
    assert_eq!(reply.as_deref(), Some(&b"200"[..]));

    let n = 3 * PER_SIM as usize;
    let seen = wait_for("every envelope", || {
        let e = envelopes(&moto);
        (e.len() >= n).then_some(e)
    })
    .await;
    assert_eq!(seen.len(), n);
    for ((sim, seq), got) in &seen {
        assert_eq!(got.len(), 1, "exactly once: {sim}/{seq}: {got:?}");
        let (topic, v) = &got[0];
        let sim8 = u8::try_from(*sim).unwrap();
        assert_eq!(topic, &format!("devices/{}/up", imsi(sim8)));
        assert_eq!(v["imsi"], imsi(sim8));
        assert_eq!(v["imei"].as_str().unwrap().len(), 15, "{v}");
        assert_eq!(v["operatorId"], "OP0000000001");
        assert_eq!(v["credentialsId"], "iot");
        assert_eq!(
            v["destination"],
            serde_json::json!({"provider": "aws", "service": "aws-iot",
                "resourceUrl": format!("{IOT_URL}/devices/#{{imsi}}/up")})
        );
        assert_eq!(
            v["sourceProtocol"],
            if seq % 2 == 0 { "udp" } else { "http" }
        );
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    }
    let binary = wait_for("the binary payload", || {
        moto.iot_published()
            .into_iter()
            .find(|(_, t, _)| t == &format!("devices/{}/up", imsi(4)))
    })
    .await;
    assert_eq!(binary.2, raw, "sendPayloadsAsBinary: the device's bytes");

    // Over IoT's 128 KiB message limit: refused at the door (never
    // acknowledged, so never lost), never sent.
    let big = format!(r#"{{"sim":1,"seq":999,"pad":"{}"}}"#, "x".repeat(130 << 10));
    let (status, _, _) = common::http_request(
        sim_ip(1),
        b.http.unwrap(),
        "POST",
        "funnel.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        big.as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(!envelopes(&moto).contains_key(&(1, 999)));

    // Outage: moto gone; simgate keeps acknowledging, then delivers every
    // record once moto is back (moto starts empty: count from zero).
    moto.stop();
    for seq in 100..110 {
        post(&run, 2, format!(r#"{{"sim":2,"seq":{seq}}}"#).as_bytes()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &["sink=\"aws-iot\"", "connect_refused"],
    )
    .await;
    assert!(refused > 0.0, "publishes were refused during the outage");
    moto.restart();
    let after = wait_for("the records acknowledged during the outage", || {
        let e = envelopes(&moto);
        (e.len() >= 10).then_some(e)
    })
    .await;
    let seqs: Vec<u64> = after.keys().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (100..110).collect::<Vec<_>>());
    assert!(after.values().all(|v| v.len() == 1), "{after:?}");
    run.server.shutdown().await;
}

/// The access key id in a SigV4 `Authorization` header.
fn access_key(auth: &str) -> Option<&str> {
    auth.split("Credential=").nth(1)?.split('/').next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_credential_rotation() {
    let certs = Certs::generate();
    // Throttles the first 6 publishes as IoT Core does, then accepts.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let peer = HttpsPeer::start(&certs, move |req| {
        assert_eq!(req.method, "POST");
        assert!(
            req.path().starts_with("/topics/devices%2F"),
            "{}",
            req.target
        );
        assert!(req.target.ends_with("?qos=1"));
        let auth = req.header("authorization").unwrap_or_default();
        assert!(auth.contains("/us-east-1/iotdata/aws4_request"), "{auth}");
        if c.fetch_add(1, Ordering::SeqCst) < 6 {
            PeerResponse::json(429, &serde_json::json!({"message": "Rate exceeded"}))
                .with_header("x-amzn-ErrorType", "ThrottlingException")
        } else {
            PeerResponse::json(200, &serde_json::json!({}))
        }
    })
    .await;
    let ca = format!(
        "[upstream]\nca_file = {:?}\n",
        certs.ca().display().to_string()
    );
    let run = common::start(&config(&peer.url(), &ca, &[("fleet", "")])).await;
    for seq in 0..20 {
        post(&run, 1, format!(r#"{{"sim":1,"seq":{seq}}}"#).as_bytes()).await;
    }
    // The peer records every request; those after the sixth were accepted.
    wait_for("20 records after throttling", || {
        let all = peer.requests();
        let accepted: Vec<u64> = all
            .iter()
            .skip(6)
            .filter_map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["payloads"]["seq"]
                    .as_u64()
            })
            .collect();
        let mut a = accepted;
        a.sort_unstable();
        (a == (0..20).collect::<Vec<_>>()).then_some(())
    })
    .await;
    let throttled = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &["sink=\"aws-iot\"", "throttling"],
    )
    .await;
    assert!(
        throttled >= 1.0,
        "throttling counted as retries ({throttled})"
    );

    // Rotate the key through the API; the peer now refuses the old one.
    let before = peer.requests().len();
    peer.set_handler(|req| {
        if access_key(req.header("authorization").unwrap_or_default()) == Some("AKIDROTATED") {
            if req.body.windows(8).any(|w| w == b"too-big!") {
                // IoT Core's own limit can be lower than ours (an account
                // quota): the record is refused for good.
                PeerResponse::json(
                    413,
                    &serde_json::json!({"message": "Payload exceeds the maximum size"}),
                )
                .with_header("x-amzn-ErrorType", "RequestEntityTooLargeException")
            } else {
                PeerResponse::json(200, &serde_json::json!({}))
            }
        } else {
            PeerResponse::json(403, &serde_json::json!({"message": "Forbidden"}))
                .with_header("x-amzn-ErrorType", "ForbiddenException")
        }
    });
    let auth = format!("Bearer {}", run.token());
    let (status, _, body) = common::http_request(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        run.server.bound.api.unwrap(),
        "PUT",
        "localhost",
        "/v1/credentials/iot",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        br#"{"type":"aws-credentials","credentials":{"accessKeyId":"AKIDROTATED","secretAccessKey":"rotated-secret"}}"#,
    )
    .await;
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    for seq in 100..110 {
        post(&run, 1, format!(r#"{{"sim":1,"seq":{seq}}}"#).as_bytes()).await;
    }
    post(&run, 1, br#"{"sim":1,"seq":200,"mark":"too-big!"}"#).await;
    wait_for("10 records signed with the new key", || {
        let mut seqs: Vec<u64> = peer.requests()[before..]
            .iter()
            .filter(|r| {
                access_key(r.header("authorization").unwrap_or_default()) == Some("AKIDROTATED")
            })
            .filter_map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["payloads"]["seq"]
                    .as_u64()
            })
            .filter(|seq| *seq < 200)
            .collect();
        seqs.sort_unstable();
        (seqs == (100..110).collect::<Vec<_>>()).then_some(())
    })
    .await;
    assert!(
        peer.requests()[before..].iter().all(|r| access_key(
            r.header("authorization").unwrap_or_default()
        ) == Some("AKIDROTATED")),
        "no publish with the old key after the rotation"
    );
    // The record IoT refused for its size is the one dead letter, kept
    // with IoT's reason.
    let token = run.token();
    let list = wait_for_async_list(&run, &token).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["reason"], "rejected");
    let detail = list[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("RequestEntityTooLargeException"),
        "{detail}"
    );
    assert_eq!(list[0]["partitionKey"], imsi(1));
    run.server.shutdown().await;
}

/// The dead letters, once there is at least one (or after 10 s).
async fn wait_for_async_list(run: &common::Running, token: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = common::api_get(run, "/v1/funnel/dead_letters", Some(token)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        if !list.is_empty() || Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
