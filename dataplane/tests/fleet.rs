//! A fleet: three simgate nodes sharing their control state and RADIUS
//! sessions through a real three-member etcd cluster (Debian's
//! `etcd-server`, started here on loopback). What one node is told, the
//! others act on; etcd failures cost writes, never the data plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use simgate::server;
use simgate_control::Config;
use support::etcd::EtcdCluster;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

struct Node {
    run: Running,
    token: String,
}

/// One simgate node of the fleet `prefix` on `etcd`, everything on
/// 127.0.0.1 with OS-chosen ports.
async fn node(etcd: &EtcdCluster, prefix: &str, name: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"data_dir = {dir:?}
{LISTEN_ANY_PORT}
default_secret = "fleet-secret"

[cluster]
etcd = {endpoints}
prefix = {prefix:?}
node = {name:?}
request_timeout_ms = 2000

[[operators]]
id = "OP0000000001"
"#,
        dir = dir.path().display().to_string(),
        endpoints = etcd.toml_endpoints(),
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = server::start(config).await.unwrap();
    Running { server, dir }
}

/// Three nodes; the first seeds the fleet and holds the API token, which
/// every node accepts (tokens are shared state).
async fn fleet(etcd: &EtcdCluster, prefix: &str) -> Vec<Node> {
    let a = node(etcd, prefix, "a").await;
    let token = a.token();
    let mut nodes = vec![Node { run: a, token }];
    for name in ["b", "c"] {
        let run = node(etcd, prefix, name).await;
        assert!(
            !run.dir.path().join("api.token").exists(),
            "only the seeding node makes a token"
        );
        let token = nodes[0].token.clone();
        nodes.push(Node { run, token });
    }
    nodes
}

