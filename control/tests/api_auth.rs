//! SORACOM-compatible authentication end to end, in memory: auth keys made
//! with the bearer token, `POST /v1/auth`, then `X-Soracom-API-Key` +
//! `X-Soracom-Token` on the protected routes — as a client generated from
//! SORACOM's OpenAPI would use them.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use simgate_control::Config;

mod common;

use common::{assert_error, send, stored_bytes, Gw, Reply};

const OP: &str = "OP0000000001";
const KEYS: &str = "/v1/operators/OP0000000001/auth_keys";

fn open(dir: &Path) -> Gw {
    let seed = Config::parse("[[operators]]\nid = \"OP0000000001\"\n").unwrap();
    common::open(dir, &seed)
}

/// A request with no bearer token: SORACOM headers only (either may be
/// left out).
async fn soracom(
    gw: &Gw,
    api_key: Option<&str>,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(k) = api_key {
        req = req.header("X-Soracom-API-Key", k);
    }
    if let Some(t) = token {
        req = req.header("X-Soracom-Token", t);
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    send(&gw.app, req.body(body).unwrap()).await
}

/// `POST /v1/auth`, unauthenticated.
async fn auth(gw: &Gw, body: Value) -> Reply {
    soracom(gw, None, None, Method::POST, "/v1/auth", Some(body)).await
}

/// A new auth key, made with the bearer token: (id, secret).
async fn new_key(gw: &Gw) -> (String, String) {
    let r = gw.call(Method::POST, KEYS, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let id = r.body["authKeyId"].as_str().unwrap().to_owned();
    let secret = r.body["authKey"].as_str().unwrap().to_owned();
    assert!(id.starts_with("keyId-"), "{id}");
    assert!(secret.starts_with("secret-"), "{secret}");
    (id, secret)
}

/// `POST /v1/auth` that must succeed: (apiKey, token).
async fn login(gw: &Gw, id: &str, secret: &str, timeout: Option<u64>) -> (String, String) {
    let mut body = json!({"authKeyId": id, "authKey": secret});
    if let Some(t) = timeout {
        body["tokenTimeoutSeconds"] = json!(t);
    }
    let r = auth(gw, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.body["operatorId"], OP);
    // SORACOM's AuthResponse: no userName for auth-key logins.
    let fields: Vec<&String> = r.body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["apiKey", "operatorId", "token"], "{}", r.text);
    (
        r.body["apiKey"].as_str().unwrap().to_owned(),
        r.body["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_auth_key_gets_an_api_key_that_opens_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let (id, secret) = new_key(&gw).await;
    let (api_key, token) = login(&gw, &id, &secret, None).await;
    assert!(api_key.starts_with("api-"), "{api_key}");

    for uri in ["/v1/subscribers", "/v1/groups", "/v1/tokens", KEYS] {
        let r = soracom(&gw, Some(&api_key), Some(&token), Method::GET, uri, None).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.text);
    }
    // Mutations too.
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::POST,
        "/v1/groups",
        Some(json!({"groupId": "field"})),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.text);

    // The bearer token keeps working, unchanged.
    let r = gw.call(Method::GET, "/v1/subscribers", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = gw
        .call_as("sgt_wrong", Method::GET, "/v1/subscribers", None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_token");

    // The key shows when it was made and last used (Unix seconds).
    let r = gw.call(Method::GET, KEYS, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", r.text);
    assert_eq!(list[0]["authKeyId"], id.as_str());
    let created = list[0]["createDateTime"].as_u64().unwrap();
    let used = list[0]["lastUsedDateTime"].as_u64().unwrap();
    assert!(
        created > 1_600_000_000 && created < 10_000_000_000,
        "{created}"
    );
    assert!(used >= created, "{}", r.text);
}

#[tokio::test]
async fn wrong_secrets_and_pairs_are_401_soracom_shaped() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let (id, secret) = new_key(&gw).await;

    for body in [
        json!({"authKeyId": id, "authKey": format!("{secret}x")}),
        json!({"authKeyId": id, "authKey": ""}),
        json!({"authKeyId": "keyId-00000000000000000000000000000000", "authKey": secret}),
        json!({"authKeyId": "no/such key", "authKey": secret}),
    ] {
        let r = auth(&gw, body.clone()).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0001");
        let fields: Vec<&String> = r.body.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["code", "message"], "{body}: {}", r.text);
    }
    // A failed attempt is not a use.
    let r = gw.call(Method::GET, KEYS, None).await;
    assert!(r.body[0].get("lastUsedDateTime").is_none(), "{}", r.text);

    let (api_key, token) = login(&gw, &id, &secret, None).await;
    let (other_key, other_token) = login(&gw, &id, &secret, None).await;
    assert_ne!(api_key, other_key);
    for (k, t) in [
        (Some(api_key.as_str()), Some("0123")),
        (Some("api-nope"), Some(token.as_str())),
        // Halves of two different pairs.
        (Some(api_key.as_str()), Some(other_token.as_str())),
        // One header alone is never enough, nor an empty one.
        (Some(api_key.as_str()), None),
        (None, Some(token.as_str())),
        (Some(api_key.as_str()), Some("")),
    ] {
        let r = soracom(&gw, k, t, Method::GET, "/v1/subscribers", None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0002");
    }
    // A bad SORACOM pair is refused even next to a valid bearer token:
    // the headers sent decide.
    let r = send(
        &gw.app,
        Request::get("/v1/subscribers")
            .header(header::AUTHORIZATION, format!("Bearer {}", gw.token))
            .header("X-Soracom-API-Key", &api_key)
            .header("X-Soracom-Token", "wrong")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0002");
}

#[tokio::test]
async fn bad_auth_requests_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let (id, secret) = new_key(&gw).await;
    for body in [
        json!({}),
        json!({"authKeyId": id}),
        json!({"email": "a@example.com", "password": "p"}),
        json!({"operatorId": OP, "userName": "u", "password": "p"}),
        json!({"authKeyId": id, "authKey": secret, "tokenTimeoutSeconds": 0}),
        json!({"authKeyId": id, "authKey": secret, "tokenTimeoutSeconds": -5}),
        json!({"authKeyId": id, "authKey": secret, "tokenTimeoutSeconds": 172_801}),
        json!({"authKeyId": id, "authKey": secret, "tokenTimeoutSeconds": "60"}),
        json!({"authKeyId": 5, "authKey": secret}),
    ] {
        let r = auth(&gw, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(r.body["code"].is_string(), "{body}: {}", r.text);
    }
    // The spec's maximum is allowed.
    login(&gw, &id, &secret, Some(172_800)).await;
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let (id, secret) = new_key(&gw).await;
    let (api_key, token) = login(&gw, &id, &secret, Some(1)).await;
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0003");
    // Authenticating again gives a working pair.
    let (api_key, token) = login(&gw, &id, &secret, None).await;
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn secrets_are_shown_once_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let (id, secret) = {
        let gw = open(dir.path());
        let (id, secret) = new_key(&gw).await;
        let r = gw.call(Method::GET, KEYS, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.text.contains(&id), "{}", r.text);
        assert!(!r.text.contains(&secret), "{}", r.text);
        assert!(!r.text.contains("secret-"), "{}", r.text);
        let fields: Vec<&String> = r.body[0].as_object().unwrap().keys().collect();
        assert_eq!(fields, ["authKeyId", "createDateTime"], "{}", r.text);
        (id, secret)
    };
    // Not in the store file either, in any form a grep would find.
    let bytes = stored_bytes(dir.path());
    let hay = String::from_utf8_lossy(&bytes);
    assert!(hay.contains(&id), "the id is stored");
    assert!(!hay.contains(&secret));
    assert!(!hay.contains(&secret["secret-".len()..]));

    // The key survives a restart; the pairs it made (memory only) do not.
    let gw = open(dir.path());
    let (api_key, token) = login(&gw, &id, &secret, None).await;
    drop(gw);
    let gw = open(dir.path());
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0002");
    login(&gw, &id, &secret, None).await;
}

#[tokio::test]
async fn deleting_a_key_ends_it_and_its_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let (id, secret) = new_key(&gw).await;
    let (keep_id, keep_secret) = new_key(&gw).await;
    let (api_key, token) = login(&gw, &id, &secret, None).await;
    let (keep_key, keep_token) = login(&gw, &keep_id, &keep_secret, None).await;

    // A SORACOM pair may manage auth keys too.
    let uri = format!("{KEYS}/{id}");
    let r = soracom(
        &gw,
        Some(&keep_key),
        Some(&keep_token),
        Method::DELETE,
        &uri,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    let r = auth(&gw, json!({"authKeyId": id, "authKey": secret})).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0001");
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0002");
    // The other key and its pair are untouched.
    let r = soracom(
        &gw,
        Some(&keep_key),
        Some(&keep_token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = gw.call(Method::GET, KEYS, None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.body[0]["authKeyId"], keep_id.as_str());

    // Gone is gone; unknown operators and malformed ids are refused.
    let r = gw.call(Method::DELETE, &uri, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = gw
        .call(Method::DELETE, &format!("{KEYS}/{}", "k".repeat(300)), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let other = format!("/v1/operators/OP0000000002/auth_keys/{keep_id}");
    let r = gw.call(Method::DELETE, &other, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let unknown = "/v1/operators/OP0000000002/auth_keys";
    let r = gw.call(Method::GET, unknown, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = gw.call(Method::POST, unknown, None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = gw
        .call(Method::GET, "/v1/operators/nope/auth_keys", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn logout_ends_the_pair_it_is_called_with() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    let (id, secret) = new_key(&gw).await;
    let (api_key, token) = login(&gw, &id, &secret, None).await;
    let (other_key, other_token) = login(&gw, &id, &secret, None).await;
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::POST,
        "/v1/auth/logout",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = soracom(
        &gw,
        Some(&api_key),
        Some(&token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "AUM0002");
    let r = soracom(
        &gw,
        Some(&other_key),
        Some(&other_token),
        Method::GET,
        "/v1/groups",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // With a bearer token there is nothing to end.
    let r = gw.call(Method::POST, "/v1/auth/logout", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

#[tokio::test]
async fn auth_key_routes_need_credentials_and_are_described() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path());
    for (method, uri) in [
        (Method::GET, KEYS.to_owned()),
        (Method::POST, KEYS.to_owned()),
        (Method::DELETE, format!("{KEYS}/keyId-x")),
        (Method::POST, "/v1/auth/logout".to_owned()),
    ] {
        let r = soracom(&gw, None, None, method.clone(), &uri, None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "missing_token");
    }
    let r = gw.call(Method::GET, KEYS, None).await;
    assert_eq!(r.body, json!([]));

    let r = send(
        &gw.app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    let doc = &r.body;
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/auth", "post"),
        ("/v1/auth/logout", "post"),
        ("/v1/operators/{operator_id}/auth_keys", "get"),
        ("/v1/operators/{operator_id}/auth_keys", "post"),
        (
            "/v1/operators/{operator_id}/auth_keys/{auth_key_id}",
            "delete",
        ),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    // `POST /v1/auth` needs no credentials.
    assert_eq!(paths["/v1/auth"]["post"]["security"], json!([{}]));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-Soracom-API-Key");
    assert_eq!(schemes["api_token"]["name"], "X-Soracom-Token");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    // Either the bearer token, or both SORACOM headers.
    assert_eq!(
        doc["security"],
        json!([{"bearer": []}, {"api_key": [], "api_token": []}])
    );
}
