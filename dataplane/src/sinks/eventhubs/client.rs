//! The I/O half of the Event Hubs sink: [`EventHubsSink`] posts each batch
//! with "Send batch events" through the shared [`Upstream`] HTTP client,
//! signed with a cached SAS token.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Uri};
use simgate_control::AzureCredentials;

use super::request::{self, EventHubUrl, EventHubsUrlError, Plan};
use super::sas::{SasCache, SasSigner};
use super::MAX_REQUEST_BYTES;
use crate::sinks::exchange::exchange;
use crate::sinks::{
    BatchLimits, BatchOutcome, FailureKind, RecordOutcome, RetryReason, Sink, SinkError,
    SinkFuture, SinkRecord,
};
use crate::upstream::{HttpClient, Upstream, UpstreamConfigError};

/// Largest response body read: a 201 is empty and an error is one short
/// `<Error>` document.
const MAX_RESPONSE: usize = 64 << 10;

/// Why an Event Hubs sink could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventHubsConfigError {
    #[error("resourceUrl: {0}")]
    ResourceUrl(#[from] EventHubsUrlError),
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("shared access policy name must not be empty")]
    EmptyPolicyName,
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
}

/// Delivers batches to one event hub.
///
/// Each [`Sink::put_batch`] is one attempt (one request, or several when
/// escaped records would not fit one); the delivery core retries.
pub struct EventHubsSink {
    http: HttpClient,
    /// Where requests go: the resource URL's host, or the destination's
    /// `endpoint` override (scheme, host and port only).
    uri: Uri,
    hub: EventHubUrl,
    sas: Mutex<SasCache>,
    timeout: Duration,
}

impl std::fmt::Debug for EventHubsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubsSink")
            .field("uri", &self.uri)
            .field("hub", &self.hub)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `scheme://authority` of `endpoint` with `path_and_query`.
fn override_uri(endpoint: &str, path_and_query: &str) -> Result<Uri, EventHubsConfigError> {
    let invalid = |reason: String| EventHubsConfigError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let parsed: Uri = endpoint
        .trim()
        .parse()
        .map_err(|e| invalid(format!("{e}")))?;
    let scheme = match parsed.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        Some(other) => {
            return Err(invalid(format!(
                "scheme must be http or https, not {other:?}"
            )))
        }
        None => return Err(invalid("no scheme (expected https://)".into())),
    };
    let authority = parsed
        .authority()
        .ok_or_else(|| invalid("no host".into()))?;
    Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority.as_str())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| invalid(format!("{e}")))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl EventHubsSink {
    /// A sink for the event hub of `resource_url`
    /// (`https://{namespace}.servicebus.windows.net/{hub}/messages`),
    /// sending to `endpoint` instead when given; the SAS token is always for
    /// the resource URL.
    pub fn with_upstream(
        upstream: &Upstream,
        resource_url: &str,
        endpoint: Option<&str>,
        credentials: &AzureCredentials,
        request_timeout: Duration,
    ) -> Result<Self, EventHubsConfigError> {
        let hub = request::parse_resource_url(resource_url)?;
        if credentials.policy_name.trim().is_empty() {
            return Err(EventHubsConfigError::EmptyPolicyName);
        }
        let default_endpoint = format!("https://{}", hub.host);
        let uri = override_uri(endpoint.unwrap_or(&default_endpoint), &hub.path_and_query())?;
        let signer = SasSigner::new(
            &hub.resource_uri(),
            &credentials.policy_name,
            credentials.key.expose(),
        );
        Ok(Self {
            http: upstream.http().clone(),
            uri,
            hub,
            sas: Mutex::new(SasCache::new(signer)),
            timeout: request_timeout,
        })
    }

    /// As [`EventHubsSink::with_upstream`] with the process-wide default
    /// [`Upstream`] (tools and tests).
    pub fn new(
        resource_url: &str,
        endpoint: Option<&str>,
        credentials: &AzureCredentials,
        request_timeout: Duration,
    ) -> Result<Self, EventHubsConfigError> {
        let upstream = Upstream::shared_default()?;
        Self::with_upstream(
            &upstream,
            resource_url,
            endpoint,
            credentials,
            request_timeout,
        )
    }

    pub fn hub(&self) -> &str {
        &self.hub.hub
    }

    fn authorization(&self) -> Result<HeaderValue, SinkError> {
        let mut cache = self.sas.lock().unwrap_or_else(PoisonError::into_inner);
        HeaderValue::from_str(cache.token(unix_now())).map_err(|e| SinkError {
            kind: FailureKind::Permanent,
            reason: "signing",
            message: format!("SAS token is not a valid header: {e}"),
        })
    }

    async fn put(&self, records: &[SinkRecord]) -> BatchOutcome {
        if records.is_empty() {
            return BatchOutcome::PerRecord(Vec::new());
        }
        let plan = request::plan(records, MAX_REQUEST_BYTES);
        if request::is_single_request(&plan, records.len()) {
            let Some(only) = plan.requests.into_iter().next() else {
                return BatchOutcome::PerRecord(Vec::new());
            };
            return self.send(Bytes::from(only.body), records.len()).await;
        }
        self.put_split(records.len(), plan).await
    }

    /// A batch that needs several requests (or has records that fit none):
    /// each request in turn; after one failed as a whole for a reason other
    /// than its content, the rest wait for the next attempt instead of
    /// hammering a hub that is down or throttling.
    async fn put_split(&self, total: usize, mut plan: Plan) -> BatchOutcome {
        let mut outcomes = Vec::with_capacity(plan.requests.len());
        let mut unsent = RecordOutcome::Retryable(RetryReason::transient("not_sent"));
        for planned in &mut plan.requests {
            if outcomes.iter().flatten().any(|o: &BatchOutcome| {
                matches!(o, BatchOutcome::Failed(e) if e.kind != FailureKind::Permanent)
            }) {
                outcomes.push(None);
                continue;
            }
            let body = Bytes::from(std::mem::take(&mut planned.body));
            let outcome = self.send(body, planned.records.len()).await;
            if let BatchOutcome::Failed(e) = &outcome {
                if e.kind != FailureKind::Permanent {
                    unsent = outcome.record(0);
                }
            }
            outcomes.push(Some(outcome));
        }
        request::merge_outcomes(total, &plan, &outcomes, &unsent)
    }

    async fn send(&self, body: Bytes, records: usize) -> BatchOutcome {
        let outcome = self
            .post(body, records)
            .await
            .unwrap_or_else(BatchOutcome::Failed);
        if let BatchOutcome::Failed(e) = &outcome {
            tracing::debug!(hub = %self.hub.hub, reason = e.reason, error = %e.message, "Event Hubs send failed");
        }
        outcome
    }

    async fn post(&self, body: Bytes, records: usize) -> Result<BatchOutcome, SinkError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(AUTHORIZATION, self.authorization()?)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static(request::CONTENT_TYPE),
            )
            .body(body)
            .map_err(|e| SinkError {
                kind: FailureKind::Permanent,
                reason: "request",
                message: format!("building request: {e}"),
            })?;
        let resp = exchange(&self.http, req, self.timeout, MAX_RESPONSE).await?;
        Ok(request::classify_response(
            resp.status.as_u16(),
            &resp.body,
            records,
        ))
    }
}

