//! SORACOM Endorse end to end, over the real devices' HTTP listener (Host
//! `endorse.soracom.io`): a SIM gets a token by GET with query parameters
//! and by POST with a form, and PyJWT (an independent JWT library, run from
//! the test venv) verifies each with the public key it fetches over HTTP,
//! from the JWKS and from the PEM URL named by the `kid`. The claims are
//! checked as SORACOM documents them, per the group's `SoracomEndorse`;
//! refusals: an unknown source address, Endorse disabled for the group.
//! After `simgate endorse rotate`, a token signed before still verifies and
//! new tokens carry the new key. With `[endorse] algorithm = "ES256"` the
//! tokens are ES256 and verify the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};

const HOST: &str = "endorse.soracom.io";
const ISSUER: &str = "https://endorse.simgate.test";
const SIM1: &str = "001010000000001";
const SIM2: &str = "001010000000002";

const BODY: &str = r#"
[endorse]
issuer = "https://endorse.simgate.test"

[[operators]]
id = "OP0000000001"

[[groups]]
id = "endorse-on"
[groups.configuration.SoracomEndorse]
enabled = true
parametersToEndorse = { imsi = true, imei = true, msisdn = false, simId = false, requestParameters = true }
tokenTimeoutSeconds = 600
allowOrigin = "https://app.example"
authorizedRedirectUrls = ["https://app.example/login"]

[[groups]]
id = "endorse-default"
[groups.configuration.SoracomEndorse]
enabled = true

[[groups]]
id = "endorse-off"
[groups.configuration.SoracomEndorse]
enabled = false

[[subscribers]]
imsi = "001010000000001"
msisdn = "819000000001"
group_id = "endorse-on"

[[subscribers]]
imsi = "001010000000002"
group_id = "endorse-default"

[[subscribers]]
imsi = "001010000000003"
group_id = "endorse-off"

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"
imei = "353000000000001"

[[sessions]]
ip = "127.0.7.2"
imsi = "001010000000002"

[[sessions]]
ip = "127.0.7.3"
imsi = "001010000000003"
"#;

