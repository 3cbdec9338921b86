//! `/v1/tokens` end to end, in memory: the real router, a real redb store in
//! a temporary directory. A token made here must work at once, a revoked
//! one must stop working at once, and the last one cannot be revoked.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::path::Path;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;

mod common;

use common::{assert_error, send, Gw};

fn open(dir: &Path) -> Gw {
    common::open(dir, &common::empty_config())
}

impl Gw {
    async fn names(&self) -> Vec<String> {
        let r = self.call(Method::GET, "/v1/tokens", None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn list_shows_names_and_ages_never_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let r = gw.call(Method::GET, "/v1/tokens", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", r.text);
    assert_eq!(list[0]["name"], "default");
    assert!(list[0]["createdAt"].as_u64().unwrap() > 0);
    assert!(!r.text.contains(&gw.token));
    assert!(!r.text.contains("sgt_"), "{}", r.text);
}

#[tokio::test]
async fn a_created_token_is_shown_once_and_works_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let r = gw
        .call(Method::POST, "/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["name"], "ci");
    let ci = r.body["token"].as_str().unwrap().to_owned();
    assert!(ci.starts_with("sgt_"), "{ci}");
    assert_ne!(ci, gw.token);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert!(gw.plane.verify_token(&ci));

    // The new token opens the API, and is listed by name only.
    let r = gw.call_as(&ci, Method::GET, "/v1/tokens", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains(&ci));
    assert_eq!(gw.names().await, ["ci", "default"]);

    // Names are unique.
    let r = gw
        .call(Method::POST, "/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn bad_create_requests_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    for body in [
        json!({"name": ""}),
        json!({"name": "has space"}),
        json!({"name": "x".repeat(65)}),
        json!({"name": "ok", "token": "sgt_mine"}),
        json!({}),
        json!("ci"),
        json!({"name": 5}),
    ] {
        let r = gw
            .call(Method::POST, "/v1/tokens", Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(r.body["code"].is_string(), "{body}: {}", r.text);
    }
    assert_eq!(gw.names().await, ["default"]);
}

#[tokio::test]
async fn revoking_stops_the_token_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let r = gw
        .call(Method::POST, "/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    let ci = r.body["token"].as_str().unwrap().to_owned();

    let r = gw.call(Method::DELETE, "/v1/tokens/ci", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!gw.plane.verify_token(&ci));
    let r = gw.call_as(&ci, Method::GET, "/v1/tokens", None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(gw.names().await, ["default"]);

    let r = gw.call(Method::DELETE, "/v1/tokens/ci", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_token_may_revoke_itself_but_not_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());

    // Alone, the default token cannot go.
    let r = gw.call(Method::DELETE, "/v1/tokens/default", None).await;
    assert_error(&r, StatusCode::CONFLICT, "last_token");
    assert!(gw.plane.verify_token(&gw.token));

    // Rotation: make a new token, revoke the old one with itself.
    let r = gw
        .call(Method::POST, "/v1/tokens", Some(json!({"name": "next"})))
        .await;
    let next = r.body["token"].as_str().unwrap().to_owned();
    let r = gw.call(Method::DELETE, "/v1/tokens/default", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!gw.plane.verify_token(&gw.token));
    let r = gw.call_as(&next, Method::GET, "/v1/tokens", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body.as_array().unwrap().len(), 1);

    // Now `next` is the last.
    let r = gw
        .call_as(&next, Method::DELETE, "/v1/tokens/next", None)
        .await;
    assert_error(&r, StatusCode::CONFLICT, "last_token");
}

#[tokio::test]
async fn tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ci = {
        let gw = open(dir.path());
        let r = gw
            .call(Method::POST, "/v1/tokens", Some(json!({"name": "ci"})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["token"].as_str().unwrap().to_owned()
    };
    let gw = open(dir.path());
    assert!(gw.plane.verify_token(&ci));
    assert_eq!(gw.names().await, ["ci", "default"]);
}

#[tokio::test]
async fn token_routes_need_a_token_and_are_described() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    for (method, uri) in [
        (Method::GET, "/v1/tokens"),
        (Method::POST, "/v1/tokens"),
        (Method::DELETE, "/v1/tokens/default"),
    ] {
        let r = send(
            &gw.app,
            Request::builder()
                .method(method.clone())
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "missing_token");
        let r = gw.call_as("sgt_wrong", method.clone(), uri, None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    assert_eq!(gw.names().await, ["default"]);

    let r = send(
        &gw.app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    let paths = r.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/tokens", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens/{name}", "delete"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    assert!(r.body["components"]["schemas"]["CreatedToken"].is_object());
}
