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

struct Node {
    run: Running,
    token: String,
}

/// One simgate node of the fleet `prefix` on `etcd`, everything on
/// 127.0.0.1 with OS-chosen ports.
async fn node(etcd: &EtcdCluster, prefix: &str, name: &str) -> Running {
    node_with(etcd, prefix, name, "").await
}

/// [`node`] with more `[cluster]` keys.
async fn node_with(etcd: &EtcdCluster, prefix: &str, name: &str, cluster: &str) -> Running {
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
{cluster}

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

/// One accounting request for `imsi` at `ip`; true if it was answered.
async fn radclient(radius: SocketAddr, ip: &str, imsi: &str, status_type: &str) -> bool {
    let attrs = format!(
        "Acct-Status-Type = {status_type}\nFramed-IP-Address = {ip}\n3GPP-IMSI = \"{imsi}\"\nAcct-Session-Id = \"fleet-{imsi}\"\n"
    );
    common::radclient(radius, "fleet-secret", &attrs).await
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
    let took = within(Duration::from_secs(5), "B's session on C", || async {
        c.run.server.plane.sessions.lookup(dev).is_some()
    })
    .await;
    eprintln!("static session written on B, bound on C after {took:?}");
    assert_eq!(
        harvest_udp(c, dev, b"{\"t\":1}").await.as_deref(),
        Some(&b"201\n"[..]),
        "A's group and SIM, B's session, used by C"
    );

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

    // A group deleted on A while C puts a new SIM in it: one of the two is
    // refused, never both accepted (no SIM left naming a missing group).
    for round in 0..5 {
        let group = format!("race{round}");
        let (s, body) = api(
            a,
            "POST",
            "/v1/groups",
            &format!(r#"{{"groupId":"{group}"}}"#),
        )
        .await;
        assert!(s == 200 || s == 201, "{s} {body}");
        within(Duration::from_secs(5), "group on C", || async {
            api(c, "GET", &format!("/v1/groups/{group}"), "").await.0 == 200
        })
        .await;
        let imsi = format!("00101000000090{round}");
        let path = format!("/v1/groups/{group}");
        let body = format!(r#"{{"imsi":"{imsi}","groupId":"{group}"}}"#);
        let ((del, _), (created, _)) = tokio::join!(
            api(a, "DELETE", &path, ""),
            api(c, "POST", "/v1/subscribers", &body)
        );
        let deleted = del == 200 || del == 204;
        let registered = created == 200 || created == 201;
        assert!(
            deleted != registered,
            "round {round}: delete {del}, create {created}"
        );
    }

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

    // Node D, a `simgate serve` process that knows only etcd member 3:
    // cut off while the others write and etcd compacts its history, it
    // reloads everything when member 3 is back; then `kill -9`.
    let mut d = ProcessNode::spawn(&etcd.endpoint(2), "/fleet-1");
    d.wait_healthy().await;
    etcd.kill(2);
    harvest_sim(a, "while-d-away", "001010000000505").await;
    within(Duration::from_secs(5), "C has it", || async {
        api(c, "GET", "/v1/subscribers/001010000000505", "").await.0 == 200
    })
    .await;
    etcd.compact(0);
    etcd.restart(2);
    within(
        Duration::from_secs(20),
        "D reloaded after compaction",
        || async {
            d.api_get(&nodes[0].token, "/v1/subscribers/001010000000505")
                .await
                .0
                == 200
        },
    )
    .await;
    let health = d.api_get(&nodes[0].token, "/health").await.1;
    let reloads = health["store"]["reloads"].as_u64().unwrap_or(0);
    assert!(reloads >= 1, "{health}");
    // A RADIUS Start sent to D reaches C, and outlives D's kill -9 (the
    // session is in etcd, on its lease).
    let late: IpAddr = "127.0.96.3".parse().unwrap();
    assert!(radclient(d.radius, "127.0.96.3", "001010000000505", "Start").await);
    within(
        Duration::from_secs(5),
        "D's RADIUS session on C",
        || async { nodes[2].run.server.plane.sessions.lookup(late).is_some() },
    )
    .await;
    d.kill9();
    assert!(nodes[2].run.server.plane.sessions.lookup(late).is_some());
    // The gateway restarts (Accounting-On, sent to A, which never bound
    // that session): its sessions end on every node.
    assert!(
        radclient(
            nodes[0].run.server.bound.radius.unwrap(),
            "127.0.96.3",
            "001010000000505",
            "Accounting-On"
        )
        .await
    );
    within(
        Duration::from_secs(5),
        "Accounting-On on A ends D's session on C",
        || async { nodes[2].run.server.plane.sessions.lookup(late).is_none() },
    )
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

/// A node as its own `simgate serve` process (API and RADIUS on
/// 127.0.97.1, ports the OS picked), SIGKILLed on drop.
struct ProcessNode {
    child: std::process::Child,
    api: SocketAddr,
    radius: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ProcessNode {
    fn spawn(endpoint: &str, prefix: &str) -> Self {
        let ip: IpAddr = "127.0.97.1".parse().unwrap();
        // Held together so they differ; released just before the spawn.
        let api_l = std::net::TcpListener::bind((ip, 0)).unwrap();
        let radius_s = std::net::UdpSocket::bind((ip, 0)).unwrap();
        let api = api_l.local_addr().unwrap();
        let radius = radius_s.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("simgate.toml");
        std::fs::write(
            &config,
            format!(
                r#"data_dir = {data:?}
[listen]
http = "127.0.0.1:0"
unified = "127.0.0.1:0"
harvest = "127.0.0.1:0"
api = "{api}"
beam_http = "127.0.0.1:0"
beam_website = "127.0.0.1:0"
beam_tcp = "127.0.0.1:0"
beam_mqtt = "127.0.0.1:0"

[radius]
listen = "{radius}"
default_secret = "fleet-secret"

[cluster]
etcd = [{endpoint:?}]
prefix = {prefix:?}
node = "d"
request_timeout_ms = 2000
"#,
                data = dir.path().join("data").display().to_string(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        drop((api_l, radius_s));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("SIMGATE_CONFIG")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            api,
            radius,
            _dir: dir,
        }
    }

    async fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default();
                panic!("node d exited ({status}):\n{log}");
            }
            let up = tokio::net::TcpStream::connect(self.api).await.is_ok();
            if up && self.api_get("", "/health").await.0 == 200 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node d did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn api_get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {token}");
        let (status, _, body) = http_request(
            "127.0.0.1".parse().unwrap(),
            self.api,
            "GET",
            "localhost",
            path,
            &[("Authorization", auth.as_str())],
            b"",
        )
        .await;
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// A RADIUS session lives on its lease: Interim-Updates (to any node) keep
/// it past `session_ttl_seconds`; without them it ends on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_sessions_expire_unless_interim_updates_renew_them() {
    let etcd = EtcdCluster::start(1, "127.0.98");
    let ttl = "session_ttl_seconds = 10";
    let a = node_with(&etcd, "/lease", "a", ttl).await;
    let token = a.token();
    let a = Node { run: a, token };
    let b = Node {
        run: node_with(&etcd, "/lease", "b", ttl).await,
        token: a.token.clone(),
    };
    harvest_sim(&a, "leased", "001010000000707").await;
    let ip: IpAddr = "127.0.96.7".parse().unwrap();
    let radius = |n: &Node| n.run.server.bound.radius.unwrap();
    let start = Instant::now();
    assert!(radclient(radius(&a), "127.0.96.7", "001010000000707", "Start").await);
    within(Duration::from_secs(5), "bound on B", || async {
        b.run.server.plane.sessions.lookup(ip).is_some()
    })
    .await;
    // Interim-Updates every 3 s, to B, for 15 s: past the 10 s lease.
    while start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            radclient(
                radius(&b),
                "127.0.96.7",
                "001010000000707",
                "Interim-Update"
            )
            .await
        );
        for n in [&a, &b] {
            assert!(
                n.run.server.plane.sessions.lookup(ip).is_some(),
                "renewed session ended after {:?}",
                start.elapsed()
            );
        }
    }
    // Then silence: the lease runs out (10 s, plus at most its 1 s window).
    let quiet = Instant::now();
    for n in [&a, &b] {
        within(Duration::from_secs(20), "expired everywhere", || async {
            n.run.server.plane.sessions.lookup(ip).is_none()
        })
        .await;
    }
    assert!(
        quiet.elapsed() >= Duration::from_secs(8),
        "ended before its lease could have: {:?}",
        quiet.elapsed()
    );
}

/// `[cluster]` over TLS (the member's certificate verified against
/// `ca_file`) with etcd's password authentication: a node works within
/// the prefix its etcd user may use; a wrong password or an untrusted
/// certificate stops it at start with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_uses_etcd_over_tls_with_a_password() {
    let certs = support::certs::Certs::generate();
    let etcd = EtcdCluster::start_tls(support::etcd::Tls {
        cert: certs.server_cert(support::certs::ServerCert::Localhost),
        key: certs.server_key(support::certs::ServerCert::Localhost),
        ca: certs.ca(),
    });
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "gate:gatepw"],
        &["role", "add", "gate"],
        &[
            "role",
            "grant-permission",
            "gate",
            "--prefix=true",
            "readwrite",
            "/tls/",
        ],
        &["user", "grant-role", "gate", "gate"],
        &["auth", "enable"],
    ] {
        etcd.etcdctl(0, args);
    }
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("etcd.password");
    std::fs::write(&password, "gatepw\n").unwrap();
    let config = |data: &std::path::Path, pw: &std::path::Path, ca: bool| {
        let ca_line = if ca {
            format!("ca_file = {:?}", certs.ca().display().to_string())
        } else {
            String::new()
        };
        Config::parse(&format!(
            r#"data_dir = {data:?}
{LISTEN_ANY_PORT}
[cluster]
etcd = {endpoints}
prefix = "/tls"
username = "gate"
password_file = {pw:?}
{ca_line}
request_timeout_ms = 2000

[[operators]]
id = "OP0000000001"
"#,
            data = data.display().to_string(),
            endpoints = etcd.toml_endpoints(),
            pw = pw.display().to_string(),
        ))
        .unwrap()
    };

    let node_dir = tempfile::tempdir().unwrap();
    let server = server::start(config(node_dir.path(), &password, true))
        .await
        .unwrap();
    let run = Running {
        server,
        dir: node_dir,
    };
    let token = run.token();
    let n = Node { run, token };
    harvest_sim(&n, "tls", "001010000000606").await;
    let (_, _, body) = api_get(&n.run, "/health", None).await;
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["store"]["backend"], "etcd", "{health}");
    assert_eq!(health["store"]["connected"], true, "{health}");
    // The records are where the user may write, in etcd.
    let keys = etcd.etcdctl(
        0,
        &[
            "--user=root:rootpw",
            "get",
            "--prefix",
            "--keys-only",
            "/tls/control/subscribers/",
        ],
    );
    assert!(String::from_utf8_lossy(&keys.stdout).contains("001010000000606"));

    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "nope\n").unwrap();
    let err = server::start(config(&dir.path().join("w"), &wrong, true))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("authenticate") && msg.contains("etcd"),
        "{msg}"
    );
    let err = server::start(config(&dir.path().join("c"), &password, false))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("etcd") && msg.to_lowercase().contains("certificate"),
        "{msg}"
    );
}
