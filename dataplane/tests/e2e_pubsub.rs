//! Funnel to Google Cloud Pub/Sub, end to end against an in-process HTTPS
//! peer that plays both Google services the sink talks to:
//!
//! * the OAuth 2 token endpoint (`/token`, the key file's `token_uri`),
//!   which verifies the JWT-bearer assertion as Google does (RS256 against
//!   the service account's public keys, `aud`, `iss`, `scope`, lifetime at
//!   most an hour, not expired) and issues opaque tokens;
//! * `topics.publish`, which checks the bearer token (refusing unknown and
//!   expired ones with 401 `UNAUTHENTICATED`), the topic path, the body
//!   shape and the limits (1..=1,000 messages, 10 MB), and base64 `data`.
//!
//! Records go in over UDP and HTTP from several SIMs; what the peer
//! received is checked record by record. Then faults: an outage, throttling,
//! a permanently refused record, short-lived tokens and a key rotated
//! through the API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use simgate::sinks::pubsub::PubsubSink;
use simgate::sinks::{BatchOutcome, FailureKind, RecordOutcome, Sink, SinkRecord};
use simgate::upstream::{RootSources, Upstream};
use simgate_control::config::UpstreamSettings;
use support::certs::Certs;
use support::https_peer::{HttpsPeer, PeerRequest, PeerResponse};

const PROJECT: &str = "simgate-test";
const CLIENT_EMAIL: &str = "funnel@simgate-test.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/pubsub";
const PER_SIM: u32 = 12;

fn sim_ip(sim: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 5, sim))
}

