//! `simgate authkey create|list|delete` against a real simgate, and the
//! SORACOM login it enables: `POST /v1/auth` with the printed id and
//! secret, then `X-Soracom-API-Key` + `X-Soracom-Token` on the Harvest
//! query API (served by the data plane, behind the same check).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;

const BODY: &str = r#"
[[operators]]
id = "OP0000000001"
"#;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn simgate(run: &Running, args: &[&str]) -> CliOut {
    simgate_cli(run.server.bound.api.unwrap(), run.dir.path(), args, &[]).await
}

/// One request to the control API: status and JSON body.
async fn api(
    run: &Running,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, _, bytes) = http_request(
        LOCALHOST,
        run.server.bound.api.unwrap(),
        method,
        "localhost",
        path,
        headers,
        body.as_bytes(),
    )
    .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// The value of the `name  value` line `name`.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_keys_are_made_used_listed_and_deleted() {
    let run = start(BODY).await;

    let out = simgate(&run, &["authkey", "create"]).await.ok();
    assert!(out.stderr.contains("only this once"), "{}", out.stderr);
    let id = field(&out.stdout, "authKeyId").to_owned();
    let secret = field(&out.stdout, "authKey").to_owned();
    assert!(id.starts_with("keyId-"), "{}", out.stdout);
    assert!(secret.starts_with("secret-"), "{}", out.stdout);

    // A SORACOM client logs in with it and reads Harvest data.
    let login = format!(r#"{{"authKeyId":"{id}","authKey":"{secret}"}}"#);
    let (status, body) = api(
        &run,
        "POST",
        "/v1/auth",
        &[("Content-Type", "application/json")],
        &login,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operatorId"], "OP0000000001");
    let api_key = body["apiKey"].as_str().unwrap().to_owned();
    let token = body["token"].as_str().unwrap().to_owned();
    let soracom = [
        ("X-Soracom-API-Key", api_key.as_str()),
        ("X-Soracom-Token", token.as_str()),
    ];
    let (status, body) = api(&run, "GET", "/v1/subscribers", &soracom, "").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(
        &run,
        "GET",
        "/v1/subscribers/001010000000001/data",
        &soracom,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let wrong = [
        ("X-Soracom-API-Key", api_key.as_str()),
        ("X-Soracom-Token", "x"),
    ];
    let (status, body) = api(
        &run,
        "GET",
        "/v1/subscribers/001010000000001/data",
        &wrong,
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "AUM0002");

    // Listed without the secret, with its last use.
    let out = simgate(&run, &["authkey", "list"]).await.ok();
    assert!(out.stdout.starts_with("AUTH KEY ID"), "{}", out.stdout);
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    assert!(!out.stdout.contains("secret-"), "{}", out.stdout);
    let out = simgate(&run, &["authkey", "list", "--json"]).await.ok();
    let list = out.json();
    assert_eq!(list[0]["authKeyId"], id.as_str());
    assert!(list[0]["lastUsedDateTime"].as_u64().is_some(), "{list}");

    // Deleted: the key and its API key stop working.
    let out = simgate(&run, &["authkey", "delete", &id]).await.ok();
    assert_eq!(out.stdout, format!("deleted auth key {id}\n"));
    let (status, _) = api(&run, "GET", "/v1/subscribers", &soracom, "").await;
    assert_eq!(status, 401);
    let (status, body) = api(
        &run,
        "POST",
        "/v1/auth",
        &[("Content-Type", "application/json")],
        &login,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "AUM0001");

    // Unknown operator: the API's 404.
    let out = simgate(&run, &["authkey", "list", "--operator", "OP0000000009"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HTTP 404"), "{}", out.stderr);

    run.server.shutdown().await;
}
