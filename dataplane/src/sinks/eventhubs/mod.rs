//! Azure Event Hubs sink: the REST "Send batch events" API
//! (`POST https://{namespace}.servicebus.windows.net/{hub}/messages`),
//! authorised by a shared access signature (SAS) minted from the group's
//! `azure-credentials` (a shared access policy).
//!
//! * [`request`] — sans-IO: the resource URL, the batch body and how a batch
//!   is split into requests that fit, and the classification of responses;
//! * [`sas`] — sans-IO: SAS tokens and when to mint a new one (time is an
//!   argument);
//! * [`client`] — [`EventHubsSink`], the I/O on the shared [`crate::upstream`].

pub mod client;
pub mod request;
pub mod sas;

pub use client::{EventHubsConfigError, EventHubsSink};
pub use request::{parse_resource_url, EventHubUrl, EventHubsUrlError};

use super::BatchLimits;

/// Largest request body Event Hubs accepts: 1 MB (1,048,576 bytes) per
/// event *and* per batch, JSON framing included (Standard, Premium and
/// Dedicated tiers; Basic allows 256 KB). Source: Microsoft Learn, "Azure
/// Event Hubs quotas and limits" ("Maximum size of Event Hubs publication")
/// and REST API "Send batch events".
pub const MAX_REQUEST_BYTES: usize = 1_048_576;

/// Most events in one request. Event Hubs has no count limit for REST
/// batches; ours bounds the framing a full batch adds (see
/// [`EVENT_FRAMING_BUDGET`]) and matches the other sinks.
pub const MAX_EVENTS_PER_REQUEST: usize = 500;

/// Framing budgeted per event: `{"Body":"","BrokerProperties":{"PartitionKey":""}},`
/// is 52 bytes, plus a partition key (a 15-digit IMSI), rounded up.
pub const EVENT_FRAMING_BUDGET: usize = 128;

/// Record bytes in one batch. Record data is JSON (an envelope, or a
/// payload that is JSON or wrapped as `{"payload":"<base64>"}`), sent as a
/// JSON *string*: escaping at most doubles it (only `"`, `\` and
/// whitespace are escaped, each to two bytes; valid JSON has no other
/// control characters). So a full batch of these,
/// `2 × MAX_BATCH_BYTES + 500 × 128 + 2` bytes, stays within 1 MB. Data that
/// escapes worse is measured by [`request::plan`], which splits the batch
/// or rejects the record, never sending more than [`MAX_REQUEST_BYTES`].
pub const MAX_BATCH_BYTES: usize =
    (MAX_REQUEST_BYTES - 2 - MAX_EVENTS_PER_REQUEST * EVENT_FRAMING_BUDGET) / 2;

/// Largest record (492,287 bytes): one record must fit one request after
/// escaping, as a batch does. Bigger records are refused before they are
/// queued (Funnel answers 413); this is below Event Hubs' own 1 MB per event
/// because the REST batch carries the event as an escaped JSON string.
pub const MAX_RECORD_BYTES: usize = MAX_BATCH_BYTES;

/// Send batch events limits.
pub const LIMITS: BatchLimits = BatchLimits {
    max_records: MAX_EVENTS_PER_REQUEST,
    max_bytes: MAX_BATCH_BYTES,
    max_record_bytes: MAX_RECORD_BYTES,
};

// A full batch of JSON records fits one request even if every byte of it
// escapes to two; and Funnel's HTTP entry takes bodies up to 800,000 bytes, so a
// record above our limit is reachable (and refused at ingress with 413).
const _: () = assert!(
    2 * MAX_BATCH_BYTES + MAX_EVENTS_PER_REQUEST * EVENT_FRAMING_BUDGET + 2 <= MAX_REQUEST_BYTES
);
const _: () = assert!(MAX_RECORD_BYTES == 492_287 && MAX_RECORD_BYTES < 800_000);
