//! Per-destination intake and the task that drives its [`DestinationCore`].
//!
//! ingress → [`DestinationQueue::try_submit`] →
//! * `durability = "spool"`: the record is appended to the destination's
//!   [`Spool`]; the device is answered once the group commit has fsynced it.
//!   The worker reads records back from the spool while its memory window
//!   (`queue_records` / `queue_bytes`) has room, so memory stays flat however
//!   long the sink is down; the spool's disk budget pushes back on devices.
//! * `durability = "memory"`: the record takes permits of two semaphores
//!   (records, bytes) and travels over a channel; the permits are given back
//!   when it is delivered or dead-lettered, so a full window refuses ingress.
//!
//! The worker only moves things: the core decides what to send, what to
//! retry and what to dead-letter; the sink is loaded per request so changed
//! credentials apply to records already queued.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use simgate_control::clock::now_ms;
use simgate_control::config::FunnelSettings;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinSet;

use crate::batch::{
    Batch, BatchResult, CoreConfig, DeadReason, DestinationCore, Entry, Event, RetryPolicy,
};
use crate::dead_letters::{DeadLetter, DeadLetterStore};
use crate::metrics::{member, KindLabels, Metrics, ReasonLabels, SinkLabels, SinkResultLabels};
use crate::sinks::{BatchOutcome, Sink, SinkRecord};
use crate::spool::{AppendAck, Spool, SpoolError, SpoolReader};

use super::DestinationKey;

/// Why a record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the destination queue is full")]
    Full,
    #[error("record is larger than the sink accepts")]
    TooLarge,
    #[error("simgate is shutting down")]
    Closed,
    #[error("the spool could not store the record")]
    Storage,
}

impl SubmitError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full => "queue_full",
            Self::TooLarge => "too_large",
            Self::Closed => "shutting_down",
            Self::Storage => "spool_error",
        }
    }
}

/// Resolves when spooled records are durable (and may be acknowledged).
pub type Commit = Pin<Box<dyn Future<Output = Result<(), SubmitError>> + Send + 'static>>;

/// A record accepted by [`DestinationQueue::try_submit`]: acknowledged now
/// (memory), or once the spool's group commit resolves.
pub enum Accepted {
    Now,
    Commit(Commit),
}

/// What [`DestinationQueue::try_submit_many`] did with each record.
pub struct Submitted {
    pub results: Vec<Result<(), SubmitError>>,
    /// The commit every accepted record waits for (spool); `None`: now.
    pub commit: Option<Commit>,
}

impl Accepted {
    /// Waits until the record may be acknowledged.
    pub async fn committed(self) -> Result<(), SubmitError> {
        match self {
            Self::Now => Ok(()),
            Self::Commit(f) => f.await,
        }
    }
}

/// The permits a memory-queued record holds until it leaves.
struct Permits {
    records: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
}

/// How a record is held while the core has it.
enum Hold {
    Memory(Permits),
    Spool(u64),
}

/// A record in the core.
struct Held {
    record: SinkRecord,
    accepted_at_ms: u64,
    hold: Hold,
}

/// What one intake send carries: a record, or a receive batch's records
/// for this destination (one channel operation for all of them).
enum Parcel {
    One(Held),
    Many(Vec<Held>),
}

enum Intake {
    Memory {
        tx: mpsc::UnboundedSender<Parcel>,
        records: Arc<Semaphore>,
        bytes: Arc<Semaphore>,
    },
    Spool(Arc<Spool>),
}

/// The sink a destination sends through; replaced when its credentials
/// change.
pub(crate) type SharedSink = Arc<ArcSwap<Arc<dyn Sink>>>;

/// The ingress side of one destination.
pub struct DestinationQueue {
    intake: Intake,
    max_record_bytes: usize,
    records_in: Counter,
    storage_errors: Counter,
}

impl std::fmt::Debug for DestinationQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationQueue").finish_non_exhaustive()
    }
}

fn record_size(r: &SinkRecord) -> usize {
    r.data.len() + r.partition_key.len()
}

