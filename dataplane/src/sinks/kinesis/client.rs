//! The I/O half of the Kinesis sink: [`KinesisSink`], which sends one
//! PutRecords per batch through the shared [`AwsJsonClient`].

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use simgate_control::AwsCredentials;

use super::request;
use crate::sinks::aws::{AwsConfigError, AwsJsonClient};
use crate::sinks::{BatchLimits, BatchOutcome, Sink, SinkFuture, SinkRecord};
use crate::upstream::Upstream;

/// Kept for callers of the time when the client lived here.
pub type KinesisConfigError = AwsConfigError;

/// Largest PutRecords response we read: 500 results with error messages are
/// well under 200 KiB; anything bigger is not Kinesis talking.
const MAX_PUT_RECORDS_RESPONSE: usize = 1 << 20;

/// Delivers batches to one Kinesis data stream with PutRecords.
///
/// Each [`Sink::put_batch`] is one signed attempt; retrying failed records is
/// the caller's business, guided by the per-record outcomes.
#[derive(Debug, Clone)]
pub struct KinesisSink {
    api: AwsJsonClient,
    stream: String,
    /// SORACOM's `randomizePartitionKey`: a random partition key per record
    /// instead of the record's own (the IMSI).
    random_partition_keys: bool,
}

impl KinesisSink {
    /// A sink for `stream` at `endpoint` (`https://kinesis.{region}.amazonaws.com`
    /// or an emulator's `http://127.0.0.1:4567`), signing for `region`, with
    /// the process-wide default [`Upstream`] (tools and tests).
    /// `request_timeout` bounds connect + request + response.
    pub fn new(
        endpoint: &str,
        region: String,
        stream: String,
        credentials: AwsCredentials,
        request_timeout: Duration,
    ) -> Result<Self, KinesisConfigError> {
        let upstream = Upstream::shared_default()?;
        Self::with_upstream(
            &upstream,
            endpoint,
            region,
            stream,
            credentials,
            request_timeout,
        )
    }

    /// As [`KinesisSink::new`], connecting through `upstream` (its roots,
    /// timeouts and connection pool).
    pub fn with_upstream(
        upstream: &Upstream,
        endpoint: &str,
        region: String,
        stream: String,
        credentials: AwsCredentials,
        request_timeout: Duration,
    ) -> Result<Self, KinesisConfigError> {
        if !request::is_valid_stream_name(&stream) {
            return Err(AwsConfigError::InvalidStreamName(
                stream,
                request::MAX_STREAM_NAME,
            ));
        }
        let api = AwsJsonClient::new(
            upstream,
            endpoint,
            region,
            "kinesis",
            &credentials,
            request_timeout,
        )?;
        Ok(Self {
            api,
            stream,
            random_partition_keys: false,
        })
    }

    /// Sends each record with a random partition key (SORACOM's
    /// `randomizePartitionKey`) when `on`, spreading one SIM's records over
    /// all shards; otherwise with the record's own key, the IMSI.
    #[must_use]
    pub fn with_random_partition_keys(mut self, on: bool) -> Self {
        self.random_partition_keys = on;
        self
    }

    /// A sink for a SORACOM-style resource URL,
    /// `https://kinesis.{region}.amazonaws.com/{stream}`.
    pub fn from_resource_url(
        url: &str,
        credentials: AwsCredentials,
        request_timeout: Duration,
    ) -> Result<Self, KinesisConfigError> {
        let (region, stream) = request::parse_resource_url(url)?;
        let endpoint = match url.trim().parse::<Uri>() {
            Ok(uri) => match uri.authority() {
                Some(a) => format!("https://{a}"),
                None => url.to_owned(),
            },
            Err(_) => url.to_owned(),
        };
        Self::new(&endpoint, region, stream, credentials, request_timeout)
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    async fn put(&self, records: &[SinkRecord]) -> BatchOutcome {
        if records.is_empty() {
            // Kinesis refuses an empty Records array; nothing to send.
            return BatchOutcome::PerRecord(Vec::new());
        }
        let body = if self.random_partition_keys {
            let mut bits = rand::random::<u128>;
            request::put_records_body_keyed(
                &self.stream,
                records,
                &mut request::PartitionKeys::Random { bits: &mut bits },
            )
        } else {
            request::put_records_body(&self.stream, records)
        };
        let body = Bytes::from(body);
        let resp = match self
            .api
            .call(request::PUT_RECORDS_TARGET, body, MAX_PUT_RECORDS_RESPONSE)
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(stream = %self.stream, reason = e.reason, error = %e.message, "PutRecords failed");
                return BatchOutcome::Failed(e);
            }
        };
        if resp.status.is_success() {
            request::parse_put_records_response(&resp.body, records.len())
        } else {
            let e = resp.error();
            tracing::debug!(stream = %self.stream, status = resp.status.as_u16(), reason = e.reason, error = %e.message, "PutRecords refused");
            BatchOutcome::Failed(e)
        }
    }
}

