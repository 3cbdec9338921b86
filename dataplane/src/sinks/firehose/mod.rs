//! Amazon Data Firehose (Kinesis Data Firehose) PutRecordBatch sink.
//!
//! * [`request`] — sans-IO: the PutRecordBatch body, per-record outcomes,
//!   error classification, the SORACOM resource URL;
//! * [`client`] — [`FirehoseSink`], on the shared [`crate::sinks::aws`] client.

pub mod client;
pub mod request;

pub use client::FirehoseSink;
pub use request::parse_resource_url;

use super::BatchLimits;

/// Most records in one PutRecordBatch call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes of record data in one PutRecordBatch call (4 MiB).
pub const MAX_BYTES_PER_CALL: usize = 4 << 20;
/// Largest record, before base64 encoding (1,000 KiB). A bigger one is
/// dead-lettered as `too_large` before it is ever sent.
pub const MAX_RECORD_BYTES: usize = 1000 << 10;

/// PutRecordBatch limits.
pub const LIMITS: BatchLimits = BatchLimits {
    max_records: MAX_RECORDS_PER_CALL,
    max_bytes: MAX_BYTES_PER_CALL,
    max_record_bytes: MAX_RECORD_BYTES,
};
