//! Funnel to Azure Event Hubs, end to end. No Event Hubs emulator can be
//! installed here, so an in-process HTTPS peer plays the service: it checks
//! each "Send batch events" request as Event Hubs does (the SAS token
//! recomputed with the policy key, its resource URI, policy name and
//! expiry; the content type; a JSON array of events within 1 MB) and answers
//! 201, or the service's own errors when a test injects a fault. The events
//! it accepted are read back and checked: SORACOM's envelope (or only the
//! payload), each record exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use support::certs::Certs;
use support::https_peer::{HttpsPeer, PeerRequest, PeerResponse};

const NAMESPACE_HOST: &str = "simgate-test.servicebus.windows.net";
const POLICY: &str = "funnel-send";
const KEY: &str = "b2xkLWtleS1vZi10aGUtc2VuZC1wb2xpY3k=";
const NEW_KEY: &str = "bmV3LWtleS1hZnRlci1yb3RhdGlvbg==";
const MAX_REQUEST_BYTES: usize = 1_048_576;

fn resource_url(hub: &str) -> String {
    format!("https://{NAMESPACE_HOST}/{hub}/messages")
}

/// One event the peer accepted.
#[derive(Debug, Clone)]
struct Event {
    hub: String,
    partition_key: String,
    body: String,
    /// The policy key whose signature verified.
    key: String,
}

/// The fake Event Hubs namespace: which keys it accepts and what it
/// accepted.
#[derive(Default)]
struct Namespace {
    keys: Mutex<Vec<String>>,
    events: Mutex<Vec<Event>>,
    /// Requests answered with an error by [`Namespace::handle`].
    refused: AtomicUsize,
}

impl Namespace {
    fn new(keys: &[&str]) -> Arc<Self> {
        let ns = Self::default();
        *ns.keys.lock().unwrap() = keys.iter().map(|k| (*k).to_owned()).collect();
        Arc::new(ns)
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Checks a request as Event Hubs does; on success stores its events
    /// and answers 201.
    fn handle(&self, req: &PeerRequest) -> PeerResponse {
        match self.check(req) {
            Ok(events) => {
                self.events.lock().unwrap().extend(events);
                PeerResponse::new(201, "")
            }
            Err((status, detail)) => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                PeerResponse::new(
                    status,
                    format!(
                    "<Error><Code>{status}</Code><Detail>{detail} TrackingId:test</Detail></Error>"
                ),
                )
                .with_header("content-type", "application/xml; charset=utf-8")
            }
        }
    }

    fn check(&self, req: &PeerRequest) -> Result<Vec<Event>, (u16, String)> {
        if req.method != "POST" {
            return Err((405, format!("method {}", req.method)));
        }
        let hub = req
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix("/messages"))
            .ok_or((404, format!("no such entity {}", req.path())))?
            .to_owned();
        let query = req.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        if !query.split('&').any(|kv| kv == "api-version=2014-01") {
            return Err((400, format!("api-version missing: {query}")));
        }
        let key = self.verify_sas(req.header("authorization"), &hub)?;
        if req.header("content-type") != Some("application/vnd.microsoft.servicebus.json") {
            return Err((
                400,
                format!("content type {:?}", req.header("content-type")),
            ));
        }
        if req.body.len() > MAX_REQUEST_BYTES {
            return Err((
                413,
                format!("MessageSizeExceeded: {} bytes", req.body.len()),
            ));
        }
        let events: Vec<serde_json::Value> = serde_json::from_slice(&req.body)
            .map_err(|e| (400, format!("batch is not a JSON array of events: {e}")))?;
        events
            .iter()
            .map(|e| {
                let body = e["Body"].as_str().ok_or((400, format!("no Body: {e}")))?;
                let partition_key = e["BrokerProperties"]["PartitionKey"]
                    .as_str()
                    .ok_or((400, format!("no PartitionKey: {e}")))?;
                Ok(Event {
                    hub: hub.clone(),
                    partition_key: partition_key.to_owned(),
                    body: body.to_owned(),
                    key: key.clone(),
                })
            })
            .collect()
    }

    /// `SharedAccessSignature sr=..&sig=..&se=..&skn=..`: returns the key
    /// that signed it, or Event Hubs' 401.
    fn verify_sas(&self, header: Option<&str>, hub: &str) -> Result<String, (u16, String)> {
        let unauthorized = |why: String| (401, format!("InvalidSignature: {why}"));
        let token = header
            .and_then(|h| h.strip_prefix("SharedAccessSignature "))
            .ok_or_else(|| unauthorized(format!("no SAS token: {header:?}")))?;
        let mut fields = BTreeMap::new();
        for kv in token.split('&') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| unauthorized(format!("bad field {kv}")))?;
            fields.insert(k, v);
        }
        let field = |k: &str| {
            fields
                .get(k)
                .copied()
                .ok_or_else(|| unauthorized(format!("no {k}")))
        };
        let (sr, sig, se, skn) = (field("sr")?, field("sig")?, field("se")?, field("skn")?);
        let resource = percent_decode(sr);
        if resource != resource_url(hub) {
            return Err(unauthorized(format!("sr {resource} is not this entity")));
        }
        if skn != POLICY {
            return Err(unauthorized(format!("unknown policy {skn}")));
        }
        let expiry: u64 = se.parse().map_err(|_| unauthorized(format!("se {se}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if expiry <= now {
            return Err((401, format!("ExpiredToken: expired at {expiry}")));
        }
        let sig = percent_decode(sig);
        let keys = self.keys.lock().unwrap().clone();
        keys.into_iter()
            .find(|key| {
                let k = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
                let tag = hmac::sign(&k, format!("{sr}\n{se}").as_bytes());
                base64::engine::general_purpose::STANDARD.encode(tag.as_ref()) == sig
            })
            .ok_or_else(|| unauthorized("The token has an invalid signature.".to_owned()))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn sim_ip(sim: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 6, sim))
}

