//! The I/O half of the Pub/Sub sink: [`PubsubSink`], which sends one
//! `topics.publish` per batch with a cached service-account access token.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Uri};

use super::request::{self, Topic, TopicError, DEFAULT_ENDPOINT};
use super::token::{KeyFileError, ServiceAccountKey, TokenSource};
use crate::sinks::exchange::exchange;
use crate::sinks::{
    BatchLimits, BatchOutcome, FailureKind, Sink, SinkError, SinkFuture, SinkRecord,
};
use crate::upstream::{HttpClient, Upstream, UpstreamConfigError};

/// Largest publish response read: 1,000 message ids are about 20 KiB.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a Pub/Sub sink cannot be built from its destination and credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubsubConfigError {
    #[error("Google service account key: {0}")]
    KeyFile(#[from] KeyFileError),
    #[error("resourceUrl: {0}")]
    Topic(#[from] TopicError),
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
}

/// Delivers batches to one Pub/Sub topic.
///
/// Each [`Sink::put_batch`] is one publish attempt (after, when needed, one
/// token exchange); the caller retries as the outcomes say.
#[derive(Debug)]
pub struct PubsubSink {
    http: HttpClient,
    publish_uri: Uri,
    topic: Topic,
    tokens: TokenSource,
    timeout: Duration,
}

impl PubsubSink {
    /// A sink for SORACOM's `resource_url` with the key file `key_file`
    /// (its whole JSON text), publishing to `endpoint` if given (tests, a
    /// private endpoint), else to the URL's host or the global endpoint.
    pub fn with_upstream(
        upstream: &Upstream,
        resource_url: &str,
        endpoint: Option<&str>,
        key_file: &str,
        request_timeout: Duration,
    ) -> Result<Self, PubsubConfigError> {
        let key = ServiceAccountKey::parse(key_file)?;
        let topic = request::parse_resource_url(resource_url, &key.project_id)?;
        let endpoint = endpoint
            .or(topic.endpoint.as_deref())
            .unwrap_or(DEFAULT_ENDPOINT);
        let publish_uri = publish_uri(endpoint, &topic)?;
        let http = upstream.http().clone();
        Ok(Self {
            tokens: TokenSource::new(http.clone(), key, request_timeout),
            http,
            publish_uri,
            topic,
            timeout: request_timeout,
        })
    }

    /// As [`PubsubSink::with_upstream`] with the process-wide default
    /// [`Upstream`] (tools and tests).
    pub fn new(
        resource_url: &str,
        endpoint: Option<&str>,
        key_file: &str,
        request_timeout: Duration,
    ) -> Result<Self, PubsubConfigError> {
        let upstream = Upstream::shared_default()?;
        Self::with_upstream(&upstream, resource_url, endpoint, key_file, request_timeout)
    }

    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    pub fn publish_uri(&self) -> &Uri {
        &self.publish_uri
    }

    async fn put(&self, records: &[SinkRecord]) -> BatchOutcome {
        if records.is_empty() {
            // Pub/Sub refuses a publish without messages.
            return BatchOutcome::PerRecord(Vec::new());
        }
        let bearer = match self.tokens.bearer().await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(topic = %self.topic.topic, reason = e.reason, error = %e.message, "no Pub/Sub access token");
                return BatchOutcome::Failed(e);
            }
        };
        let req = match Request::builder()
            .method(Method::POST)
            .uri(self.publish_uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(AUTHORIZATION, bearer.header.clone())
            .body(Bytes::from(request::publish_body(records)))
        {
            Ok(req) => req,
            Err(e) => {
                return BatchOutcome::Failed(SinkError {
                    kind: FailureKind::Permanent,
                    reason: "request",
                    message: format!("building the publish request: {e}"),
                })
            }
        };
        let (status, body) = match exchange(&self.http, req, self.timeout, MAX_RESPONSE)
            .await
            .map(|r| (r.status, r.body))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(topic = %self.topic.topic, reason = e.reason, error = %e.message, "publish failed");
                return BatchOutcome::Failed(e);
            }
        };
        if status.is_success() {
            if bearer.after_rejection {
                self.tokens.confirm(bearer.generation).await;
            }
            return request::parse_publish_response(&body, records.len());
        }
        let mut classified = request::classify_error(status.as_u16(), &body);
        if classified.token_rejected {
            self.tokens.invalidate(bearer.generation).await;
            // A token fresh from the exchange, refused as well: the account
            // cannot publish, whatever the next token.
            if bearer.after_rejection {
                classified.error.kind = FailureKind::Permanent;
            }
        }
        let e = classified.error;
        tracing::debug!(topic = %self.topic.topic, status = status.as_u16(), reason = e.reason, error = %e.message, "publish refused");
        BatchOutcome::Failed(e)
    }
}

