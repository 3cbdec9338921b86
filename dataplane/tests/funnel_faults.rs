//! Funnel delivery under faults no emulator produces: throttled records,
//! partial batch failures, an outage, permanent rejections, a stalled sink
//! and shutdown. The property throughout: every acknowledged record is
//! delivered exactly once or counted as failed — never silently lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test
mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simgate::server;
use simgate::sinks::factory::{SinkBuildError, SinkFactory};
use simgate::sinks::{
    BatchLimits, BatchOutcome, FailureKind, RecordOutcome, RetryReason, Sink, SinkError,
    SinkFuture, SinkRecord,
};
use simgate_control::{Config, Credential, Destination};

/// What the fault sink does with request number `n` (0-based) and its records.
type Behaviour = dyn Fn(usize, &[SinkRecord]) -> Option<BatchOutcome> + Send + Sync;

struct FaultSink {
    behaviour: Box<Behaviour>,
    requests: AtomicUsize,
    /// Payload → times delivered.
    delivered: Mutex<HashMap<Vec<u8>, usize>>,
    /// Payload → times seen in any request.
    seen: Mutex<HashMap<Vec<u8>, usize>>,
    /// Payload → times sent and not delivered.
    not_delivered: Mutex<HashMap<Vec<u8>, usize>>,
    stall: Option<Duration>,
}

impl FaultSink {
    fn new(behaviour: Box<Behaviour>) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            requests: AtomicUsize::new(0),
            delivered: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            not_delivered: Mutex::new(HashMap::new()),
            stall: None,
        })
    }

    fn delivered(&self) -> HashMap<Vec<u8>, usize> {
        self.delivered.lock().unwrap().clone()
    }
}

fn payload_of(r: &SinkRecord) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
    serde_json::to_vec(&v["payloads"]).unwrap()
}

impl Sink for FaultSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            if let Some(d) = self.stall {
                tokio::time::sleep(d).await;
            }
            let n = self.requests.fetch_add(1, Ordering::SeqCst);
            {
                let mut seen = self.seen.lock().unwrap();
                for r in records {
                    *seen.entry(payload_of(r)).or_default() += 1;
                }
            }
            let outcome = (self.behaviour)(n, records).unwrap_or_else(|| {
                BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; records.len()])
            });
            let mut delivered = self.delivered.lock().unwrap();
            let mut not_delivered = self.not_delivered.lock().unwrap();
            for (i, r) in records.iter().enumerate() {
                if outcome.record(i) == RecordOutcome::Delivered {
                    *delivered.entry(payload_of(r)).or_default() += 1;
                } else {
                    *not_delivered.entry(payload_of(r)).or_default() += 1;
                }
            }
            outcome
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
        "fault"
    }
}

struct Factory(Arc<FaultSink>, AtomicUsize);

impl Factory {
    fn new(sink: &Arc<FaultSink>) -> Arc<Self> {
        Arc::new(Self(Arc::clone(sink), AtomicUsize::new(0)))
    }
}

impl SinkFactory for Factory {
    fn build(
        &self,
        _: &Destination,
        _: Option<&Credential>,
        _: Duration,
    ) -> Result<Arc<dyn Sink>, SinkBuildError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::clone(&self.0) as Arc<dyn Sink>)
    }
}

