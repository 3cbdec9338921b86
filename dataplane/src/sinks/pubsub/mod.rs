//! Google Cloud Pub/Sub `topics.publish` sink.
//!
//! * [`request`] — sans-IO: the publish body, the outcome of its response,
//!   the classification of Google's error responses, the topic resource;
//! * [`token`] — the service-account key file and the OAuth 2 JWT-bearer
//!   exchange (RFC 7523) that turns it into cached access tokens;
//! * [`client`] — [`PubsubSink`], through the shared [`crate::upstream`].

pub mod client;
pub mod request;
pub mod token;

pub use client::{PubsubConfigError, PubsubSink};
pub use request::{parse_resource_url, Topic, TopicError};
pub use token::{KeyFileError, ServiceAccountKey};

use super::BatchLimits;

/// Most messages in one publish request (Pub/Sub quotas and limits,
/// <https://cloud.google.com/pubsub/quotas#resource_limits>: "Publish
/// request: 1,000 messages").
pub const MAX_MESSAGES_PER_CALL: usize = 1000;

/// Largest publish request, as Google counts it ("Publish request: 10 MB
/// total size"). Read as decimal megabytes, the smaller reading.
pub const MAX_REQUEST_BYTES: usize = 10_000_000;

/// Largest message Pub/Sub accepts ("Message size (the data field):
/// 10 MB"). Kept for reference: the request limit binds first, see
/// [`MAX_RECORD_BYTES`].
pub const MAX_MESSAGE_BYTES: usize = 10_000_000;

/// Most bytes of raw record data in one request. The REST body carries each
/// record as base64 (4 bytes per 3, plus up to 4 of padding) inside
/// `{"data":""},`, so the raw budget is what keeps the encoded request of
/// [`MAX_MESSAGES_PER_CALL`] messages under [`MAX_REQUEST_BYTES`]
/// (`request::tests::largest_batch_fits_the_request_limit` checks it).
pub const MAX_BYTES_PER_CALL: usize = (MAX_REQUEST_BYTES
    - request::BATCH_OVERHEAD
    - MAX_MESSAGES_PER_CALL * (request::MESSAGE_OVERHEAD + 4))
    / 4
    * 3;

/// Largest record: one that fills a request alone. Smaller than
/// [`MAX_MESSAGE_BYTES`] because the request limit counts the base64; a
/// bigger record is dead-lettered as `too_large` before it is sent.
pub const MAX_RECORD_BYTES: usize = MAX_BYTES_PER_CALL;

/// Publish limits.
pub const LIMITS: BatchLimits = BatchLimits {
    max_records: MAX_MESSAGES_PER_CALL,
    max_bytes: MAX_BYTES_PER_CALL,
    max_record_bytes: MAX_RECORD_BYTES,
};