fn imsi(sim: u8) -> String {
    format!("0010100000{:05}", 600 + u32::from(sim))
}

/// simgate with the peer trusted and `groups` (`(group, hub,
/// payloads_only)`) sending to it; `sims` are `(sim, group)`.
async fn start(
    certs: &Certs,
    peer: &HttpsPeer,
    funnel: &str,
    groups: &[(&str, &str, bool)],
    sims: &[(u8, &str)],
) -> common::Running {
    let mut body = format!(
        r#"
[upstream]
ca_file = {ca:?}

[funnel]
linger_ms = 20
retry_base_ms = 20
retry_max_ms = 200
{funnel}

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "eventhubs-demo"
type = "azure-credentials"
policyName = "{POLICY}"
key = "{KEY}"
"#,
        ca = certs.ca().display().to_string(),
    );
    for (group, hub, payloads_only) in groups {
        body.push_str(&format!(
            r#"
[[groups]]
id = "{group}"
[groups.funnel]
enabled = true
credentialsId = "eventhubs-demo"
destination = {{ provider = "azure", service = "eventhubs", resourceUrl = "{url}", payloadsOnly = {payloads_only}, endpoint = "{endpoint}" }}
"#,
            url = resource_url(hub),
            endpoint = peer.url(),
        ));
    }
    for (sim, group) in sims {
        body.push_str(&format!(
            "\n[[subscribers]]\nimsi = \"{imsi}\"\nimei = \"35300000000{sim:04}\"\ngroup_id = \"{group}\"\n\n[[sessions]]\nip = \"{ip}\"\nimsi = \"{imsi}\"\n",
            imsi = imsi(*sim),
            ip = sim_ip(*sim),
        ));
    }
    common::start(&body).await
}

/// Sends `payload` from `sim`, over UDP when `udp`, else HTTP; asserts it
/// was acknowledged.
async fn send(run: &common::Running, sim: u8, payload: &str, udp: bool) {
    let b = &run.server.bound;
    if udp {
        let reply =
            common::udp_request(sim_ip(sim), b.unified_udp.unwrap(), payload.as_bytes()).await;
        assert_eq!(
            reply.as_deref(),
            Some(&b"200"[..]),
            "udp sim {sim}: {payload}"
        );
    } else {
        let status = http_status(run, sim, payload.as_bytes()).await;
        assert_eq!(status, 204, "http sim {sim}: {payload}");
    }
}

async fn http_status(run: &common::Running, sim: u8, body: &[u8]) -> u16 {
    let (status, _, _) = common::http_request(
        sim_ip(sim),
        run.server.bound.http.unwrap(),
        "POST",
        "funnel.soracom.io",
        "/",
        &[("Content-Type", "application/json")],
        body,
    )
    .await;
    status
}

