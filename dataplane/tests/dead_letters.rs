//! Funnel dead letters end to end: a sink that rejects every record fills
//! the dead-letter store; the API (and `simgate dlq`, the built binary)
//! lists them, sums them up, replays them once the sink accepts again —
//! each delivered exactly once — and purges them, all behind the token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test
mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use simgate::server::{self, Server};
use simgate::sinks::factory::{SinkBuildError, SinkFactory};
use simgate::sinks::{BatchLimits, BatchOutcome, RecordOutcome, Sink, SinkFuture, SinkRecord};
use simgate_control::{Config, Credential, Destination};

const RESOURCE_URL: &str = common::FUNNEL_RESOURCE_URL;

/// Rejects every record until told to accept; counts what it accepted.
#[derive(Default)]
struct Switchable {
    accept: AtomicBool,
    /// `payloads` of the envelope → times delivered.
    delivered: Mutex<HashMap<String, usize>>,
}

impl Switchable {
    fn delivered(&self) -> HashMap<String, usize> {
        self.delivered.lock().unwrap().clone()
    }
}

fn payloads_of(data: &[u8]) -> String {
    let v: Value = serde_json::from_slice(data).unwrap();
    v["payloads"].to_string()
}

impl Sink for Switchable {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            if !self.accept.load(Ordering::SeqCst) {
                return BatchOutcome::PerRecord(vec![
                    RecordOutcome::Rejected(
                        "ValidationException: injected".into()
                    );
                    records.len()
                ]);
            }
            let mut delivered = self.delivered.lock().unwrap();
            for r in records {
                *delivered.entry(payloads_of(&r.data)).or_default() += 1;
            }
            BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; records.len()])
        })
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_records: 50,
            max_bytes: 1 << 20,
            max_record_bytes: 64 << 10,
        }
    }

    fn kind(&self) -> &'static str {
        "switchable"
    }
}

struct Factory(Arc<Switchable>);

impl SinkFactory for Factory {
    fn build(
        &self,
        _: &Destination,
        _: Option<&Credential>,
        _: Duration,
    ) -> Result<Arc<dyn Sink>, SinkBuildError> {
        Ok(Arc::clone(&self.0) as Arc<dyn Sink>)
    }
}

fn config(dir: &Path) -> Config {
    common::funnel_config(dir, "")
}