impl Sink for PubsubSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(self.put(records))
    }

    fn limits(&self) -> BatchLimits {
        super::LIMITS
    }

    fn kind(&self) -> &'static str {
        "pubsub"
    }
}

/// `{endpoint}/v1/projects/{p}/topics/{t}:publish`; only the endpoint's
/// scheme and authority are used.
fn publish_uri(endpoint: &str, topic: &Topic) -> Result<Uri, PubsubConfigError> {
    let invalid = |reason: String| PubsubConfigError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let parsed: Uri = endpoint
        .trim()
        .parse()
        .map_err(|e| invalid(format!("{e}")))?;
    let Some(scheme @ ("http" | "https")) = parsed.scheme_str() else {
        return Err(invalid("expected an http:// or https:// URL".into()));
    };
    let authority = parsed
        .authority()
        .ok_or_else(|| invalid("no host".into()))?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority.as_str())
        .path_and_query(topic.publish_path())
        .build()
        .map_err(|e| invalid(format!("{e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sinks::pubsub::token::tests::key_file;

    #[tokio::test]
    async fn builds_the_publish_uri() {
        let kf = key_file("https://oauth2.googleapis.com/token").to_string();
        let t = Duration::from_secs(1);
        let sink = PubsubSink::new("devices", None, &kf, t).unwrap();
        assert_eq!(
            sink.publish_uri(),
            "https://pubsub.googleapis.com/v1/projects/simgate-test/topics/devices:publish"
        );
        let sink = PubsubSink::new(
            "https://europe-west1-pubsub.googleapis.com/v1/projects/p/topics/dev",
            None,
            &kf,
            t,
        )
        .unwrap();
        assert_eq!(
            sink.publish_uri(),
            "https://europe-west1-pubsub.googleapis.com/v1/projects/p/topics/dev:publish"
        );
        let sink = PubsubSink::new(
            "projects/p/topics/dev",
            Some("https://127.0.0.1:8443/ignored"),
            &kf,
            t,
        )
        .unwrap();
        assert_eq!(
            sink.publish_uri(),
            "https://127.0.0.1:8443/v1/projects/p/topics/dev:publish"
        );
        assert_eq!(sink.kind(), "pubsub");
        assert_eq!(sink.limits(), super::super::LIMITS);
        let dbg = format!("{sink:?}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");

        assert!(matches!(
            PubsubSink::new("devices", Some("ftp://x"), &kf, t),
            Err(PubsubConfigError::InvalidEndpoint { .. })
        ));
        assert!(matches!(
            PubsubSink::new("goog", None, &kf, t),
            Err(PubsubConfigError::Topic(TopicError::InvalidTopic(_)))
        ));
        assert!(matches!(
            PubsubSink::new("devices", None, "{}", t),
            Err(PubsubConfigError::KeyFile(KeyFileError::Missing("type")))
        ));
    }

    #[tokio::test]
    async fn unreachable_token_endpoint_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kf = key_file(&format!("https://127.0.0.1:{port}/token")).to_string();
        let sink = PubsubSink::new("devices", None, &kf, Duration::from_secs(5)).unwrap();
        let records = [SinkRecord {
            partition_key: "k".into(),
            data: Bytes::from_static(b"x"),
        }];
        match sink.put_batch(&records).await {
            BatchOutcome::Failed(e) => {
                assert_eq!(e.kind, FailureKind::Transient);
                assert_eq!(e.reason, "connect_refused");
                assert!(e.message.contains("token endpoint"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.put_batch(&[]).await, BatchOutcome::PerRecord(vec![]));
    }
}
