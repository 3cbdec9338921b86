//! Funnel to simgate's generic HTTPS sink, end to end: SIMs send over UDP
//! and HTTP through simgate, which POSTs to an in-process HTTPS receiver
//! ([`support::https_peer::HttpsPeer`], trusted through `[upstream]
//! ca_file`). The receiver does what a user's webhook would: it checks the
//! HMAC signature and the freshness of its timestamp, the configured extra
//! header, the Content-Type and the body's shape, and refuses what fails
//! with 401. Then the faults: an outage, throttling, a record refused for
//! good, and a key rotated through the API.
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
use serde_json::Value;
use support::certs::Certs;
use support::https_peer::{HttpsPeer, PeerRequest, PeerResponse};

const CREDENTIAL: &str = "hook-key";
const OPERATOR: &str = "OP0000000001";

fn sim_ip(sim: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 5, sim))
}

fn imsi(sim: u8) -> String {
    format!("0010100000{:05}", 500 + u32::from(sim))
}

/// The webhook: verifies every request, answers with the fault of the
/// moment (if any) or 2xx, and keeps the records it accepted.
struct Receiver {
    key: Mutex<String>,
    accepted: Mutex<Vec<Value>>,
    /// Requests that failed verification, with why.
    problems: Mutex<Vec<String>>,
}

impl Receiver {
    fn new(key: &str) -> Arc<Self> {
        Arc::new(Self {
            key: Mutex::new(key.to_owned()),
            accepted: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
        })
    }

    fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// Why `req` is not what simgate must send, if it is not.
    fn verify(&self, req: &PeerRequest) -> Result<Vec<Value>, String> {
        if req.method != "POST" {
            return Err(format!("method {}", req.method));
        }
        if req.header("content-type") != Some("application/json") {
            return Err(format!("content-type {:?}", req.header("content-type")));
        }
        if req.header("x-tenant") != Some("acme") {
            return Err(format!("x-tenant {:?}", req.header("x-tenant")));
        }
        let ts = req
            .header("x-simgate-timestamp")
            .ok_or("no timestamp")?
            .to_owned();
        let ts_num: u64 = ts.parse().map_err(|_| format!("timestamp {ts:?}"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now.abs_diff(ts_num) > 300 {
            return Err(format!("stale timestamp {ts} (now {now})"));
        }
        let sig = req
            .header("x-simgate-signature")
            .and_then(|s| s.strip_prefix("sha256="))
            .ok_or("no sha256= signature")?;
        let sig = hex::decode(sig).map_err(|_| "signature not hex".to_owned())?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.key.lock().unwrap().as_bytes());
        let mut msg = format!("{ts}.").into_bytes();
        msg.extend_from_slice(&req.body);
        hmac::verify(&key, &msg, &sig).map_err(|_| "signature does not verify".to_owned())?;
        let body: Value =
            serde_json::from_slice(&req.body).map_err(|e| format!("body not JSON: {e}"))?;
        match (req.path(), body) {
            ("/batch", Value::Array(items)) if !items.is_empty() => Ok(items),
            ("/record", v @ Value::Object(_)) => Ok(vec![v]),
            (path, v) => Err(format!("{path}: unexpected body shape {v}")),
        }
    }

    /// The peer's handler: 401 for a request that fails verification, else
    /// `fault`'s status if it has one, else 200 and the records kept.
    fn handler(
        self: &Arc<Self>,
        fault: impl Fn(&PeerRequest) -> Option<u16> + Send + Sync + 'static,
    ) -> impl Fn(&PeerRequest) -> PeerResponse + Send + Sync + 'static {
        let rx = Arc::clone(self);
        move |req| match rx.verify(req) {
            Err(why) => {
                rx.problems.lock().unwrap().push(why.clone());
                PeerResponse::new(401, why)
            }
            Ok(records) => match fault(req) {
                Some(status) => PeerResponse::new(status, "not now"),
                None => {
                    rx.accepted.lock().unwrap().extend(records);
                    PeerResponse::new(200, "")
                }
            },
        }
    }

    /// Waits until `n` records were accepted (or 30 s passed), then a little
    /// longer so that a duplicate would show.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.accepted.lock().unwrap().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.accepted()
    }
}

/// A group sending to `path` of the peer.
struct Group {
    id: &'static str,
    path: &'static str,
    mode: &'static str,
    sims: &'static [u8],
}

