//! The flow a SORACOM API client runs, as SORACOM's OpenAPI describes it
//! (paths, headers, bodies), against simgate: log in with an auth key, make
//! a group with Harvest on, put a SIM in it, let the device send, read the
//! data back through `/v1/data/Subscriber/{imsi}`. Every call after the
//! login carries only `X-Soracom-API-Key` and `X-Soracom-Token`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};

const IMSI: &str = "001010000000042";

fn local() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let (status, _, out) =
        common::http_request(local(), api, method, "api.soracom.io", path, &all, &body).await;
    let json = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soracom_client_logs_in_groups_a_sim_and_reads_its_harvest_data() {
    let run = common::start(&format!(
        r#"
[[operators]]
id = "OP0000000001"

[[subscribers]]
imsi = "{IMSI}"

[[sessions]]
ip = "127.0.0.1"
imsi = "{IMSI}"
"#
    ))
    .await;
    let api = run.server.bound.api.unwrap();
    let http = run.server.bound.http.unwrap();
    let bearer = format!("Bearer {}", run.token());

    // The operator's auth key (made once, by whoever runs simgate).
    let (status, key) = call(
        api,
        "POST",
        "/v1/operators/OP0000000001/auth_keys",
        &[("Authorization", &bearer)],
        &serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 201, "{key}");

    // POST /auth → apiKey, token, operatorId.
    let (status, auth) = call(
        api,
        "POST",
        "/v1/auth",
        &[],
        &serde_json::json!({"authKeyId": key["authKeyId"], "authKey": key["authKey"]}),
    )
    .await;
    assert_eq!(status, 200, "{auth}");
    assert_eq!(auth["operatorId"], "OP0000000001");
    let api_key = auth["apiKey"].as_str().unwrap().to_owned();
    let token = auth["token"].as_str().unwrap().to_owned();
    let h = [
        ("X-Soracom-API-Key", api_key.as_str()),
        ("X-Soracom-Token", token.as_str()),
    ];

    // createGroup with Harvest on.
    let (status, group) = call(
        api,
        "POST",
        "/v1/groups",
        &h,
        &serde_json::json!({
            "tags": {"name": "field"},
            "configuration": {"SoracomHarvest": {"enabled": true}}
        }),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {group}");
    let group_id = group["groupId"].as_str().unwrap().to_owned();
    assert_eq!(group["tags"]["name"], "field");
    assert!(group["createdTime"].is_number(), "{group}");

    // setSubscriberGroup.
    let (status, sim) = call(
        api,
        "POST",
        &format!("/v1/subscribers/{IMSI}/set_group"),
        &h,
        &serde_json::json!({"groupId": group_id}),
    )
    .await;
    assert_eq!(status, 200, "{sim}");
    assert_eq!(sim["groupId"], group_id.as_str());

    // The device sends; the group's Harvest stores it.
    let (status, _, _) = common::http_request(
        local(),
        http,
        "POST",
        "harvest.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        br#"{"temperature":21.5}"#,
    )
    .await;
    assert_eq!(status, 201);

    // getDataFromSubscriber / getDataEntries.
    let (status, entries) = call(
        api,
        "GET",
        &format!("/v1/data/Subscriber/{IMSI}?sort=desc&limit=10"),
        &h,
        &serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{entries}");
    let list = entries.as_array().unwrap();
    assert_eq!(list.len(), 1, "{entries}");
    assert_eq!(list[0]["resourceId"], IMSI);
    assert_eq!(list[0]["resourceType"], "Subscriber");
    let content: serde_json::Value =
        serde_json::from_str(list[0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["temperature"], 21.5);
    let time = list[0]["time"].as_u64().unwrap();
    let (status, one) = call(
        api,
        "GET",
        &format!("/v1/data/Subscriber/{IMSI}/{time}"),
        &h,
        &serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["time"], time);

    // A wrong token is refused, SORACOM-shaped.
    let (status, err) = call(
        api,
        "GET",
        "/v1/groups",
        &[("X-Soracom-API-Key", &api_key), ("X-Soracom-Token", "nope")],
        &serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        err["code"].is_string() && err["message"].is_string(),
        "{err}"
    );
    run.server.shutdown().await;
}
