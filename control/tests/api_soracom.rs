//! The routes and shapes that follow SORACOM's API: group creation with
//! tags and configuration, group tags, namespace removal, a group's SIMs,
//! `register`, `sessionStatus`, credential creation and description.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::net::IpAddr;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use simgate_control::{Config, CredentialId, GroupId, Imsi, Session};

mod common;

use common::{assert_error, empty_config, open};

const IMSI: &str = "001010000000042";

#[tokio::test]
async fn groups_as_soracom_makes_them() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &empty_config());

    // Tags and configuration in the create request.
    let r = gw
        .call(
            Method::POST,
            "/v1/groups",
            Some(json!({"tags": {"name": "field"},
                "configuration": {"SoracomHarvest": {"enabled": true},
                    "SoracomAir": {"metadata": {"enabled": true}}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["groupId"].as_str().unwrap().to_owned();
    assert_eq!(r.body["tags"], json!({"name": "field"}));
    assert_eq!(r.body["configuration"]["SoracomHarvest"]["enabled"], true);
    assert_eq!(
        r.body["configuration"]["SoracomAir"]["metadata"],
        json!({"enabled": true})
    );
    assert!(r.body["createdTime"].as_u64().unwrap() > 0);
    assert!(r.body["lastModifiedTime"].as_u64().unwrap() > 0);
    let gid = GroupId::parse(&id).unwrap();
    assert!(gw.plane.snapshot.load().groups[&gid].harvest.enabled);

    // A bad namespace or value in the request creates nothing.
    let before = gw.plane.groups().len();
    for body in [
        json!({"configuration": {"SoracomNope": {"a": 1}}}),
        json!({"configuration": {"SoracomHarvest": {"enabled": "yes"}}}),
        json!({"configuration": {"SoracomHarvest": 5}}),
        json!({"tags": {"": "empty name"}}),
        json!({"name": "not SORACOM's"}),
        json!([null, null]),
        json!(null),
        json!([]),
    ] {
        let r = gw
            .call(Method::POST, "/v1/groups", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
    assert_eq!(gw.plane.groups().len(), before);

    // Group tags.
    let r = gw
        .call(
            Method::PUT,
            &format!("/v1/groups/{id}/tags"),
            Some(json!([{"tagName": "site", "tagValue": "osaka"},
                {"tagName": "name", "tagValue": "field-2"}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["tags"], json!({"name": "field-2", "site": "osaka"}));
    let r = gw
        .call(Method::DELETE, &format!("/v1/groups/{id}/tags/site"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = gw
        .call(Method::DELETE, &format!("/v1/groups/{id}/tags/site"), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = gw
        .call(Method::GET, &format!("/v1/groups/{id}"), None)
        .await;
    assert_eq!(r.body["tags"], json!({"name": "field-2"}));

    // A whole namespace goes; one key by its SORACOM name.
    let r = gw
        .call(
            Method::DELETE,
            &format!("/v1/groups/{id}/configuration/SoracomAir"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = gw
        .call(
            Method::DELETE,
            &format!("/v1/groups/{id}/configuration/SoracomHarvest/enabled"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = gw
        .call(Method::GET, &format!("/v1/groups/{id}"), None)
        .await;
    assert!(
        r.body["configuration"].get("SoracomAir").is_none(),
        "{}",
        r.text
    );
    assert_eq!(r.body["configuration"]["SoracomHarvest"]["enabled"], false);
    assert!(!gw.plane.snapshot.load().groups[&gid].harvest.enabled);
    let r = gw
        .call(
            Method::DELETE,
            &format!("/v1/groups/{id}/configuration/SoracomNope"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(
            Method::DELETE,
            "/v1/groups/nope/configuration/SoracomAir",
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // The group's SIMs, as SORACOM's `Sim`s, with paging.
    for n in 1..=3 {
        let r = gw
            .call(
                Method::POST,
                &format!("/v1/subscribers/00101000000010{n}/register"),
                Some(json!({"registrationSecret": "puk", "groupId": id,
                    "tags": {"name": format!("s{n}")}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = gw
        .call(
            Method::GET,
            &format!("/v1/groups/{id}/subscribers?limit=2"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let sims = r.body.as_array().unwrap();
    assert_eq!(sims.len(), 2);
    assert_eq!(sims[0]["simId"], "001010000000101");
    assert_eq!(
        sims[0]["profiles"]["001010000000101"]["primaryImsi"],
        "001010000000101"
    );
    assert_eq!(sims[0]["groupId"], id.as_str());
    let next = r.headers["x-soracom-next-key"].to_str().unwrap().to_owned();
    let r = gw
        .call(
            Method::GET,
            &format!("/v1/groups/{id}/subscribers?last_evaluated_key={next}"),
            None,
        )
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.text);
    let r = gw
        .call(Method::GET, "/v1/groups/nope/subscribers", None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn register_and_session_status() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &empty_config());
    let uri = format!("/v1/subscribers/{IMSI}/register");
    for body in [
        json!([null, null]),
        json!({"registrationSecret": 5}),
        json!({"unknown": 1}),
        json!({"imei": "12"}),
    ] {
        let r = gw.call(Method::POST, &uri, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
    let r = gw
        .call(
            Method::POST,
            &uri,
            Some(
                json!({"registrationSecret": "12345678", "tags": {"name": "pump"},
                "imei": "353000000000042"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["imsi"], IMSI);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["tags"]["name"], "pump");
    assert_eq!(r.body["sessionStatus"], json!({"online": false}));
    assert_eq!(r.body["ipAddress"], Value::Null);
    let r = gw
        .call(Method::POST, &uri, Some(json!({"registrationSecret": "x"})))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");

    // Online: the session shows.
    let ip: IpAddr = "10.9.0.42".parse().unwrap();
    gw.plane.sessions.bind(
        ip,
        Session::new(
            Imsi::parse(IMSI).unwrap(),
            Some(simgate_control::Imei::parse("353000000000042").unwrap()),
            None,
        ),
    );
    let r = gw
        .call(Method::GET, &format!("/v1/subscribers/{IMSI}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["sessionStatus"],
        json!({"online": true, "imsi": IMSI, "imei": "353000000000042",
            "ueIpAddress": "10.9.0.42"})
    );
    assert_eq!(r.body["ipAddress"], "10.9.0.42");
    let r = gw.call(Method::GET, "/v1/subscribers", None).await;
    assert_eq!(r.body[0]["sessionStatus"]["online"], true, "{}", r.text);
}

#[tokio::test]
async fn credentials_as_soracom_makes_them() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    let body = json!({"type": "aws-credentials", "description": "kinesis, tokyo",
        "credentials": {"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "wJalrXUtnFEMI"}});
    let r = gw
        .call(Method::POST, "/v1/credentials/kin", Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["credentialsId"], "kin");
    assert_eq!(r.body["type"], "aws-credentials");
    assert_eq!(r.body["description"], "kinesis, tokyo");
    assert_eq!(r.body["credentials"], json!({"accessKeyId": "AKIDEXAMPLE"}));
    assert!(r.body["createDateTime"].as_u64().unwrap() > 0);
    assert!(r.body["updateDateTime"].as_u64().unwrap() > 0);
    assert!(!r.text.contains("wJalrXUtnFEMI"));
    let r = gw
        .call(Method::POST, "/v1/credentials/kin", Some(body.clone()))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let r = gw
        .call(Method::PUT, "/v1/credentials/kin", Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = gw.call(Method::GET, "/v1/credentials", None).await;
    let listed = r.body.as_array().unwrap();
    let kin = listed.iter().find(|c| c["credentialsId"] == "kin").unwrap();
    assert_eq!(kin["description"], "kinesis, tokyo");
    for bad in [
        json!([null, null]),
        json!({"type": "azure-credentials", "credentials": {}}),
        json!({"type": "azure-credentials", "credentials": {"policyName": "p", "key": ""}}),
        json!({"type": "google-service-account-json", "credentials": {"credentials": "[1]"}}),
        json!({"type": "google-service-account-json", "credentials": {"credentials": "not json"}}),
        json!({"type": "psk", "credentials": {"key": "k"}, "description": "x".repeat(1025)}),
    ] {
        let r = gw
            .call(Method::POST, "/v1/credentials/other", Some(bad.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    // SORACOM's Azure and Google types: secrets never come back.
    let r = gw
        .call(
            Method::POST,
            "/v1/credentials/hub",
            Some(json!({"type": "azure-credentials",
                "credentials": {"policyName": "RootManageSharedAccessKey", "key": "azure-secret-key"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["type"], "azure-credentials");
    assert_eq!(
        r.body["credentials"],
        json!({"policyName": "RootManageSharedAccessKey"})
    );
    let key_file = json!({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\ngoogle-secret\n-----END PRIVATE KEY-----\n"});
    let r = gw
        .call(
            Method::PUT,
            "/v1/credentials/pubsub",
            Some(json!({"type": "google-service-account-json",
                "credentials": {"credentials": key_file.to_string()}})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(r.body["type"], "google-service-account-json");
    assert_eq!(r.body["credentials"], json!({}));
    let r = gw.call(Method::GET, "/v1/credentials", None).await;
    assert!(!r.text.contains("azure-secret-key") && !r.text.contains("google-secret"));
    for (id, kind) in [
        ("hub", "azure-credentials"),
        ("pubsub", "google-service-account-json"),
    ] {
        let c = &gw.plane.snapshot.load().credentials[&CredentialId::parse(id).unwrap()];
        assert_eq!(c.kind.type_name(), kind);
    }

    // A whole SoracomFunnel namespace goes in one call.
    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomFunnel",
            Some(json!([
                {"key": "enabled", "value": true},
                {"key": "destination", "value": {"provider": "aws", "service": "kinesis",
                    "resourceUrl": "https://kinesis.ap-northeast-1.amazonaws.com/devices"}},
                {"key": "credentialsId", "value": "kin"},
                {"key": "contentType", "value": "json"},
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = gw
        .call(
            Method::DELETE,
            "/v1/groups/demo/configuration/SoracomFunnel",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let demo = GroupId::parse("demo").unwrap();
    assert!(gw.plane.snapshot.load().groups[&demo].funnel.is_none());
    let r = gw.call(Method::GET, "/v1/groups/demo", None).await;
    assert!(
        r.body["configuration"].get("SoracomFunnel").is_none(),
        "{}",
        r.text
    );

    // The description is kept across a restart.
    drop(gw);
    let gw = open(dir.path(), &Config::embedded_default());
    let r = gw.call(Method::GET, "/v1/credentials/kin", None).await;
    assert_eq!(r.body["description"], "kinesis, tokyo", "{}", r.text);
    let r = gw.call(Method::GET, "/v1/credentials/hub", None).await;
    assert_eq!(
        r.body["credentials"]["policyName"],
        "RootManageSharedAccessKey"
    );
}