fn config(certs: &Certs, peer: &HttpsPeer, key: &str, groups: &[Group]) -> String {
    let mut body = format!(
        r#"
[upstream]
ca_file = {ca:?}

[funnel]
linger_ms = 20
retry_base_ms = 20
retry_max_ms = 200
max_attempts = 3

[[operators]]
id = "{OPERATOR}"

[[credentials]]
id = "{CREDENTIAL}"
type = "psk"
key = "{key}"
"#,
        ca = certs.ca().display().to_string(),
    );
    for g in groups {
        body.push_str(&format!(
            r#"
[[groups]]
id = "{id}"
[groups.funnel]
enabled = true
credentialsId = "{CREDENTIAL}"
destination = {{ service = "https", resourceUrl = "{url}{path}", requestMode = "{mode}", headers = {{ "X-Tenant" = "acme" }} }}
"#,
            id = g.id,
            url = peer.url(),
            path = g.path,
            mode = g.mode,
        ));
        for &sim in g.sims {
            body.push_str(&format!(
                "\n[[subscribers]]\nimsi = \"{imsi}\"\nimei = \"35300000000{sim:04}\"\ngroup_id = \"{group}\"\n\n[[sessions]]\nip = \"{ip}\"\nimsi = \"{imsi}\"\n",
                imsi = imsi(sim),
                ip = sim_ip(sim),
                group = g.id,
            ));
        }
    }
    body
}