async fn api(n: &Node, method: &str, path: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {}", n.token);
    let (status, _, body) = http_request(
        "127.0.0.1".parse().unwrap(),
        n.run.server.bound.api.unwrap(),
        method,
        "localhost",
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` every 10 ms until it holds; how long that took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn harvest_udp(n: &Node, src: IpAddr, payload: &[u8]) -> Option<Vec<u8>> {
    udp_request(src, n.run.server.bound.harvest_udp.unwrap(), payload).await
}

/// One accounting request with radclient; true if it was answered.
async fn radclient(radius: SocketAddr, ip: &str, imsi: &str, status_type: &str) -> bool {
    let mut child = Command::new("radclient")
        .args([
            "-x",
            "-r",
            "1",
            "-t",
            "2",
            &radius.to_string(),
            "acct",
            "fleet-secret",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient is not installed (package freeradius-utils): run scripts/setup.sh");
    let attrs = format!(
        "Acct-Status-Type = {status_type}\nFramed-IP-Address = {ip}\n3GPP-IMSI = \"{imsi}\"\nAcct-Session-Id = \"fleet-{imsi}\"\n"
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(attrs.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("radclient finished")
        .unwrap();
    out.status.success()
}

/// A group with Harvest on and a SIM in it, through node `n`.
async fn harvest_sim(n: &Node, group: &str, imsi: &str) {
    let (s, b) = api(
        n,
        "POST",
        "/v1/groups",
        &format!(r#"{{"groupId":"{group}"}}"#),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {b}");
    let (s, b) = api(
        n,
        "PUT",
        &format!("/v1/groups/{group}/configuration/SoracomHarvest"),
        r#"[{"key":"enabled","value":true}]"#,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = api(
        n,
        "POST",
        "/v1/subscribers",
        &format!(r#"{{"imsi":"{imsi}","groupId":"{group}"}}"#),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_shares_groups_sims_and_sessions_and_survives_etcd_failures() {
    let mut etcd = EtcdCluster::start(3, "127.0.95");
    let mut nodes = fleet(&etcd, "/fleet-1").await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // A group and a SIM made through node A, with a static session made
    // through node B: node C lets the device in.
    harvest_sim(a, "field", "001010000000101").await;
    let dev: IpAddr = "127.0.96.1".parse().unwrap();
    let (s, body) = api(
        b,
        "PUT",
        "/v1/sessions/127.0.96.1",
        r#"{"imsi":"001010000000101"}"#,
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {body}");
    let took = within(Duration::from_secs(5), "A's group used by C", || async {
        harvest_udp(c, dev, b"{\"t\":1}").await.as_deref() == Some(&b"201\n"[..])
    })
    .await;
    eprintln!("write on A/B to effect on C: {took:?}");

    // A RADIUS Start sent to node B lets the device's traffic through node C;
    // a Stop sent to node C ends it on node B.
    harvest_sim(a, "radius", "001010000000202").await;
    let roamer: IpAddr = "127.0.96.2".parse().unwrap();
    // Unknown source: not taken (UDP gets no answer at all).
    assert_eq!(harvest_udp(c, roamer, b"x").await, None);
    let sent = Instant::now();
    assert!(
        radclient(
            b.run.server.bound.radius.unwrap(),
            "127.0.96.2",
            "001010000000202",
            "Start"
        )
        .await
    );
    within(
        Duration::from_secs(5),
        "B's RADIUS session on C",
        || async { c.run.server.plane.sessions.lookup(roamer).is_some() },
    )
    .await;
    let took = sent.elapsed();
    assert_eq!(
        harvest_udp(c, roamer, b"{\"r\":1}").await.as_deref(),
        Some(&b"201\n"[..])
    );
    eprintln!("RADIUS Start sent to B (radclient included) to bound on C: {took:?}");
    assert!(
        radclient(
            c.run.server.bound.radius.unwrap(),
            "127.0.96.2",
            "001010000000202",
            "Stop"
        )
        .await
    );
    within(Duration::from_secs(5), "C's Stop seen by B", || async {
        b.run.server.plane.sessions.lookup(roamer).is_none()
    })
    .await;

    // Entries written through A and C are there for the query on each
    // node's own store (Harvest is per node without PostgreSQL).
    let (s, body) = api(c, "GET", "/v1/subscribers/001010000000101/data", "").await;
    assert_eq!(s, 200, "{body}");

    // Concurrent updates of one SIM from two nodes: nothing lost.
    let imsi = "001010000000101";
    tokio::join!(put_tags(a, imsi, "a"), put_tags(c, imsi, "c"));
    for n in [a, b, c] {
        within(
            Duration::from_secs(5),
            "every tag on every node",
            || async {
                let (_, body) = api(n, "GET", &format!("/v1/subscribers/{imsi}"), "").await;
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let tags = v["tags"].as_object().map_or(0, |t| t.len());
                tags == 30
            },
        )
        .await;
    }
    let retries: u64 = [a, c]
        .iter()
        .map(|n| n.run.server.plane.cluster_status().write_retries)
        .sum();
    eprintln!("write retries after a conflict: {retries}");

    // One etcd member down: writes still work and still propagate.
    etcd.kill(0);
    harvest_sim(b, "minority", "001010000000303").await;
    within(
        Duration::from_secs(5),
        "write with a member down seen by A",
        || async { api(a, "GET", "/v1/subscribers/001010000000303", "").await.0 == 200 },
    )
    .await;

    // Every member down: the data plane keeps serving from each node's
    // state; writes answer 503; /health says so.
    for i in 0..etcd.len() {
        etcd.kill(i);
    }
    assert_eq!(
        harvest_udp(c, dev, b"{\"t\":2}").await.as_deref(),
        Some(&b"201\n"[..])
    );
    let (s, body) = api(a, "POST", "/v1/groups", r#"{"groupId":"offline"}"#).await;
    assert_eq!(s, 503, "{body}");
    within(
        Duration::from_secs(5),
        "/health shows etcd down",
        || async {
            let (_, _, body) = api_get(&c.run, "/health", None).await;
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            v["store"]["backend"] == "etcd" && v["store"]["connected"] == false
        },
    )
    .await;
    assert!(metric(&c.run, "simgate_cluster_etcd_connected", &[]).await == 0.0);

    // etcd back: the nodes catch up and take writes again.
    etcd.restart_all();
    within(Duration::from_secs(15), "writes accepted again", || async {
        let (s, _) = api(a, "POST", "/v1/groups", r#"{"groupId":"after"}"#).await;
        s == 200 || s == 201
    })
    .await;
    within(Duration::from_secs(10), "C caught up", || async {
        api(c, "GET", "/v1/groups/after", "").await.0 == 200
    })
    .await;

    // A node stopped: the others carry on.
    let stopped = nodes.remove(1);
    stopped.run.server.shutdown().await;
    let (a, c) = (&nodes[0], &nodes[1]);
    harvest_sim(a, "without-b", "001010000000404").await;
    within(Duration::from_secs(5), "C after B stopped", || async {
        api(c, "GET", "/v1/subscribers/001010000000404", "").await.0 == 200
    })
    .await;
    assert_eq!(
        harvest_udp(c, dev, b"{\"t\":3}").await.as_deref(),
        Some(&b"201\n"[..])
    );
}

async fn put_tags(n: &Node, imsi: &str, side: &str) {
    for i in 0..15 {
        let (s, body) = api(
            n,
            "PUT",
            &format!("/v1/subscribers/{imsi}/tags"),
            &format!(r#"[{{"tagName":"{side}{i}","tagValue":"v"}}]"#),
        )
        .await;
        assert_eq!(s, 200, "{side}{i}: {body}");
    }
}
