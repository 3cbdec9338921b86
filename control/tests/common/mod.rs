//! Helpers shared by the API tests: a control plane on a temporary data
//! dir, its router, and requests sent through it with `oneshot`.
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use serde_json::Value;
use simgate_control::config::ClusterSettings;
use simgate_control::plane::api_token_path;
use simgate_control::{api, Config, ControlPlane};
use tower::ServiceExt as _;

pub struct Gw {
    pub plane: Arc<ControlPlane>,
    pub app: Router,
    pub token: String,
}

/// The control plane on `dir`: the redb store, or, with
/// `SIMGATE_TEST_ETCD=http://host:port[,…]` set (as `scripts/test.sh` does
/// for a second pass), the etcd store under a prefix of its own per data
/// dir, so every API test runs against both backends.
pub fn open(dir: &Path, seed: &Config) -> Gw {
    let plane = match etcd_settings(dir) {
        Some(settings) => ControlPlane::open_cluster(dir, seed, &settings, None).unwrap(),
        None => ControlPlane::open(dir, seed).unwrap(),
    };
    let token = std::fs::read_to_string(api_token_path(dir))
        .unwrap()
        .trim()
        .to_owned();
    Gw {
        app: api::router(Arc::clone(&plane)),
        plane,
        token,
    }
}

fn etcd_settings(dir: &Path) -> Option<ClusterSettings> {
    let endpoints = std::env::var("SIMGATE_TEST_ETCD").ok()?;
    if endpoints.is_empty() {
        return None;
    }
    let name: String = dir
        .display()
        .to_string()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    Some(ClusterSettings {
        etcd: endpoints.split(',').map(str::to_owned).collect(),
        prefix: format!("/test-{name}"),
        ..ClusterSettings::default()
    })
}

/// Everything the store behind `dir` holds, as bytes a grep would search:
/// the redb file, or every key and value under the etcd prefix (etcdctl).
pub fn stored_bytes(dir: &Path) -> Vec<u8> {
    match etcd_settings(dir) {
        None => std::fs::read(dir.join("control.redb")).unwrap(),
        Some(s) => {
            let out = std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    &format!("--endpoints={}", s.etcd.join(",")),
                    "get",
                    "--prefix",
                    &s.prefix,
                ])
                .output()
                .expect("etcdctl (package etcd-client): run scripts/setup.sh");
            assert!(out.status.success(), "{out:?}");
            out.stdout
        }
    }
}

pub fn empty_config() -> Config {
    Config::parse("").unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

impl Gw {
    pub async fn call_as(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        send(&self.app, req.body(body).unwrap()).await
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        self.call_as(&self.token, method, uri, body).await
    }

    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        send(&self.app, req.body(Body::from(body.to_owned())).unwrap()).await
    }
}

pub fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["code"], code, "{}", r.text);
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
}
