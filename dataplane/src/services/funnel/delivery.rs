//! Per-destination queues and the workers that batch, send and retry.
//!
//! ingress → [`DestinationQueue::try_submit`] (bounded by records and bytes
//! through two semaphores; the permits travel with the record and are given
//! back only when it is delivered or given up, so memory stays flat during a
//! sink outage) → worker: [`Batcher`] → sink request → per-record
//! [`RetryPolicy`] decision → done / retry after backoff / failed.
//!
//! A 2xx to the device means the record holds its permits in this queue
//! (`durability = "memory"`). The durable spool will sit between the queue
//! and the worker and take over the permits' role.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rand::Rng as _;
use simgate_control::config::FunnelSettings;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinSet;

use crate::batch::{Batcher, Decision, RetryPolicy};
use crate::metrics::{member, KindLabels, Metrics, SinkLabels, SinkResultLabels};
use crate::sinks::{BatchOutcome, Sink, SinkRecord};

/// Why a record was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the destination queue is full")]
    Full,
    #[error("record is larger than the sink accepts")]
    TooLarge,
    #[error("simgate is shutting down")]
    Closed,
}

impl SubmitError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full => "queue_full",
            Self::TooLarge => "too_large",
            Self::Closed => "shutting_down",
        }
    }
}

struct Queued {
    record: SinkRecord,
    attempts: u32,
    accepted_at: Instant,
    records_permit: OwnedSemaphorePermit,
    bytes_permit: OwnedSemaphorePermit,
}

/// The ingress side of one destination.
pub struct DestinationQueue {
    tx: mpsc::UnboundedSender<Queued>,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_record_bytes: usize,
    records_in: Counter,
}

impl std::fmt::Debug for DestinationQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationQueue")
            .field("free_records", &self.records.available_permits())
            .field("free_bytes", &self.bytes.available_permits())
            .finish()
    }
}

fn record_size(r: &SinkRecord) -> usize {
    r.data.len() + r.partition_key.len()
}

impl DestinationQueue {
    /// Queues a record if there is room now (UDP, HTTP).
    pub fn try_submit(&self, record: SinkRecord) -> Result<(), SubmitError> {
        let size = self.check_size(&record)?;
        let records = map_try(Arc::clone(&self.records).try_acquire_owned())?;
        let bytes = map_try(Arc::clone(&self.bytes).try_acquire_many_owned(size))?;
        self.send(record, records, bytes)
    }

    /// Queues a record, waiting for room (TCP: the connection stops being
    /// read while the queue is full).
    pub async fn submit(&self, record: SinkRecord) -> Result<(), SubmitError> {
        let size = self.check_size(&record)?;
        let records = Arc::clone(&self.records)
            .acquire_owned()
            .await
            .map_err(|_| SubmitError::Closed)?;
        let bytes = Arc::clone(&self.bytes)
            .acquire_many_owned(size)
            .await
            .map_err(|_| SubmitError::Closed)?;
        self.send(record, records, bytes)
    }

    fn check_size(&self, record: &SinkRecord) -> Result<u32, SubmitError> {
        let size = record_size(record);
        if size > self.max_record_bytes {
            return Err(SubmitError::TooLarge);
        }
        // Never ask for more permits than the semaphore holds in total, or
        // the wait would never end; `max_record_bytes` is ≤ 1 MiB and the
        // queue is at least that big (checked at construction).
        u32::try_from(size).map_err(|_| SubmitError::TooLarge)
    }

    fn send(
        &self,
        record: SinkRecord,
        records: OwnedSemaphorePermit,
        bytes: OwnedSemaphorePermit,
    ) -> Result<(), SubmitError> {
        self.tx
            .send(Queued {
                record,
                attempts: 0,
                accepted_at: Instant::now(),
                records_permit: records,
                bytes_permit: bytes,
            })
            .map_err(|_| SubmitError::Closed)?;
        self.records_in.inc();
        Ok(())
    }
}