fn imsi(sim: u8) -> String {
    format!("0010100000{:05}", 500 + u32::from(sim))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh RSA key pair: (PKCS#8 private PEM, SPKI public PEM).
fn rsa_key() -> (String, String) {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl genpkey");
    assert!(out.status.success(), "{out:?}");
    let private = String::from_utf8(out.stdout).unwrap();
    let mut child = std::process::Command::new("openssl")
        .args(["pkey", "-pubout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    (private, String::from_utf8(out.stdout).unwrap())
}

/// A service account key file as Google issues it.
fn key_file(private_pem: &str, kid: &str, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": kid,
        "private_key": private_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
    })
    .to_string()
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// How the peer answers publish requests.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Normal,
    /// 503 `UNAVAILABLE` to every publish.
    Outage,
    /// 429 `RESOURCE_EXHAUSTED` to the next n publishes.
    Throttle(u32),
}

/// One message the peer accepted.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    data: Value,
    /// The key (index into `State::keys`) whose assertion got the token.
    key: usize,
}

struct Token {
    key: usize,
    expires: Instant,
}

struct State {
    token_uri: String,
    /// The service account's public keys by `kid`, as Google publishes them.
    keys: Vec<(String, DecodingKey)>,
    expires_in: u64,
    tokens: HashMap<String, Token>,
    /// Accepted assertions: which key signed each.
    assertions: Vec<usize>,
    mode: Mode,
    received: Vec<Received>,
    publishes: u32,
    refused: BTreeMap<u16, u32>,
}

type Shared = Arc<Mutex<State>>;

fn google_error(code: u16, status: &str, message: &str) -> PeerResponse {
    PeerResponse::json(
        code,
        &json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

fn token_endpoint(state: &Shared, req: &PeerRequest) -> PeerResponse {
    let invalid = |d: &str| {
        PeerResponse::json(
            400,
            &json!({"error": "invalid_grant", "error_description": d}),
        )
    };
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let body = String::from_utf8(req.body.to_vec()).unwrap();
    let form: HashMap<&str, &str> = body.split('&').filter_map(|p| p.split_once('=')).collect();
    if form.get("grant_type") != Some(&"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return PeerResponse::json(400, &json!({"error": "unsupported_grant_type"}));
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid("missing assertion");
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return invalid("Invalid JWT");
    };
    if header.alg != Algorithm::RS256 {
        return invalid("Invalid JWT: alg");
    }
    let mut st = state.lock().unwrap();
    let Some(key) = st
        .keys
        .iter()
        .position(|(kid, _)| Some(kid) == header.kid.as_ref())
    else {
        return invalid("Invalid JWT Signature.");
    };
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[st.token_uri.as_str()]);
    v.set_issuer(&[CLIENT_EMAIL]);
    v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    v.leeway = 0;
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &st.keys[key].1, &v) {
        Ok(d) => d.claims,
        Err(e) => return invalid(&format!("Invalid JWT: {e}")),
    };
    let now = now_secs();
    if claims.scope != SCOPE
        || claims.iss != CLIENT_EMAIL
        || claims.aud != st.token_uri
        || claims.exp <= claims.iat
        || claims.exp - claims.iat > 3600
        || claims.iat > now + 60
        || claims.exp <= now
    {
        return invalid(
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
        );
    }
    st.assertions.push(key);
    let token = format!("ya29.test-{}", st.assertions.len());
    let expires = Instant::now() + Duration::from_secs(st.expires_in);
    st.tokens.insert(token.clone(), Token { key, expires });
    PeerResponse::json(
        200,
        &json!({"access_token": token, "expires_in": st.expires_in, "token_type": "Bearer"}),
    )
}

fn publish(state: &Shared, req: &PeerRequest) -> PeerResponse {
    let mut st = state.lock().unwrap();
    st.publishes += 1;
    let refuse = |st: &mut State, r: PeerResponse| {
        *st.refused.entry(r.status).or_default() += 1;
        r
    };
    let token = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    let key = match st.tokens.get(token) {
        Some(t) if t.expires > Instant::now() => t.key,
        _ => {
            return refuse(
                &mut st,
                google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                ),
            )
        }
    };
    let Some(topic) = req
        .path()
        .strip_prefix(&format!("/v1/projects/{PROJECT}/topics/"))
        .and_then(|t| t.strip_suffix(":publish"))
        .map(str::to_owned)
    else {
        return refuse(
            &mut st,
            google_error(404, "NOT_FOUND", "Resource not found"),
        );
    };
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-type"), Some("application/json"));
    match st.mode {
        Mode::Normal => {}
        Mode::Outage => {
            return refuse(
                &mut st,
                google_error(503, "UNAVAILABLE", "The service is currently unavailable."),
            )
        }
        Mode::Throttle(n) => {
            st.mode = if n > 1 {
                Mode::Throttle(n - 1)
            } else {
                Mode::Normal
            };
            return refuse(
                &mut st,
                google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota).",
                ),
            );
        }
    }
    // Pub/Sub's limits and shape, checked as the service would.
    assert!(req.body.len() <= 10_000_000, "{} bytes", req.body.len());
    let body: Value = serde_json::from_slice(&req.body).expect("publish body is JSON");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let messages = body["messages"].as_array().expect("messages array");
    assert!(
        (1..=1000).contains(&messages.len()),
        "{} messages",
        messages.len()
    );
    let mut batch = Vec::new();
    for m in messages {
        assert_eq!(m.as_object().unwrap().len(), 1, "only data: {m}");
        let data = base64::engine::general_purpose::STANDARD
            .decode(m["data"].as_str().expect("data is a string"))
            .expect("data is base64");
        let data: Value = serde_json::from_slice(&data).expect("data is JSON");
        batch.push(data);
    }
    // A record the service refuses for good: the whole request fails, as
    // Pub/Sub publishes all or nothing.
    if batch.iter().any(|d| d.to_string().contains("poison")) {
        return refuse(
            &mut st,
            google_error(400, "INVALID_ARGUMENT", "Message is poisoned."),
        );
    }
    let ids: Vec<String> = (0..batch.len())
        .map(|i| format!("{}", st.received.len() + i + 1))
        .collect();
    for data in batch {
        st.received.push(Received {
            topic: topic.clone(),
            data,
            key,
        });
    }
    PeerResponse::json(200, &json!({"messageIds": ids}))
}