/// The venv's Python, which has PyJWT (`scripts/setup.sh`); a missing one
/// fails the test (an end-to-end test that silently skips proves nothing).
/// PyJWT's verdict on `token`: the header and claims it verified, fetching
/// the keys from simgate at `to`.
async fn verify(to: SocketAddr, token: &str) -> Value {
    let out = pyjwt(to, token).await;
    assert!(
        out.status.success(),
        "PyJWT refused the token: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What PyJWT says of `token`, success or not.
async fn pyjwt(to: SocketAddr, token: &str) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/endorse_verify.py");
    let (base, token) = (format!("http://{to}"), token.to_owned());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv_python())
            .arg(script)
            .args([base.as_str(), HOST, ISSUER, token.as_str()])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn call(
    src: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Value) {
    let (status, headers, body) =
        http_request(ip(src), to, method, HOST, path, headers, body).await;
    (status, headers, json_of(&body))
}

/// A token for the SIM at `src` by `GET /?{query}`.
async fn get_token(src: &str, to: SocketAddr, query: &str) -> String {
    let (status, headers, body) = call(src, to, "GET", &format!("/?{query}"), &[], b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endorse_tokens_verify_independently_and_refusals_hold() {
    let run = start(BODY).await;
    let to = run.server.bound.http.unwrap();

    // GET with query parameters: every endorsed fact and the parameters.
    let token = get_token("127.0.0.1", to, "nonce=abc%20123&device=kitchen+1").await;
    let v = verify(to, &token).await;
    let (h, c) = (&v["header"], &v["claims"]);
    assert_eq!(h["alg"], "RS256");
    let kid1 = h["kid"].as_str().unwrap().to_owned();
    assert!(
        kid1.starts_with("v1-") && kid1.ends_with("-x509.pem") && kid1.len() == 3 + 32 + 9,
        "{kid1}"
    );
    assert_eq!(v["pemContentType"], "application/x-pem-file");
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], "soracom-endorse-audience");
    assert_eq!(c["sub"], "soracom-endorse");
    let iat = c["iat"].as_u64().unwrap();
    assert_eq!(c["exp"].as_u64().unwrap() - iat, 600, "tokenTimeoutSeconds");
    assert_eq!(iat - c["nbf"].as_u64().unwrap(), 60);
    assert_eq!(c["jti"].as_str().unwrap().len(), 32);
    assert_eq!(
        c["soracom-endorse-claim"],
        json!({
            "imsi": SIM1,
            "imei": "353000000000001",
            "requestParameters": {"nonce": "abc 123", "device": "kitchen 1"},
        }),
        "msisdn is not endorsed by the group"
    );

    // POST with a form.
    let form = b"challenge=xyz&n=%E3%81%82";
    let (status, _, body) = call(
        "127.0.0.1",
        to,
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = verify(to, body["token"].as_str().unwrap()).await;
    assert_eq!(
        v["claims"]["soracom-endorse-claim"]["requestParameters"],
        json!({"challenge": "xyz", "n": "あ"})
    );
    assert_ne!(v["claims"]["jti"], c["jti"], "a fresh jti per token");

    // A group that only enables Endorse: the IMSI, SORACOM's default, a day.
    let v = verify(to, &get_token("127.0.7.2", to, "ignored=1").await).await;
    let c2 = &v["claims"];
    assert_eq!(c2["soracom-endorse-claim"], json!({ "imsi": SIM2 }));
    assert_eq!(
        c2["exp"].as_u64().unwrap() - c2["iat"].as_u64().unwrap(),
        86_400
    );

    // The public keys need no SIM: a stranger may fetch them.
    let (status, headers, jwks) =
        call("127.0.9.9", to, "GET", "/.well-known/jwks.json", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], kid1.as_str());
    assert_eq!(
        (
            &keys[0]["kty"],
            &keys[0]["use"],
            &keys[0]["alg"],
            &keys[0]["e"]
        ),
        (
            &json!("RSA"),
            &json!("sig"),
            &json!("RS256"),
            &json!("AQAB")
        )
    );
    let (status, _, _) = http_request(
        ip("127.0.9.9"),
        to,
        "GET",
        HOST,
        "/v1/endorse/keys/v1-00000000000000000000000000000000-x509.pem",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 404);

    // allowOrigin on token answers; redirect_url only to an authorized URL.
    let (status, headers, _) = call("127.0.0.1", to, "GET", "/?n=1", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let (status, headers, _) = http_request(
        ip("127.0.0.1"),
        to,
        "GET",
        HOST,
        "/?user=sora&redirect_url=https%3A%2F%2Fapp.example%2Flogin",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 302);
    let location = header(&headers, "location").unwrap();
    let redirected = location
        .strip_prefix("https://app.example/login?soracom_endorse_token=")
        .unwrap_or_else(|| panic!("{location}"));
    let v = verify(to, redirected).await;
    let params = &v["claims"]["soracom-endorse-claim"]["requestParameters"];
    assert_eq!(
        params,
        &json!({"user": "sora"}),
        "redirect_url is not endorsed"
    );
    let (status, _, body) = call(
        "127.0.0.1",
        to,
        "GET",
        "/?redirect_url=https%3A%2F%2Fevil.example%2F",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("redirect_not_authorized"))
    );
    // A POST: a page that posts the token on to the target.
    let (status, headers, page) = http_request(
        ip("127.0.0.1"),
        to,
        "POST",
        HOST,
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"user=sora&redirect_url=https%3A%2F%2Fapp.example%2Flogin",
    )
    .await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains("action=\"https://app.example/login\""),
        "{page}"
    );
    let posted = page
        .split("name=\"soracom_endorse_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{page}"));
    verify(to, posted).await;

    // Refusals: Endorse disabled for the group, an unknown source.
    let (status, _, body) = call("127.0.7.3", to, "GET", "/", &[], b"").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("endorse_disabled"))
    );
    let rejected_before = metric(
        &run,
        "simgate_ingress_rejected",
        &["reason=\"unknown_source\""],
    )
    .await;
    let (status, headers, body) = call("127.0.9.9", to, "GET", "/?a=1", &[], b"").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(header(&headers, "connection"), Some("close"));
    let rejected_after = metric(
        &run,
        "simgate_ingress_rejected",
        &["reason=\"unknown_source\""],
    )
    .await;
    assert_eq!(rejected_after, rejected_before + 1.0);
    let (status, headers, _) = call("127.0.0.1", to, "PUT", "/", &[], b"").await;
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, POST"));

    let served = metric(
        &run,
        "simgate_service_requests",
        &["service=\"endorse\"", "status=\"200\""],
    )
    .await;
    assert!(served >= 4.0, "endorse 200s counted: {served}");
    let refused = metric(
        &run,
        "simgate_service_requests",
        &["service=\"endorse\"", "status=\"403\""],
    )
    .await;
    assert!(refused >= 1.0, "endorse 403s counted: {refused}");

    // Rotation through the CLI: the old token still verifies (its key is
    // still published), new tokens carry the new key.
    let api = run.server.bound.api.unwrap();
    let out = simgate_cli(api, run.dir.path(), &["endorse", "rotate", "--json"], &[])
        .await
        .ok()
        .json();
    let kid2 = out["current"].as_str().unwrap().to_owned();
    assert_ne!(kid2, kid1);
    assert_eq!(out["previous"], kid1.as_str());
    let v = verify(to, &token).await;
    assert_eq!(v["header"]["kid"], kid1.as_str());
    let v = verify(to, &get_token("127.0.0.1", to, "after=rotation").await).await;
    assert_eq!(v["header"]["kid"], kid2.as_str());
    let (_, _, jwks) = call("127.0.9.9", to, "GET", "/.well-known/jwks.json", &[], b"").await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [kid2.as_str(), kid1.as_str()]);
    let out = simgate_cli(api, run.dir.path(), &["endorse", "keys"], &[])
        .await
        .ok();
    assert!(
        out.stdout.contains(&kid2) && out.stdout.contains(&kid1),
        "{}",
        out.stdout
    );

    // The keys are owner-only files in the data dir.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in ["current.pem", "previous.pem"] {
            let p = run.dir.path().join("endorse").join(f);
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_independently() {
    let body = BODY.replacen("[endorse]\n", "[endorse]\nalgorithm = \"ES256\"\n", 1);
    let run = start(&body).await;
    let to = run.server.bound.http.unwrap();
    let token = get_token("127.0.0.1", to, "nonce=es").await;
    let v = verify(to, &token).await;
    assert_eq!(v["header"]["alg"], "ES256");
    assert_eq!(v["claims"]["soracom-endorse-claim"]["imsi"], SIM1);
    assert_eq!(
        v["claims"]["soracom-endorse-claim"]["requestParameters"]["nonce"],
        "es"
    );
    let (status, _, jwks) = call("127.0.0.1", to, "GET", "/.well-known/jwks.json", &[], b"").await;
    assert_eq!(status, 200);
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["kid"]),
        (&json!("EC"), &json!("P-256"), &v["header"]["kid"])
    );

    // An expired token is refused by the verifier: a group whose tokens
    // live one second (PyJWT allows no leeway by default).
    let api = run.server.bound.api.unwrap();
    let auth = format!("Bearer {}", run.token());
    let (status, _, _) = http_request(
        ip("127.0.0.1"),
        api,
        "PUT",
        "localhost",
        "/v1/groups/endorse-on/configuration/SoracomEndorse",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        br#"[{"key":"tokenTimeoutSeconds","value":1}]"#,
    )
    .await;
    assert_eq!(status, 200);
    let token = get_token("127.0.0.1", to, "nonce=short").await;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        1
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let out = pyjwt(to, &token).await;
    assert!(!out.status.success(), "an expired token verified");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ExpiredSignatureError"), "{stderr}");
    run.server.shutdown().await;
}