async fn wait_for(ns: &Namespace, n: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = ns.events();
        if events.len() >= n || Instant::now() > deadline {
            // A little longer, so that duplicates would show.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return ns.events();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(sim, seq)` of each event whose body is an envelope, asserting the
/// envelope's fields; counts per record.
fn envelope_counts(events: &[Event], hub: &str) -> BTreeMap<(u64, u64), usize> {
    let mut seen = BTreeMap::new();
    for e in events.iter().filter(|e| e.hub == hub) {
        let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        let sim = v["payloads"]["sim"].as_u64().unwrap();
        let seq = v["payloads"]["seq"].as_u64().unwrap();
        let sim8 = u8::try_from(sim).unwrap();
        assert_eq!(v["imsi"], imsi(sim8), "{v}");
        assert_eq!(e.partition_key, imsi(sim8), "partition key is the IMSI");
        assert_eq!(v["imei"].as_str().unwrap().len(), 15, "{v}");
        assert_eq!(v["operatorId"], "OP0000000001");
        assert_eq!(v["credentialsId"], "eventhubs-demo");
        assert_eq!(
            v["destination"],
            serde_json::json!({
                "provider": "azure",
                "service": "eventhubs",
                "resourceUrl": resource_url(hub),
            })
        );
        assert_eq!(
            v["sourceProtocol"],
            if seq % 2 == 0 { "udp" } else { "http" },
            "{v}"
        );
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        *seen.entry((sim, seq)).or_default() += 1;
    }
    seen
}

fn assert_exactly_once(seen: &BTreeMap<(u64, u64), usize>, expected: usize) {
    assert_eq!(
        seen.len(),
        expected,
        "{} of {expected} records arrived",
        seen.len()
    );
    assert!(seen.values().all(|&c| c == 1), "duplicates: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_and_payloads_reach_the_event_hub() {
    const PER_SIM: u64 = 12;
    let certs = Certs::generate();
    let ns = Namespace::new(&[KEY]);
    let handler = Arc::clone(&ns);
    let peer = HttpsPeer::start(&certs, move |r| handler.handle(r)).await;
    let run = start(
        &certs,
        &peer,
        "",
        &[("fleet", "devices", false), ("raw", "raw", true)],
        &[(1, "fleet"), (2, "fleet"), (3, "raw")],
    )
    .await;

    for sim in 1..=3u8 {
        for seq in 0..PER_SIM {
            send(
                &run,
                sim,
                &format!(r#"{{"sim":{sim},"seq":{seq}}}"#),
                seq % 2 == 0,
            )
            .await;
        }
    }
    let events = wait_for(&ns, 3 * PER_SIM as usize).await;
    assert_exactly_once(&envelope_counts(&events, "devices"), 2 * PER_SIM as usize);

    // payloadsOnly: the event body is the payload itself.
    let mut seqs: Vec<u64> = events
        .iter()
        .filter(|e| e.hub == "raw")
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
            assert_eq!(v["sim"], 3, "{v}");
            assert_eq!(v.as_object().unwrap().len(), 2, "payload only: {v}");
            assert_eq!(e.partition_key, imsi(3));
            v["seq"].as_u64().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..PER_SIM).collect::<Vec<_>>());
    assert_eq!(events.len(), 3 * PER_SIM as usize);

    // Every request was signed and framed as Event Hubs wants (the peer
    // answered 201 to each).
    assert_eq!(ns.refused.load(Ordering::SeqCst), 0);
    let requests = peer.requests();
    assert!(!requests.is_empty());
    assert!(requests.len() < events.len(), "records were batched");
    assert_eq!(
        common::metric(
            &run,
            "simgate_funnel_records_out_total",
            &["sink=\"eventhubs\"", "result=\"delivered\""],
        )
        .await,
        (3 * PER_SIM) as f64
    );
    run.server.shutdown().await;
}

/// Answers the first requests with `faults` (status and detail, in order),
/// then hands over to the namespace.
fn failing_first(
    ns: &Arc<Namespace>,
    faults: Vec<(u16, &'static str)>,
) -> impl Fn(&PeerRequest) -> PeerResponse + Send + Sync + 'static {
    let ns = Arc::clone(ns);
    let n = AtomicUsize::new(0);
    move |r| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        match faults.get(i) {
            Some((status, detail)) => PeerResponse::new(
                *status,
                format!("<Error><Code>{status}</Code><Detail>{detail} TrackingId:fault</Detail></Error>"),
            ),
            None => ns.handle(r),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_recovery_delivers_each_record_once() {
    const N: u64 = 30;
    let certs = Certs::generate();
    let ns = Namespace::new(&[KEY]);
    let busy = "The request was terminated because the entity is being throttled. Error code : 50002. ServerBusy";
    let internal = "The server was unable to process the request; please retry the operation.";
    let mut faults = vec![(503, busy); 3];
    faults.extend(vec![(500, internal); 4]);
    let peer = HttpsPeer::start(&certs, failing_first(&ns, faults)).await;
    let run = start(
        &certs,
        &peer,
        "max_attempts = 3",
        &[("fleet", "devices", false)],
        &[(1, "fleet"), (2, "fleet")],
    )
    .await;

    for seq in 0..N {
        send(
            &run,
            1 + (seq % 4 / 2) as u8,
            &format!(r#"{{"sim":{},"seq":{seq}}}"#, 1 + seq % 4 / 2),
            seq % 2 == 0,
        )
        .await;
    }
    let events = wait_for(&ns, N as usize).await;
    assert_exactly_once(&envelope_counts(&events, "devices"), N as usize);
    assert!(peer.requests().len() > 7, "the outage was seen");

    // The failed requests were retried (spending no attempts: three
    // allowed, seven failures) and none was dead-lettered.
    let retried = |label: &'static str| {
        let run = &run;
        async move {
            common::metric(
                run,
                "simgate_funnel_retries_total",
                &["sink=\"eventhubs\"", &format!("result=\"{label}\"")],
            )
            .await
        }
    };
    assert!(retried("server_busy").await > 0.0);
    assert!(retried("internal_error").await > 0.0);
    let out = |result: &'static str| {
        let run = &run;
        async move {
            common::metric(
                run,
                "simgate_funnel_records_out_total",
                &["sink=\"eventhubs\"", &format!("result=\"{result}\"")],
            )
            .await
        }
    };
    assert_eq!(out("delivered").await, N as f64);
    assert_eq!(out("dead_lettered").await, 0.0);
    run.server.shutdown().await;
}

async fn window(run: &common::Running) -> f64 {
    common::metric(run, "simgate_funnel_window", &["sink=\"eventhubs\""]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_shrinks_concurrency_and_records_still_arrive() {
    let certs = Certs::generate();
    let ns = Namespace::new(&[KEY]);
    // First a plain outage (500): it does not shrink the window.
    let peer = HttpsPeer::start(
        &certs,
        failing_first(&ns, vec![(500, "Internal error."); 3]),
    )
    .await;
    let run = start(
        &certs,
        &peer,
        "max_in_flight = 4",
        &[("fleet", "devices", false)],
        &[(1, "fleet")],
    )
    .await;
    for seq in 0..10u64 {
        send(
            &run,
            1,
            &format!(r#"{{"sim":1,"seq":{seq}}}"#),
            seq % 2 == 0,
        )
        .await;
    }
    wait_for(&ns, 10).await;
    assert_eq!(
        window(&run).await,
        4.0,
        "a 500 is not a reason to slow down"
    );

    // Then throttling (429, 503 ServerBusy, 403 QuotaExceeded in turn)
    // while ten records are sent: the window halves, and the records
    // arrive once Event Hubs accepts again.
    let throttles: [(u16, &str); 3] = [
        (429, "Too many requests."),
        (
            503,
            "ServerBusy: The request was terminated because the entity is being throttled.",
        ),
        (
            403,
            "QuotaExceeded: The namespace is over its throughput units.",
        ),
    ];
    let turn = AtomicUsize::new(0);
    peer.set_handler(move |_| {
        let (status, detail) = throttles[turn.fetch_add(1, Ordering::SeqCst) % 3];
        PeerResponse::new(
            status,
            format!("<Error><Code>{status}</Code><Detail>{detail} TrackingId:t</Detail></Error>"),
        )
    });
    let before = peer.requests().len();
    for seq in 10..20u64 {
        send(
            &run,
            1,
            &format!(r#"{{"sim":1,"seq":{seq}}}"#),
            seq % 2 == 0,
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer.requests().len() < before + 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handler = Arc::clone(&ns);
    peer.set_handler(move |r| handler.handle(r));
    let events = wait_for(&ns, 20).await;
    assert_exactly_once(&envelope_counts(&events, "devices"), 20);
    let after = window(&run).await;
    assert!(after < 4.0, "throttling halved the window: {after}");
    for label in ["throttled", "server_busy", "quota_exceeded"] {
        let n = common::metric(
            &run,
            "simgate_funnel_retries_total",
            &["sink=\"eventhubs\"", &format!("result=\"{label}\"")],
        )
        .await;
        assert!(n > 0.0, "{label}");
    }
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_record_is_refused_and_a_large_one_fits_one_request() {
    let certs = Certs::generate();
    let ns = Namespace::new(&[KEY]);
    let handler = Arc::clone(&ns);
    let peer = HttpsPeer::start(&certs, move |r| handler.handle(r)).await;
    let run = start(&certs, &peer, "", &[("raw", "raw", true)], &[(1, "raw")]).await;

    // Above the sink's record limit (492,287 bytes with the IMSI key) and
    // under Funnel's 800,000-byte HTTP cap: refused, never acknowledged,
    // counted, never sent.
    let oversize = format!(r#"{{"pad":"{}"}}"#, "x".repeat(600_000));
    assert_eq!(http_status(&run, 1, oversize.as_bytes()).await, 413);
    assert_eq!(
        common::metric(
            &run,
            "simgate_funnel_dropped_total",
            &["reason=\"too_large\""]
        )
        .await,
        1.0
    );

    // Just under the limit and quote-heavy (escaping grows it by half):
    // still one request of at most 1 MB, delivered intact.
    let item = r#""ab","#;
    let large = format!("[{}1]", item.repeat(480_000 / item.len()));
    assert!(large.len() < 492_000);
    assert_eq!(http_status(&run, 1, large.as_bytes()).await, 204);
    send(&run, 1, r#"{"after":1}"#, false).await;

    let events = wait_for(&ns, 2).await;
    assert_eq!(events.len(), 2, "the oversize record was never sent");
    let bodies: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.body).unwrap())
        .collect();
    assert!(bodies.contains(&serde_json::from_str::<serde_json::Value>(&large).unwrap()));
    assert!(bodies.contains(&serde_json::json!({"after": 1})));
    let largest = peer.requests().iter().map(|r| r.body.len()).max().unwrap();
    assert!(
        largest > large.len() * 13 / 10 && largest <= MAX_REQUEST_BYTES,
        "{largest}"
    );
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_signs_later_records() {
    let certs = Certs::generate();
    let ns = Namespace::new(&[KEY]);
    let handler = Arc::clone(&ns);
    let peer = HttpsPeer::start(&certs, move |r| handler.handle(r)).await;
    let run = start(
        &certs,
        &peer,
        "",
        &[("fleet", "devices", false)],
        &[(1, "fleet")],
    )
    .await;
    for seq in 0..10u64 {
        send(
            &run,
            1,
            &format!(r#"{{"sim":1,"seq":{seq}}}"#),
            seq % 2 == 0,
        )
        .await;
    }
    wait_for(&ns, 10).await;

    // The policy's key is regenerated: Event Hubs accepts only the new one
    // from now on, and the operator updates the credential through the API.
    *ns.keys.lock().unwrap() = vec![NEW_KEY.to_owned()];
    let auth = format!("Bearer {}", run.token());
    let body = format!(
        r#"{{"type":"azure-credentials","credentials":{{"policyName":"{POLICY}","key":"{NEW_KEY}"}}}}"#
    );
    let (status, _, resp) = common::http_request(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        run.server.bound.api.unwrap(),
        "PUT",
        "localhost",
        "/v1/credentials/eventhubs-demo",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        String::from_utf8_lossy(&resp)
    );

    for seq in 10..20u64 {
        send(
            &run,
            1,
            &format!(r#"{{"sim":1,"seq":{seq}}}"#),
            seq % 2 == 0,
        )
        .await;
    }
    let events = wait_for(&ns, 20).await;
    assert_exactly_once(&envelope_counts(&events, "devices"), 20);
    for e in &events {
        let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        let seq = v["payloads"]["seq"].as_u64().unwrap();
        let expected = if seq < 10 { KEY } else { NEW_KEY };
        assert_eq!(e.key, expected, "seq {seq} signed with the wrong key");
    }
    // No request was refused: none carried the old key after the switch.
    assert_eq!(ns.refused.load(Ordering::SeqCst), 0);
    run.server.shutdown().await;
}
