//! End to end through real sockets: Harvest Data over HTTP, UDP and TCP, read
//! back through the query API; unknown source addresses refused everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const BODY: &str = r#"
[[operators]]
id = "OP0000000001"

[[groups]]
id = "harvest-on"
harvest = { enabled = true }

[[groups]]
id = "harvest-off"

[[subscribers]]
imsi = "001010000000001"
imei = "353000000000001"
group_id = "harvest-on"

[[subscribers]]
imsi = "001010000000002"
group_id = "harvest-off"

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"

[[sessions]]
ip = "127.0.3.2"
imsi = "001010000000002"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvest_round_trip_over_http_udp_tcp() {
    let run = start(BODY).await;
    let b = run.server.bound.clone();
    let token = run.token();
    let local = ip("127.0.0.1");
    // An hour ago: inside the 40-day retention (an older time would be swept
    // by the retention task, which runs at start) and before the others.
    let device_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 3_600_000;
    let device_time_header = device_time.to_string();

    let (status, _, _) = http_request(
        local,
        b.http.unwrap(),
        "POST",
        "harvest.soracom.io",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("X-Soracom-Timestamp", device_time_header.as_str()),
        ],
        br#"{"temp":21}"#,
    )
    .await;
    assert_eq!(status, 201);

    let reply = udp_request(local, b.harvest_udp.unwrap(), b"udp-hello").await;
    assert_eq!(reply.as_deref(), Some(&b"201\n"[..]));

    let mut tcp = tcp_connect(local, b.harvest_tcp.unwrap()).await;
    assert_eq!(tcp_exchange(&mut tcp, b"tcp-hello").await, b"201\n");

    // Without a token: 401.
    let (status, _, _) = api_get(&run, "/v1/subscribers/001010000000001/data", None).await;
    assert_eq!(status, 401);
    let (status, _, _) = api_get(&run, "/v1/subscribers/001010000000001/data", Some("wrong")).await;
    assert_eq!(status, 401);

    let (status, _, body) = api_get(
        &run,
        "/v1/subscribers/001010000000001/data?sort=asc&limit=10",
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[0]["time"], device_time);
    assert_eq!(entries[0]["content"], r#"{"temp":21}"#);
    assert_eq!(entries[0]["contentType"], "application/json");
    assert_eq!(entries[0]["resourceId"], "001010000000001");
    assert_eq!(entries[0]["resourceType"], "Subscriber");
    let contents: Vec<&str> = entries
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert!(
        contents.contains(&"udp-hello") && contents.contains(&"tcp-hello"),
        "{contents:?}"
    );

    // Paging with limit 1 walks all three via x-soracom-next-key.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(k) => format!(
                "/v1/subscribers/001010000000001/data?sort=asc&limit=1&last_evaluated_key={k}"
            ),
            None => "/v1/subscribers/001010000000001/data?sort=asc&limit=1".to_owned(),
        };
        let (status, headers, body) = api_get(&run, &path, Some(&token)).await;
        assert_eq!(status, 200);
        let page: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        seen.extend(page);
        next = header(&headers, "x-soracom-next-key").map(str::to_owned);
        if next.is_none() {
            break;
        }
        assert!(seen.len() <= 3, "paging does not end");
    }
    assert_eq!(seen.len(), 3);

    // Harvest off for the group: 400.
    let (status, _, _) = http_request(
        ip("127.0.3.2"),
        b.http.unwrap(),
        "POST",
        "harvest.soracom.io",
        "/",
        &[],
        b"x",
    )
    .await;
    assert_eq!(status, 400);

    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_is_refused_and_counted() {
    let run = start(BODY).await;
    let b = run.server.bound.clone();
    let stranger = ip("127.0.9.9");

    let (status, _, _) = http_request(
        stranger,
        b.http.unwrap(),
        "POST",
        "harvest.soracom.io",
        "/",
        &[],
        b"x",
    )
    .await;
    assert_eq!(status, 403);

    assert_eq!(
        udp_request(stranger, b.harvest_udp.unwrap(), b"x").await,
        None
    );

    let mut tcp = tcp_connect(stranger, b.unified_tcp.unwrap()).await;
    let reply = tcp_exchange(&mut tcp, b"x").await;
    assert!(reply.is_empty(), "connection must be closed, got {reply:?}");

    for proto in ["http", "udp", "tcp"] {
        let n = metric(
            &run,
            "simgate_ingress_rejected_total",
            &[
                &format!("protocol=\"{proto}\""),
                "reason=\"unknown_source\"",
            ],
        )
        .await;
        assert_eq!(n, 1.0, "{proto}");
    }
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_replies_can_be_turned_off() {
    let run = start(&format!("[ingress]\nudp_reply = false\n{BODY}")).await;
    let b = run.server.bound.clone();
    let token = run.token();
    assert_eq!(
        udp_request(ip("127.0.0.1"), b.harvest_udp.unwrap(), b"quiet").await,
        None
    );
    let (status, _, body) =
        api_get(&run, "/v1/subscribers/001010000000001/data", Some(&token)).await;
    assert_eq!(status, 200);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries.len(), 1, "stored although not answered");
    assert_eq!(entries[0]["content"], "quiet");
    run.server.shutdown().await;
}
