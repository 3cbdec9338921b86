//! Where Funnel delivers. Each sink is a folder with its request builder
//! (pure), its client (I/O) and its limits as constants; all of them answer a
//! batch with one outcome per record so that only failed records are retried.

pub mod aws;
pub mod aws_iot;
pub mod eventhubs;
pub mod exchange;
pub mod factory;
pub mod firehose;
pub mod https;
pub mod kinesis;
pub mod null;
pub mod pubsub;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// One record as a sink receives it: the encoded envelope and its partition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    /// Kinesis partition key (the IMSI): 1 to 256 characters.
    pub partition_key: std::sync::Arc<str>,
    pub data: Bytes,
}

/// Why a record may succeed on a later attempt, as the sink names it: the
/// generic delivery core knows no service's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryReason {
    /// Short, stable metric label (e.g. `throughput_exceeded`).
    pub label: &'static str,
    /// The sink asked us to slow down: sending concurrency is halved.
    pub throttled: bool,
}

impl RetryReason {
    pub const fn throttled(label: &'static str) -> Self {
        Self {
            label,
            throttled: true,
        }
    }

    pub const fn transient(label: &'static str) -> Self {
        Self {
            label,
            throttled: false,
        }
    }
}

/// What happened to one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Delivered,
    /// Failed in a way that a later attempt may fix (throttled, internal
    /// failure).
    Retryable(RetryReason),
    /// Failed for good (e.g. too large, access denied). Carries the reason,
    /// kept with the record in the dead-letter store.
    Rejected(String),
}

/// Whether a failure that hit a whole request is worth trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The sink asked us to slow down (HTTP 429, throughput exceeded).
    Throttled,
    /// Network error, timeout, 5xx: try again later.
    Transient,
    /// Credentials refused, stream missing, request malformed: retrying the
    /// same request will not help.
    Permanent,
}

/// A failure of a whole request, with who is to blame and whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct SinkError {
    pub kind: FailureKind,
    /// Short, stable label for metrics (e.g. `timeout`, `http_503`).
    pub reason: &'static str,
    pub message: String,
}

/// The answer to one batch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The sink answered for each record, in request order.
    PerRecord(Vec<RecordOutcome>),
    /// The request as a whole failed; no record was delivered.
    Failed(SinkError),
}

impl BatchOutcome {
    /// The outcome of record `i`. A request that failed as a whole delivered
    /// nothing; whether its records spend an attempt is the delivery core's
    /// decision, not this view's.
    pub fn record(&self, i: usize) -> RecordOutcome {
        match self {
            Self::PerRecord(v) => {
                v.get(i)
                    .cloned()
                    .unwrap_or(RecordOutcome::Retryable(RetryReason::transient(
                        "missing_result",
                    )))
            }
            Self::Failed(e) => match e.kind {
                FailureKind::Permanent => RecordOutcome::Rejected(e.message.clone()),
                FailureKind::Throttled => {
                    RecordOutcome::Retryable(RetryReason::throttled(e.reason))
                }
                FailureKind::Transient => {
                    RecordOutcome::Retryable(RetryReason::transient(e.reason))
                }
            },
        }
    }
}

/// Per-sink batch limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_record_bytes: usize,
}

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = BatchOutcome> + Send + 'a>>;

/// A destination that accepts batches of records.
pub trait Sink: Send + Sync + 'static {
    /// Sends one batch, which respects [`Sink::limits`].
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a>;

    fn limits(&self) -> BatchLimits;

    /// Label for metrics, e.g. `kinesis`.
    fn kind(&self) -> &'static str;
}