/// The peer and its state. `expires_in` is what the token endpoint grants.
async fn start_peer(
    certs: &Certs,
    keys: Vec<(String, String)>,
    expires_in: u64,
) -> (HttpsPeer, Shared) {
    let state: Shared = Arc::new(Mutex::new(State {
        token_uri: String::new(),
        keys: keys
            .into_iter()
            .map(|(kid, public)| (kid, DecodingKey::from_rsa_pem(public.as_bytes()).unwrap()))
            .collect(),
        expires_in,
        tokens: HashMap::new(),
        assertions: Vec::new(),
        mode: Mode::Normal,
        received: Vec::new(),
        publishes: 0,
        refused: BTreeMap::new(),
    }));
    let s = Arc::clone(&state);
    let peer = HttpsPeer::start(certs, move |req| {
        if req.path() == "/token" {
            token_endpoint(&s, req)
        } else {
            publish(&s, req)
        }
    })
    .await;
    state.lock().unwrap().token_uri = format!("{}/token", peer.url());
    (peer, state)
}

fn toml_group(id: &str, destination: &str) -> String {
    format!(
        "\n[[groups]]\nid = \"{id}\"\n[groups.funnel]\nenabled = true\ncredentialsId = \"pubsub-demo\"\ndestination = {destination}\n"
    )
}

fn toml_sim(sim: u8, group: &str) -> String {
    format!(
        "\n[[subscribers]]\nimsi = \"{imsi}\"\nimei = \"35300000000{sim:04}\"\ngroup_id = \"{group}\"\n\n[[sessions]]\nip = \"{ip}\"\nimsi = \"{imsi}\"\n",
        imsi = imsi(sim),
        ip = sim_ip(sim),
    )
}

fn config(certs: &Certs, key_file: &str, funnel: &str, groups: &str) -> String {
    format!(
        r#"
[upstream]
ca_file = {ca:?}

[funnel]
{funnel}

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "pubsub-demo"
type = "google-service-account-json"
credentials = '''{key_file}'''
{groups}"#,
        ca = certs.ca().display().to_string(),
    )
}

