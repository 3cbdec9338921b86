//! Harvest Data in a fleet: two simgate servers with the same
//! `[cluster] postgres` (a real, throwaway PostgreSQL; no etcd). What a device
//! sends through one node's ingress is returned by the other node's query
//! API, with the same entries, order and paging keys; a delete on one node
//! is seen by the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use common::*;
use support::postgres::PgServer;

const IMSI: &str = "001010000000001";

fn body(postgres_url: &str) -> String {
    format!(
        r#"
[cluster]
postgres = "{postgres_url}"

[[operators]]
id = "OP0000000001"

[[groups]]
id = "harvest-on"
harvest = {{ enabled = true }}

[[subscribers]]
imsi = "{IMSI}"
group_id = "harvest-on"

[[sessions]]
ip = "127.0.0.1"
imsi = "{IMSI}"
"#
    )
}

/// Every page of the SIM's entries, oldest first, `limit` at a time: the
/// entries' contents and the `x-soracom-next-key` of each page.
async fn page_all(run: &Running, limit: usize) -> (Vec<String>, Vec<String>) {
    let token = run.token();
    let mut contents = Vec::new();
    let mut keys = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/subscribers/{IMSI}/data?sort=asc&limit={limit}");
        if let Some(k) = &next {
            path.push_str("&last_evaluated_key=");
            path.push_str(k);
        }
        let (status, headers, body) = api_get(run, &path, Some(&token)).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let page = json_of(&body);
        let page = page.as_array().unwrap();
        assert!(page.len() <= limit);
        for e in page {
            assert_eq!(e["resourceId"], IMSI);
            contents.push(e["content"].as_str().unwrap().to_owned());
        }
        next = header(&headers, "x-soracom-next-key").map(str::to_owned);
        match &next {
            Some(k) => keys.push(k.clone()),
            None => return (contents, keys),
        }
    }
    panic!("paging does not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_sent_to_one_node_are_read_on_another() {
    let pg = PgServer::start();
    let url = pg.create_database();
    let node_a = start(&body(&url)).await;
    let node_b = start(&body(&url)).await;
    let (a, b) = (node_a.server.bound.clone(), node_b.server.bound.clone());
    let local = ip("127.0.0.1");

    // Two entries in one millisecond, one through each node's HTTP ingress:
    // the fleet numbers them 0 and 1, whichever node took them. An hour ago,
    // inside the retention, before the UDP entries' arrival times.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let device_time = (now_ms - 3_600_000).to_string();
    for (node, content) in [(&a, "http-a"), (&b, "http-b")] {
        let (status, _, _) = http_request(
            local,
            node.http.unwrap(),
            "POST",
            "harvest.soracom.io",
            "/",
            &[
                ("Content-Type", "text/plain"),
                ("X-Soracom-Timestamp", device_time.as_str()),
            ],
            content.as_bytes(),
        )
        .await;
        assert_eq!(status, 201, "{content}");
    }
    let reply = udp_request(local, a.harvest_udp.unwrap(), b"udp-a").await;
    assert_eq!(reply.as_deref(), Some(&b"201\n"[..]));

    // Node B returns what went through node A, and both nodes page alike.
    let (contents, keys) = page_all(&node_b, 1).await;
    assert_eq!(contents, ["http-a", "http-b", "udp-a"]);
    assert_eq!(
        keys,
        [
            format!("{device_time}_{IMSI}_0"),
            format!("{device_time}_{IMSI}")
        ]
    );
    assert_eq!(page_all(&node_a, 1).await, (contents.clone(), keys));
    let (all, no_keys) = page_all(&node_b, 10).await;
    assert_eq!(all, contents);
    assert!(no_keys.is_empty());

    // The millisecond holds both nodes' entries; deleting it on node B
    // removes it for node A.
    let at = format!("/v1/subscribers/{IMSI}/data/{device_time}");
    let (status, _, body) = api_get(&node_a, &at, Some(&node_a.token())).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body).as_array().unwrap().len(), 2);
    let (status, _, _) = http_request(
        local,
        b.api.unwrap(),
        "DELETE",
        "localhost",
        &at,
        &[("Authorization", &format!("Bearer {}", node_b.token()))],
        b"",
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = api_get(&node_a, &at, Some(&node_a.token())).await;
    assert_eq!(status, 404);
    assert_eq!(page_all(&node_a, 10).await.0, ["udp-a"]);

    // Both nodes list the SIM as a resource with data.
    for node in [&node_a, &node_b] {
        let (status, _, body) = api_get(node, "/v1/data/resources", Some(&node.token())).await;
        assert_eq!(status, 200);
        assert_eq!(json_of(&body)[0]["resourceId"], IMSI);
    }

    node_a.server.shutdown().await;
    node_b.server.shutdown().await;
}

/// PostgreSQL unreachable while a node runs: the device is told to retry
/// (503 + Retry-After), the API answers 503, and both recover once the
/// server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_and_recovers() {
    let mut pg = PgServer::start();
    let url = pg.create_database();
    let node = start(&body(&url)).await;
    let http = node.server.bound.http.unwrap();
    let token = node.token();
    let local = ip("127.0.0.1");
    let send = |content: &'static str| {
        http_request(
            local,
            http,
            "POST",
            "harvest.soracom.io",
            "/",
            &[],
            content.as_bytes(),
        )
    };

    assert_eq!(send("before").await.0, 201);
    pg.stop();
    let (status, headers, _) = send("during").await;
    assert_eq!(status, 503);
    assert!(header(&headers, "retry-after").is_some(), "{headers:?}");
    let (status, _, body) =
        api_get(&node, &format!("/v1/subscribers/{IMSI}/data"), Some(&token)).await;
    assert_eq!(status, 503);
    assert_eq!(json_of(&body)["code"], "UNAVAILABLE");

    pg.restart();
    assert_eq!(send("after").await.0, 201);
    assert_eq!(page_all(&node, 10).await.0, ["before", "after"]);
    node.server.shutdown().await;
}
