//! What the AWS sinks (Kinesis, Firehose, IoT Data) share:
//!
//! * [`client`] — the SigV4-signing client (JSON protocol and REST posts);
//! * [`error`] — sans-IO classification of error responses;
//! * [`json`] — hand-written request bodies (JSON strings, base64);
//! * [`resource_url`] — SORACOM's `https://{service}.{region}.amazonaws.com/{name}`.

pub mod client;
pub mod error;
pub mod json;
pub mod resource_url;

pub use client::{AwsConfigError, AwsJsonClient, AwsResponse, Post};
pub use error::classify_error;
pub use resource_url::{parse_service_url, ResourceUrlError};

/// Content type of the AWS JSON 1.1 protocol (Kinesis, Firehose).
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