impl Sink for KinesisSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(self.put(records))
    }

    fn limits(&self) -> BatchLimits {
        super::LIMITS
    }

    fn kind(&self) -> &'static str {
        "kinesis"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use simgate_control::Secret;

    use super::*;
    use crate::sinks::aws::ResourceUrlError;
    use crate::sinks::FailureKind;

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        }
    }

    #[tokio::test]
    async fn debug_hides_secrets() {
        let sink = KinesisSink::new(
            "http://127.0.0.1:1",
            "us-east-1".into(),
            "s".into(),
            creds(Some("tok-123")),
            Duration::from_secs(1),
        )
        .unwrap();
        let dbg = format!("{sink:?}");
        assert!(!dbg.contains("wJalrXUtnFEMI"), "{dbg}");
        assert!(!dbg.contains("tok-123"), "{dbg}");
        assert!(dbg.contains("127.0.0.1"), "{dbg}");
    }

    #[tokio::test]
    async fn config_errors() {
        let new = |endpoint: &str, region: &str, stream: &str| {
            KinesisSink::new(
                endpoint,
                region.into(),
                stream.into(),
                creds(None),
                Duration::from_secs(1),
            )
        };
        assert!(matches!(
            new("ftp://x", "r", "s"),
            Err(AwsConfigError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            new("no scheme", "r", "s"),
            Err(AwsConfigError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            new("http://x", "", "s"),
            Err(AwsConfigError::EmptyRegion)
        ));
        assert!(matches!(
            new("http://x", "r", "a/b"),
            Err(AwsConfigError::InvalidStreamName(..))
        ));
        let sink = KinesisSink::from_resource_url(
            "https://kinesis.ap-northeast-1.amazonaws.com/devices",
            creds(None),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(sink.stream(), "devices");
        let dbg = format!("{:?}", sink.api);
        assert!(dbg.contains("ap-northeast-1"), "{dbg}");
        assert!(
            dbg.contains("https://kinesis.ap-northeast-1.amazonaws.com/"),
            "{dbg}"
        );
        assert!(matches!(
            KinesisSink::from_resource_url(
                "https://example.com/s",
                creds(None),
                Duration::from_secs(1)
            ),
            Err(AwsConfigError::ResourceUrl(
                ResourceUrlError::NotServiceHost { .. }
            ))
        ));
    }

    #[tokio::test]
    async fn connection_refused_is_transient_connect() {
        // Bind and drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = KinesisSink::new(
            &format!("http://127.0.0.1:{port}"),
            "us-east-1".into(),
            "s".into(),
            creds(None),
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

    #[tokio::test]
    async fn silent_server_is_a_timeout() {
        // Accepts connections (the kernel backlog does) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = KinesisSink::new(
            &format!("http://127.0.0.1:{port}"),
            "us-east-1".into(),
            "s".into(),
            creds(None),
            Duration::from_millis(200),
        )
        .unwrap();
        let records = [SinkRecord {
            partition_key: "k".into(),
            data: Bytes::from_static(b"x"),
        }];
        match sink.put_batch(&records).await {
            BatchOutcome::Failed(e) => {
                assert_eq!(e.kind, FailureKind::Transient);
                assert_eq!(e.reason, "timeout");
            }
            other => panic!("{other:?}"),
        }
        drop(listener);
    }
}
