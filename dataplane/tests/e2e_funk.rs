//! SORACOM Funk end to end, over the real devices' HTTP listener (Host
//! `funk.soracom.io`):
//!
//! * AWS Lambda on moto (its Lambda without docker): the function is created
//!   through the AWS APIs (boto3), a device's request invokes it and gets the
//!   function's answer; moto's function echoes its event, which shows the
//!   event is the device's JSON as is, or its bytes wrapped as base64.
//! * The Lambda request itself, received by an in-process HTTPS peer (moto
//!   does not expose it): the Invoke path, SigV4 for service `lambda`
//!   covering `X-Amz-Client-Context`, and the decoded client context as
//!   SORACOM documents it; a function's failure (`X-Amz-Function-Error`) and
//!   Lambda's refusal reach the device as errors.
//! * An HTTPS function (Azure Functions' shape) on the same peer: `POST`
//!   with `User-Agent: SORACOM Funk`, the text wrapped as `{"payload":…}`,
//!   and an `x-soracom-token` that PyJWT verifies with the key it fetches
//!   from simgate's JWKS; the function's answer goes back to the device.
//! * Refusals: Funk off for the group (400), an unknown source (403), data
//!   that is not the group's `contentType` (400), a function that cannot be
//!   reached (502, saying so); each counted in
//!   `simgate_funk_invocations_total`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use common::*;
use serde_json::json;
use support::certs::Certs;
use support::https_peer::{HttpsPeer, PeerRequest, PeerResponse};
use support::moto::Moto;

const HOST: &str = "funk.soracom.io";
const ISSUER: &str = "https://funk.simgate.test";
const OPERATOR: &str = "OP0000000001";
const SIM_MOTO: &str = "001010000000001";
const SIM_PEER_LAMBDA: &str = "001010000000002";
const SIM_HTTPS: &str = "001010000000003";
const MOTO_FUNCTION: &str = "funk-moto";
const PEER_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:funk-peer";
const LAMBDA_PATH: &str = "/2015-03-31/functions/funk-peer/invocations";

/// Runs a helper script from `tests/support` with the venv's Python;
/// its stdout, or a panic with its output.
async fn script(name: &str, args: Vec<String>) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(venv_python())
            .arg(path)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn srn(imsi: &str) -> String {
    format!("srn:soracom:{OPERATOR}:jp:Subscriber:{imsi}")
}

/// The peer's answers: Lambda's Invoke API on [`LAMBDA_PATH`], an HTTPS
/// function elsewhere.
fn healthy(req: &PeerRequest) -> PeerResponse {
    if req.path() == LAMBDA_PATH {
        PeerResponse::json(200, &json!({"fromLambda": true}))
    } else {
        PeerResponse::json(200, &json!({"reply": "hi from the function"}))
    }
}

async fn post(
    src: &str,
    to: SocketAddr,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("Content-Type", c))
        .into_iter()
        .collect();
    let (status, _, body) = http_request(ip(src), to, "POST", HOST, "/", &headers, body).await;
    (status, body)
}

