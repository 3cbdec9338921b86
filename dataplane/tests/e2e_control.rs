//! The control plane end to end, as a newcomer would use it: with the REST
//! API create a group with Harvest on and register a SIM, bind it with a real
//! RADIUS Accounting-Start (radclient), send data from its address, read it
//! back — all without restarting — then restart and find it all still there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;

const BODY: &str = r#"
[[operators]]
id = "OP0000000001"
"#;

const SIM_IP: &str = "127.0.2.7";
const IMSI: &str = "001010000000777";

async fn api(run: &Running, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
    let token = run.token();
    let auth = format!("Bearer {token}");
    let (status, _, body) = http_request(
        "127.0.0.1".parse().unwrap(),
        run.server.bound.api.unwrap(),
        method,
        "localhost",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    (status, body)
}

/// One accounting request for the test SIM; true if it was answered.
async fn radclient(radius: SocketAddr, secret: &str, status_type: &str) -> bool {
    let attrs = format!(
        "Acct-Status-Type = {status_type}\nFramed-IP-Address = {SIM_IP}\n3GPP-IMSI = \"{IMSI}\"\n3GPP-IMEISV = \"3530000000007701\"\nCalling-Station-Id = \"818000000777\"\nAcct-Session-Id = \"e2e-1\"\n"
    );
    common::radclient(radius, secret, &attrs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_radius_harvest_without_restart_and_after_restart() {
    let run = start(BODY).await;
    let b = run.server.bound.clone();
    let sim_ip: IpAddr = SIM_IP.parse().unwrap();

    // Group with Harvest on, through the configuration namespace.
    let (s, body) = api(
        &run,
        "POST",
        "/v1/groups",
        r#"{"groupId":"field","tags":{"name":"field sensors"}}"#,
    )
    .await;
    assert!(
        s == 200 || s == 201,
        "{s} {}",
        String::from_utf8_lossy(&body)
    );
    let (s, body) = api(
        &run,
        "PUT",
        "/v1/groups/field/configuration/SoracomHarvest",
        r#"[{"key":"enabled","value":true}]"#,
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));

    // Register the SIM into the group.
    let (s, body) = api(
        &run,
        "POST",
        "/v1/subscribers",
        &format!(r#"{{"imsi":"{IMSI}","imei":"353000000000770","groupId":"field"}}"#),
    )
    .await;
    assert!(
        s == 200 || s == 201,
        "{s} {}",
        String::from_utf8_lossy(&body)
    );

    // Before any session: refused.
    let (s, _, _) = http_request(
        sim_ip,
        b.http.unwrap(),
        "POST",
        "harvest.soracom.io",
        "/",
        &[],
        b"early",
    )
    .await;
    assert_eq!(s, 403);

    // The packet gateway reports the session.
    let secret = std::fs::read_to_string(run.dir.path().join("radius.secret")).unwrap();
    assert!(
        !radclient(b.radius.unwrap(), "wrong-secret", "Start").await,
        "wrong secret must get no answer"
    );
    assert!(run.server.plane.sessions.lookup(sim_ip).is_none());
    assert!(radclient(b.radius.unwrap(), secret.trim(), "Start").await);

    // Traffic from its address is now that SIM's.
    let (s, _, _) = http_request(
        sim_ip,
        b.http.unwrap(),
        "POST",
        "harvest.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        br#"{"soil":0.31}"#,
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        udp_request(sim_ip, b.harvest_udp.unwrap(), b"by udp")
            .await
            .as_deref(),
        Some(&b"201\n"[..])
    );

    let (s, body) = api(
        &run,
        "GET",
        &format!("/v1/subscribers/{IMSI}/data?sort=asc"),
        "",
    )
    .await;
    assert_eq!(s, 200);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["content"], r#"{"soil":0.31}"#);

    // Suspending the SIM takes effect at once.
    let (s, _) = api(&run, "POST", &format!("/v1/subscribers/{IMSI}/suspend"), "").await;
    assert_eq!(s, 200);
    let (s, _, _) = http_request(
        sim_ip,
        b.http.unwrap(),
        "POST",
        "harvest.soracom.io",
        "/",
        &[],
        b"x",
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = api(
        &run,
        "POST",
        &format!("/v1/subscribers/{IMSI}/activate"),
        "",
    )
    .await;
    assert_eq!(s, 200);

    // Stop unbinds: refused again.
    assert!(radclient(b.radius.unwrap(), secret.trim(), "Stop").await);
    assert!(run.server.plane.sessions.lookup(sim_ip).is_none());
    let (s, _, _) = http_request(
        sim_ip,
        b.http.unwrap(),
        "POST",
        "harvest.soracom.io",
        "/",
        &[],
        b"late",
    )
    .await;
    assert_eq!(s, 403);

    let n = metric(&run, "simgate_radius_starts_total", &[]).await;
    assert_eq!(n, 1.0);
    let n = metric(
        &run,
        "simgate_radius_dropped_total",
        &["reason=\"bad_authenticator\""],
    )
    .await;
    assert!(n >= 1.0);

    // Restart on the same data dir: the group, the SIM and its data remain.
    let Running { server, dir } = run;
    server.shutdown().await;
    let config = simgate_control::Config::parse(&format!(
        "data_dir = {:?}\n{LISTEN_ANY_PORT}\n{BODY}",
        dir.path().display().to_string()
    ))
    .unwrap();
    let server = simgate::server::start(config).await.unwrap();
    assert!(
        server.created_token.is_none(),
        "the token survives a restart"
    );
    let run = Running { server, dir };
    let (s, body) = api(&run, "GET", &format!("/v1/subscribers/{IMSI}"), "").await;
    assert_eq!(s, 200);
    let sim: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sim["groupId"], "field");
    assert_eq!(sim["status"], "active");
    let (s, body) = api(&run, "GET", "/v1/groups/field", "").await;
    assert_eq!(s, 200);
    let group: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        group["configuration"]["SoracomHarvest"]["enabled"], true,
        "{group}"
    );
    let (s, body) = api(&run, "GET", &format!("/v1/subscribers/{IMSI}/data"), "").await;
    assert_eq!(s, 200);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries.len(), 2);
    run.server.shutdown().await;
}