impl Sink for EventHubsSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(self.put(records))
    }

    fn limits(&self) -> BatchLimits {
        super::LIMITS
    }

    fn kind(&self) -> &'static str {
        "eventhubs"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use simgate_control::Secret;

    use super::*;

    const URL: &str = "https://ns.servicebus.windows.net/devices/messages";

    fn creds() -> AzureCredentials {
        AzureCredentials {
            policy_name: "send".into(),
            key: Secret::new("c2VjcmV0LWtleS1mb3ItdGVzdHM="),
        }
    }

    #[tokio::test]
    async fn config_errors_and_debug() {
        let s = Duration::from_secs(1);
        assert!(matches!(
            EventHubsSink::new("https://ns.example.com/h/messages", None, &creds(), s),
            Err(EventHubsConfigError::ResourceUrl(
                EventHubsUrlError::NotServiceBusHost(_)
            ))
        ));
        assert!(matches!(
            EventHubsSink::new(URL, Some("ftp://x"), &creds(), s),
            Err(EventHubsConfigError::InvalidEndpoint { .. })
        ));
        let mut no_policy = creds();
        no_policy.policy_name = " ".into();
        assert!(matches!(
            EventHubsSink::new(URL, None, &no_policy, s),
            Err(EventHubsConfigError::EmptyPolicyName)
        ));
        let sink = EventHubsSink::new(URL, None, &creds(), s).unwrap();
        assert_eq!(
            sink.uri.to_string(),
            "https://ns.servicebus.windows.net/devices/messages?timeout=60&api-version=2014-01"
        );
        let dbg = format!("{sink:?}");
        assert!(!dbg.contains("c2VjcmV0"), "{dbg}");
        assert_eq!(sink.kind(), "eventhubs");
        assert_eq!(sink.limits(), super::super::LIMITS);
        assert_eq!(sink.hub(), "devices");
        // The override replaces scheme, host and port only.
        let sink =
            EventHubsSink::new(URL, Some("https://127.0.0.1:8443/ignored?x"), &creds(), s).unwrap();
        assert_eq!(
            sink.uri.to_string(),
            "https://127.0.0.1:8443/devices/messages?timeout=60&api-version=2014-01"
        );
        let token = sink.authorization().unwrap();
        assert!(token.to_str().unwrap().starts_with(
            "SharedAccessSignature sr=https%3A%2F%2Fns.servicebus.windows.net%2Fdevices%2Fmessages&sig="
        ));
        // Cached: the same token for the next request.
        assert_eq!(sink.authorization().unwrap(), token);
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = EventHubsSink::new(
            URL,
            Some(&format!("http://127.0.0.1:{port}")),
            &creds(),
            Duration::from_secs(5),
        )
        .unwrap();
        let records = [SinkRecord {
            partition_key: "k".into(),
            data: Bytes::from_static(b"{}"),
        }];
        match sink.put_batch(&records).await {
            BatchOutcome::Failed(e) => {
                assert_eq!(e.kind, FailureKind::Transient);
                assert_eq!(e.reason, "connect_refused");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.put_batch(&[]).await, BatchOutcome::PerRecord(vec![]));
        // A record no request can carry is rejected without a request
        // (control characters escape to six bytes each).
        let huge = [SinkRecord {
            partition_key: "k".into(),
            data: Bytes::from(vec![1u8; MAX_REQUEST_BYTES / 5]),
        }];
        assert_eq!(
            sink.put_batch(&huge).await,
            BatchOutcome::PerRecord(vec![request::too_large_outcome(MAX_REQUEST_BYTES)])
        );
    }
}
