//! The Unified Endpoint's response formats end to end, over UDP, TCP and HTTP
//! on the real listeners: one message reaches Funnel and Harvest, and the
//! device's answer follows the group's `UnifiedEndpoint` `response.format`
//! (auto, unified, one service's own answer, custom with its templates).
//! Formats are switched live through the operator API, which also refuses
//! settings simgate could not use.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;
mod support;

use common::*;
use serde_json::{json, Value};

const BODY: &str = r#"
[[operators]]
id = "OP0000000001"

[[credentials]]
id = "null"
type = "aws"
access_key_id = "x"
secret_access_key = "y"

[[groups]]
id = "both"
harvest = { enabled = true }
[groups.funnel]
enabled = true
credentials_id = "null"
destination = { service = "discard", resource_url = "https://kinesis.us-east-1.amazonaws.com/s" }

[[groups]]
id = "harvest-only"
harvest = { enabled = true }

[[subscribers]]
imsi = "001010000000001"
group_id = "both"

[[subscribers]]
imsi = "001010000000002"
group_id = "harvest-only"

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"

[[sessions]]
ip = "127.0.7.2"
imsi = "001010000000002"
"#;

async fn set_format(run: &Running, group: &str, response: Value) -> (u16, Value) {
    let api = run.server.bound.api.unwrap();
    let auth = format!("Bearer {}", run.token());
    let body = serde_json::to_vec(&json!([{ "key": "response", "value": response }])).unwrap();
    let (status, _, body) = http_request(
        ip("127.0.0.1"),
        api,
        "PUT",
        "localhost",
        &format!("/v1/groups/{group}/configuration/UnifiedEndpoint"),
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Sends `payload` over UDP to the Unified Endpoint and splits the answer
/// line into its status and the rest.
async fn udp(run: &Running, src: &str, payload: &[u8]) -> String {
    let reply = udp_request(ip(src), run.server.bound.unified_udp.unwrap(), payload)
        .await
        .expect("a UDP answer");
    String::from_utf8(reply).unwrap()
}

fn unified_json(line: &str) -> (u16, Value) {
    let (status, rest) = line.split_once(' ').expect("status and JSON");
    (status.parse().unwrap(), serde_json::from_str(rest).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_formats() {
    let run = start(BODY).await;

    // Auto, two services: the unified JSON, every service's status.
    let (status, v) = unified_json(&udp(&run, "127.0.0.1", br#"{"t":1}"#).await);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["body"]["result"], "ok");
    assert_eq!(v["body"]["detail"]["funnel"]["statusCode"], 204);
    assert_eq!(v["body"]["detail"]["harvest"]["statusCode"], 201);

    // Auto, one service: Harvest's own answer.
    assert_eq!(udp(&run, "127.0.7.2", br#"{"t":1}"#).await, "201\n");

    // One failing service: 207 and "ng" (invalid JSON for a JSON Funnel over
    // HTTP is refused by Funnel; Harvest still stores it).
    let (status, _, body) = http_request(
        ip("127.0.0.1"),
        run.server.bound.http.unwrap(),
        "POST",
        "uni.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        b"{not json",
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 207, "{v}");
    assert_eq!(v["body"]["result"], "ng");
    assert_eq!(v["body"]["detail"]["funnel"]["statusCode"], 400);
    assert_eq!(v["body"]["detail"]["harvest"]["statusCode"], 201);

    // Unified, one service: the JSON even so.
    let (s, g) = set_format(&run, "harvest-only", json!({"format": "unified"})).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(
        g["configuration"]["UnifiedEndpoint"]["response"]["format"],
        "unified"
    );
    let (status, v) = unified_json(&udp(&run, "127.0.7.2", b"x").await);
    assert_eq!((status, &v["body"]["result"]), (200, &json!("ok")), "{v}");

    // One service's answer: Harvest's, though Funnel got the record too.
    let accepted = metric(
        &run,
        "simgate_service_requests_total",
        &["service=\"funnel\""],
    )
    .await;
    let (s, _) = set_format(&run, "both", json!({"format": "SoracomHarvest"})).await;
    assert_eq!(s, 200);
    assert_eq!(udp(&run, "127.0.0.1", br#"{"t":2}"#).await, "201\n");
    assert_eq!(
        metric(
            &run,
            "simgate_service_requests_total",
            &["service=\"funnel\""]
        )
        .await,
        accepted + 1.0,
        "Funnel still served the message"
    );

    // A service that is not enabled: a clear refusal.
    let (s, _) = set_format(&run, "harvest-only", json!({"format": "SoracomFunnel"})).await;
    assert_eq!(s, 200);
    let line = udp(&run, "127.0.7.2", b"x").await;
    assert!(
        line.starts_with("400 ") && line.contains("Funnel"),
        "{line:?}"
    );

    // Custom: the configured answers, placeholders filled, over TCP too.
    let custom = json!({
        "format": "custom",
        "success": {"statusCode": 200, "contentType": "application/json",
                    "body": "{\"ok\":\"{{imsi}}\",\"harvest\":{{harvest.statusCode}}}"},
        "failure": {"statusCode": 500, "body": "NG funnel={{funnel.statusCode}}"},
    });
    let (s, g) = set_format(&run, "both", custom).await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(
        udp(&run, "127.0.0.1", b"{}").await,
        r#"{"ok":"001010000000001","harvest":201}"#
    );
    let mut tcp = tcp_connect(ip("127.0.0.1"), run.server.bound.unified_tcp.unwrap()).await;
    let answer = tcp_exchange(&mut tcp, b"{}").await;
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        r#"{"ok":"001010000000001","harvest":201}"#
    );
    let (status, headers, body) = http_request(
        ip("127.0.0.1"),
        run.server.bound.http.unwrap(),
        "POST",
        "uni.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        b"{not json",
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(String::from_utf8(body).unwrap(), "NG funnel=400");
    assert_eq!(header(&headers, "content-type"), Some("text/plain"));

    // Settings simgate could not use are refused when written, and the
    // group keeps its previous ones.
    for bad in [
        json!({"format": "everything"}),
        json!({"format": "custom", "success": {"statusCode": 200}}),
        json!({"format": "custom", "success": {"statusCode": 200, "body": "{{password}}"},
               "failure": {"statusCode": 500}}),
        json!("auto"),
    ] {
        let (s, v) = set_format(&run, "both", bad.clone()).await;
        assert_eq!(s, 400, "{bad} → {v}");
        assert!(
            v.to_string().contains("UnifiedEndpoint"),
            "the error names the namespace: {v}"
        );
    }
    assert_eq!(
        udp(&run, "127.0.0.1", b"{}").await,
        r#"{"ok":"001010000000001","harvest":201}"#
    );

    run.server.shutdown().await;
}