async fn invocations(run: &Running, target: &str, outcome: &str) -> f64 {
    metric(
        run,
        "simgate_funk_invocations_total",
        &[
            &format!("target=\"{target}\""),
            &format!("outcome=\"{outcome}\""),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funk_invokes_lambda_and_https_functions_and_refuses_cleanly() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let arn = script(
        "funk_moto.py",
        vec![
            moto.endpoint(),
            MOTO_FUNCTION.into(),
            json!({"led": "on"}).to_string(),
        ],
    )
    .await;
    let arn = arn.trim().to_owned();
    assert_eq!(
        arn,
        format!("arn:aws:lambda:us-east-1:123456789012:function:{MOTO_FUNCTION}")
    );

    let certs = Certs::generate();
    let peer = HttpsPeer::start(&certs, healthy).await;
    // A port nothing listens on: the unreachable function.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let creds = Moto::credentials();
    let body = format!(
        r#"
[endorse]
issuer = "{ISSUER}"

[funk]
coverage = "jp"
timeout_ms = 5000
allow_insecure_endpoints = true

[upstream]
ca_file = {ca:?}

[[operators]]
id = "{OPERATOR}"

[[credentials]]
id = "aws-funk"
type = "aws"
access_key_id = "{key}"
secret_access_key = "{secret}"

[[groups]]
id = "funk-moto"
[groups.configuration.SoracomFunk]
enabled = true
destination = {{ provider = "aws", service = "lambda", resourceUrl = "{arn}", endpoint = "{moto}" }}
credentialsId = {{ "$credentialsId" = "aws-funk" }}

[[groups]]
id = "funk-peer-lambda"
[groups.configuration.SoracomFunk]
enabled = true
destination = {{ provider = "aws", service = "lambda", resourceUrl = "{PEER_ARN}", endpoint = "{peer}" }}
credentialsId = "aws-funk"
contentType = "application/json"

[[groups]]
id = "funk-https"
[groups.configuration.SoracomFunk]
enabled = true
destination = {{ provider = "azure", service = "function-app", resourceUrl = "{peer}/api/funk?code=abc" }}

[[groups]]
id = "funk-off"
[groups.configuration.SoracomFunk]
enabled = false
destination = {{ provider = "azure", service = "function-app", resourceUrl = "{peer}/api/funk" }}

[[groups]]
id = "funk-down"
[groups.configuration.SoracomFunk]
enabled = true
destination = {{ provider = "google", service = "cloud-functions", resourceUrl = "https://127.0.0.1:{closed}/f" }}

[[subscribers]]
imsi = "{SIM_MOTO}"
group_id = "funk-moto"

[[subscribers]]
imsi = "{SIM_PEER_LAMBDA}"
group_id = "funk-peer-lambda"

[[subscribers]]
imsi = "{SIM_HTTPS}"
group_id = "funk-https"

[[subscribers]]
imsi = "001010000000004"
group_id = "funk-off"

[[subscribers]]
imsi = "001010000000005"
group_id = "funk-down"

[[sessions]]
ip = "127.0.0.1"
imsi = "{SIM_MOTO}"

[[sessions]]
ip = "127.0.8.2"
imsi = "{SIM_PEER_LAMBDA}"
imei = "353000000000001"

[[sessions]]
ip = "127.0.8.3"
imsi = "{SIM_HTTPS}"

[[sessions]]
ip = "127.0.8.4"
imsi = "001010000000004"

[[sessions]]
ip = "127.0.8.5"
imsi = "001010000000005"
"#,
        ca = certs.ca().display().to_string(),
        key = creds.access_key_id,
        secret = creds.secret_access_key.expose(),
        moto = moto.endpoint(),
        peer = peer.url(),
    );
    let run = start(&body).await;
    let to = run.server.bound.http.unwrap();

    // Lambda on moto: the function's queued answer comes back to the device.
    let (status, body) = post(
        "127.0.0.1",
        to,
        Some("application/json"),
        br#"{"temp": 21}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body), json!({"led": "on"}));
    // Nothing queued: moto's function echoes its event, the device's JSON as is.
    let (status, body) = post(
        "127.0.0.1",
        to,
        Some("application/json"),
        br#"{"temp": 22}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, br#"{"temp": 22}"#);
    // No Content-Type, contentType unspecified: bytes, wrapped as base64.
    let (status, body) = post("127.0.0.1", to, None, b"\x01\x02\xff").await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body), json!({"payload": "AQL/"}));

    // The Lambda request itself, as the peer received it.
    let (status, body) = post("127.0.8.2", to, Some("text/plain"), br#"{"hello": "funk"}"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body), json!({"fromLambda": true}));
    let req = peer.requests().pop().unwrap();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", LAMBDA_PATH)
    );
    assert_eq!(
        req.body,
        &br#"{"hello": "funk"}"#[..],
        "contentType json: the event is the device's JSON as is"
    );
    let auth = req.header("authorization").unwrap();
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={}/",
            creds.access_key_id
        )) && auth.contains("/us-east-1/lambda/aws4_request"),
        "{auth}"
    );
    let signed = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap();
    assert!(
        signed.split(';').any(|h| h == "x-amz-client-context"),
        "{signed}"
    );
    assert!(req.header("x-amz-date").is_some());
    assert_eq!(req.header("x-amz-invocation-type"), Some("RequestResponse"));
    let context = base64::engine::general_purpose::STANDARD
        .decode(req.header("x-amz-client-context").unwrap())
        .unwrap();
    assert_eq!(
        json_of(&context),
        json!({"custom": {
            "operatorId": OPERATOR,
            "coverage": "jp",
            "resourceType": "Subscriber",
            "resourceId": SIM_PEER_LAMBDA,
            "sourceProtocol": "http",
            "srn": srn(SIM_PEER_LAMBDA),
            "imsi": SIM_PEER_LAMBDA,
            "imei": "353000000000001",
        }})
    );
    // contentType json and data that is not JSON: the device's fault.
    let (status, _) = post("127.0.8.2", to, Some("application/json"), b"not json").await;
    assert_eq!(status, 400);

    // The function fails; then Lambda itself refuses.
    peer.set_handler(|_| {
        PeerResponse::json(
            200,
            &json!({"errorMessage": "boom", "errorType": "Exception"}),
        )
        .with_header("x-amz-function-error", "Unhandled")
    });
    let (status, body) = post("127.0.8.2", to, Some("application/json"), b"{}").await;
    assert_eq!(status, 500);
    assert_eq!(json_of(&body)["errorMessage"], "boom");
    peer.set_handler(|_| {
        PeerResponse::json(404, &json!({"Message": "Function not found"}))
            .with_header("x-amzn-errortype", "ResourceNotFoundException")
    });
    let (status, body) = post("127.0.8.2", to, Some("application/json"), b"{}").await;
    assert_eq!(status, 502);
    assert!(
        String::from_utf8_lossy(&body).contains("ResourceNotFoundException"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    peer.set_handler(healthy);

    // An HTTPS function: text wrapped, the token verified independently.
    let (status, body) = post("127.0.8.3", to, Some("text/plain"), b"hello").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body), json!({"reply": "hi from the function"}));
    let req = peer.requests().pop().unwrap();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/api/funk?code=abc")
    );
    assert_eq!(req.header("user-agent"), Some("SORACOM Funk"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(json_of(&req.body), json!({"payload": "hello"}));
    let token = req.header("x-soracom-token").unwrap().to_owned();
    let verified = json_of(
        script(
            "funk_verify.py",
            vec![
                format!("http://{to}"),
                "endorse.soracom.io".into(),
                ISSUER.into(),
                srn(SIM_HTTPS),
                token,
            ],
        )
        .await
        .as_bytes(),
    );
    let c = &verified["claims"];
    assert_eq!(c["sub"], "funk.soracom.io");
    assert_eq!(c["typ"], "soracom/token/v1");
    assert_eq!(
        c["ctx"],
        json!({
            "operatorId": OPERATOR, "coverage": "jp", "resourceType": "Subscriber",
            "resourceId": SIM_HTTPS, "sourceProtocol": "http", "srn": srn(SIM_HTTPS),
            "imsi": SIM_HTTPS,
        })
    );
    assert_eq!(verified["header"]["alg"], "RS256");

    // The Unified Endpoint over UDP and TCP: Funk is the group's only
    // service, so the device gets the function's answer as is.
    let uni_udp = run.server.bound.unified_udp.unwrap();
    let answer = udp_request(ip("127.0.8.3"), uni_udp, b"via udp")
        .await
        .unwrap();
    assert_eq!(json_of(&answer), json!({"reply": "hi from the function"}));
    let req = peer.requests().pop().unwrap();
    assert_eq!(json_of(&req.body), json!({"payload": "dmlhIHVkcA=="}));
    let mut tcp = tcp_connect(ip("127.0.8.3"), run.server.bound.unified_tcp.unwrap()).await;
    let answer = tcp_exchange(&mut tcp, br#"{"t":1}"#).await;
    assert_eq!(json_of(&answer), json!({"reply": "hi from the function"}));
    let req = peer.requests().pop().unwrap();
    // contentType unspecified: UDP/TCP bytes are wrapped, JSON or not.
    assert_eq!(json_of(&req.body), json!({"payload": "eyJ0IjoxfQ=="}));

    // Refusals.
    let (status, body) = post("127.0.8.4", to, None, b"x").await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not enabled"));
    let (status, _) = post("127.0.9.9", to, None, b"x").await;
    assert_eq!(status, 403);
    let (status, body) = post("127.0.8.5", to, None, b"x").await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("cannot reach the function"), "{text}");

    assert_eq!(invocations(&run, "lambda", "ok").await, 4.0);
    assert_eq!(invocations(&run, "lambda", "function_error").await, 1.0);
    assert_eq!(invocations(&run, "lambda", "refused").await, 1.0);
    assert_eq!(invocations(&run, "https", "ok").await, 3.0);
    assert_eq!(invocations(&run, "https", "unreachable").await, 1.0);
    assert_eq!(invocations(&run, "none", "disabled").await, 1.0);
    assert_eq!(invocations(&run, "none", "bad_request").await, 1.0);
    drop(moto);
}