/// Sends `{"sim":…,"seq":…,…extra}` from `sim`, over UDP for even `seq`
/// and HTTP for odd; asserts it was acknowledged.
async fn send(run: &common::Running, sim: u8, seq: u32, extra: &str) {
    let b = &run.server.bound;
    let payload = format!(r#"{{"sim":{sim},"seq":{seq}{extra}}}"#);
    if seq % 2 == 0 {
        let reply =
            common::udp_request(sim_ip(sim), b.unified_udp.unwrap(), payload.as_bytes()).await;
        assert_eq!(
            reply.as_deref(),
            Some(&b"200"[..]),
            "udp sim {sim} seq {seq}"
        );
    } else {
        let (status, _, resp) = common::http_request(
            sim_ip(sim),
            b.http.unwrap(),
            "POST",
            "funnel.soracom.io",
            "/",
            &[("Content-Type", "application/json")],
            payload.as_bytes(),
        )
        .await;
        assert_eq!(
            status,
            204,
            "http sim {sim} seq {seq}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
}

async fn wait_for(state: &Shared, what: &str, mut done: impl FnMut(&State) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if done(&state.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many times each `(sim, seq)` arrived on `topic`.
fn arrivals(state: &Shared, topic: &str, payloads_only: bool) -> BTreeMap<(u64, u64), usize> {
    let mut seen = BTreeMap::new();
    for r in state.lock().unwrap().received.iter() {
        if r.topic != topic {
            continue;
        }
        let p = if payloads_only {
            &r.data
        } else {
            &r.data["payloads"]
        };
        let key = (p["sim"].as_u64().unwrap(), p["seq"].as_u64().unwrap());
        *seen.entry(key).or_default() += 1;
    }
    seen
}

fn assert_exactly_once(seen: &BTreeMap<(u64, u64), usize>, sim: u64, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        assert_eq!(
            seen.get(&(sim, seq)).copied(),
            Some(1),
            "sim {sim} seq {seq} must arrive exactly once: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_and_payloads_reach_pubsub() {
    let certs = Certs::generate();
    let (private, public) = rsa_key();
    let (peer, state) = start_peer(&certs, vec![("key-1".into(), public)], 3600).await;
    let kf = key_file(&private, "key-1", &format!("{}/token", peer.url()));
    let endpoint = peer.url();
    let full_url = format!("https://pubsub.googleapis.com/v1/projects/{PROJECT}/topics/raw");
    let mut groups = toml_group(
        "fleet",
        &format!(
            r#"{{ provider = "google", service = "pubsub", resourceUrl = "devices", payloadsOnly = false, endpoint = "{endpoint}" }}"#
        ),
    );
    groups.push_str(&toml_group(
        "raw",
        &format!(
            r#"{{ provider = "google", service = "pubsub", resourceUrl = "{full_url}", payloadsOnly = true, endpoint = "{endpoint}" }}"#
        ),
    ));
    for (sim, group) in [(1u8, "fleet"), (2, "fleet"), (3, "raw")] {
        groups.push_str(&toml_sim(sim, group));
    }
    let run = common::start(&config(&certs, &kf, "linger_ms = 20", &groups)).await;

    for sim in 1..=3u8 {
        for seq in 0..PER_SIM {
            send(&run, sim, seq, "").await;
        }
    }
    let n = 3 * PER_SIM as usize;
    wait_for(&state, "every record", |s| s.received.len() >= n).await;
    // Give duplicates, if any, a moment to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;

    {
        let st = state.lock().unwrap();
        assert_eq!(st.received.len(), n);
        for r in st.received.iter().filter(|r| r.topic == "devices") {
            let v = &r.data;
            let sim = u8::try_from(v["payloads"]["sim"].as_u64().unwrap()).unwrap();
            let seq = v["payloads"]["seq"].as_u64().unwrap();
            assert_eq!(v["operatorId"], "OP0000000001", "{v}");
            assert_eq!(v["credentialsId"], "pubsub-demo", "{v}");
            assert_eq!(
                v["destination"],
                json!({"provider": "google", "service": "pubsub", "resourceUrl": "devices"}),
                "{v}"
            );
            assert_eq!(v["imsi"], imsi(sim), "{v}");
            let imei = v["imei"].as_str().unwrap();
            assert_eq!(imei.len(), 15, "{v}");
            assert!(imei.starts_with("35300000000"), "{v}");
            assert_eq!(
                v["sourceProtocol"],
                if seq % 2 == 0 { "udp" } else { "http" },
                "{v}"
            );
            assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
            assert_eq!(v["payloads"].as_object().unwrap().len(), 2, "{v}");
        }
        for r in st.received.iter().filter(|r| r.topic == "raw") {
            assert_eq!(
                r.data.as_object().unwrap().len(),
                2,
                "payload only: {}",
                r.data
            );
            assert_eq!(r.data["sim"], 3);
        }
        // One token served every batch of both destinations' sinks.
        assert!(
            (1..=2).contains(&st.assertions.len()),
            "{} token requests",
            st.assertions.len()
        );
    }
    let devices = arrivals(&state, "devices", false);
    assert_eq!(devices.len(), 2 * PER_SIM as usize);
    assert_exactly_once(&devices, 1, 0..u64::from(PER_SIM));
    assert_exactly_once(&devices, 2, 0..u64::from(PER_SIM));
    let raw = arrivals(&state, "raw", true);
    assert_eq!(raw.len(), PER_SIM as usize);
    assert_exactly_once(&raw, 3, 0..u64::from(PER_SIM));

    let delivered = common::metric(
        &run,
        "simgate_funnel_records_out_total",
        &["sink=\"pubsub\"", "result=\"delivered\""],
    )
    .await;
    assert_eq!(delivered, f64::from(3 * PER_SIM));
    run.server.shutdown().await;
}

/// The fleet's four phases on one simgate: an outage, throttling, a
/// permanently refused record, then short-lived tokens and a rotated key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_throttling_rejection_and_token_rotation() {
    let certs = Certs::generate();
    let (private1, public1) = rsa_key();
    let (private2, public2) = rsa_key();
    // Tokens live 2 s: the sink uses each for its first half, so phases
    // that last a few seconds see several exchanges.
    let (peer, state) = start_peer(
        &certs,
        vec![("key-1".into(), public1), ("key-2".into(), public2)],
        2,
    )
    .await;
    let token_uri = format!("{}/token", peer.url());
    let kf1 = key_file(&private1, "key-1", &token_uri);
    let endpoint = peer.url();
    let mut groups = toml_group(
        "fleet",
        &format!(
            r#"{{ provider = "google", service = "pubsub", resourceUrl = "projects/{PROJECT}/topics/devices", endpoint = "{endpoint}" }}"#
        ),
    );
    groups.push_str(&toml_sim(1, "fleet"));
    groups.push_str(&toml_sim(2, "fleet"));
    let funnel = "linger_ms = 10\nretry_base_ms = 20\nretry_max_ms = 200\nmax_attempts = 3";
    let run = common::start(&config(&certs, &kf1, funnel, &groups)).await;

    // (a) Outage: every record acknowledged during it arrives once after.
    state.lock().unwrap().mode = Mode::Outage;
    for seq in 0..10 {
        send(&run, 1, seq, "").await;
    }
    wait_for(&state, "503s", |s| {
        s.refused.get(&503).copied().unwrap_or(0) >= 3
    })
    .await;
    assert!(state.lock().unwrap().received.is_empty());
    state.lock().unwrap().mode = Mode::Normal;
    wait_for(&state, "recovery", |s| s.received.len() >= 10).await;
    assert_exactly_once(&arrivals(&state, "devices", false), 1, 0..10);

    // (b) Throttling: 429 RESOURCE_EXHAUSTED, counted as throttled
    // retries; everything arrives once.
    state.lock().unwrap().mode = Mode::Throttle(3);
    for seq in 10..20 {
        send(&run, 1, seq, "").await;
    }
    wait_for(&state, "throttled records", |s| s.received.len() >= 20).await;
    assert_eq!(state.lock().unwrap().refused.get(&429), Some(&3));
    assert_exactly_once(&arrivals(&state, "devices", false), 1, 0..20);
    let throttled = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &["sink=\"pubsub\"", "result=\"resource_exhausted\""],
    )
    .await;
    assert!(throttled >= 1.0, "throttled retries counted: {throttled}");
    let unavailable = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &["sink=\"pubsub\"", "result=\"unavailable\""],
    )
    .await;
    assert!(unavailable >= 3.0, "outage retries counted: {unavailable}");

    // (c) A record Pub/Sub refuses for good (400 INVALID_ARGUMENT) is
    // dead-lettered after its attempts, and only it.
    send(&run, 2, 1, r#","poison":true"#).await;
    let api = run.server.bound.api.unwrap();
    let auth = format!("Bearer {}", run.token());
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (status, _, body) = common::http_request(
            "127.0.0.1".parse().unwrap(),
            api,
            "GET",
            "localhost",
            "/v1/funnel/dead_letters",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let list: Value = serde_json::from_slice(&body).unwrap();
        if !list.as_array().unwrap().is_empty() {
            break list;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "rejected", "{dead:?}");
    assert!(
        dead[0]["detail"]
            .as_str()
            .unwrap()
            .contains("INVALID_ARGUMENT"),
        "{dead:?}"
    );
    let data = base64::engine::general_purpose::STANDARD
        .decode(dead[0]["data"].as_str().unwrap())
        .unwrap();
    let env: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(env["payloads"]["poison"], true);
    assert_eq!(env["imsi"], imsi(2));
    assert_eq!(
        state.lock().unwrap().refused.get(&400),
        Some(&3),
        "3 attempts"
    );

    // (d) Tokens expire every 2 s: spread over ~5 s, the records need
    // several exchanges, and none is published with an expired token.
    let before = state.lock().unwrap().assertions.len();
    for seq in 20..30 {
        send(&run, 1, seq, "").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for(&state, "records across token refreshes", |s| {
        s.received.len() >= 30
    })
    .await;
    let after = state.lock().unwrap().assertions.len();
    assert!(
        after - before >= 2,
        "tokens refreshed: {before} -> {after} exchanges"
    );
    assert_exactly_once(&arrivals(&state, "devices", false), 1, 0..30);
    assert!(
        state.lock().unwrap().assertions.iter().all(|&k| k == 0),
        "key 1 signed everything so far"
    );

    // The key is rotated through the API: later assertions are signed by
    // the new key, and the records sent after it carry its tokens.
    let kf2 = key_file(&private2, "key-2", &token_uri);
    let (status, _, body) = common::http_request(
        "127.0.0.1".parse().unwrap(),
        api,
        "PUT",
        "localhost",
        "/v1/credentials/pubsub-demo",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        json!({"type": "google-service-account-json", "credentials": {"credentials": kf2}})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    for seq in 30..40 {
        send(&run, 1, seq, "").await;
    }
    wait_for(&state, "records after the rotation", |s| {
        s.received.len() >= 40
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let st = state.lock().unwrap();
        assert_eq!(st.received.len(), 40, "each once");
        for r in &st.received {
            let seq = r.data["payloads"]["seq"].as_u64().unwrap();
            if seq >= 30 {
                assert_eq!(r.key, 1, "seq {seq} published with a token of the new key");
            }
        }
        assert_eq!(st.assertions.last(), Some(&1), "the new key signs now");
        // Refreshed ahead of expiry: the service never saw an expired token.
        assert_eq!(st.refused.get(&401), None, "{:?}", st.refused);
    }
    assert_exactly_once(&arrivals(&state, "devices", false), 1, 0..40);
    run.server.shutdown().await;
}

/// The sink on its own: batches that start together share one token
/// exchange, and a token the service refuses (401) is replaced once, then
/// the credential is blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_share_a_token_and_refused_tokens_are_replaced_once() {
    let certs = Certs::generate();
    let (private, public) = rsa_key();
    let (peer, state) = start_peer(&certs, vec![("key-1".into(), public)], 3600).await;
    let kf = key_file(&private, "key-1", &format!("{}/token", peer.url()));
    let roots = RootSources {
        system: false,
        ssl_cert_file: None,
        ca_file: Some(certs.ca()),
    };
    let upstream = Upstream::with_roots(&UpstreamSettings::default(), &roots).unwrap();
    let sink = Arc::new(
        PubsubSink::with_upstream(
            &upstream,
            "devices",
            Some(&peer.url()),
            &kf,
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let record = |i: u32| SinkRecord {
        partition_key: "001010000000001".into(),
        data: format!(r#"{{"payloads":{{"sim":1,"seq":{i}}}}}"#).into(),
    };

    let tasks: Vec<_> = (0..8u32)
        .map(|i| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move { sink.put_batch(&[record(2 * i), record(2 * i + 1)]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; 2])
        );
    }
    assert_eq!(state.lock().unwrap().assertions.len(), 1, "one exchange");
    assert_exactly_once(&arrivals(&state, "devices", false), 1, 0..16);

    // The service forgets every token (revoked): the batch fails as
    // transient and the next one gets a new token.
    state.lock().unwrap().tokens.clear();
    match sink.put_batch(&[record(16)]).await {
        BatchOutcome::Failed(e) => {
            assert_eq!(
                (e.kind, e.reason),
                (FailureKind::Transient, "unauthenticated")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sink.put_batch(&[record(16)]).await,
        BatchOutcome::PerRecord(vec![RecordOutcome::Delivered])
    );
    assert_eq!(state.lock().unwrap().assertions.len(), 2);

    // Refused again, and then a fresh token refused as well: the account
    // cannot publish, which no new token fixes.
    state.lock().unwrap().tokens.clear();
    let first = sink.put_batch(&[record(17)]).await;
    assert!(
        matches!(&first, BatchOutcome::Failed(e) if e.kind == FailureKind::Transient),
        "{first:?}"
    );
    // The peer now refuses every token it issues.
    state.lock().unwrap().expires_in = 0;
    let second = sink.put_batch(&[record(17)]).await;
    assert!(
        matches!(&second, BatchOutcome::Failed(e) if e.kind == FailureKind::Permanent && e.reason == "unauthenticated"),
        "{second:?}"
    );
    assert_eq!(state.lock().unwrap().assertions.len(), 3);
    assert_eq!(state.lock().unwrap().refused.get(&401), Some(&3));
}
