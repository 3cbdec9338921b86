//! AWS IoT Core sink: one HTTPS `Publish` (`POST /topics/{topic}`, SigV4
//! service `iotdata`) per record.
//!
//! * [`request`] — sans-IO: the SORACOM resource URL
//!   `https://{id}.iot.{region}.amazonaws.com/{topic}` with `#{imsi}`, the
//!   publish path, the outcome of each response;
//! * [`client`] — [`AwsIotSink`], on the shared [`crate::sinks::aws`] client.
//!
//! IoT Data has no batch call, so a batch here is a bounded number of
//! publishes sent concurrently, each with its own outcome.

pub mod client;
pub mod request;

pub use client::AwsIotSink;
pub use request::{parse_resource_url, IotResource};

use super::BatchLimits;

/// Largest message AWS IoT Core accepts (128 KiB, "Message broker and
/// protocol limits" in the AWS IoT Core quotas). A bigger record is
/// dead-lettered as `too_large` before it is ever sent.
pub const MAX_MESSAGE_BYTES: usize = 128 << 10;
/// Publishes per batch: the delivery core's unit of retry and concurrency.
pub const MAX_RECORDS_PER_BATCH: usize = 64;
/// Publishes of one batch in flight at once, over the pooled connections.
pub const PUBLISH_CONCURRENCY: usize = 16;

/// Batch limits for [`AwsIotSink`].
pub const LIMITS: BatchLimits = BatchLimits {
    max_records: MAX_RECORDS_PER_BATCH,
    max_bytes: MAX_RECORDS_PER_BATCH * MAX_MESSAGE_BYTES,
    max_record_bytes: MAX_MESSAGE_BYTES,
};
