//! The delivery core of one destination: which records go out next, what
//! happens to them after the sink answered, and when to wake up. Pure: time
//! is an argument and randomness comes from a seeded generator, so a test
//! steps a simulated clock through any outage (quinn-proto is the model; the
//! tokio driver in `services/funnel/delivery.rs` only moves bytes).
//!
//! The rules (DESIGN.md, rule 5):
//! * A request that failed as a whole (connection refused, timeout, 5xx,
//!   throttled) delivered nothing and spends **no** record's attempts: the
//!   destination backs off (capped full jitter) and probes with one request
//!   at a time until it answers again. Records wait, bounded only by
//!   `max_record_age`.
//! * Records the sink answered for one by one are retried alone (never the
//!   records that succeeded), each with its own backoff; only these spend
//!   attempts. Past `max_attempts`, or rejected for good, a record is
//!   dead-lettered with its reason.
//! * Concurrency adapts (AIMD): broad throttling (a request refused as a
//!   whole, or most of a batch) halves the number of requests in flight, a
//!   clean batch grows it by one per window, up to `max_in_flight`.
//! * Throttling of a few records is a hot partition key (a Kinesis shard over
//!   its 1,000 records/s): that key's records are held back until its
//!   backoff ends, without spending attempts, while every other key flows.
//! * Every record leaves through exactly one [`Event`]: delivered or
//!   dead-lettered, or is handed back by [`DestinationCore::abandon`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::{Batcher, RetryPolicy};
use crate::sinks::{BatchLimits, BatchOutcome, FailureKind, RecordOutcome};

/// Tuning of one destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoreConfig {
    pub limits: BatchLimits,
    pub linger: Duration,
    pub max_in_flight: usize,
    /// Per-record retries (attempt limit, backoff) and the destination's
    /// backoff while it is down.
    pub retry: RetryPolicy,
    /// A record older than this is dead-lettered instead of sent.
    pub max_record_age: Duration,
}

/// One record in the core, with what the core knows about it.
#[derive(Debug)]
pub struct Entry<T> {
    pub item: T,
    /// Hash of the partition key: throttling is tracked per key.
    pub key: u64,
    /// Size in the sink's terms (data plus partition key).
    pub size: usize,
    /// Requests that answered for this record individually.
    pub attempts: u32,
    pub accepted_at: Instant,
}

/// A request's worth of records, handed to the driver by
/// [`DestinationCore::poll_batch`] and given back to
/// [`DestinationCore::on_outcome`].
#[derive(Debug)]
pub struct Batch<T> {
    pub entries: Vec<Entry<T>>,
}

/// Why a record was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadReason {
    /// The sink refused it for good.
    Rejected(String),
    /// The sink kept failing it one by one: the last reason.
    AttemptsExhausted { label: &'static str, attempts: u32 },
    /// It waited longer than `max_record_age`.
    Expired,
    /// It is larger than the sink accepts.
    TooLarge,
}

impl DeadReason {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            Self::AttemptsExhausted { .. } => "attempts_exhausted",
            Self::Expired => "expired",
            Self::TooLarge => "too_large",
        }
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rejected(why) => write!(f, "rejected by the sink: {why}"),
            Self::AttemptsExhausted { label, attempts } => {
                write!(f, "{label} after {attempts} attempts")
            }
            Self::Expired => f.write_str("older than max_record_age"),
            Self::TooLarge => f.write_str("larger than the sink accepts"),
        }
    }
}

/// How a request ended, for the batch counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchResult {
    /// Every record delivered.
    Ok,
    /// Some records delivered, some not.
    Partial,
    /// The request failed as a whole.
    Failed,
}

/// What the driver must act on, in order.
#[derive(Debug)]
pub enum Event<T> {
    Delivered(Entry<T>),
    DeadLetter(Entry<T>, DeadReason),
    /// Records will be sent again; the label is the sink's reason.
    Retried {
        label: &'static str,
        records: usize,
    },
    BatchDone(BatchResult),
}

