//! The control REST API end to end, in memory: requests go through the real
//! router (`tower::ServiceExt::oneshot`), the store is a real redb file in a
//! temporary directory, and every change is checked where the data plane
//! would see it (`plane.snapshot`, `plane.sessions`).
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use simgate_control::plane::api_token_path;
use simgate_control::{api, Config, ControlPlane, GroupId, Imsi, Session, SubscriberStatus};

mod common;

use common::{assert_error, empty_config, open, send, Gw, Reply};

const DEMO_IMSI: &str = "001010000000001";
const IMSI_2: &str = "001010000000002";

impl Gw {
    fn status_of(&self, imsi: &str) -> SubscriberStatus {
        self.plane.snapshot.load().subscribers[&Imsi::parse(imsi).unwrap()].status
    }
}

#[tokio::test]
async fn every_route_needs_a_valid_token_but_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());

    // The first start made a token, wrote it for curl, and hands it out once.
    assert_eq!(
        gw.plane.take_created_token().as_deref(),
        Some(gw.token.as_str())
    );
    assert_eq!(gw.plane.take_created_token(), None);
    assert!(gw.token.starts_with("sgt_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(api_token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    for uri in [
        "/v1/subscribers",
        "/v1/groups",
        "/v1/credentials",
        "/v1/sessions",
    ] {
        let r = send(&gw.app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "missing_token");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");

        let r = send(
            &gw.app,
            Request::get(uri)
                .header(header::AUTHORIZATION, "Bearer sgt_not-the-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");

        let r = gw.call(Method::GET, uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
    }
    // Mutations too, before the body is even looked at.
    let r = send(
        &gw.app,
        Request::post("/v1/subscribers/001010000000001/suspend")
            .header(header::AUTHORIZATION, "Basic Zm9vOmJhcg==")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "missing_token");
    assert_eq!(gw.status_of(DEMO_IMSI), SubscriberStatus::Active);

    let r = send(
        &gw.app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_can_be_made_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &empty_config());
    let ci = gw.plane.create_token("ci").unwrap();
    assert!(ci.starts_with("sgt_") && ci != gw.token);
    assert!(gw.plane.verify_token(&ci));
    assert!(gw.plane.verify_token(&gw.token));
    let names: Vec<_> = gw.plane.list_tokens().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["ci", "default"]);
    assert!(gw.plane.create_token("ci").is_err());

    let r = send(
        &gw.app,
        Request::get("/v1/groups")
            .header(header::AUTHORIZATION, format!("bearer {ci}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    gw.plane.revoke_token("ci").unwrap();
    assert!(!gw.plane.verify_token(&ci));
    let r = send(
        &gw.app,
        Request::get("/v1/groups")
            .header(header::AUTHORIZATION, format!("Bearer {ci}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn a_legacy_token_file_is_imported_as_default() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = "sgt_0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(api_token_path(dir.path()), format!("{legacy}\n")).unwrap();
    let gw = open(dir.path(), &empty_config());
    assert_eq!(gw.token, legacy);
    assert_eq!(gw.plane.take_created_token(), None);
    assert!(gw.plane.verify_token(legacy));
    let tokens = gw.plane.list_tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name, "default");
}

#[tokio::test]
async fn invalid_requests_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());

    // Malformed ids.
    let r = gw.call(Method::GET, "/v1/subscribers/12", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(r.body["message"].as_str().unwrap().contains("IMSI"));
    let r = gw
        .call(
            Method::POST,
            "/v1/subscribers",
            Some(json!({"imsi": "abc"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(
            Method::POST,
            "/v1/subscribers",
            Some(json!({"imsi": IMSI_2, "imei": "12"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(
            Method::PUT,
            "/v1/sessions/not-an-ip",
            Some(json!({"imsi": DEMO_IMSI})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");

    // Bad JSON: syntax, types, unknown fields, missing fields, no content type.
    let r = gw
        .raw(
            Method::POST,
            "/v1/subscribers",
            Some("application/json"),
            "{\"imsi\":",
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = gw
        .call(Method::POST, "/v1/subscribers", Some(json!({"imsi": 1})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = gw
        .call(
            Method::POST,
            "/v1/subscribers",
            Some(json!({"imsi": IMSI_2, "colour": "red"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(r.body["message"].as_str().unwrap().contains("colour"));
    let r = gw
        .call(Method::POST, "/v1/subscribers", Some(json!({})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");
    let r = gw
        .raw(
            Method::POST,
            "/v1/subscribers",
            None,
            &json!({"imsi": IMSI_2}).to_string(),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_content_type");

    // Too big.
    let big = format!("{{\"imsi\":\"{}\"}}", "1".repeat(api::MAX_BODY_BYTES + 1));
    let r = gw
        .raw(
            Method::POST,
            "/v1/subscribers",
            Some("application/json"),
            &big,
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Unknown namespace, key, credentials, group.
    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomNope",
            Some(json!([{"key": "enabled", "value": true}])),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomHarvest",
            Some(json!([{"key": "enabledd", "value": true}])),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomFunnel",
            Some(json!([
                {"key": "destination", "value": {"service": "kinesis", "resourceUrl": "https://kinesis.us-east-1.amazonaws.com/s"}},
                {"key": "credentialsId", "value": "nope"},
            ])),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(r.body["message"].as_str().unwrap().contains("nope"));
    let r = gw
        .call(
            Method::POST,
            "/v1/subscribers",
            Some(json!({"imsi": IMSI_2, "groupId": "nope"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(
            Method::PUT,
            "/v1/credentials/k",
            Some(json!({"type": "azure-credentials", "credentials": {"accessKeyId": "a", "secretAccessKey": "b"}})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(
            Method::PUT,
            "/v1/sessions/10.0.0.9",
            Some(json!({"imsi": IMSI_2})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw.call(Method::GET, "/v1/subscribers?limit=0", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw.call(Method::GET, "/v1/subscribers?limit=x", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = gw
        .call(Method::GET, "/v1/subscribers?status=sleepy", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");

    // Unknown entities.
    for uri in [
        "/v1/subscribers/001010000000009",
        "/v1/groups/nope",
        "/v1/credentials/nope",
    ] {
        let r = gw.call(Method::GET, uri, None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    }
    let r = gw
        .call(
            Method::POST,
            "/v1/subscribers/001010000000009/suspend",
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = gw.call(Method::DELETE, "/v1/sessions/10.9.9.9", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = gw
        .call(
            Method::DELETE,
            &format!("/v1/subscribers/{DEMO_IMSI}/tags/nope"),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Conflicts.
    let r = gw
        .call(
            Method::POST,
            "/v1/subscribers",
            Some(json!({"imsi": DEMO_IMSI})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let r = gw
        .call(Method::POST, "/v1/groups", Some(json!({"groupId": "demo"})))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let r = gw.call(Method::DELETE, "/v1/groups/demo", None).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");

    // Terminated is final.
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{DEMO_IMSI}/terminate"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "terminated");
    for action in ["activate", "suspend", "terminate"] {
        let r = gw
            .call(
                Method::POST,
                &format!("/v1/subscribers/{DEMO_IMSI}/{action}"),
                None,
            )
            .await;
        assert_error(&r, StatusCode::CONFLICT, "invalid_state");
    }
    assert_eq!(gw.status_of(DEMO_IMSI), SubscriberStatus::Terminated);
}

#[tokio::test]
async fn full_flow_reaches_the_snapshot_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    let v0 = gw.plane.snapshot.load().version;

    // A group with Harvest on.
    let r = gw
        .call(
            Method::POST,
            "/v1/groups",
            Some(json!({"groupId": "sensors", "tags": {"name": "Sensors"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["tags"]["name"], "Sensors");
    assert!(r.body.get("name").is_none(), "{}", r.text);
    assert!(r.body["createdTime"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(r.body["operatorId"], "OP0000000001");
    assert_eq!(r.body["configuration"]["SoracomHarvest"]["enabled"], false);
    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/sensors/configuration/SoracomHarvest",
            Some(json!([{"key": "enabled", "value": true}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["configuration"]["SoracomHarvest"]["enabled"], true);
    let sensors = GroupId::parse("sensors").unwrap();
    assert!(gw.plane.snapshot.load().groups[&sensors].harvest.enabled);

    // A generated group id.
    let r = gw.call(Method::POST, "/v1/groups", Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["groupId"].as_str().unwrap().len(), 36);

    // Register a SIM.
    let r = gw
        .call(
            Method::POST,
            "/v1/subscribers",
            Some(
                json!({"imsi": IMSI_2, "imei": "353000000000002", "msisdn": "818000000002",
                "simId": "8942310000000000002", "tags": {"room": "a"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["simId"], "8942310000000000002");
    assert_eq!(r.body["groupId"], Value::Null);
    assert!(r.body["createdTime"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(r.body["sessionStatus"], json!({"online": false}));
    let imsi = Imsi::parse(IMSI_2).unwrap();
    assert!(gw.plane.snapshot.load().subscribers.contains_key(&imsi));

    // Into the group.
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/set_group"),
            Some(json!({"groupId": "sensors"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["groupId"], "sensors");
    assert_eq!(
        gw.plane.snapshot.load().subscribers[&imsi].group_id,
        Some(sensors.clone())
    );

    // Tags.
    let r = gw
        .call(
            Method::PUT,
            &format!("/v1/subscribers/{IMSI_2}/tags"),
            Some(json!([{"tagName": "name", "tagValue": "pump"}, {"tagName": "room", "tagValue": "b"}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["tags"], json!({"name": "pump", "room": "b"}));
    let r = gw
        .call(
            Method::DELETE,
            &format!("/v1/subscribers/{IMSI_2}/tags/room"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        gw.plane.snapshot.load().subscribers[&imsi]
            .tags
            .get("name")
            .map(String::as_str),
        Some("pump")
    );
    assert!(!gw.plane.snapshot.load().subscribers[&imsi]
        .tags
        .contains_key("room"));

    // A session: the data plane resolves it through the snapshot.
    let ip: IpAddr = "10.20.0.2".parse().unwrap();
    let r = gw
        .call(
            Method::PUT,
            "/v1/sessions/10.20.0.2",
            Some(json!({"imsi": IMSI_2, "imei": "353000000000002"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["source"], "static");
    let session = gw.plane.sessions.lookup(ip).unwrap();
    assert_eq!(session.imsi, imsi);
    let id = gw.plane.snapshot.load().resolve(&session).unwrap();
    assert!(id.group.unwrap().harvest.enabled);

    // Suspend: refused at once; activate: served again.
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/suspend"),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(gw.status_of(IMSI_2), SubscriberStatus::Suspended);
    let e = gw.plane.snapshot.load().resolve(&session).unwrap_err();
    assert_eq!(e.reason(), "sim_not_active");
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/activate"),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "active");
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/deactivate"),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "inactive");
    assert_eq!(gw.status_of(IMSI_2), SubscriberStatus::Inactive);
    gw.call(
        Method::POST,
        &format!("/v1/subscribers/{IMSI_2}/activate"),
        None,
    )
    .await;

    // IMEI lock: without a body, to the registered IMEI.
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/set_imei_lock"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["imeiLock"], json!({"imei": "353000000000002"}));
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/set_imei_lock"),
            Some(json!({"imei": "353000000000099"})),
        )
        .await;
    assert_eq!(r.body["imeiLock"]["imei"], "353000000000099");
    let e = gw.plane.snapshot.load().resolve(&session).unwrap_err();
    assert_eq!(e.reason(), "imei_lock");
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/unset_imei_lock"),
            None,
        )
        .await;
    assert_eq!(r.body["imeiLock"], Value::Null);
    assert!(gw.plane.snapshot.load().resolve(&session).is_ok());

    // Out of the group; then the group can go.
    let r = gw
        .call(
            Method::POST,
            &format!("/v1/subscribers/{IMSI_2}/unset_group"),
            None,
        )
        .await;
    assert_eq!(r.body["groupId"], Value::Null);
    let r = gw.call(Method::DELETE, "/v1/groups/sensors", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(!gw.plane.snapshot.load().groups.contains_key(&sensors));

    // Session removal reaches the session table.
    let r = gw
        .call(Method::DELETE, "/v1/sessions/10.20.0.2", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(gw.plane.sessions.lookup(ip).is_none());

    // Deleting a SIM takes its static sessions with it.
    gw.call(
        Method::PUT,
        "/v1/sessions/10.20.0.3",
        Some(json!({"imsi": IMSI_2})),
    )
    .await;
    let r = gw
        .call(Method::DELETE, &format!("/v1/subscribers/{IMSI_2}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(gw
        .plane
        .sessions
        .lookup("10.20.0.3".parse().unwrap())
        .is_none());
    assert!(!gw.plane.snapshot.load().subscribers.contains_key(&imsi));

    assert!(gw.plane.snapshot.load().version > v0);
}

#[tokio::test]
async fn funnel_configuration_and_write_only_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    let r = gw
        .call(
            Method::PUT,
            "/v1/credentials/kinesis-demo",
            Some(json!({"type": "aws-credentials", "description": "demo",
                "credentials": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": secret}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(!r.text.contains(secret));
    let r = gw
        .call(
            Method::PUT,
            "/v1/credentials/kinesis-demo",
            Some(json!({"type": "aws-credentials",
                "credentials": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": secret}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for uri in ["/v1/credentials", "/v1/credentials/kinesis-demo"] {
        let r = gw.call(Method::GET, uri, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.text.contains(secret), "{}", r.text);
        assert!(r.text.contains("AKIAIOSFODNN7EXAMPLE"));
        assert!(r.text.contains("aws-credentials"));
    }
    // The data plane gets the secret through the snapshot.
    let snap = gw.plane.snapshot.load();
    let cred = &snap.credentials[&"kinesis-demo"
        .parse::<simgate_control::CredentialId>()
        .unwrap()];
    let simgate_control::CredentialKind::Aws(aws) = &cred.kind else {
        panic!("{cred:?}")
    };
    assert_eq!(aws.secret_access_key.expose(), secret);
    drop(snap);

    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomFunnel",
            Some(json!([
                {"key": "enabled", "value": true},
                {"key": "destination", "value": {"provider": "aws", "service": "kinesis",
                    "resourceUrl": "https://kinesis.ap-northeast-1.amazonaws.com/devices",
                    "payloadsOnly": false, "randomizePartitionKey": false,
                    "endpoint": "https://vpce.example.com"}},
                {"key": "credentialsId", "value": "kinesis-demo"},
                {"key": "contentType", "value": "json"},
                {"key": "addSimId", "value": true},
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let f = &r.body["configuration"]["SoracomFunnel"];
    assert_eq!(
        f["destination"]["resourceUrl"],
        "https://kinesis.ap-northeast-1.amazonaws.com/devices"
    );
    assert_eq!(f["credentialsId"], "kinesis-demo");
    assert_eq!(f["addSimId"], true);
    assert_eq!(f["destination"]["payloadsOnly"], false);
    let demo = GroupId::parse("demo").unwrap();
    let funnel = gw.plane.snapshot.load().groups[&demo]
        .funnel
        .clone()
        .unwrap();
    assert_eq!(
        funnel.destination.endpoint.as_deref(),
        Some("https://vpce.example.com")
    );
    assert_eq!(
        funnel.content_type,
        simgate_control::FunnelContentType::Json
    );

    // In use: the credentials stay.
    let r = gw
        .call(Method::DELETE, "/v1/credentials/kinesis-demo", None)
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");

    // Unmodelled namespaces round-trip verbatim.
    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomAir",
            Some(json!([{"key": "userdata", "value": "hello"},
                {"key": "metadata", "value": {"enabled": true, "readonly": true, "allowOrigin": "*"}}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = gw.call(Method::GET, "/v1/groups/demo", None).await;
    assert_eq!(r.body["configuration"]["SoracomAir"]["userdata"], "hello");
    assert_eq!(
        r.body["configuration"]["SoracomAir"]["metadata"]["readonly"],
        true
    );
    assert_eq!(r.body["configuration"]["SoracomHarvest"]["enabled"], true);
    assert_eq!(
        r.body["configuration"]["SoracomFunnel"]["contentType"],
        "json"
    );
    let r = gw
        .call(
            Method::DELETE,
            "/v1/groups/demo/configuration/SoracomAir/userdata",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = gw
        .call(
            Method::DELETE,
            "/v1/groups/demo/configuration/SoracomAir/userdata",
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Removing the destination removes Funnel; then the credentials can go.
    let r = gw
        .call(
            Method::DELETE,
            "/v1/groups/demo/configuration/SoracomFunnel/destination",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(gw.plane.snapshot.load().groups[&demo].funnel.is_none());
    let r = gw
        .call(Method::DELETE, "/v1/credentials/kinesis-demo", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(gw.plane.snapshot.load().credentials.is_empty());
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    for n in 2..=6 {
        let r = gw
            .call(
                Method::POST,
                "/v1/subscribers",
                Some(json!({"imsi": format!("00101000000000{n}"),
                    "tags": {"site": if n % 2 == 0 { "tokyo-1" } else { "osaka" }},
                    "groupId": if n == 6 { json!("demo") } else { Value::Null }})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    gw.call(
        Method::POST,
        "/v1/subscribers/001010000000003/suspend",
        None,
    )
    .await;

    // Paging through all six, two at a time.
    let mut seen = Vec::new();
    let mut uri = "/v1/subscribers?limit=2".to_owned();
    loop {
        let r = gw.call(Method::GET, &uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        for s in r.body.as_array().unwrap() {
            seen.push(s["imsi"].as_str().unwrap().to_owned());
        }
        match r.headers.get("x-soracom-next-key") {
            Some(k) => {
                uri = format!(
                    "/v1/subscribers?limit=2&last_evaluated_key={}",
                    k.to_str().unwrap()
                )
            }
            None => break,
        }
    }
    let want: Vec<String> = (1..=6).map(|n| format!("00101000000000{n}")).collect();
    assert_eq!(seen, want);

    let imsis = |r: &Reply| -> Vec<String> {
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["imsi"].as_str().unwrap()[13..].to_owned())
            .collect()
    };
    let r = gw
        .call(Method::GET, "/v1/subscribers?status=suspended", None)
        .await;
    assert_eq!(imsis(&r), ["03"]);
    let r = gw
        .call(
            Method::GET,
            "/v1/subscribers?status_filter=suspended%7Cactive&limit=1000",
            None,
        )
        .await;
    assert_eq!(imsis(&r).len(), 6);
    let r = gw
        .call(Method::GET, "/v1/subscribers?group_id=demo", None)
        .await;
    assert_eq!(imsis(&r), ["01", "06"]);
    let r = gw
        .call(Method::GET, "/v1/subscribers?groupId=demo", None)
        .await;
    assert_eq!(imsis(&r), ["01", "06"]);
    let r = gw
        .call(
            Method::GET,
            "/v1/subscribers?tag_name=site&tag_value=osaka",
            None,
        )
        .await;
    assert_eq!(imsis(&r), ["03", "05"]);
    let r = gw
        .call(
            Method::GET,
            "/v1/subscribers?tag_name=site&tag_value=tokyo&tag_value_match_mode=prefix",
            None,
        )
        .await;
    assert_eq!(imsis(&r), ["02", "04", "06"]);
    let r = gw
        .call(
            Method::GET,
            "/v1/subscribers?tag_name=site&tag_value=tokyo",
            None,
        )
        .await;
    assert!(imsis(&r).is_empty());
}

#[tokio::test]
async fn sessions_list_static_and_radius_ones() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    // What RADIUS accounting would do: bind straight into the table.
    let radius_ip: IpAddr = "10.1.0.7".parse().unwrap();
    gw.plane.sessions.bind(
        radius_ip,
        Session::new(Imsi::parse(DEMO_IMSI).unwrap(), None, None),
    );
    let r = gw.call(Method::GET, "/v1/sessions", None).await;
    assert_eq!(
        r.body,
        json!([
            {"ip": "10.1.0.7", "imsi": DEMO_IMSI, "imei": null, "msisdn": null, "source": "radius"},
            {"ip": "127.0.0.1", "imsi": DEMO_IMSI, "imei": null, "msisdn": null, "source": "static"},
        ])
    );
    let r = gw.call(Method::DELETE, "/v1/sessions/10.1.0.7", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(gw.plane.sessions.lookup(radius_ip).is_none());
}

#[tokio::test]
async fn everything_survives_a_restart_with_an_empty_config() {
    let dir = tempfile::tempdir().unwrap();
    let ci;
    let first_token;
    {
        let gw = open(dir.path(), &Config::embedded_default());
        first_token = gw.token.clone();
        ci = gw.plane.create_token("ci").unwrap();
        gw.call(
            Method::PUT,
            "/v1/credentials/kin",
            Some(json!({"type": "aws-credentials", "credentials": {"accessKeyId": "AK", "secretAccessKey": "SK"}})),
        )
        .await;
        gw.call(Method::POST, "/v1/groups", Some(json!({"groupId": "g2"})))
            .await;
        gw.call(
            Method::PUT,
            "/v1/groups/g2/configuration/SoracomFunnel",
            Some(json!([
                {"key": "destination", "value": {"service": "firehose", "resourceUrl": "https://firehose.us-east-1.amazonaws.com/s"}},
                {"key": "credentialsId", "value": "kin"},
            ])),
        )
        .await;
        gw.call(
            Method::PUT,
            "/v1/groups/g2/configuration/SoracomEndorse",
            Some(json!([{"key": "enabled", "value": true}])),
        )
        .await;
        let r = gw
            .call(
                Method::POST,
                "/v1/subscribers",
                Some(json!({"imsi": IMSI_2, "groupId": "g2", "tags": {"k": "v"}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        gw.call(
            Method::POST,
            &format!("/v1/subscribers/{DEMO_IMSI}/suspend"),
            None,
        )
        .await;
        gw.call(
            Method::PUT,
            "/v1/sessions/10.0.0.2",
            Some(json!({"imsi": IMSI_2})),
        )
        .await;
        gw.call(Method::DELETE, "/v1/sessions/127.0.0.1", None)
            .await;
        // Dropping the router and the plane closes the store.
    }

    let gw = open(dir.path(), &empty_config());
    assert_eq!(gw.token, first_token);
    assert_eq!(
        gw.plane.take_created_token(),
        None,
        "no new token on restart"
    );
    assert!(gw.plane.verify_token(&first_token));
    assert!(gw.plane.verify_token(&ci));

    let snap = gw.plane.snapshot.load();
    assert_eq!(snap.operators.len(), 1, "seeded operator kept");
    assert_eq!(snap.subscribers.len(), 2);
    assert_eq!(
        snap.subscribers[&Imsi::parse(DEMO_IMSI).unwrap()].status,
        SubscriberStatus::Suspended
    );
    let s2 = &snap.subscribers[&Imsi::parse(IMSI_2).unwrap()];
    assert_eq!(s2.tags["k"], "v");
    let g2 = &snap.groups[&GroupId::parse("g2").unwrap()];
    assert_eq!(g2.funnel.as_ref().unwrap().credentials_id.as_str(), "kin");
    assert_eq!(g2.configuration["SoracomEndorse"]["enabled"], json!(true));
    let simgate_control::CredentialKind::Aws(aws) =
        &snap.credentials[&"kin".parse::<simgate_control::CredentialId>().unwrap()].kind
    else {
        panic!("kin is not an AWS credential")
    };
    assert_eq!(aws.secret_access_key.expose(), "SK");
    drop(snap);

    assert!(gw
        .plane
        .sessions
        .lookup("10.0.0.2".parse().unwrap())
        .is_some());
    assert!(
        gw.plane
            .sessions
            .lookup("127.0.0.1".parse().unwrap())
            .is_none(),
        "a deleted seeded session is not re-seeded"
    );
    let r = gw.call(Method::GET, "/v1/groups/g2", None).await;
    assert_eq!(
        r.body["configuration"]["SoracomFunnel"]["destination"]["service"],
        "firehose"
    );
}

#[tokio::test]
async fn apply_config_upserts_and_keeps_api_entities() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    let demo = Imsi::parse(DEMO_IMSI).unwrap();
    gw.call(
        Method::POST,
        "/v1/subscribers",
        Some(json!({"imsi": IMSI_2})),
    )
    .await;
    gw.call(
        Method::PUT,
        &format!("/v1/subscribers/{DEMO_IMSI}/tags"),
        Some(json!([{"tagName": "name", "tagValue": "renamed"}])),
    )
    .await;
    gw.call(
        Method::PUT,
        "/v1/sessions/10.0.0.2",
        Some(json!({"imsi": IMSI_2})),
    )
    .await;
    let before = gw.plane.subscriber(&demo).unwrap();

    let mut file = Config::embedded_default();
    file.subscribers.push(
        serde_json::from_value(json!({"imsi": "001010000000003", "group_id": "demo"})).unwrap(),
    );
    gw.plane.apply_config(&file).unwrap();

    let snap = gw.plane.snapshot.load();
    // The file wins for what it declares…
    assert_eq!(snap.subscribers[&demo].tags["name"], "demo-sim");
    let after = gw.plane.subscriber(&demo).unwrap();
    assert_eq!(after.created_at, before.created_at);
    assert!(after.last_modified_at >= before.last_modified_at);
    // …adds what is new…
    assert!(snap
        .subscribers
        .contains_key(&Imsi::parse("001010000000003").unwrap()));
    // …and keeps what the API made.
    assert!(snap.subscribers.contains_key(&Imsi::parse(IMSI_2).unwrap()));
    assert!(gw
        .plane
        .sessions
        .lookup("10.0.0.2".parse().unwrap())
        .is_some());
    assert!(gw
        .plane
        .sessions
        .lookup("127.0.0.1".parse().unwrap())
        .is_some());
    drop(snap);

    // Applying the same file again changes nothing (no new snapshot).
    let v = gw.plane.snapshot.load().version;
    gw.plane.apply_config(&file).unwrap();
    assert_eq!(gw.plane.snapshot.load().version, v);
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &empty_config());
    let r = send(
        &gw.app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    let doc = &r.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/subscribers", "get"),
        ("/v1/subscribers", "post"),
        ("/v1/subscribers/{imsi}", "get"),
        ("/v1/subscribers/{imsi}/tags", "put"),
        ("/v1/subscribers/{imsi}/tags/{tag_name}", "delete"),
        ("/v1/subscribers/{imsi}/set_group", "post"),
        ("/v1/subscribers/{imsi}/unset_group", "post"),
        ("/v1/subscribers/{imsi}/activate", "post"),
        ("/v1/subscribers/{imsi}/deactivate", "post"),
        ("/v1/subscribers/{imsi}/suspend", "post"),
        ("/v1/subscribers/{imsi}/terminate", "post"),
        ("/v1/subscribers/{imsi}/set_imei_lock", "post"),
        ("/v1/subscribers/{imsi}/unset_imei_lock", "post"),
        ("/v1/groups", "get"),
        ("/v1/groups", "post"),
        ("/v1/groups/{group_id}", "get"),
        ("/v1/groups/{group_id}", "delete"),
        ("/v1/groups/{group_id}/configuration/{namespace}", "put"),
        ("/v1/groups/{group_id}/configuration/{namespace}", "delete"),
        (
            "/v1/groups/{group_id}/configuration/{namespace}/{name}",
            "delete",
        ),
        ("/v1/groups/{group_id}/subscribers", "get"),
        ("/v1/groups/{group_id}/tags", "put"),
        ("/v1/groups/{group_id}/tags/{tag_name}", "delete"),
        ("/v1/subscribers/{imsi}/register", "post"),
        ("/v1/credentials/{credentials_id}", "post"),
        ("/v1/credentials", "get"),
        ("/v1/credentials/{credentials_id}", "get"),
        ("/v1/credentials/{credentials_id}", "put"),
        ("/v1/credentials/{credentials_id}", "delete"),
        ("/v1/sessions", "get"),
        ("/v1/sessions/{ip}", "put"),
        ("/v1/sessions/{ip}", "delete"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    // Described here, served by the data plane's Harvest router.
    assert!(paths["/v1/subscribers/{imsi}/data"].get("get").is_some());
    assert!(paths["/v1/data/{resource_type}/{resource_id}"]
        .get("get")
        .is_some());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["security"],
        json!([{"bearer": []}, {"api_key": [], "api_token": []}])
    );
    let err = &doc["components"]["schemas"]["ErrorBody"]["properties"];
    assert!(err.get("code").is_some() && err.get("message").is_some());
    let sub = &doc["components"]["schemas"]["SubscriberView"]["properties"];
    for field in [
        "imsi",
        "imei",
        "msisdn",
        "simId",
        "groupId",
        "status",
        "tags",
        "imeiLock",
        "ipAddress",
        "sessionStatus",
        "createdTime",
        "lastModifiedTime",
    ] {
        assert!(sub.get(field).is_some(), "SubscriberView.{field}");
    }
}

#[tokio::test]
async fn merges_with_the_harvest_routes_and_protects_them() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &empty_config());
    // Stand-in for the data plane's Harvest query router and its fallback.
    let harvest: Router = Router::new().route(
        "/v1/subscribers/{imsi}/data",
        axum::routing::get(|| async { "[]" }),
    );
    let app = Router::new()
        .merge(api::router(Arc::clone(&gw.plane)))
        .merge(api::protect(harvest, Arc::clone(&gw.plane)))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint") });

    let r = send(
        &app,
        Request::get("/v1/subscribers/001010000000001/data")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "missing_token");
    let r = send(
        &app,
        Request::get("/v1/subscribers/001010000000001/data")
            .header(header::AUTHORIZATION, format!("Bearer {}", gw.token))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text, "[]");
    let r = send(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(
        &app,
        Request::get("/v1/groups")
            .header(header::AUTHORIZATION, format!("Bearer {}", gw.token))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[test]
fn a_store_from_a_newer_simgate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(ControlPlane::open(dir.path(), &empty_config()).unwrap());
    {
        let db = redb::Database::create(dir.path().join("control.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
            txn.open_table(def)
                .unwrap()
                .insert("schema_version", 99)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let e = ControlPlane::open(dir.path(), &empty_config()).unwrap_err();
    assert!(matches!(
        e,
        simgate_control::store::StoreError::FutureSchema { found: 99, .. }
    ));
    assert!(e.to_string().contains("schema version 99"), "{e}");
}