struct Running {
    srv: Server,
    sink: Arc<Switchable>,
    dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Switchable::default());
        let srv = server::start_with(config(dir.path()), Arc::new(Factory(Arc::clone(&sink))))
            .await
            .unwrap();
        Self { srv, sink, dir }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Dead letters in the store, read directly (not through the API).
    fn stored(&self) -> usize {
        self.srv.services.funnel.dead_letters.list().unwrap().len()
    }

    /// Sends `n` Funnel records `{"batch":…,"i":…}` over HTTP, each
    /// acknowledged; returns their `payloads` as the sink would see them.
    async fn send(&self, batch: &str, n: usize) -> Vec<String> {
        let mut sent = Vec::new();
        for i in 0..n {
            let body = json!({ "batch": batch, "i": i });
            let (status, _, reply) = common::http_request(
                local(),
                self.srv.bound.http.unwrap(),
                "POST",
                "funnel.localhost",
                "/",
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            )
            .await;
            assert_eq!(status, 204, "{}", String::from_utf8_lossy(&reply));
            sent.push(body.to_string());
        }
        sent
    }

    /// Sends `n` records while the sink rejects, and waits until all of
    /// them (and any already there) are dead letters.
    async fn dead_letter(&self, batch: &str, n: usize) -> Vec<String> {
        self.sink.accept.store(false, Ordering::SeqCst);
        let before = self.stored();
        let sent = self.send(batch, n).await;
        wait_until(Duration::from_secs(15), || self.stored() == before + n).await;
        assert_eq!(self.stored(), before + n, "records were dead-lettered");
        sent
    }

    /// One API call; the token is sent when given. Returns (status, next
    /// key, JSON body or null).
    async fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Option<String>, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let payload = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let (status, headers, reply) = common::http_request(
            local(),
            self.srv.bound.api.unwrap(),
            method,
            "localhost",
            path,
            &headers,
            payload.as_bytes(),
        )
        .await;
        let next = common::header(&headers, "x-soracom-next-key").map(str::to_owned);
        let json = if reply.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&reply)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&reply)))
        };
        (status, next, json)
    }

    /// `simgate_funnel_dead_letters_stored` from `/metrics`.
    async fn stored_metric(&self) -> u64 {
        let (status, _, body) = common::http_request(
            local(),
            self.srv.bound.api.unwrap(),
            "GET",
            "localhost",
            "/metrics",
            &[],
            b"",
        )
        .await;
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("simgate_funnel_dead_letters_stored "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the gauge is exported")
    }

    async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let token = self.token();
        let (status, _, json) = self.api(method, path, Some(&token), body).await;
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

async fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `payloads` of each listed dead letter, decoded from its `data`.
fn listed_payloads(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(l["data"].as_str().unwrap())
                .unwrap();
            payloads_of(&data)
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_are_listed_replayed_once_and_purged() {
    let run = Running::start().await;
    let first = run.dead_letter("a", 5).await;

    // Listed with the sink's reason, the record as it was sent, and its
    // destination id.
    let list = run.ok("GET", "/v1/funnel/dead_letters", None).await;
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 5, "{list}");
    let id = items[0]["destinationId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    for l in items {
        assert_eq!(l["destinationId"], id.as_str());
        assert_eq!(l["reason"], "rejected");
        assert!(
            l["detail"]
                .as_str()
                .unwrap()
                .contains("ValidationException"),
            "{l}"
        );
        assert_eq!(l["partitionKey"], "001010000000001");
        assert_eq!(l["credentialsId"], "c");
        assert_eq!(l["destination"]["resource_url"], RESOURCE_URL);
    }
    assert_eq!(sorted(listed_payloads(&list)), sorted(first.clone()));

    // Pages of two, joined by x-soracom-next-key.
    let token = run.token();
    let mut paged = Vec::new();
    let mut key: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &key {
            Some(k) => format!("/v1/funnel/dead_letters?limit=2&last_evaluated_key={k}"),
            None => "/v1/funnel/dead_letters?limit=2".to_owned(),
        };
        let (status, next, page) = run.api("GET", &path, Some(&token), None).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.as_array().unwrap().len() <= 2);
        paged.extend(page.as_array().unwrap().iter().cloned());
        pages += 1;
        match next {
            Some(k) => key = Some(k),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(Value::Array(paged), list, "pages join to the full list");

    // Filters.
    let by_id = run
        .ok(
            "GET",
            &format!("/v1/funnel/dead_letters?destination_id={id}"),
            None,
        )
        .await;
    assert_eq!(by_id.as_array().unwrap().len(), 5);
    for path in [
        "/v1/funnel/dead_letters?destination_id=nope",
        "/v1/funnel/dead_letters?reason=expired",
    ] {
        assert_eq!(run.ok("GET", path, None).await, json!([]), "{path}");
    }

    // Bad paging input is a JSON 400.
    for (path, code) in [
        ("/v1/funnel/dead_letters?limit=0", "invalid_limit"),
        ("/v1/funnel/dead_letters?limit=1001", "invalid_limit"),
        (
            "/v1/funnel/dead_letters?last_evaluated_key=x",
            "invalid_last_evaluated_key",
        ),
    ] {
        let (status, _, json) = run.api("GET", path, Some(&token), None).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(json["code"], code, "{path}");
    }

    let summary = run.ok("GET", "/v1/funnel/dead_letters/summary", None).await;
    assert_eq!(
        summary,
        json!([{
            "destinationId": id,
            "destination": {"provider": "aws", "service": "kinesis", "resource_url": RESOURCE_URL, "endpoint": null},
            "credentialsId": "c",
            "count": 5
        }])
    );

    // A replay that matches nothing sends nothing.
    let report = run
        .ok(
            "POST",
            "/v1/funnel/dead_letters/replay",
            Some(&json!({"reason": "expired"})),
        )
        .await;
    assert_eq!(report, json!({"replayed": 0, "failed": 0}));
    assert_eq!(run.stored(), 5);
    assert_eq!(run.stored_metric().await, 5);

    // The sink is fixed: a replay (no body: every dead letter) delivers
    // each exactly once and empties the store.
    run.sink.accept.store(true, Ordering::SeqCst);
    let report = run.ok("POST", "/v1/funnel/dead_letters/replay", None).await;
    assert_eq!(report, json!({"replayed": 5, "failed": 0}));
    wait_until(Duration::from_secs(15), || {
        run.sink.delivered().len() == first.len()
    })
    .await;
    // Time for a duplicate to show up, if one were sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered = run.sink.delivered();
    for p in &first {
        assert_eq!(delivered.get(p), Some(&1), "{p}: {delivered:?}");
    }
    assert_eq!(delivered.len(), first.len());
    assert_eq!(
        run.ok("GET", "/v1/funnel/dead_letters", None).await,
        json!([])
    );
    assert_eq!(
        run.ok("GET", "/v1/funnel/dead_letters/summary", None).await,
        json!([])
    );

    // A second batch is purged, not replayed.
    let second = run.dead_letter("b", 3).await;
    let purged = run
        .ok("DELETE", "/v1/funnel/dead_letters?reason=expired", None)
        .await;
    assert_eq!(purged, json!({"purged": 0}));
    assert_eq!(run.stored(), 3);
    let purged = run
        .ok(
            "DELETE",
            &format!("/v1/funnel/dead_letters?destination_id={id}&reason=rejected"),
            None,
        )
        .await;
    assert_eq!(purged, json!({"purged": 3}));
    assert_eq!(run.stored(), 0);
    assert_eq!(run.stored_metric().await, 0);
    assert_eq!(
        run.ok("GET", "/v1/funnel/dead_letters", None).await,
        json!([])
    );
    let delivered = run.sink.delivered();
    assert!(second.iter().all(|p| !delivered.contains_key(p)));

    run.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_need_the_token() {
    let run = Running::start().await;
    run.dead_letter("a", 2).await;
    for (method, path) in [
        ("GET", "/v1/funnel/dead_letters"),
        ("GET", "/v1/funnel/dead_letters/summary"),
        ("POST", "/v1/funnel/dead_letters/replay"),
        ("DELETE", "/v1/funnel/dead_letters"),
    ] {
        let (status, _, json) = run.api(method, path, None, None).await;
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(json["code"], "missing_token", "{method} {path}");
        let (status, _, json) = run.api(method, path, Some("sgt_wrong"), None).await;
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(json["code"], "invalid_token", "{method} {path}");
    }
    // Nothing was replayed or purged.
    assert_eq!(run.stored(), 2);
    assert!(run.sink.delivered().is_empty());

    // A replay body that is not the filter is a JSON 400, not a replay.
    let token = run.token();
    let (status, _, json) = run
        .api(
            "POST",
            "/v1/funnel/dead_letters/replay",
            Some(&token),
            Some(&json!({"destination": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["code"], "invalid_json");
    assert_eq!(run.stored(), 2);
    run.srv.shutdown().await;
}

/// Runs the built `simgate ARGS` against this run's API and data dir.
async fn simgate(run: &Running, args: &[&str], env: &[(&str, &str)]) -> common::CliOut {
    common::simgate_cli(run.srv.bound.api.unwrap(), run.dir.path(), args, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_list_replay_and_purge() {
    let run = Running::start().await;
    let first = run.dead_letter("a", 3).await;

    let out = simgate(&run, &["dlq", "summary"], &[]).await.ok();
    let mut lines = out.stdout.lines();
    assert!(
        lines.next().unwrap().starts_with("DESTINATION ID"),
        "{}",
        out.stdout
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[1..],
        ["kinesis", RESOURCE_URL, "c", "3"],
        "{}",
        out.stdout
    );
    let id = row[0].to_owned();

    let out = simgate(&run, &["dlq", "list"], &[]).await.ok();
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    assert!(out
        .stdout
        .lines()
        .skip(1)
        .all(|l| l.contains("rejected") && l.contains(&id)));
    let out = simgate(&run, &["dlq", "list", "--json"], &[]).await.ok();
    assert_eq!(sorted(listed_payloads(&out.json())), sorted(first.clone()));
    let out = simgate(&run, &["dlq", "list", "--limit", "2", "--json"], &[])
        .await
        .ok();
    assert_eq!(out.json().as_array().unwrap().len(), 2);
    let out = simgate(&run, &["dlq", "list", "--reason", "expired", "--json"], &[])
        .await
        .ok();
    assert_eq!(out.json(), json!([]));

    // Purging needs --yes; nothing is sent without it.
    let out = simgate(&run, &["dlq", "purge", "--reason", "rejected"], &[]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(run.stored(), 3);

    // A wrong token: the API's 401.
    let out = simgate(&run, &["dlq", "list"], &[("SIMGATE_TOKEN", "sgt_wrong")]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);

    run.sink.accept.store(true, Ordering::SeqCst);
    let out = simgate(&run, &["dlq", "replay", "--destination-id", &id], &[])
        .await
        .ok();
    assert_eq!(out.stdout, "replayed 3 dead letters\n");
    wait_until(Duration::from_secs(15), || {
        run.sink.delivered().len() == first.len()
    })
    .await;
    assert!(run.sink.delivered().values().all(|&n| n == 1));
    assert_eq!(run.stored(), 0);

    run.dead_letter("b", 2).await;
    let out = simgate(
        &run,
        &["dlq", "purge", "--yes", "--reason", "rejected"],
        &[],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "purged 2 dead letters\n");
    assert_eq!(run.stored(), 0);
    let out = simgate(&run, &["dlq", "list", "--json"], &[]).await.ok();
    assert_eq!(out.json(), json!([]));

    run.srv.shutdown().await;
}