/// Sends `payload` from `sim`: even `seq` over UDP, odd over HTTP; asserts
/// simgate acknowledged it.
async fn send(run: &common::Running, sim: u8, seq: u32, payload: &str) {
    let b = &run.server.bound;
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

async fn send_all(run: &common::Running, sims: &[u8], seqs: std::ops::Range<u32>) {
    for &sim in sims {
        for seq in seqs.clone() {
            send(run, sim, seq, &format!(r#"{{"sim":{sim},"seq":{seq}}}"#)).await;
        }
    }
}

/// Checks each envelope as SORACOM shapes it for `resource_url` and counts
/// `(sim, seq)`.
fn count_envelopes(envelopes: &[Value], resource_url: &str) -> BTreeMap<(u64, u64), usize> {
    let mut seen = BTreeMap::new();
    for v in envelopes {
        let sim = v["payloads"]["sim"]
            .as_u64()
            .unwrap_or_else(|| panic!("{v}"));
        let seq = v["payloads"]["seq"].as_u64().unwrap();
        assert_eq!(v["imsi"], imsi(u8::try_from(sim).unwrap()), "{v}");
        assert_eq!(v["imei"].as_str().unwrap().len(), 15, "{v}");
        assert_eq!(v["operatorId"], OPERATOR, "{v}");
        assert_eq!(v["credentialsId"], CREDENTIAL, "{v}");
        assert_eq!(
            v["destination"],
            serde_json::json!({"provider": "simgate", "service": "https", "resourceUrl": resource_url}),
            "{v}"
        );
        assert_eq!(
            v["sourceProtocol"],
            if seq % 2 == 0 { "udp" } else { "http" },
            "{v}"
        );
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000, "{v}");
        *seen.entry((sim, seq)).or_default() += 1;
    }
    seen
}

/// Every `(sim, seq)` of `sims` × `seqs` exactly once, and nothing else.
fn assert_exactly_once(
    seen: &BTreeMap<(u64, u64), usize>,
    sims: &[u8],
    seqs: std::ops::Range<u32>,
) {
    let expected: Vec<(u64, u64)> = sims
        .iter()
        .flat_map(|&s| seqs.clone().map(move |q| (u64::from(s), u64::from(q))))
        .collect();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        expected,
        "records that arrived"
    );
    assert!(seen.values().all(|&c| c == 1), "duplicates: {seen:?}");
}

async fn dead_lettered(run: &common::Running) -> f64 {
    common::metric(
        run,
        "simgate_funnel_records_out_total",
        &["sink=\"https\"", "result=\"dead_lettered\""],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_envelopes_arrive_once_in_batch_and_record_mode() {
    const N: u32 = 10;
    let certs = Certs::generate();
    let rx = Receiver::new("s3cret-psk");
    let peer = HttpsPeer::start(&certs, |_| PeerResponse::new(500, "not ready")).await;
    peer.set_handler(rx.handler(|_| None));
    let run = common::start(&config(
        &certs,
        &peer,
        "s3cret-psk",
        &[
            Group {
                id: "batched",
                path: "/batch",
                mode: "batch",
                sims: &[1, 2],
            },
            Group {
                id: "each",
                path: "/record",
                mode: "record",
                sims: &[3, 4],
            },
        ],
    ))
    .await;
    send_all(&run, &[1, 2, 3, 4], 0..N).await;
    let all = rx.wait_for(4 * N as usize).await;
    assert!(rx.problems().is_empty(), "{:?}", rx.problems());

    let url = peer.url();
    let (batched, each): (Vec<Value>, Vec<Value>) = all
        .into_iter()
        .partition(|v| v["destination"]["resourceUrl"] == format!("{url}/batch"));
    assert_exactly_once(
        &count_envelopes(&batched, &format!("{url}/batch")),
        &[1, 2],
        0..N,
    );
    assert_exactly_once(
        &count_envelopes(&each, &format!("{url}/record")),
        &[3, 4],
        0..N,
    );

    // Record mode: one request per record; batch mode: arrays.
    let requests = peer.requests();
    let per_record = requests.iter().filter(|r| r.path() == "/record").count();
    assert_eq!(per_record, 2 * N as usize);
    let batch_requests = requests.iter().filter(|r| r.path() == "/batch").count();
    assert!(
        (1..=2 * N as usize).contains(&batch_requests),
        "{batch_requests}"
    );
    assert_eq!(dead_lettered(&run).await, 0.0);
    let delivered = common::metric(
        &run,
        "simgate_funnel_records_out_total",
        &["sink=\"https\"", "result=\"delivered\""],
    )
    .await;
    assert_eq!(delivered, f64::from(4 * N));
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_then_recovery_loses_and_repeats_nothing() {
    const N: u32 = 12;
    let certs = Certs::generate();
    let rx = Receiver::new("k1");
    let peer = HttpsPeer::start(&certs, |_| PeerResponse::new(500, "")).await;
    peer.set_handler(rx.handler(|_| Some(503)));
    let run = common::start(&config(
        &certs,
        &peer,
        "k1",
        &[
            Group {
                id: "batched",
                path: "/batch",
                mode: "batch",
                sims: &[1, 2],
            },
            Group {
                id: "each",
                path: "/record",
                mode: "record",
                sims: &[3, 4],
            },
        ],
    ))
    .await;
    send_all(&run, &[1, 2, 3, 4], 0..N).await;
    // Down for a while: simgate keeps trying both, nothing is accepted.
    let tried = |path: &str| peer.requests().iter().filter(|r| r.path() == path).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (tried("/batch") < 3 || tried("/record") < 3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tried("/batch") >= 3 && tried("/record") >= 3,
        "simgate retried during the outage"
    );
    assert!(rx.accepted().is_empty());
    // Far longer than max_attempts = 3 backoffs of at most 200 ms: an
    // outage spends no record's attempts, in record mode too.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    peer.set_handler(rx.handler(|_| None));
    let all = rx.wait_for(4 * N as usize).await;
    assert!(rx.problems().is_empty(), "{:?}", rx.problems());
    let url = peer.url();
    let (batched, each): (Vec<Value>, Vec<Value>) = all
        .into_iter()
        .partition(|v| v["destination"]["resourceUrl"] == format!("{url}/batch"));
    assert_exactly_once(
        &count_envelopes(&batched, &format!("{url}/batch")),
        &[1, 2],
        0..N,
    );
    assert_exactly_once(
        &count_envelopes(&each, &format!("{url}/record")),
        &[3, 4],
        0..N,
    );
    assert_eq!(dead_lettered(&run).await, 0.0);
    let retried = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &["sink=\"https\"", "result=\"http_503\""],
    )
    .await;
    assert!(retried > 0.0, "503s counted as retries");
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_requests_are_retried_and_counted() {
    const N: u32 = 10;
    let certs = Certs::generate();
    let rx = Receiver::new("k1");
    let peer = HttpsPeer::start(&certs, |_| PeerResponse::new(500, "")).await;
    // Every other request is told to slow down.
    let n = AtomicUsize::new(0);
    peer.set_handler(
        rx.handler(move |_| (n.fetch_add(1, Ordering::SeqCst) % 2 == 0).then_some(429)),
    );
    let run = common::start(&config(
        &certs,
        &peer,
        "k1",
        &[Group {
            id: "g",
            path: "/batch",
            mode: "batch",
            sims: &[1, 2],
        }],
    ))
    .await;
    send_all(&run, &[1, 2], 0..N).await;
    let all = rx.wait_for(2 * N as usize).await;
    assert!(rx.problems().is_empty(), "{:?}", rx.problems());
    assert_exactly_once(
        &count_envelopes(&all, &format!("{}/batch", peer.url())),
        &[1, 2],
        0..N,
    );
    let throttled = common::metric(
        &run,
        "simgate_funnel_retries_total",
        &["sink=\"https\"", "result=\"throttled\""],
    )
    .await;
    assert!(throttled > 0.0, "throttling counted");
    assert_eq!(dead_lettered(&run).await, 0.0);
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_for_good_alone_goes_to_the_dead_letters() {
    const N: u32 = 10;
    const POISON: u32 = 5;
    let certs = Certs::generate();
    let rx = Receiver::new("k1");
    let peer = HttpsPeer::start(&certs, |_| PeerResponse::new(500, "")).await;
    peer.set_handler(rx.handler(|req| {
        String::from_utf8_lossy(&req.body)
            .contains("poison")
            .then_some(400)
    }));
    let run = common::start(&config(
        &certs,
        &peer,
        "k1",
        &[Group {
            id: "g",
            path: "/record",
            mode: "record",
            sims: &[1],
        }],
    ))
    .await;
    for seq in 0..N {
        let payload = if seq == POISON {
            format!(r#"{{"sim":1,"seq":{seq},"marker":"poison"}}"#)
        } else {
            format!(r#"{{"sim":1,"seq":{seq}}}"#)
        };
        send(&run, 1, seq, &payload).await;
    }
    let all = rx.wait_for(N as usize - 1).await;
    assert!(rx.problems().is_empty(), "{:?}", rx.problems());
    let seen = count_envelopes(&all, &format!("{}/record", peer.url()));
    let expected: Vec<(u64, u64)> = (0..N)
        .filter(|&s| s != POISON)
        .map(|s| (1, u64::from(s)))
        .collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert!(seen.values().all(|&c| c == 1), "{seen:?}");

    let token = run.token();
    let deadline = Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let (status, _, body) =
            common::api_get(&run, "/v1/funnel/dead_letters", Some(&token)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let list: Value = serde_json::from_slice(&body).unwrap();
        if !list.as_array().unwrap().is_empty() || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l["reason"], "rejected", "{l}");
    assert!(l["detail"].as_str().unwrap().contains("HTTP 400"), "{l}");
    assert_eq!(l["partitionKey"], imsi(1));
    let data = base64::engine::general_purpose::STANDARD
        .decode(l["data"].as_str().unwrap())
        .unwrap();
    let envelope: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(envelope["payloads"]["marker"], "poison");
    assert_eq!(envelope["payloads"]["seq"], POISON);
    assert_eq!(dead_lettered(&run).await, 1.0);
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_through_the_api_signs_later_records() {
    const N: u32 = 6;
    let certs = Certs::generate();
    let rx = Receiver::new("old-key");
    let peer = HttpsPeer::start(&certs, |_| PeerResponse::new(500, "")).await;
    peer.set_handler(rx.handler(|_| None));
    let run = common::start(&config(
        &certs,
        &peer,
        "old-key",
        &[Group {
            id: "g",
            path: "/batch",
            mode: "batch",
            sims: &[1, 2],
        }],
    ))
    .await;
    send_all(&run, &[1, 2], 0..N).await;
    assert_eq!(rx.wait_for(2 * N as usize).await.len(), 2 * N as usize);
    let before = peer.requests().len();

    // The receiver moves to the new key, then simgate is told.
    *rx.key.lock().unwrap() = "new-key".to_owned();
    let auth = format!("Bearer {}", run.token());
    let (status, _, body) = common::http_request(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        run.server.bound.api.unwrap(),
        "PUT",
        "localhost",
        &format!("/v1/credentials/{CREDENTIAL}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"{"type":"psk","credentials":{"key":"new-key"}}"#,
    )
    .await;
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );

    send_all(&run, &[1, 2], N..2 * N).await;
    let all = rx.wait_for(4 * N as usize).await;
    assert!(
        rx.problems().is_empty(),
        "later requests verify with the new key: {:?}",
        rx.problems()
    );
    assert!(peer.requests().len() > before);
    assert_exactly_once(
        &count_envelopes(&all, &format!("{}/batch", peer.url())),
        &[1, 2],
        0..2 * N,
    );
    assert_eq!(dead_lettered(&run).await, 0.0);
    run.server.shutdown().await;
}