impl DestinationQueue {
    /// Accepts a record if there is room now (UDP, HTTP).
    pub fn try_submit(&self, record: SinkRecord) -> Result<Accepted, SubmitError> {
        let size = self.check_size(&record)?;
        match &self.intake {
            Intake::Memory { tx, records, bytes } => {
                let permits = Permits {
                    records: map_try(Arc::clone(records).try_acquire_owned())?,
                    bytes: map_try(Arc::clone(bytes).try_acquire_many_owned(size))?,
                };
                self.send_memory(tx, record, permits)?;
                Ok(Accepted::Now)
            }
            Intake::Spool(spool) => self.append(spool, record),
        }
    }

    /// Accepts several records if there is room now (a UDP receive batch's
    /// records for this destination): one permit acquisition and one
    /// channel send for all of them, or one spool append; record by record
    /// only when they do not all fit. `results[i]` says whether `records[i]`
    /// was taken; those taken may be acknowledged once `commit` resolves
    /// (`None`: now).
    pub fn try_submit_many(&self, records: Vec<SinkRecord>) -> Submitted {
        let mut results = Vec::with_capacity(records.len());
        let mut fits = Vec::with_capacity(records.len());
        let mut total = 0usize;
        for record in records {
            match self.check_size(&record) {
                Ok(size) => {
                    total += size as usize;
                    results.push(Ok(()));
                    fits.push((record, size));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if fits.is_empty() {
            return Submitted {
                results,
                commit: None,
            };
        }
        let taken = match &self.intake {
            Intake::Memory { tx, records, bytes } => {
                match self.send_memory_many(tx, records, bytes, &mut fits, total) {
                    Err(SubmitError::Full) => {
                        // Not all fit: as many as do, one by one.
                        let mut fits = fits.into_iter();
                        for r in results.iter_mut().filter(|r| r.is_ok()) {
                            if let Some((record, _)) = fits.next() {
                                *r = self.try_submit(record).map(drop);
                            }
                        }
                        Ok(None)
                    }
                    other => other.map(|()| None),
                }
            }
            Intake::Spool(spool) => {
                let n = fits.len() as u64;
                let batch = fits
                    .into_iter()
                    .map(|(r, _)| (r.partition_key, r.data))
                    .collect();
                // All or none: on a refusal the devices retry, as after any
                // (a full spool frees up as the sink catches up).
                match spool.append_many(batch, now_ms()) {
                    Ok(ack) => {
                        self.records_in.inc_by(n);
                        Ok(Some(self.commit_of(ack)))
                    }
                    Err(e) => Err(self.spool_error(&e)),
                }
            }
        };
        let commit = taken.unwrap_or_else(|e| {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e);
            }
            None
        });
        Submitted { results, commit }
    }

    /// Takes the permits of all `fits` at once and sends them as one parcel.
    fn send_memory_many(
        &self,
        tx: &mpsc::UnboundedSender<Parcel>,
        records: &Arc<Semaphore>,
        bytes: &Arc<Semaphore>,
        fits: &mut Vec<(SinkRecord, u32)>,
        total: usize,
    ) -> Result<(), SubmitError> {
        let count = u32::try_from(fits.len()).map_err(|_| SubmitError::Full)?;
        let total = u32::try_from(total).map_err(|_| SubmitError::Full)?;
        let mut all_records = map_try(Arc::clone(records).try_acquire_many_owned(count))?;
        let mut all_bytes = map_try(Arc::clone(bytes).try_acquire_many_owned(total))?;
        // Each record gives its own share back when it leaves.
        let mut shares = Vec::with_capacity(fits.len());
        for (_, size) in fits.iter() {
            match (all_records.split(1), all_bytes.split(*size as usize)) {
                (Some(records), Some(bytes)) => shares.push(Permits { records, bytes }),
                // Cannot happen (exactly the sum was acquired); `fits` is
                // untouched, so the caller goes on record by record.
                _ => return Err(SubmitError::Full),
            }
        }
        let accepted_at_ms = now_ms();
        let parcel: Vec<Held> = fits
            .drain(..)
            .zip(shares)
            .map(|((record, _), permits)| Held {
                record,
                accepted_at_ms,
                hold: Hold::Memory(permits),
            })
            .collect();
        let n = parcel.len() as u64;
        tx.send(Parcel::Many(parcel))
            .map_err(|_| SubmitError::Closed)?;
        self.records_in.inc_by(n);
        Ok(())
    }

    /// Accepts a record, waiting for room (TCP: the connection is not read
    /// while the destination is full), and for its commit.
    pub async fn submit(&self, record: SinkRecord) -> Result<(), SubmitError> {
        let size = self.check_size(&record)?;
        match &self.intake {
            Intake::Memory { tx, records, bytes } => {
                let permits = Permits {
                    records: Arc::clone(records)
                        .acquire_owned()
                        .await
                        .map_err(|_| SubmitError::Closed)?,
                    bytes: Arc::clone(bytes)
                        .acquire_many_owned(size)
                        .await
                        .map_err(|_| SubmitError::Closed)?,
                };
                self.send_memory(tx, record, permits)
            }
            Intake::Spool(spool) => loop {
                match self.append(spool, record.clone()) {
                    Ok(accepted) => return accepted.committed().await,
                    // The disk budget frees up as the sink catches up.
                    Err(SubmitError::Full) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => return Err(e),
                }
            },
        }
    }

    fn append(&self, spool: &Arc<Spool>, record: SinkRecord) -> Result<Accepted, SubmitError> {
        let ack = spool
            .append(record.partition_key, record.data, now_ms())
            .map_err(|e| self.spool_error(&e))?;
        self.records_in.inc();
        Ok(Accepted::Commit(self.commit_of(ack)))
    }

    /// Waits for a spool commit, counting and logging a failed one.
    fn commit_of(&self, ack: AppendAck) -> Commit {
        let errors = self.storage_errors.clone();
        Box::pin(async move {
            ack.await.map(drop).map_err(|e| {
                errors.inc();
                tracing::error!(error = %e, "spool commit failed: the record was not acknowledged");
                match e {
                    SpoolError::Closed => SubmitError::Closed,
                    _ => SubmitError::Storage,
                }
            })
        })
    }

    fn spool_error(&self, e: &SpoolError) -> SubmitError {
        match e {
            SpoolError::Full { .. } => SubmitError::Full,
            SpoolError::Closed => SubmitError::Closed,
            other => {
                self.storage_errors.inc();
                tracing::error!(error = %other, "spool append failed");
                SubmitError::Storage
            }
        }
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

    fn send_memory(
        &self,
        tx: &mpsc::UnboundedSender<Parcel>,
        record: SinkRecord,
        permits: Permits,
    ) -> Result<(), SubmitError> {
        tx.send(Parcel::One(Held {
            record,
            accepted_at_ms: now_ms(),
            hold: Hold::Memory(permits),
        }))
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

/// Metric handles the worker updates, resolved once.
struct WorkerMetrics {
    delivered: Counter,
    dead_lettered: Counter,
    batches: [Counter; 3],
    batch_records: Histogram,
    request_seconds: Histogram,
    delivery_seconds: Histogram,
    queue_records: Gauge,
    queue_bytes: Gauge,
    window: Gauge,
    spool_bytes: Gauge,
    spool_records: Gauge,
    spool_segments: Gauge,
    spool_oldest_seconds: Gauge,
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
            dead_lettered: member(&metrics.funnel_records_out, &result("dead_lettered")),
            batches: [
                member(&metrics.funnel_batches, &result("ok")),
                member(&metrics.funnel_batches, &result("partial")),
                member(&metrics.funnel_batches, &result("failed")),
            ],
            batch_records: member(&metrics.funnel_batch_records, &kind),
            request_seconds: member(&metrics.funnel_request_seconds, &kind),
            delivery_seconds: member(&metrics.funnel_delivery_seconds, &kind),
            queue_records: member(&metrics.funnel_queue_records, &labels),
            queue_bytes: member(&metrics.funnel_queue_bytes, &labels),
            window: member(&metrics.funnel_window, &labels),
            spool_bytes: member(&metrics.spool_bytes, &labels),
            spool_records: member(&metrics.spool_records, &labels),
            spool_segments: member(&metrics.spool_segments, &labels),
            spool_oldest_seconds: member(&metrics.spool_oldest_unsent_seconds, &labels),
            metrics: Arc::clone(metrics),
            sink,
            destination: destination.to_owned(),
        }
    }

    fn labels(&self, result: &'static str) -> SinkResultLabels {
        SinkResultLabels {
            sink: self.sink,
            destination: self.destination.clone(),
            result,
        }
    }

    fn retried(&self, label: &'static str, records: usize) {
        self.metrics
            .funnel_retries
            .get_or_create(&self.labels(label))
            .inc_by(records as u64);
    }

    fn dead(&self, reason: &'static str) {
        self.dead_lettered.inc();
        self.metrics
            .funnel_dead_letters
            .get_or_create(&self.labels(reason))
            .inc();
    }
}

/// What the worker of one destination needs, from [`super::Funnel`].
pub(crate) struct DestinationSetup<'a> {
    pub key: &'a DestinationKey,
    pub sink: SharedSink,
    pub spool: Option<Arc<Spool>>,
    pub dead_letters: Arc<DeadLetterStore>,
    pub settings: &'a FunnelSettings,
    pub metrics: &'a Arc<Metrics>,
}

/// Starts the worker of one destination and returns its queue.
pub(crate) fn spawn_destination(
    setup: DestinationSetup<'_>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Arc<DestinationQueue> {
    let DestinationSetup {
        key,
        sink,
        spool,
        dead_letters,
        settings,
        metrics,
    } = setup;
    let current = sink.load_full();
    let limits = current.limits();
    let kind = current.kind();
    let label = key.destination.resource_url.as_str();
    // The byte window must fit at least one maximal record.
    let byte_window = settings.queue_bytes.max(limits.max_record_bytes);
    let (intake, source) = match spool {
        Some(spool) => {
            let reader = spool.reader();
            let committed = spool.committed();
            (
                Intake::Spool(Arc::clone(&spool)),
                Source::Spool {
                    spool,
                    reader,
                    committed,
                },
            )
        }
        None => {
            let (tx, rx) = mpsc::unbounded_channel();
            (
                Intake::Memory {
                    tx,
                    records: Arc::new(Semaphore::new(settings.queue_records)),
                    bytes: Arc::new(Semaphore::new(byte_window)),
                },
                Source::Memory { rx, open: true },
            )
        }
    };
    let labels = SinkLabels {
        sink: kind,
        destination: label.to_owned(),
    };
    let queue = Arc::new(DestinationQueue {
        intake,
        max_record_bytes: limits.max_record_bytes,
        records_in: member(&metrics.funnel_records_in, &labels),
        storage_errors: member(
            &metrics.funnel_dropped,
            &ReasonLabels {
                reason: "spool_error",
            },
        ),
    });
    let config = CoreConfig {
        limits,
        linger: Duration::from_millis(settings.linger_ms),
        max_in_flight: settings.max_in_flight.max(1),
        retry: RetryPolicy {
            max_attempts: settings.max_attempts.max(1),
            base: Duration::from_millis(settings.retry_base_ms),
            cap: Duration::from_millis(settings.retry_max_ms),
        },
        max_record_age: Duration::from_secs(settings.max_record_age_secs),
    };
    let worker = Worker {
        core: DestinationCore::new(config, rand::random()),
        source,
        sink,
        in_flight: FuturesUnordered::new(),
        window_records: settings.queue_records.max(1),
        window_bytes: byte_window,
        grace: Duration::from_millis(settings.shutdown_grace_ms),
        dead_letters,
        key: key.clone(),
        metrics: WorkerMetrics::new(metrics, kind, label),
        counted_dropped_oldest: 0,
        counted_corrupt: 0,
        spool_stats_at: None,
    };
    tasks.spawn(worker.run(shutdown));
    queue
}

enum Source {
    Memory {
        rx: mpsc::UnboundedReceiver<Parcel>,
        open: bool,
    },
    Spool {
        spool: Arc<Spool>,
        reader: SpoolReader,
        committed: watch::Receiver<u64>,
    },
}

type InFlight = (Batch<Held>, BatchOutcome);

struct Worker {
    core: DestinationCore<Held>,
    source: Source,
    sink: SharedSink,
    /// Sink requests in flight, polled by this task itself: spawning each
    /// one made every batch wait for the scheduler twice, behind busy UDP
    /// workers, and capped delivery at ~100k records/s (perf, bench).
    in_flight: FuturesUnordered<Pin<Box<dyn Future<Output = InFlight> + Send>>>,
    /// Memory window: records and bytes the core may hold.
    window_records: usize,
    window_bytes: usize,
    grace: Duration,
    dead_letters: Arc<DeadLetterStore>,
    key: DestinationKey,
    metrics: WorkerMetrics,
    /// Spool losses already counted: records deleted by `drop_oldest`, and
    /// records lost to corruption found while reading.
    counted_dropped_oldest: u64,
    counted_corrupt: u64,
    /// When the spool's statistics were last read: they take the spool's
    /// lock, so the busy loop reads them at most every 250 ms (the loop
    /// wakes at least once a second).
    spool_stats_at: Option<Instant>,
}

/// The partition key as the core tracks throttling by it.
fn key_hash(key: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Converts a wall-clock acceptance time into the core's clock.
fn accepted_instant(accepted_at_ms: u64, now: Instant, now_wall_ms: u64) -> Instant {
    let age = Duration::from_millis(now_wall_ms.saturating_sub(accepted_at_ms));
    now.checked_sub(age).unwrap_or(now)
}

impl Worker {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut give_up_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if give_up_at.is_none() {
                self.read_spool(now);
            }
            self.dispatch(now);
            self.settle();
            self.update_gauges();

            let source_done = match &self.source {
                Source::Memory { open, .. } => !*open,
                Source::Spool { .. } => give_up_at.is_some(),
            };
            if source_done && self.core.is_idle() {
                self.finish();
                return;
            }
            if give_up_at.is_some_and(|t| now >= t) {
                self.abandon();
                return;
            }
            // At least once a second, so the gauges (spool size, oldest
            // unsent age) stay current while nothing moves.
            let tick = Some(now + Duration::from_secs(1));
            let wake = [self.core.poll_timeout(), give_up_at, tick]
                .into_iter()
                .flatten()
                .min();
            let room = self.has_room();
            tokio::select! {
                Some((batch, outcome)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.core.on_outcome(Instant::now(), batch, &outcome);
                }
                input = next_input(&mut self.source), if room && give_up_at.is_none() => {
                    if let Input::Records(batch) = input {
                        let now = Instant::now();
                        let wall = now_ms();
                        for held in batch {
                            self.push(held, now, wall);
                        }
                    }
                }
                () = sleep_until_opt(wake) => {}
                changed = shutdown.changed(), if give_up_at.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        give_up_at = Some(Instant::now() + self.grace);
                        self.core.close();
                        if let Source::Memory { rx, .. } = &mut self.source {
                            // Ingress has stopped; take what is queued and finish.
                            rx.close();
                        }
                    }
                }
            }
        }
    }

    fn push(&mut self, held: Held, now: Instant, wall: u64) {
        let size = record_size(&held.record);
        let accepted = accepted_instant(held.accepted_at_ms, now, wall);
        let key = key_hash(&held.record.partition_key);
        self.core.push(held, size, key, accepted, now);
    }

    fn has_room(&self) -> bool {
        let (records, bytes) = self.core.held();
        records < self.window_records && bytes < self.window_bytes
    }

    /// Loads spooled records while the memory window has room.
    fn read_spool(&mut self, now: Instant) {
        if !matches!(self.source, Source::Spool { .. }) {
            return;
        }
        let wall = now_ms();
        while self.has_room() {
            let Source::Spool {
                reader, committed, ..
            } = &mut self.source
            else {
                return;
            };
            // Seen before reading: a commit after this wakes the select.
            committed.borrow_and_update();
            match reader.next() {
                Ok(Some(r)) => {
                    let held = Held {
                        record: SinkRecord {
                            partition_key: r.partition_key,
                            data: r.data,
                        },
                        accepted_at_ms: r.accepted_at_ms,
                        hold: Hold::Spool(r.seq),
                    };
                    self.push(held, now, wall);
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::error!(destination = %self.metrics.destination, error = %e, "reading the spool failed");
                    return;
                }
            }
        }
    }

    fn dispatch(&mut self, now: Instant) {
        while let Some(batch) = self.core.poll_batch(now) {
            let sink = self.sink.load_full();
            let request_seconds = self.metrics.request_seconds.clone();
            self.metrics
                .batch_records
                .observe(batch.entries.len() as f64);
            self.in_flight.push(Box::pin(async move {
                let records: Vec<SinkRecord> = batch
                    .entries
                    .iter()
                    .map(|e| e.item.record.clone())
                    .collect();
                let started = Instant::now();
                let outcome = sink.put_batch(&records).await;
                request_seconds.observe(started.elapsed().as_secs_f64());
                (batch, outcome)
            }));
        }
    }

    /// Acts on what the core decided: acknowledgements, dead letters,
    /// counters.
    fn settle(&mut self) {
        let now = Instant::now();
        let mut done: Vec<Entry<Held>> = Vec::new();
        let mut dead: Vec<(Entry<Held>, DeadReason)> = Vec::new();
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::Delivered(e) => {
                    self.metrics
                        .delivery_seconds
                        .observe(now.saturating_duration_since(e.accepted_at).as_secs_f64());
                    done.push(e);
                }
                Event::DeadLetter(e, why) => dead.push((e, why)),
                Event::Retried { label, records } => self.metrics.retried(label, records),
                Event::BatchDone(r) => {
                    let i = match r {
                        BatchResult::Ok => 0,
                        BatchResult::Partial => 1,
                        BatchResult::Failed => 2,
                    };
                    self.metrics.batches[i].inc();
                }
            }
        }
        self.metrics.delivered.inc_by(done.len() as u64);
        if !dead.is_empty() {
            self.dead_letter(&dead);
            done.extend(dead.into_iter().map(|(e, _)| e));
        }
        self.release(done);
    }

    fn dead_letter(&self, dead: &[(Entry<Held>, DeadReason)]) {
        let time = now_ms();
        let letters: Vec<DeadLetter> = dead
            .iter()
            .map(|(e, why)| DeadLetter {
                time,
                accepted_at: e.item.accepted_at_ms,
                destination: self.key.destination.clone(),
                credentials_id: self.key.credentials_id.to_string(),
                partition_key: e.item.record.partition_key.to_string(),
                data: DeadLetter::encode_data(&e.item.record.data),
                reason: why.label().to_owned(),
                detail: why.to_string(),
                attempts: e.attempts,
            })
            .collect();
        for (_, why) in dead {
            self.metrics.dead(why.label());
        }
        // Written (and fsynced) before the spool forgets the records. If it
        // cannot be written the records are still released: they are
        // counted as dropped, with the error logged.
        if let Err(e) = self.dead_letters.append(&self.key.id(), &letters) {
            tracing::error!(destination = %self.metrics.destination, error = %e, records = letters.len(), "cannot write dead letters: records dropped");
            self.metrics
                .metrics
                .funnel_dropped
                .get_or_create(&ReasonLabels {
                    reason: "dead_letter_write_failed",
                })
                .inc_by(letters.len() as u64);
        } else {
            tracing::warn!(
                destination = %self.metrics.destination,
                records = letters.len(),
                reason = %dead[0].1,
                "funnel records dead-lettered"
            );
        }
    }

    /// Records that left the core for good: spool acks, memory permits.
    fn release(&self, done: Vec<Entry<Held>>) {
        if done.is_empty() {
            return;
        }
        let mut seqs = Vec::new();
        let mut merged: Option<Permits> = None;
        for e in done {
            match e.item.hold {
                Hold::Spool(seq) => seqs.push(seq),
                // Every semaphore release takes its lock: give the permits
                // back once per batch, not per record.
                Hold::Memory(p) => match &mut merged {
                    Some(m) => {
                        m.records.merge(p.records);
                        m.bytes.merge(p.bytes);
                    }
                    None => merged = Some(p),
                },
            }
        }
        if let Source::Spool { spool, .. } = &self.source {
            spool.ack_many(&seqs);
        }
        drop(merged);
    }

    fn finish(&mut self) {
        self.spool_stats_at = None;
        self.update_gauges();
        if let Source::Spool { spool, .. } = &self.source {
            spool.close();
        }
    }

    fn abandon(&mut self) {
        // Dropping the futures cancels the requests.
        let in_flight = std::mem::take(&mut self.in_flight);
        let cancelled = in_flight.len();
        drop(in_flight);
        let rest = self.core.abandon();
        match &self.source {
            Source::Spool { spool, .. } => {
                // Still in the spool, unacknowledged: sent after the restart.
                tracing::info!(
                    destination = %self.metrics.destination,
                    records = rest.len(),
                    requests_cancelled = cancelled,
                    "shutdown: undelivered records stay in the spool"
                );
                spool.close();
            }
            Source::Memory { .. } => {
                let (held, _) = self.core.held();
                let lost = rest.len() + held;
                if lost > 0 {
                    self.metrics
                        .metrics
                        .funnel_dropped
                        .get_or_create(&ReasonLabels { reason: "shutdown" })
                        .inc_by(lost as u64);
                    tracing::error!(
                        destination = %self.metrics.destination,
                        records = lost,
                        "shutdown grace period over: records in the memory queue were not delivered"
                    );
                }
            }
        }
        self.spool_stats_at = None;
        self.update_gauges();
    }

    fn update_gauges(&mut self) {
        let (records, bytes) = self.core.held();
        let m = &self.metrics;
        m.queue_records.set(records as i64);
        m.queue_bytes.set(bytes as i64);
        m.window.set(self.core.window() as i64);
        let now = Instant::now();
        let due = self
            .spool_stats_at
            .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(250));
        if let (Source::Spool { spool, .. }, true) = (&self.source, due) {
            self.spool_stats_at = Some(now);
            let s = spool.stats();
            m.spool_bytes
                .set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
            m.spool_records
                .set(i64::try_from(s.records).unwrap_or(i64::MAX));
            m.spool_segments
                .set(i64::try_from(s.segments).unwrap_or(i64::MAX));
            let oldest = s
                .oldest_unacked_ms
                .map_or(0, |t| now_ms().saturating_sub(t) / 1000);
            m.spool_oldest_seconds
                .set(i64::try_from(oldest).unwrap_or(i64::MAX));
            // The spool counts these losses; report each once, with its
            // reason.
            let dropped = s.dropped_oldest.saturating_sub(self.counted_dropped_oldest);
            let corrupt = s.corrupt_skipped.saturating_sub(self.counted_corrupt);
            self.counted_dropped_oldest = s.dropped_oldest;
            self.counted_corrupt = s.corrupt_skipped;
            for (reason, n) in [("spool_full", dropped), ("spool_corrupt", corrupt)] {
                if n > 0 {
                    m.metrics
                        .funnel_dropped
                        .get_or_create(&ReasonLabels { reason })
                        .inc_by(n);
                    tracing::error!(destination = %m.destination, records = n, reason, "spooled records lost");
                }
            }
        }
    }
}

/// What woke the worker on its intake side.
enum Input {
    /// Memory intake: records, taken together without going back through
    /// `select!` for each.
    Records(Vec<Held>),
    /// Spool intake: new records were committed; read them.
    Committed,
}

async fn next_input(source: &mut Source) -> Input {
    match source {
        Source::Memory { rx, open } => {
            if !*open {
                return std::future::pending().await;
            }
            let Some(first) = rx.recv().await else {
                *open = false;
                return Input::Records(Vec::new());
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(parcel) = next {
                match parcel {
                    Parcel::One(h) => batch.push(h),
                    Parcel::Many(hs) => batch.extend(hs),
                }
                next = if batch.len() < 1024 {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            Input::Records(batch)
        }
        Source::Spool { committed, .. } => {
            if committed.changed().await.is_err() {
                return std::future::pending().await;
            }
            Input::Committed
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