/// The state machine of one destination.
#[derive(Debug)]
pub struct DestinationCore<T> {
    config: CoreConfig,
    batcher: Batcher<Entry<T>>,
    /// Records waiting for their own backoff, by due time (then arrival).
    retries: BTreeMap<(Instant, u64), Entry<T>>,
    retry_seq: u64,
    in_flight: usize,
    /// AIMD congestion window, in requests: `1.0 ..= max_in_flight`.
    window: f64,
    /// Partition keys throttled recently: until when their records are held
    /// back, and how many throttles in a row (the backoff grows with them).
    hot: HashMap<u64, (Instant, u32)>,
    /// Whole-request failures in a row; the destination backs off until
    /// `blocked_until`.
    consecutive_failures: u32,
    blocked_until: Option<Instant>,
    closing: bool,
    /// Records and bytes held (batched, waiting or in flight).
    held_records: usize,
    held_bytes: usize,
    events: VecDeque<Event<T>>,
    rng: StdRng,
}

impl<T> DestinationCore<T> {
    pub fn new(config: CoreConfig, seed: u64) -> Self {
        Self {
            batcher: Batcher::new(config.limits, config.linger),
            retries: BTreeMap::new(),
            retry_seq: 0,
            in_flight: 0,
            window: config.max_in_flight.max(1) as f64,
            hot: HashMap::new(),
            consecutive_failures: 0,
            blocked_until: None,
            closing: false,
            held_records: 0,
            held_bytes: 0,
            events: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            config,
        }
    }

    /// Takes a new record.
    pub fn push(&mut self, item: T, size: usize, key: u64, accepted_at: Instant, now: Instant) {
        self.held_records += 1;
        self.held_bytes += size;
        let entry = Entry {
            item,
            key,
            size,
            attempts: 0,
            accepted_at,
        };
        self.enqueue(entry, now);
    }

    fn enqueue(&mut self, entry: Entry<T>, now: Instant) {
        let size = entry.size;
        if let Err(e) = self.batcher.push(entry, size, now) {
            self.dead(e.record, DeadReason::TooLarge);
        }
    }

    /// No new records will come (shutdown, or the destination was retired):
    /// partial batches go out without waiting for their linger.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// The next request to send, if the window and the destination's
    /// backoff allow one now.
    pub fn poll_batch(&mut self, now: Instant) -> Option<Batch<T>> {
        self.handle_timeout(now);
        if self.blocked_until.is_some_and(|t| now < t) {
            return None;
        }
        while self.in_flight < self.allowed_in_flight() {
            let batch = self.batcher.pop_ready()?;
            let mut entries = Vec::with_capacity(batch.len());
            for entry in batch {
                if now.saturating_duration_since(entry.accepted_at) >= self.config.max_record_age {
                    self.dead(entry, DeadReason::Expired);
                } else if let Some((until, _)) = self.hot.get(&entry.key).filter(|h| h.0 > now) {
                    // Its shard is throttled: wait, spending nothing.
                    self.retry_seq += 1;
                    self.retries.insert((*until, self.retry_seq), entry);
                } else {
                    entries.push(entry);
                }
            }
            if self.hot.len() > 4096 {
                self.hot.retain(|_, h| h.0 > now);
            }
            if entries.is_empty() {
                continue;
            }
            self.in_flight += 1;
            return Some(Batch { entries });
        }
        None
    }

    /// Requests allowed in flight now: while the destination is failing,
    /// one probe at a time.
    fn allowed_in_flight(&self) -> usize {
        if self.consecutive_failures > 0 {
            1
        } else {
            (self.window as usize).clamp(1, self.config.max_in_flight.max(1))
        }
    }