fn map_try(
    r: Result<OwnedSemaphorePermit, TryAcquireError>,
) -> Result<OwnedSemaphorePermit, SubmitError> {
    r.map_err(|e| match e {
        TryAcquireError::NoPermits => SubmitError::Full,
        TryAcquireError::Closed => SubmitError::Closed,
    })
}

/// Handles the worker updates as it delivers.
struct WorkerMetrics {
    delivered: Counter,
    failed: Counter,
    batches_ok: Counter,
    batches_partial: Counter,
    batches_failed: Counter,
    batch_records: Histogram,
    request_seconds: Histogram,
    delivery_seconds: Histogram,
    queue_records: Gauge,
    queue_bytes: Gauge,
    metrics: Arc<Metrics>,
    sink: &'static str,
    destination: String,
}

impl WorkerMetrics {
    fn new(metrics: &Arc<Metrics>, sink: &'static str, destination: &str) -> Self {
        let result = |result| SinkResultLabels {
            sink,
            destination: destination.to_owned(),
            result,
        };
        let kind = KindLabels { sink };
        let labels = SinkLabels {
            sink,
            destination: destination.to_owned(),
        };
        Self {
            delivered: member(&metrics.funnel_records_out, &result("delivered")),
            failed: member(&metrics.funnel_records_out, &result("failed")),
            batches_ok: member(&metrics.funnel_batches, &result("ok")),
            batches_partial: member(&metrics.funnel_batches, &result("partial")),
            batches_failed: member(&metrics.funnel_batches, &result("failed")),
            batch_records: member(&metrics.funnel_batch_records, &kind),
            request_seconds: member(&metrics.funnel_request_seconds, &kind),
            delivery_seconds: member(&metrics.funnel_delivery_seconds, &kind),
            queue_records: member(&metrics.funnel_queue_records, &labels),
            queue_bytes: member(&metrics.funnel_queue_bytes, &labels),
            metrics: Arc::clone(metrics),
            sink,
            destination: destination.to_owned(),
        }
    }

    fn retry(&self, code: &str) {
        // Error codes come from the sink; keep the label set small and known.
        let reason = match code {
            "ProvisionedThroughputExceededException" => "throughput_exceeded",
            "InternalFailure" => "internal_failure",
            "timeout" => "timeout",
            "connect" => "connect",
            c if c.starts_with("http_5") => "http_5xx",
            _ => "other",
        };
        self.metrics
            .funnel_retries
            .get_or_create(&SinkResultLabels {
                sink: self.sink,
                destination: self.destination.clone(),
                result: reason,
            })
            .inc();
    }
}

