//! The I/O half of the AWS IoT sink: [`AwsIotSink`], which publishes each
//! record of a batch through the shared [`AwsJsonClient`].

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _};
use simgate_control::AwsCredentials;

use super::request::{self, IotResource};
use crate::sinks::aws::{AwsConfigError, AwsJsonClient, Post};
use crate::sinks::{BatchLimits, BatchOutcome, Sink, SinkError, SinkFuture, SinkRecord};
use crate::upstream::Upstream;

/// Largest Publish response we read (IoT answers `{}` or a short error).
const MAX_RESPONSE: usize = 64 << 10;

/// Publishes each record to an AWS IoT Core topic over HTTPS.
#[derive(Debug, Clone)]
pub struct AwsIotSink {
    api: AwsJsonClient,
    /// The topic template, with `#{imsi}` for the sender's IMSI.
    topic: String,
    /// `sendPayloadsAsBinary`: the records are the device's bytes.
    binary: bool,
}

impl AwsIotSink {
    /// A sink for `resource`, sending to `endpoint` (the resource's own
    /// data endpoint, or an override such as an emulator's `http://…`).
    pub fn with_upstream(
        upstream: &Upstream,
        endpoint: &str,
        resource: IotResource,
        binary: bool,
        credentials: &AwsCredentials,
        request_timeout: Duration,
    ) -> Result<Self, AwsConfigError> {
        let api = AwsJsonClient::new(
            upstream,
            endpoint,
            resource.region,
            request::SIGNING_NAME,
            credentials,
            request_timeout,
        )?;
        Ok(Self {
            api,
            topic: resource.topic,
            binary,
        })
    }

    async fn publish(&self, record: &SinkRecord) -> Result<(), SinkError> {
        let path = request::publish_path(&request::topic_for(&self.topic, &record.partition_key));
        let post = Post {
            path_and_query: &path,
            content_type: if self.binary {
                "application/octet-stream"
            } else {
                "application/json"
            },
            target: None,
        };
        let resp = self
            .api
            .post(&post, Bytes::clone(&record.data), MAX_RESPONSE)
            .await?;
        request::outcome(resp.status.as_u16(), resp.error_type.as_deref(), &resp.body)
    }

    async fn put(&self, records: &[SinkRecord]) -> BatchOutcome {
        // By index: a closure over `&SinkRecord` would not be general
        // enough for the boxed `Send` future.
        let results: Vec<Result<(), SinkError>> = stream::iter(0..records.len())
            .map(|i| self.publish(&records[i]))
            .buffered(super::PUBLISH_CONCURRENCY)
            .collect()
            .await;
        if let Some(e) = request_level_failure(&results) {
            tracing::debug!(topic = %self.topic, reason = e.reason, error = %e.message, "IoT publish failed");
            return BatchOutcome::Failed(e);
        }
        BatchOutcome::PerRecord(
            results
                .iter()
                .map(|r| match r {
                    Ok(()) => crate::sinks::RecordOutcome::Delivered,
                    Err(e) => request::record_outcome(e),
                })
                .collect(),
        )
    }
}

/// When no publish got through and none failed for its own content (a
/// record too large), the destination is what failed (down, throttling
/// everything, credentials refused): say so as a failure of the whole
/// batch, so that the delivery core waits instead of spending the records'
/// attempts.
fn request_level_failure(results: &[Result<(), SinkError>]) -> Option<SinkError> {
    let mut first = None;
    for r in results {
        match r {
            Ok(()) => return None,
            Err(e) if e.reason == "too_large" => return None,
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    first.cloned()
}

impl Sink for AwsIotSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(self.put(records))
    }

    fn limits(&self) -> BatchLimits {
        super::LIMITS
    }

    fn kind(&self) -> &'static str {
        "aws-iot"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use simgate_control::Secret;

    use super::*;
    use crate::sinks::FailureKind;

    fn err(kind: FailureKind, reason: &'static str) -> Result<(), SinkError> {
        Err(SinkError {
            kind,
            reason,
            message: reason.into(),
        })
    }

    #[test]
    fn whole_batch_failures() {
        assert_eq!(request_level_failure(&[]), None);
        let down = err(FailureKind::Transient, "connect_refused");
        let big = err(FailureKind::Permanent, "too_large");
        assert_eq!(request_level_failure(&[down.clone(), Ok(())]), None);
        assert_eq!(request_level_failure(&[down.clone(), big]), None);
        let e = request_level_failure(&[down.clone(), err(FailureKind::Throttled, "throttling")])
            .unwrap();
        assert_eq!(e.reason, "connect_refused");
    }

    #[tokio::test]
    async fn connection_refused_fails_the_batch() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let resource =
            request::parse_resource_url("https://x.iot.us-east-1.amazonaws.com/t/#{imsi}").unwrap();
        let sink = AwsIotSink::with_upstream(
            &Upstream::shared_default().unwrap(),
            &format!("http://127.0.0.1:{port}"),
            resource,
            false,
            &AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI"),
                session_token: None,
            },
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!format!("{sink:?}").contains("wJalrXUtnFEMI"));
        let records = [SinkRecord {
            partition_key: "001010000000001".into(),
            data: Bytes::from_static(b"{}"),
        }];
        match sink.put_batch(&records).await {
            BatchOutcome::Failed(e) => assert_eq!(e.reason, "connect_refused"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.put_batch(&[]).await, BatchOutcome::PerRecord(vec![]));
    }
}