    /// The sink answered `batch` with `outcome`.
    pub fn on_outcome(&mut self, now: Instant, batch: Batch<T>, outcome: &BatchOutcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            BatchOutcome::Failed(e) if e.kind != FailureKind::Permanent => {
                // Nothing was delivered and nothing was judged: the records
                // go back as they were, and the destination waits.
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let jitter = self.rng.gen::<f64>();
                let delay = self
                    .config
                    .retry
                    .backoff(self.consecutive_failures, jitter)
                    .max(self.config.retry.base / 2);
                let until = now + delay;
                self.blocked_until = Some(self.blocked_until.map_or(until, |t| t.max(until)));
                if e.kind == FailureKind::Throttled {
                    self.halve_window();
                }
                self.events.push_back(Event::Retried {
                    label: e.reason,
                    records: batch.entries.len(),
                });
                for entry in batch.entries {
                    self.enqueue(entry, now);
                }
                self.events.push_back(Event::BatchDone(BatchResult::Failed));
            }
            _ => {
                // The sink answered (per record, or rejected the request as
                // a whole): the destination is up.
                self.consecutive_failures = 0;
                self.blocked_until = None;
                self.judge_records(now, batch, outcome);
            }
        }
    }

    fn judge_records(&mut self, now: Instant, batch: Batch<T>, outcome: &BatchOutcome) {
        let total = batch.entries.len();
        let mut delivered = 0usize;
        let mut throttled = 0usize;
        for (i, mut entry) in batch.entries.into_iter().enumerate() {
            entry.attempts += 1;
            match outcome.record(i) {
                RecordOutcome::Delivered => {
                    delivered += 1;
                    if !self.hot.is_empty() {
                        self.hot.remove(&entry.key);
                    }
                    self.release(&entry);
                    self.events.push_back(Event::Delivered(entry));
                }
                RecordOutcome::Rejected(why) => {
                    if entry.attempts >= self.config.retry.max_attempts {
                        self.dead(entry, DeadReason::Rejected(why));
                    } else if matches!(outcome, BatchOutcome::Failed(_)) {
                        // A whole request refused (credentials, missing
                        // stream): a few tries, since a config push may fix
                        // it, then the dead-letter store.
                        self.schedule_retry(now, entry, "rejected");
                    } else {
                        self.dead(entry, DeadReason::Rejected(why));
                    }
                }
                RecordOutcome::Retryable(reason) => {
                    if reason.throttled {
                        throttled += 1;
                    }
                    if entry.attempts >= self.config.retry.max_attempts {
                        let attempts = entry.attempts;
                        self.dead(
                            entry,
                            DeadReason::AttemptsExhausted {
                                label: reason.label,
                                attempts,
                            },
                        );
                    } else {
                        let key = entry.key;
                        self.schedule_retry(now, entry, reason.label);
                        if reason.throttled {
                            self.heat(key, now);
                        }
                    }
                }
            }
        }
        if throttled * 2 > total {
            self.halve_window();
        } else if delivered == total {
            let max = self.config.max_in_flight.max(1) as f64;
            self.window = (self.window + 1.0 / self.window).min(max);
        }
        let result = if delivered == total {
            BatchResult::Ok
        } else if delivered == 0 && matches!(outcome, BatchOutcome::Failed(_)) {
            BatchResult::Failed
        } else {
            BatchResult::Partial
        };
        self.events.push_back(Event::BatchDone(result));
    }

    fn schedule_retry(&mut self, now: Instant, entry: Entry<T>, label: &'static str) {
        let jitter = self.rng.gen::<f64>();
        let due = now + self.config.retry.backoff(entry.attempts, jitter);
        self.retry_seq += 1;
        self.retries.insert((due, self.retry_seq), entry);
        self.events.push_back(Event::Retried { label, records: 1 });
    }

    /// A record of `key` was throttled: hold the key's records back, longer
    /// each time in a row (one throttle per request counts: a batch holds
    /// many records of a hot key). The wait is at least half the ceiling so
    /// a hot key is not probed at once by an unlucky jitter sample.
    fn heat(&mut self, key: u64, now: Instant) {
        let jitter = self.rng.gen::<f64>();
        let (until, strikes) = self.hot.entry(key).or_insert((now, 0));
        if *until > now && *strikes > 0 && until.duration_since(now) > self.config.retry.base {
            return;
        }
        *strikes = strikes.saturating_add(1);
        let ceiling = self.config.retry.backoff(*strikes, 1.0);
        *until = now + ceiling.mul_f64(0.5 + jitter / 2.0);
    }

    fn halve_window(&mut self) {
        self.window = (self.window / 2.0).max(1.0);
    }

    fn dead(&mut self, entry: Entry<T>, reason: DeadReason) {
        self.release(&entry);
        self.events.push_back(Event::DeadLetter(entry, reason));
    }

    fn release(&mut self, entry: &Entry<T>) {
        self.held_records = self.held_records.saturating_sub(1);
        self.held_bytes = self.held_bytes.saturating_sub(entry.size);
    }

    /// Moves records whose time has come: due retries into batches, and a
    /// lingering batch closed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now && !self.closing {
                break;
            }
            let e = entry.remove();
            self.enqueue(e, now);
        }
        if self.closing {
            self.batcher.flush();
        } else {
            self.batcher.poll(now);
        }
    }

    /// When [`Self::handle_timeout`] or [`Self::poll_batch`] has work next.
    /// A ready batch that [`Self::poll_batch`] left behind waits for the
    /// backoff, or for a request in flight to end (the driver polls again
    /// after every outcome).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let batch_due = if self.batcher.has_ready() {
            self.blocked_until
        } else {
            self.batcher.deadline()
        };
        [batch_due, self.retries.keys().next().map(|k| k.0)]
            .into_iter()
            .flatten()
            .map(|t| self.blocked_until.map_or(t, |b| t.max(b)))
            .min()
    }

    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// Records held, and their bytes (what the driver's window counts).
    pub fn held(&self) -> (usize, usize) {
        (self.held_records, self.held_bytes)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether nothing is held and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.held_records == 0 && self.in_flight == 0
    }

    /// Whether the destination is backing off after whole-request failures.
    pub fn is_blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }

    /// Current AIMD window (requests in flight allowed).
    pub fn window(&self) -> usize {
        self.allowed_in_flight()
    }

    /// Hands back every record not in flight (batched or waiting), for a
    /// driver that stops: a spool keeps them, a memory queue counts them
    /// lost. Records in flight are the driver's.
    pub fn abandon(&mut self) -> Vec<Entry<T>> {
        self.batcher.flush();
        let mut out = Vec::new();
        while let Some(batch) = self.batcher.pop_ready() {
            out.extend(batch);
        }
        out.extend(std::mem::take(&mut self.retries).into_values());
        for e in &out {
            self.held_records = self.held_records.saturating_sub(1);
            self.held_bytes = self.held_bytes.saturating_sub(e.size);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sinks::{RetryReason, SinkError};
    use proptest::prelude::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_records: 10,
        max_bytes: 10_000,
        max_record_bytes: 1_000,
    };

    fn config() -> CoreConfig {
        CoreConfig {
            limits: LIMITS,
            linger: Duration::from_millis(10),
            max_in_flight: 4,
            retry: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(100),
                cap: Duration::from_secs(2),
            },
            max_record_age: Duration::from_secs(3600),
        }
    }

    fn refused() -> BatchOutcome {
        BatchOutcome::Failed(SinkError {
            kind: FailureKind::Transient,
            reason: "connect",
            message: "connection refused".into(),
        })
    }

    fn all_ok(n: usize) -> BatchOutcome {
        BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; n])
    }

    struct Sim {
        core: DestinationCore<u32>,
        now: Instant,
        delivered: HashMap<u32, usize>,
        dead: Vec<(u32, DeadReason)>,
        sent: HashMap<u32, usize>,
    }

    impl Sim {
        fn new(config: CoreConfig) -> Self {
            Self {
                core: DestinationCore::new(config, 7),
                now: Instant::now(),
                delivered: HashMap::new(),
                dead: Vec::new(),
                sent: HashMap::new(),
            }
        }

        fn push(&mut self, ids: std::ops::Range<u32>) {
            for id in ids {
                self.core.push(id, 10, u64::from(id), self.now, self.now);
            }
        }

        /// Sends every batch allowed now through `sink`, then drains events.
        fn step(&mut self, sink: &mut dyn FnMut(&[u32]) -> BatchOutcome) {
            let mut batches = Vec::new();
            while let Some(b) = self.core.poll_batch(self.now) {
                batches.push(b);
            }
            for b in batches {
                let ids: Vec<u32> = b.entries.iter().map(|e| e.item).collect();
                for id in &ids {
                    *self.sent.entry(*id).or_default() += 1;
                }
                let outcome = sink(&ids);
                self.core.on_outcome(self.now, b, &outcome);
            }
            self.drain();
        }

        fn drain(&mut self) {
            while let Some(ev) = self.core.poll_event() {
                match ev {
                    Event::Delivered(e) => *self.delivered.entry(e.item).or_default() += 1,
                    Event::DeadLetter(e, why) => self.dead.push((e.item, why)),
                    Event::Retried { .. } | Event::BatchDone(_) => {}
                }
            }
        }

        /// Advances the clock to the core's next wake-up (or by `max`).
        fn advance(&mut self, max: Duration) {
            let next = self.core.poll_timeout().unwrap_or(self.now + max);
            self.now = next.max(self.now).min(self.now + max);
        }
    }

    #[test]
    fn an_outage_spends_no_attempts_and_loses_nothing() {
        let mut sim = Sim::new(config());
        sim.push(0..25);
        let start = sim.now;
        // Ten minutes of refused connections: far more requests than
        // max_attempts, none of them counts against a record.
        let mut requests_during_outage = 0;
        while sim.now < start + Duration::from_secs(600) {
            sim.step(&mut |_| {
                requests_during_outage += 1;
                refused()
            });
            sim.advance(Duration::from_secs(1));
        }
        assert!(requests_during_outage > 10, "{requests_during_outage}");
        // Backing off, one probe at a time: a handful of requests a minute
        // at the cap, not thousands.
        assert!(requests_during_outage < 1000, "{requests_during_outage}");
        assert!(sim.dead.is_empty(), "{:?}", sim.dead);
        assert_eq!(sim.core.held().0, 25);
        for _ in 0..20 {
            sim.step(&mut |ids| all_ok(ids.len()));
            sim.advance(Duration::from_secs(3));
        }
        assert_eq!(sim.delivered.len(), 25);
        assert!(sim.delivered.values().all(|&n| n == 1));
        assert!(sim.core.is_idle());
    }

    #[test]
    fn only_failed_records_are_sent_again() {
        let mut sim = Sim::new(config());
        sim.push(0..10);
        sim.advance(Duration::from_millis(20));
        // Odd records throttled on the first attempt only.
        let mut first = true;
        for _ in 0..100 {
            sim.step(&mut |ids| {
                let out = ids
                    .iter()
                    .map(|id| {
                        if first && id % 2 == 1 {
                            RecordOutcome::Retryable(RetryReason::throttled("throughput_exceeded"))
                        } else {
                            RecordOutcome::Delivered
                        }
                    })
                    .collect();
                first = false;
                BatchOutcome::PerRecord(out)
            });
            sim.advance(Duration::from_secs(1));
        }
        assert_eq!(sim.delivered.len(), 10);
        for id in 0..10u32 {
            let expected = if id % 2 == 1 { 2 } else { 1 };
            assert_eq!(sim.sent[&id], expected, "record {id}");
            assert_eq!(sim.delivered[&id], 1);
        }
    }

    #[test]
    fn rejected_and_exhausted_records_are_dead_lettered_with_their_reason() {
        let mut sim = Sim::new(config());
        sim.push(0..2);
        sim.advance(Duration::from_millis(20));
        for _ in 0..20 {
            sim.step(&mut |ids| {
                BatchOutcome::PerRecord(
                    ids.iter()
                        .map(|id| {
                            if *id == 0 {
                                RecordOutcome::Rejected("ValidationException: bad".into())
                            } else {
                                RecordOutcome::Retryable(RetryReason::transient("internal_failure"))
                            }
                        })
                        .collect(),
                )
            });
            sim.advance(Duration::from_secs(3));
        }
        assert!(sim.delivered.is_empty());
        assert_eq!(sim.sent[&0], 1);
        assert_eq!(sim.sent[&1], 3, "max_attempts");
        sim.dead.sort_by_key(|d| d.0);
        assert_eq!(
            sim.dead,
            vec![
                (0, DeadReason::Rejected("ValidationException: bad".into())),
                (
                    1,
                    DeadReason::AttemptsExhausted {
                        label: "internal_failure",
                        attempts: 3
                    }
                )
            ]
        );
        assert!(sim.core.is_idle());
    }

    #[test]
    fn records_older_than_max_age_are_dead_lettered_not_sent() {
        let mut c = config();
        c.max_record_age = Duration::from_secs(60);
        let mut sim = Sim::new(c);
        sim.push(0..5);
        let start = sim.now;
        while sim.now < start + Duration::from_secs(120) {
            sim.step(&mut |_| refused());
            sim.advance(Duration::from_secs(5));
        }
        assert_eq!(sim.dead.len(), 5);
        assert!(sim.dead.iter().all(|d| d.1 == DeadReason::Expired));
        assert!(sim.core.is_idle());
    }

    #[test]
    fn throttling_halves_the_window_and_success_grows_it() {
        let mut sim = Sim::new(config());
        assert_eq!(sim.core.window(), 4);
        sim.push(0..10);
        sim.advance(Duration::from_millis(20));
        sim.step(&mut |ids| {
            BatchOutcome::PerRecord(vec![
                RecordOutcome::Retryable(RetryReason::throttled("t"));
                ids.len()
            ])
        });
        assert_eq!(sim.core.window(), 2);
        for _ in 0..40 {
            sim.push(100..110);
            sim.advance(Duration::from_secs(3));
            sim.step(&mut |ids| all_ok(ids.len()));
        }
        assert_eq!(sim.core.window(), 4);
    }

    #[test]
    fn a_whole_request_rejection_is_tried_a_few_times_then_dead_lettered() {
        let mut sim = Sim::new(config());
        sim.push(0..3);
        sim.advance(Duration::from_millis(20));
        for _ in 0..20 {
            sim.step(&mut |_| {
                BatchOutcome::Failed(SinkError {
                    kind: FailureKind::Permanent,
                    reason: "access_denied",
                    message: "HTTP 400 AccessDeniedException".into(),
                })
            });
            sim.advance(Duration::from_secs(3));
        }
        assert_eq!(sim.dead.len(), 3);
        assert!(sim.sent.values().all(|&n| n == 3));
    }

    #[test]
    fn a_hot_key_is_held_back_while_the_others_flow() {
        let mut sim = Sim::new(config());
        let start = sim.now;
        // Key 0 is over its shard's limit for the first 30 s.
        let throttle = |ids: &[u32], now: Instant| {
            BatchOutcome::PerRecord(
                ids.iter()
                    .map(|id| {
                        if id % 10 == 0 && now < start + Duration::from_secs(30) {
                            RecordOutcome::Retryable(RetryReason::throttled("throughput_exceeded"))
                        } else {
                            RecordOutcome::Delivered
                        }
                    })
                    .collect(),
            )
        };
        let mut c = config();
        c.retry.max_attempts = 100;
        sim.core = DestinationCore::new(c, 7);
        let mut next = 0u32;
        while sim.now < start + Duration::from_secs(40) {
            // Ten records a tick; one of them with the hot key.
            for id in next..next + 10 {
                sim.core
                    .push(id, 10, u64::from(id % 10 == 0), sim.now, sim.now);
            }
            next += 10;
            let now = sim.now;
            sim.step(&mut |ids| throttle(ids, now));
            sim.now += Duration::from_millis(100);
        }
        // Cold keys: delivered at once, each sent once, window never cut.
        // (The last tick's records are still lingering.)
        for id in (0..next - 10).filter(|id| id % 10 != 0) {
            assert_eq!(sim.sent.get(&id), Some(&1), "record {id}");
        }
        assert_eq!(sim.core.window(), 4);
        // The hot key's records were held back, not hammered: far fewer
        // sends than one per tick per record.
        let hot_sends: usize = (0..next)
            .filter(|id| id % 10 == 0)
            .map(|id| sim.sent.get(&id).copied().unwrap_or(0))
            .sum();
        // (Each record on its own backoff alone would be sent 8-10 times
        // in 30 s.)
        assert!(hot_sends < 3 * 400, "{hot_sends}");
        for _ in 0..50 {
            sim.step(&mut |ids| all_ok(ids.len()));
            sim.advance(Duration::from_secs(3));
        }
        assert!(sim.core.is_idle());
        assert_eq!(sim.delivered.len(), next as usize);
        assert!(sim.dead.is_empty());
    }

    #[test]
    fn abandon_hands_back_what_is_not_in_flight() {
        let mut sim = Sim::new(config());
        sim.push(0..25);
        sim.advance(Duration::from_millis(20));
        let b = sim.core.poll_batch(sim.now).unwrap();
        let rest = sim.core.abandon();
        assert_eq!(b.entries.len() + rest.len(), 25);
        assert_eq!(sim.core.held().0, b.entries.len());
    }

    proptest! {
        /// Whatever the sink does, every record ends exactly once as
        /// delivered or dead-lettered, and a delivered record is never
        /// sent again.
        #[test]
        fn every_record_settles_exactly_once(
            n in 1u32..60,
            script in proptest::collection::vec(0u8..6, 1..80),
        ) {
            let mut sim = Sim::new(config());
            sim.push(0..n);
            let mut i = 0usize;
            for _ in 0..400 {
                sim.step(&mut |ids| {
                    i += 1;
                    match script[i % script.len()] {
                        0 => refused(),
                        1 => BatchOutcome::Failed(SinkError {
                            kind: FailureKind::Throttled,
                            reason: "throttling",
                            message: String::new(),
                        }),
                        2 => BatchOutcome::PerRecord(
                            ids.iter()
                                .map(|id| if id % 3 == 0 {
                                    RecordOutcome::Retryable(RetryReason::throttled("t"))
                                } else {
                                    RecordOutcome::Delivered
                                })
                                .collect(),
                        ),
                        3 => BatchOutcome::PerRecord(
                            ids.iter()
                                .map(|id| if id % 7 == 0 {
                                    RecordOutcome::Rejected("no".into())
                                } else {
                                    RecordOutcome::Delivered
                                })
                                .collect(),
                        ),
                        4 => BatchOutcome::PerRecord(vec![]),
                        _ => all_ok(ids.len()),
                    }
                });
                if sim.core.is_idle() {
                    break;
                }
                sim.advance(Duration::from_secs(5));
            }
            // Let a well-behaved sink finish whatever is left.
            for _ in 0..100 {
                if sim.core.is_idle() { break; }
                sim.step(&mut |ids| all_ok(ids.len()));
                sim.advance(Duration::from_secs(5));
            }
            prop_assert!(sim.core.is_idle());
            let mut settled: HashMap<u32, usize> = sim.delivered.clone();
            for (id, _) in &sim.dead {
                *settled.entry(*id).or_default() += 1;
            }
            prop_assert_eq!(settled.len(), n as usize);
            prop_assert!(settled.values().all(|&c| c == 1));
        }
    }
}
