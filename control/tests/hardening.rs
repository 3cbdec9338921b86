//! Hardening (issue 9, item 6) on the control plane: a Funnel
//! `destination.endpoint` must be https unless the configuration opts in
//! with `[funnel] allow_insecure_endpoints = true` (emulators).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;
use simgate_control::Config;

async fn put_funnel(gw: &Gw, endpoint: &str) -> (StatusCode, String) {
    let r = gw
        .call(
            Method::PUT,
            "/v1/credentials/kinesis-demo",
            Some(json!({"type": "aws-credentials",
                "credentials": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "s"}})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomFunnel",
            Some(json!([
                {"key": "enabled", "value": true},
                {"key": "destination", "value": {"provider": "aws", "service": "kinesis",
                    "resourceUrl": "https://kinesis.ap-northeast-1.amazonaws.com/devices",
                    "endpoint": endpoint}},
                {"key": "credentialsId", "value": "kinesis-demo"},
            ])),
        )
        .await;
    (r.status, r.text)
}

#[tokio::test]
async fn an_http_funnel_endpoint_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    let (status, text) = put_funnel(&gw, "http://127.0.0.1:4567").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("allow_insecure_endpoints"), "{text}");
    // Nothing of the refused write stayed.
    let g = gw.plane.snapshot.load();
    let demo = g.groups.values().find(|g| g.id.as_str() == "demo").unwrap();
    assert!(demo.funnel.is_none(), "{demo:?}");
    let (status, text) = put_funnel(&gw, "https://vpce.example.com").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    drop(gw);

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded_default();
    config.funnel.allow_insecure_endpoints = true;
    let gw = open(dir.path(), &config);
    let (status, text) = put_funnel(&gw, "http://127.0.0.1:4567").await;
    assert_eq!(status, StatusCode::OK, "{text}");
}
