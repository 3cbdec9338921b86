//! The I/O half of the Firehose sink: [`FirehoseSink`], which sends one
//! PutRecordBatch per batch through the shared [`AwsJsonClient`].

use std::time::Duration;

use bytes::Bytes;
use simgate_control::AwsCredentials;

use super::request;
use crate::sinks::aws::{AwsConfigError, AwsJsonClient};
use crate::sinks::{BatchLimits, BatchOutcome, Sink, SinkFuture, SinkRecord};
use crate::upstream::Upstream;

/// Largest PutRecordBatch response we read: 500 record ids or error
/// messages are well under 200 KiB.
const MAX_RESPONSE: usize = 1 << 20;

/// Delivers batches to one Firehose delivery stream with PutRecordBatch.
///
/// Each [`Sink::put_batch`] is one signed attempt; the caller retries
/// failed records as their outcomes say.
#[derive(Debug, Clone)]
pub struct FirehoseSink {
    api: AwsJsonClient,
    delivery_stream: String,
}

impl FirehoseSink {
    /// A sink for `delivery_stream` at `endpoint`
    /// (`https://firehose.{region}.amazonaws.com`, or an emulator's
    /// `http://…`), signing for `region`, connecting through `upstream`.
    pub fn with_upstream(
        upstream: &Upstream,
        endpoint: &str,
        region: String,
        delivery_stream: String,
        credentials: &AwsCredentials,
        request_timeout: Duration,
    ) -> Result<Self, AwsConfigError> {
        if !request::is_valid_delivery_stream_name(&delivery_stream) {
            return Err(AwsConfigError::InvalidStreamName(
                delivery_stream,
                request::MAX_DELIVERY_STREAM_NAME,
            ));
        }
        let api = AwsJsonClient::new(
            upstream,
            endpoint,
            region,
            request::SIGNING_NAME,
            credentials,
            request_timeout,
        )?;
        Ok(Self {
            api,
            delivery_stream,
        })
    }

    /// As [`FirehoseSink::with_upstream`] with the process-wide default
    /// [`Upstream`] (tools and tests).
    pub fn new(
        endpoint: &str,
        region: String,
        delivery_stream: String,
        credentials: &AwsCredentials,
        request_timeout: Duration,
    ) -> Result<Self, AwsConfigError> {
        let upstream = Upstream::shared_default()?;
        Self::with_upstream(
            &upstream,
            endpoint,
            region,
            delivery_stream,
            credentials,
            request_timeout,
        )
    }

    pub fn delivery_stream(&self) -> &str {
        &self.delivery_stream
    }

    async fn put(&self, records: &[SinkRecord]) -> BatchOutcome {
        if records.is_empty() {
            // Firehose refuses an empty Records array.
            return BatchOutcome::PerRecord(Vec::new());
        }
        let body = Bytes::from(request::put_record_batch_body(
            &self.delivery_stream,
            records,
        ));
        let resp = match self
            .api
            .call(request::PUT_RECORD_BATCH_TARGET, body, MAX_RESPONSE)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(delivery_stream = %self.delivery_stream, reason = e.reason, error = %e.message, "PutRecordBatch failed");
                return BatchOutcome::Failed(e);
            }
        };
        if resp.status.is_success() {
            request::parse_put_record_batch_response(&resp.body, records.len())
        } else {
            let e = request::classify_error(
                resp.status.as_u16(),
                resp.error_type.as_deref(),
                &resp.body,
            );
            tracing::debug!(delivery_stream = %self.delivery_stream, status = resp.status.as_u16(), reason = e.reason, error = %e.message, "PutRecordBatch refused");
            BatchOutcome::Failed(e)
        }
    }
}

impl Sink for FirehoseSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(self.put(records))
    }

    fn limits(&self) -> BatchLimits {
        super::LIMITS
    }

    fn kind(&self) -> &'static str {
        "firehose"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use simgate_control::Secret;

    use super::*;
    use crate::sinks::FailureKind;

    fn creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        }
    }

    #[tokio::test]
    async fn config_errors_and_debug() {
        assert!(matches!(
            FirehoseSink::new(
                "http://x",
                "r".into(),
                "a/b".into(),
                &creds(),
                Duration::from_secs(1)
            ),
            Err(AwsConfigError::InvalidStreamName(_, 64))
        ));
        let sink = FirehoseSink::new(
            "https://firehose.eu-west-1.amazonaws.com",
            "eu-west-1".into(),
            "s".into(),
            &creds(),
            Duration::from_secs(1),
        )
        .unwrap();
        let dbg = format!("{sink:?}");
        assert!(!dbg.contains("wJalrXUtnFEMI"), "{dbg}");
        assert!(dbg.contains("firehose"), "{dbg}");
        assert_eq!(sink.kind(), "firehose");
        assert_eq!(sink.limits(), super::super::LIMITS);
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = FirehoseSink::new(
            &format!("http://127.0.0.1:{port}"),
            "us-east-1".into(),
            "s".into(),
            &creds(),
            Duration::from_secs(5),
        )
        .unwrap();
        let records = [SinkRecord {
            partition_key: "k".into(),
            data: Bytes::from_static(b"x"),
        }];
        match sink.put_batch(&records).await {
            BatchOutcome::Failed(e) => {
                assert_eq!(e.kind, FailureKind::Transient);
                assert_eq!(e.reason, "connect_refused");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.put_batch(&[]).await, BatchOutcome::PerRecord(vec![]));
    }
}