fn config(dir: &std::path::Path, extra_funnel: &str) -> Config {
    common::funnel_config(dir, extra_funnel)
}

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// Sends `n` records over HTTP; returns the payloads that were acknowledged.
async fn send(http: std::net::SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let mut acked = Vec::new();
    for i in 0..n {
        let body = format!(r#"{{"i":{i}}}"#);
        let (status, _, _) = common::http_request(
            local(),
            http,
            "POST",
            "funnel.localhost",
            "/",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await;
        if status == 204 {
            acked.push(body.into_bytes());
        }
    }
    acked
}

async fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_partially_failed_records_are_retried_exactly_once() {
    // Every other request: the odd records are throttled; every fifth
    // request fails as a whole (transient).
    let sink = FaultSink::new(Box::new(|n, records| {
        if n % 5 == 4 {
            return Some(BatchOutcome::Failed(SinkError {
                kind: FailureKind::Transient,
                reason: "http_5xx",
                message: "injected 503".into(),
            }));
        }
        (n % 2 == 0).then(|| {
            BatchOutcome::PerRecord(
                (0..records.len())
                    .map(|i| {
                        if i % 2 == 1 {
                            RecordOutcome::Retryable(RetryReason::throttled("throughput_exceeded"))
                        } else {
                            RecordOutcome::Delivered
                        }
                    })
                    .collect(),
            )
        })
    }));
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start_with(config(dir.path(), "max_attempts = 20"), Factory::new(&sink))
        .await
        .unwrap();
    let acked = send(srv.bound.http.unwrap(), 300).await;
    assert_eq!(acked.len(), 300);
    wait_until(Duration::from_secs(20), || {
        sink.delivered().len() == acked.len()
    })
    .await;
    let delivered = sink.delivered();
    let seen = sink.seen.lock().unwrap().clone();
    let not_delivered = sink.not_delivered.lock().unwrap().clone();
    let mut resent = 0;
    for p in &acked {
        assert_eq!(delivered.get(p), Some(&1), "{}", String::from_utf8_lossy(p));
        // Sent once per failure plus the delivery: a delivered record is
        // never sent again, and only failed records were re-sent.
        let failures = not_delivered.get(p).copied().unwrap_or(0);
        assert_eq!(seen[p], failures + 1, "{}", String::from_utf8_lossy(p));
        resent += failures;
    }
    assert!(resent > 0, "the faults were injected");
    let retries = srv.services.metrics.encode();
    assert!(
        retries.contains("simgate_funnel_retries_total{sink=\"fault\""),
        "{retries}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_recovery_loses_nothing() {
    let started = Instant::now();
    let sink = FaultSink::new(Box::new(move |_, _| {
        (started.elapsed() < Duration::from_millis(800)).then(|| {
            BatchOutcome::Failed(SinkError {
                kind: FailureKind::Transient,
                reason: "connect",
                message: "injected outage".into(),
            })
        })
    }));
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start_with(
        config(dir.path(), "max_attempts = 1000"),
        Factory::new(&sink),
    )
    .await
    .unwrap();
    let acked = send(srv.bound.http.unwrap(), 100).await;
    wait_until(Duration::from_secs(20), || {
        sink.delivered().len() == acked.len()
    })
    .await;
    let delivered = sink.delivered();
    assert_eq!(delivered.len(), acked.len());
    assert!(delivered.values().all(|&n| n == 1));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_are_dead_lettered_not_retried() {
    let sink = FaultSink::new(Box::new(|_, records| {
        Some(BatchOutcome::PerRecord(vec![
            RecordOutcome::Rejected(
                "ValidationException: nope".into()
            );
            records.len()
        ]))
    }));
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start_with(config(dir.path(), ""), Factory::new(&sink))
        .await
        .unwrap();
    let acked = send(srv.bound.http.unwrap(), 20).await;
    assert_eq!(acked.len(), 20);
    let metrics = Arc::clone(&srv.services.metrics);
    let failed = || {
        metrics
            .encode()
            .lines()
            .find(|l| {
                l.starts_with("simgate_funnel_records_out_total")
                    && l.contains("result=\"dead_lettered\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(10), || failed() == 20).await;
    assert_eq!(failed(), 20);
    assert!(
        sink.seen.lock().unwrap().values().all(|&n| n == 1),
        "rejected records must not be re-sent"
    );
    // Each is in the dead-letter store with the sink's reason.
    let letters = srv.services.funnel.dead_letters.list().unwrap();
    assert_eq!(letters.len(), 20);
    assert!(letters
        .iter()
        .all(|(_, l)| l.reason == "rejected" && l.detail.contains("ValidationException")));
    srv.shutdown().await;
}

/// simgate with a 20-record memory queue in front of a sink that never
/// answers: nothing leaves the queue.
async fn stalled_memory_queue_of_20() -> (server::Server, tempfile::TempDir) {
    let mut sink = FaultSink::new(Box::new(|_, _| None));
    Arc::get_mut(&mut sink).unwrap().stall = Some(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "durability = \"memory\"\nqueue_records = 20\nmax_in_flight = 1\nshutdown_grace_ms = 100",
    );
    let srv = server::start_with(cfg, Factory::new(&sink)).await.unwrap();
    (srv, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_and_memory_stays_bounded() {
    let (srv, _dir) = stalled_memory_queue_of_20().await;
    let http = srv.bound.http.unwrap();
    let mut statuses = HashMap::new();
    let mut retry_after = None;
    for i in 0..40 {
        let (status, headers, _) = common::http_request(
            local(),
            http,
            "POST",
            "funnel.localhost",
            "/",
            &[],
            format!("{i}").as_bytes(),
        )
        .await;
        *statuses.entry(status).or_insert(0) += 1;
        if status == 429 {
            retry_after = common::header(&headers, "retry-after").map(str::to_owned);
        }
    }
    assert_eq!(statuses.get(&204), Some(&20), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&20), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // UDP is dropped and counted.
    let reply = common::udp_request(local(), srv.bound.unified_udp.unwrap(), b"x").await;
    assert_eq!(reply, None);
    let text = srv.services.metrics.encode();
    assert!(
        text.contains("simgate_funnel_dropped_total{reason=\"queue_full\"} 21"),
        "{text}"
    );
    assert!(text.contains("simgate_funnel_queue_records{sink=\"fault\",destination=\"https://kinesis.us-east-1.amazonaws.com/s\"} 20"), "{text}");
    // The stalled records are reported lost at shutdown, not silently.
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_was_acknowledged() {
    let sink = FaultSink::new(Box::new(|_, _| None));
    let dir = tempfile::tempdir().unwrap();
    // A long linger: records sit in an open batch until shutdown flushes it.
    let cfg = config(dir.path(), "shutdown_grace_ms = 5000");
    let mut cfg = cfg;
    cfg.funnel.linger_ms = 60_000;
    let srv = server::start_with(cfg, Factory::new(&sink)).await.unwrap();
    let acked = send(srv.bound.http.unwrap(), 30).await;
    assert_eq!(acked.len(), 30);
    assert!(sink.delivered().is_empty());
    srv.shutdown().await;
    assert_eq!(sink.delivered().len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_credentials_take_effect_without_losing_records() {
    let sink = FaultSink::new(Box::new(|_, _| None));
    let dir = tempfile::tempdir().unwrap();
    let factory = Factory::new(&sink);
    let srv = server::start_with(
        config(dir.path(), ""),
        Arc::clone(&factory) as Arc<dyn SinkFactory>,
    )
    .await
    .unwrap();
    let http = srv.bound.http.unwrap();
    let mut acked = send(http, 20).await;
    assert_eq!(factory.1.load(Ordering::SeqCst), 1);

    // Rotate the key through the API: the next record gets a new sink.
    let token = std::fs::read_to_string(dir.path().join("api.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let (status, _, body) = common::http_request(
        local(),
        srv.bound.api.unwrap(),
        "PUT",
        "localhost",
        "/v1/credentials/c",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        br#"{"type":"aws-credentials","credentials":{"accessKeyId":"new","secretAccessKey":"rotated"}}"#,
    )
    .await;
    assert!(
        status == 200 || status == 201,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    for i in 20..40 {
        let body = format!(r#"{{"i":{i}}}"#);
        let (status, _, _) = common::http_request(
            local(),
            http,
            "POST",
            "funnel.localhost",
            "/",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 204);
        acked.push(body.into_bytes());
    }
    assert_eq!(
        factory.1.load(Ordering::SeqCst),
        2,
        "a new sink for the new credentials"
    );
    wait_until(Duration::from_secs(10), || {
        sink.delivered().len() == acked.len()
    })
    .await;
    let delivered = sink.delivered();
    assert_eq!(delivered.len(), 40);
    assert!(delivered.values().all(|&n| n == 1));
    srv.shutdown().await;
}

struct Broken;

impl SinkFactory for Broken {
    fn build(
        &self,
        _: &Destination,
        _: Option<&Credential>,
        _: Duration,
    ) -> Result<Arc<dyn Sink>, SinkBuildError> {
        Err(SinkBuildError::Other("no such service".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_destination_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start_with(config(dir.path(), ""), Arc::new(Broken))
        .await
        .unwrap();
    for _ in 0..3 {
        let (status, _, body) = common::http_request(
            local(),
            srv.bound.http.unwrap(),
            "POST",
            "funnel.localhost",
            "/",
            &[],
            b"x",
        )
        .await;
        assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    }
    let text = srv.services.metrics.encode();
    assert!(
        text.contains("simgate_funnel_dropped_total{reason=\"destination_unavailable\"} 3"),
        "{text}"
    );
    srv.shutdown().await;
}

/// Sends `n` small records over HTTP as fast as it can; returns statuses.
async fn flood(http: std::net::SocketAddr, n: usize) -> HashMap<u16, usize> {
    let mut statuses = HashMap::new();
    for i in 0..n {
        let body = format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(200));
        let (status, _, _) = common::http_request(
            local(),
            http,
            "POST",
            "funnel.localhost",
            "/",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await;
        *statuses.entry(status).or_insert(0) += 1;
    }
    statuses
}

fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_fills_the_spool_budget_then_devices_get_429_and_memory_stays_bounded() {
    let mut sink = FaultSink::new(Box::new(|_, _| None));
    Arc::get_mut(&mut sink).unwrap().stall = Some(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "durability = \"spool\"\nqueue_records = 10\nmax_in_flight = 1\nshutdown_grace_ms = 100\n\
         spool_max_bytes = 65536\nspool_segment_bytes = 16384",
    );
    let srv = server::start_with(cfg, Factory::new(&sink)).await.unwrap();
    let statuses = flood(srv.bound.http.unwrap(), 600).await;
    let accepted = statuses.get(&204).copied().unwrap_or(0);
    // ~480-byte envelopes: the 64 KiB budget holds a hundred or so.
    assert!((50..300).contains(&accepted), "{statuses:?}");
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0),
        600 - accepted,
        "{statuses:?}"
    );
    let text = srv.services.metrics.encode();
    // The worker holds no more than its window; the rest waits on disk.
    assert!(
        metric(&text, "simgate_funnel_queue_records{") <= 10,
        "{text}"
    );
    assert!(
        metric(&text, "simgate_spool_bytes{") <= 65536 + 16384,
        "{text}"
    );
    assert_eq!(
        metric(&text, "simgate_funnel_dropped_total{reason=\"queue_full\"}"),
        (600 - accepted) as u64
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_accepting_and_counts_what_it_dropped() {
    let mut sink = FaultSink::new(Box::new(|_, _| None));
    Arc::get_mut(&mut sink).unwrap().stall = Some(Duration::from_secs(3600));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "durability = \"spool\"\nqueue_records = 10\nmax_in_flight = 1\nshutdown_grace_ms = 100\n\
         spool_max_bytes = 65536\nspool_segment_bytes = 16384\nspool_when_full = \"drop_oldest\"",
    );
    let srv = server::start_with(cfg, Factory::new(&sink)).await.unwrap();
    let statuses = flood(srv.bound.http.unwrap(), 600).await;
    assert_eq!(statuses.get(&204), Some(&600), "{statuses:?}");
    let mut dropped = 0;
    for _ in 0..50 {
        let text = srv.services.metrics.encode();
        dropped = metric(&text, "simgate_funnel_dropped_total{reason=\"spool_full\"}");
        if dropped > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped > 0, "drops by drop_oldest are counted");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_records_survive_a_restart_and_are_delivered_after_it() {
    // First run: the sink is down the whole time.
    let down = FaultSink::new(Box::new(|_, _| {
        Some(BatchOutcome::Failed(SinkError {
            kind: FailureKind::Transient,
            reason: "connect",
            message: "injected outage".into(),
        }))
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        config(
            dir.path(),
            "durability = \"spool\"\nshutdown_grace_ms = 200",
        )
    };
    let srv = server::start_with(cfg(), Factory::new(&down))
        .await
        .unwrap();
    let acked = send(srv.bound.http.unwrap(), 50).await;
    assert_eq!(acked.len(), 50);
    srv.shutdown().await;
    assert!(down.delivered().is_empty());
    // Second run: nobody sends anything; the spool is delivered by itself.
    let up = FaultSink::new(Box::new(|_, _| None));
    let srv = server::start_with(cfg(), Factory::new(&up)).await.unwrap();
    wait_until(Duration::from_secs(20), || {
        up.delivered().len() == acked.len()
    })
    .await;
    let delivered = up.delivered();
    for p in &acked {
        assert_eq!(delivered.get(p), Some(&1), "{}", String::from_utf8_lossy(p));
    }
    srv.shutdown().await;
}

/// Sends `n` datagrams `{"u":i}` back to back from `sock` (so the ingress
/// reads them in receive batches), then counts the answers until 1 s of
/// silence.
async fn udp_burst(sock: &tokio::net::UdpSocket, to: std::net::SocketAddr, from: usize, n: usize) {
    for i in from..from + n {
        sock.send_to(format!(r#"{{"u":{i}}}"#).as_bytes(), to)
            .await
            .unwrap();
    }
}

async fn udp_answers(sock: &tokio::net::UdpSocket) -> HashMap<Vec<u8>, usize> {
    let mut answers = HashMap::new();
    let mut buf = [0u8; 256];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
        *answers.entry(buf[..n].to_vec()).or_default() += 1;
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_burst_that_does_not_fit_is_taken_as_far_as_it_fits() {
    // Nothing leaves the queue: of a burst larger than it, exactly the
    // queue's size is taken (and answered), the rest refused and counted.
    let (srv, _dir) = stalled_memory_queue_of_20().await;
    let udp = srv.bound.unified_udp.unwrap();
    let device = tokio::net::UdpSocket::bind((local(), 0)).await.unwrap();
    // A source without a session, in the same receive batches.
    let stranger = tokio::net::UdpSocket::bind(("127.0.0.2", 0)).await.unwrap();
    udp_burst(&stranger, udp, 0, 3).await;
    udp_burst(&device, udp, 0, 64).await;
    udp_burst(&stranger, udp, 3, 3).await;
    assert_eq!(
        udp_answers(&device).await,
        HashMap::from([(b"200".to_vec(), 20)])
    );
    assert!(udp_answers(&stranger).await.is_empty());
    let text = srv.services.metrics.encode();
    assert_eq!(
        metric(&text, "simgate_funnel_dropped_total{reason=\"queue_full\"}"),
        44,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "simgate_ingress_rejected_total{protocol=\"udp\",reason=\"unknown_source\"}"
        ),
        6,
        "{text}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_udp_record_of_a_burst_is_delivered_once() {
    // Spool durability (the default): a receive batch's records are
    // appended together and answered when their commit is durable.
    let sink = FaultSink::new(Box::new(|n, records| {
        // Every third request throttles its first record: retried alone.
        (n % 3 == 0).then(|| {
            let mut v = vec![RecordOutcome::Delivered; records.len()];
            v[0] = RecordOutcome::Retryable(RetryReason::throttled("throughput_exceeded"));
            BatchOutcome::PerRecord(v)
        })
    }));
    let dir = tempfile::tempdir().unwrap();
    let srv = server::start_with(config(dir.path(), ""), Factory::new(&sink))
        .await
        .unwrap();
    let udp = srv.bound.unified_udp.unwrap();
    let device = tokio::net::UdpSocket::bind((local(), 0)).await.unwrap();
    let mut answered = 0;
    for round in 0..3 {
        udp_burst(&device, udp, round * 100, 100).await;
        let answers = udp_answers(&device).await;
        assert_eq!(answers.keys().collect::<Vec<_>>(), vec![&b"200".to_vec()]);
        answered += answers[&b"200".to_vec()];
    }
    assert!(answered > 0);
    wait_until(Duration::from_secs(20), || {
        sink.delivered().values().sum::<usize>() >= answered
    })
    .await;
    let delivered = sink.delivered();
    assert_eq!(delivered.len(), answered, "every answered record, once");
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
    srv.shutdown().await;
}
