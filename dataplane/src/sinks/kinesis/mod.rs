//! AWS Kinesis Data Streams PutRecords sink.
//!
//! * [`request`] — sans-IO: the PutRecords body, per-record outcomes, error
//!   classification, the SORACOM resource URL;
//! * [`client`] — [`KinesisSink`], on the shared [`crate::sinks::aws`] client;
//! * [`admin`] — create/describe/read calls for tests and tools.

pub mod admin;
pub mod client;
pub mod request;

pub use admin::{AdminError, GetRecordsPage, KinesisAdmin};
pub use client::{KinesisConfigError, KinesisSink};
pub use request::{parse_resource_url, ResourceUrlError};

use super::BatchLimits;

/// PutRecords limits: 500 records, 5 MiB per request, 1 MiB per record
/// (data plus partition key).
pub const LIMITS: BatchLimits = BatchLimits {
    max_records: 500,
    max_bytes: 5 << 20,
    max_record_bytes: 1 << 20,
};