/// Starts the worker of one destination and returns its queue.
pub(crate) fn spawn_destination(
    sink: Arc<dyn Sink>,
    destination_label: &str,
    settings: &FunnelSettings,
    metrics: &Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Arc<DestinationQueue> {
    let limits = sink.limits();
    let (tx, rx) = mpsc::unbounded_channel();
    // The byte budget must fit at least one maximal record.
    let byte_budget = settings.queue_bytes.max(limits.max_record_bytes);
    let records = Arc::new(Semaphore::new(settings.queue_records));
    let bytes = Arc::new(Semaphore::new(byte_budget));
    let wm = WorkerMetrics::new(metrics, sink.kind(), destination_label);
    let queue = Arc::new(DestinationQueue {
        tx,
        records: Arc::clone(&records),
        bytes: Arc::clone(&bytes),
        max_record_bytes: limits.max_record_bytes,
        records_in: member(
            &metrics.funnel_records_in,
            &SinkLabels {
                sink: sink.kind(),
                destination: destination_label.to_owned(),
            },
        ),
    });
    let worker = Worker {
        sink,
        rx,
        batcher: Batcher::new(limits, Duration::from_millis(settings.linger_ms)),
        retries: BTreeMap::new(),
        retry_seq: 0,
        in_flight: FuturesUnordered::new(),
        max_in_flight: settings.max_in_flight,
        policy: RetryPolicy {
            max_attempts: settings.max_attempts,
            base: Duration::from_millis(settings.retry_base_ms),
            cap: Duration::from_millis(settings.retry_max_ms),
        },
        grace: Duration::from_millis(settings.shutdown_grace_ms),
        metrics: wm,
        records_total: settings.queue_records,
        bytes_total: byte_budget,
        records,
        bytes,
    };
    tasks.spawn(worker.run(shutdown));
    queue
}

type InFlight = (Vec<Queued>, BatchOutcome);

/// Permits of records leaving the queue, given back together: every
/// semaphore release takes its lock, once per record was measurable at a few
/// hundred thousand records/s.
#[derive(Default)]
struct Released(Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>);

impl Released {
    fn add(&mut self, q: Queued) {
        let Queued {
            records_permit,
            bytes_permit,
            ..
        } = q;
        match &mut self.0 {
            Some((r, b)) => {
                r.merge(records_permit);
                b.merge(bytes_permit);
            }
            None => self.0 = Some((records_permit, bytes_permit)),
        }
    }
}

struct Worker {
    sink: Arc<dyn Sink>,
    rx: mpsc::UnboundedReceiver<Queued>,
    batcher: Batcher<Queued>,
    retries: BTreeMap<(Instant, u64), Queued>,
    retry_seq: u64,
    /// Sink requests in flight, polled by this task itself: spawning each
    /// one made every batch wait for the scheduler twice, behind busy UDP
    /// workers, and capped delivery at ~100k records/s (perf, bench).
    in_flight: FuturesUnordered<Pin<Box<dyn Future<Output = InFlight> + Send>>>,
    max_in_flight: usize,
    policy: RetryPolicy,
    grace: Duration,
    metrics: WorkerMetrics,
    records_total: usize,
    bytes_total: usize,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl Worker {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut give_up_at: Option<Instant> = None;
        let mut rx_open = true;
        loop {
            let now = Instant::now();
            self.release_due_retries(now, give_up_at.is_some());
            // Shutting down, or retired (its destination or credentials
            // changed, so no new record can arrive): send what is left now.
            if give_up_at.is_some() || !rx_open {
                self.batcher.flush();
            } else {
                self.batcher.poll(now);
            }
            self.dispatch();
            self.update_gauges();

            let idle =
                self.batcher.is_empty() && self.retries.is_empty() && self.in_flight.is_empty();
            if idle && !rx_open {
                return;
            }
            if let Some(deadline) = give_up_at {
                if now >= deadline {
                    self.abandon_at_shutdown();
                    return;
                }
            }
            let wake = [
                self.batcher.deadline(),
                self.retries.keys().next().map(|k| k.0),
                give_up_at,
            ]
            .into_iter()
            .flatten()
            .min();

            tokio::select! {
                Some((batch, outcome)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.complete(batch, &outcome);
                }
                got = self.rx.recv(), if rx_open => match got {
                    Some(first) => {
                        self.accept(first);
                        // Drain what is already there without going back
                        // through select for each record.
                        for _ in 0..1024 {
                            match self.rx.try_recv() {
                                Ok(q) => self.accept(q),
                                Err(_) => break,
                            }
                        }
                    }
                    None => rx_open = false,
                },
                () = sleep_until_opt(wake) => {}
                changed = shutdown.changed(), if give_up_at.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        give_up_at = Some(Instant::now() + self.grace);
                        // Ingress has stopped; take what is queued and finish.
                        self.rx.close();
                    }
                }
            }
        }
    }

    fn accept(&mut self, q: Queued) {
        let size = record_size(&q.record);
        if let Err(e) = self.batcher.push(q, size, Instant::now()) {
            // Checked at submit; only a sink whose limits changed gets here.
            self.metrics.failed.inc();
            self.metrics.metrics.funnel_drop("too_large");
            tracing::warn!(
                size = e.size,
                limit = e.limit,
                "funnel record too large for sink"
            );
        }
    }

    fn release_due_retries(&mut self, now: Instant, closing: bool) {
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now && !closing {
                break;
            }
            let q = entry.remove();
            self.accept(q);
        }
    }

    fn dispatch(&mut self) {
        while self.in_flight.len() < self.max_in_flight {
            let Some(mut batch) = self.batcher.pop_ready() else {
                break;
            };
            for q in &mut batch {
                q.attempts += 1;
            }
            let sink = Arc::clone(&self.sink);
            let request_seconds = self.metrics.request_seconds.clone();
            self.metrics.batch_records.observe(batch.len() as f64);
            self.in_flight.push(Box::pin(async move {
                let records: Vec<SinkRecord> = batch.iter().map(|q| q.record.clone()).collect();
                let started = Instant::now();
                let outcome = sink.put_batch(&records).await;
                request_seconds.observe(started.elapsed().as_secs_f64());
                (batch, outcome)
            }));
        }
    }

    fn complete(&mut self, batch: Vec<Queued>, outcome: &BatchOutcome) {
        let now = Instant::now();
        let mut delivered = 0usize;
        let mut retried = 0usize;
        let mut failed: Vec<String> = Vec::new();
        let mut rng = rand::thread_rng();
        let mut released = Released::default();
        for (i, q) in batch.into_iter().enumerate() {
            let result = outcome.record(i);
            match self.policy.decide(q.attempts, &result, rng.gen::<f64>()) {
                Decision::Delivered => {
                    delivered += 1;
                    self.metrics
                        .delivery_seconds
                        .observe(now.duration_since(q.accepted_at).as_secs_f64());
                    released.add(q);
                }
                Decision::RetryAfter(delay) => {
                    if let crate::sinks::RecordOutcome::Retryable(code) = &result {
                        self.metrics.retry(code);
                    }
                    self.retry_seq += 1;
                    retried += 1;
                    self.retries.insert((now + delay, self.retry_seq), q);
                }
                Decision::GiveUp(reason) => {
                    if failed.len() < 3 {
                        failed.push(reason);
                    } else if failed.len() == 3 {
                        failed.push("…".to_owned());
                    }
                    self.metrics.failed.inc();
                    released.add(q);
                }
            }
        }
        self.metrics.delivered.inc_by(delivered as u64);
        match outcome {
            BatchOutcome::PerRecord(_) if failed.is_empty() && retried == 0 => {
                self.metrics.batches_ok.inc();
            }
            BatchOutcome::PerRecord(_) => {
                self.metrics.batches_partial.inc();
            }
            BatchOutcome::Failed(e) => {
                self.metrics.batches_failed.inc();
                tracing::debug!(destination = %self.metrics.destination, error = %e, "funnel batch failed");
            }
        }
        if !failed.is_empty() {
            tracing::warn!(
                destination = %self.metrics.destination,
                sink = self.metrics.sink,
                reasons = ?failed,
                "funnel records failed for good"
            );
        }
    }

    fn abandon_at_shutdown(&mut self) {
        // Every record still holding a permit (batched, waiting to retry or
        // in flight) is about to be lost; count before the tasks are dropped.
        let lost = self.records_total - self.records.available_permits();
        // Dropping the futures cancels the requests.
        self.in_flight.clear();
        if lost > 0 {
            self.metrics
                .metrics
                .funnel_dropped
                .get_or_create(&crate::metrics::ReasonLabels { reason: "shutdown" })
                .inc_by(lost as u64);
            tracing::error!(
                destination = %self.metrics.destination,
                records = lost,
                "shutdown grace period over: records still queued were not delivered"
            );
        }
    }

    fn update_gauges(&self) {
        let records = self.records_total - self.records.available_permits();
        let bytes = self.bytes_total - self.bytes.available_permits();
        self.metrics.queue_records.set(records as i64);
        self.metrics.queue_bytes.set(bytes as i64);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
