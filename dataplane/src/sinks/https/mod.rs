//! simgate's generic HTTPS Funnel sink (`service = "https"`, provider
//! `simgate`): records are POSTed as JSON to the destination's
//! `resourceUrl` (or its `endpoint` override).
//!
//! * `requestMode = "batch"` (default): one POST per batch, the body a JSON
//!   array of the records (`[r1,r2,…]`), each record being the SORACOM
//!   envelope or, with `payloadsOnly`, the payload (always a JSON value).
//!   The response answers for the whole batch.
//! * `requestMode = "record"`: one POST per record, the body the record
//!   itself; a batch's requests go out concurrently (at most
//!   [`RECORD_MODE_CONCURRENCY`] at a time) and each record's outcome comes
//!   from its own response, so one refused record does not take its batch
//!   with it.
//!
//! Every request carries `Content-Type: application/json` and the
//! destination's extra `headers`.
//!
//! # Signature (the receiver's recipe)
//!
//! When the group's `credentialsId` names a `psk` credential, each request
//! also carries
//!
//! ```text
//! X-Simgate-Timestamp: <unix seconds when the request was signed>
//! X-Simgate-Signature: sha256=<lower-case hex HMAC-SHA256(key, "<timestamp>." + body)>
//! ```
//!
//! where `key` is the psk's UTF-8 bytes and `body` the exact request body
//! bytes. A receiver recomputes the HMAC over the raw body it read, compares
//! it in constant time, and refuses timestamps too far from its clock (five
//! minutes is usual) to stop replays. For example, with
//! `openssl dgst -sha256 -hmac "$KEY"` over `"$TS.$BODY"`. Retries are
//! signed anew with a fresh timestamp.
//!
//! # Responses
//!
//! 2xx: delivered. 429: throttled (concurrency is halved, the records are
//! retried; `Retry-After` is not read). 5xx, 408, network errors and
//! timeouts: retried later. Any other status: refused for good, the records
//! go to the dead letters with the status as reason.
//!
//! * [`request`] — sans-IO: bodies, signature, URL and header checks,
//!   response classification;
//! * [`client`] — [`HttpsSink`], the I/O.

pub mod client;
pub mod request;

pub use client::HttpsSink;

use super::BatchLimits;

/// Most records in one batch request (the same as Kinesis and Firehose,
/// which receivers sized for SORACOM's sinks are used to).
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Most bytes of record data in one batch request (4 MiB): under the
/// default body limits of common servers once raised for webhooks, and
/// Firehose's figure.
pub const MAX_BYTES_PER_REQUEST: usize = 4 << 20;
/// Largest record (1 MiB, Kinesis's figure). A bigger one is dead-lettered
/// as `too_large` before it is ever sent.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Requests of one batch in flight at once in record mode: enough to hide
/// a round trip per record, few enough not to swamp a small receiver (the
/// delivery core may run several batches at a time on top of this).
pub const RECORD_MODE_CONCURRENCY: usize = 8;

/// Batch limits of the https sink.
pub const LIMITS: BatchLimits = BatchLimits {
    max_records: MAX_RECORDS_PER_REQUEST,
    max_bytes: MAX_BYTES_PER_REQUEST,
    max_record_bytes: MAX_RECORD_BYTES,
};
