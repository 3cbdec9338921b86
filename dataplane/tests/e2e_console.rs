//! The web console in a real browser: simgate serves `/console/` on the API
//! listener; headless Chromium (Debian's `chromium`, driven by Playwright
//! for Python from `.tools/venv`, see `scripts/setup.sh`) logs in, finds
//! the demo SIM online, charts the Harvest entries a device posts, shows
//! the API's validation errors, suspends the SIM (the device is refused)
//! and refuses a bad token (`tests/support/console_browser.py`).
//! Screenshots of each page land in `target/console-shots/`.
//!
//! Without Chromium the test is skipped with a message, except under
//! `CI=true`, where a missing browser fails it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;

const IMSI: &str = "001010000000001";

/// The embedded default's demo: one SIM, Harvest on, bound to 127.0.0.1.
const BODY: &str = r#"
[[operators]]
id = "OP0000000001"
name = "demo operator"

[[groups]]
id = "demo"
name = "demo group"
harvest = { enabled = true }

[[subscribers]]
imsi = "001010000000001"
imei = "353000000000001"
msisdn = "818000000001"
sim_id = "8942310000000000001"
group_id = "demo"
tags = { name = "demo-sim" }

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// The browser, or `None` (skip) outside CI; in CI its absence fails.
fn browser_or_skip() -> Option<PathBuf> {
    let path = chromium();
    if path.exists() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "CI=true but {} is missing: scripts/setup.sh installs Debian's chromium",
        path.display()
    );
    eprintln!(
        "SKIPPED e2e_console: {} not found (run scripts/setup.sh, or set CHROMIUM=/path/to/chromium)",
        path.display()
    );
    None
}

fn python() -> PathBuf {
    let p = repo().join(".tools/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs playwright)",
        p.display()
    );
    p
}

async fn call(
    run: &Running,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let (status, _, body) = http_request(
        "127.0.0.1".parse().unwrap(),
        run.server.bound.api.unwrap(),
        method,
        "localhost",
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium() {
    let Some(chromium) = browser_or_skip() else {
        return;
    };
    let run = start(BODY).await;
    let token = run.token();
    let api = run.server.bound.api.unwrap();
    let device = run.server.bound.http.unwrap();

    // The page needs no token (it holds no data); the API it calls does.
    let (status, headers, page) = api_get(&run, "/console/", None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("app.js"));
    assert!(header(&headers, "content-security-policy")
        .is_some_and(|v| v.contains("frame-ancestors 'none'")));
    let (status, _, _) = api_get(&run, "/v1/subscribers", None).await;
    assert_eq!(status, 401);

    // An auth key for the key login; the secret is shown only here.
    let (status, key) = call(
        &run,
        "POST",
        "/v1/operators/OP0000000001/auth_keys",
        &token,
        b"",
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key_id = key["authKeyId"].as_str().unwrap().to_owned();
    let key_secret = key["authKey"].as_str().unwrap().to_owned();

    let shots = repo().join("target/console-shots");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/console_browser.py");
    let args = [
        "--api".to_owned(),
        format!("http://{api}"),
        "--device".to_owned(),
        format!("http://{device}"),
        "--token".to_owned(),
        token.clone(),
        "--auth-key-id".to_owned(),
        key_id,
        "--auth-key".to_owned(),
        key_secret,
        "--imsi".to_owned(),
        IMSI.to_owned(),
        "--shots".to_owned(),
        shots.display().to_string(),
        "--chromium".to_owned(),
        chromium.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["suspended_device_status"], 403, "{summary}");

    // What the browser did, seen through the API: the SIM is active again
    // with the tag set from the page, and every served entry is stored.
    let (status, sim) = call(&run, "GET", &format!("/v1/subscribers/{IMSI}"), &token, b"").await;
    assert_eq!(status, 200);
    assert_eq!(sim["status"], "active", "{sim}");
    assert_eq!(sim["tags"]["site"], "north-field", "{sim}");
    let (status, entries) = call(
        &run,
        "GET",
        &format!("/v1/subscribers/{IMSI}/data?limit=1000"),
        &token,
        b"",
    )
    .await;
    assert_eq!(status, 200);
    // 20 back-dated + 5 live + 3 while watching Live + 1 after re-activation;
    // none of the 4 refused while suspended.
    let stored = entries.as_array().unwrap();
    assert_eq!(stored.len(), 29, "{entries}");
    assert!(stored
        .iter()
        .all(|e| !e["content"].as_str().unwrap().contains("refused")));

    for name in [
        "login-refused",
        "sims",
        "harvest",
        "groups",
        "groups-error",
        "live",
        "sims-suspended",
    ] {
        let p = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&p).map_or(0, |m| m.len());
        assert!(len > 1000, "{} missing or empty", Path::new(&p).display());
    }
    run.server.shutdown().await;
}
