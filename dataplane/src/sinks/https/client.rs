//! The I/O half of the https sink: [`HttpsSink`], which POSTs batches (or
//! each record) through the shared [`Upstream`] client.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt as _, Limited};
use simgate_control::HttpsRequestMode;

use super::request::{self, HttpsConfigError, SigningKey};
use super::RECORD_MODE_CONCURRENCY;
use crate::sinks::{
    BatchLimits, BatchOutcome, FailureKind, Sink, SinkError, SinkFuture, SinkRecord,
};
use crate::upstream::{full_body, HttpClient, Upstream};

/// Most bytes of a response body read: only its start goes into a failure
/// message, but reading it to the end lets the connection be reused.
const MAX_RESPONSE: usize = 64 << 10;

/// `User-Agent` unless the destination's headers set one.
const DEFAULT_USER_AGENT: &str = concat!("simgate/", env!("CARGO_PKG_VERSION"));

/// POSTs records as JSON to one URL, signed when it has a key.
///
/// Each [`Sink::put_batch`] is one attempt; the caller retries failed
/// records as their outcomes say.
#[derive(Debug)]
pub struct HttpsSink {
    http: HttpClient,
    uri: Uri,
    mode: HttpsRequestMode,
    headers: Vec<(HeaderName, HeaderValue)>,
    key: Option<SigningKey>,
    timeout: Duration,
}

impl HttpsSink {
    /// A sink posting to `url` in `mode` with the extra `headers`, signing
    /// with `psk` when given; `timeout` bounds each request, response body
    /// included.
    pub fn with_upstream(
        upstream: &Upstream,
        url: &str,
        mode: HttpsRequestMode,
        headers: &BTreeMap<String, String>,
        psk: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, HttpsConfigError> {
        Ok(Self {
            http: upstream.http().clone(),
            uri: request::parse_url(url)?,
            mode,
            headers: request::extra_headers(headers)?,
            key: psk.map(SigningKey::new),
            timeout,
        })
    }

    pub fn mode(&self) -> HttpsRequestMode {
        self.mode
    }

    pub fn signs(&self) -> bool {
        self.key.is_some()
    }

    /// The request for `body`, signed for unix second `now` when there is a
    /// key.
    fn request(&self, body: Bytes, now: u64) -> Request<Bytes> {
        let mut req = Request::new(Bytes::new());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, HeaderValue::from_static(DEFAULT_USER_AGENT));
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        if let Some(key) = &self.key {
            for (name, value) in key.headers(now, &body) {
                h.insert(name, value);
            }
        }
        *req.body_mut() = body;
        req
    }

    /// One POST of `body`, classified. The whole exchange, body included,
    /// is bounded by the request timeout.
    async fn post(&self, body: Bytes) -> Result<(), SinkError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let req = self.request(body, now);
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(SinkError {
                kind: FailureKind::Transient,
                reason: "timeout",
                message: format!("no complete response within {:?}", self.timeout),
            }),
        }
    }

    async fn exchange(&self, req: Request<Bytes>) -> Result<(), SinkError> {
        let resp = self
            .http
            .request(req.map(full_body))
            .await
            .map_err(crate::sinks::exchange::transport_failure)?;
        let status = resp.status().as_u16();
        // The status decides; a body that breaks off only shortens the
        // failure message (and a 2xx was the receiver's word already).
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        request::classify(status, &body)
    }

    async fn put(&self, records: &[SinkRecord]) -> BatchOutcome {
        if records.is_empty() {
            return BatchOutcome::PerRecord(Vec::new());
        }
        match self.mode {
            HttpsRequestMode::Batch => match self.post(request::batch_body(records)).await {
                Ok(()) => BatchOutcome::PerRecord(vec![
                    crate::sinks::RecordOutcome::Delivered;
                    records.len()
                ]),
                Err(e) => {
                    tracing::debug!(url = %self.uri, reason = e.reason, error = %e.message, "https batch not delivered");
                    BatchOutcome::Failed(e)
                }
            },
            HttpsRequestMode::Record => {
                // Built up front: a lazily mapping stream would hold a
                // closure over `&SinkRecord` across awaits, which the
                // `Send` future of `put_batch` cannot name.
                let posts: Vec<_> = records
                    .iter()
                    .map(|r| self.post(request::record_body(r)))
                    .collect();
                let results: Vec<_> = futures_util::stream::iter(posts)
                    .buffered(RECORD_MODE_CONCURRENCY)
                    .collect()
                    .await;
                request::record_mode_outcome(results)
            }
        }
    }
}

impl Sink for HttpsSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        Box::pin(self.put(records))
    }

    fn limits(&self) -> BatchLimits {
        super::LIMITS
    }

    fn kind(&self) -> &'static str {
        "https"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sink(url: &str, psk: Option<&str>) -> HttpsSink {
        let headers = BTreeMap::from([("X-Tenant".to_owned(), "acme".to_owned())]);
        HttpsSink::with_upstream(
            &Upstream::shared_default().unwrap(),
            url,
            HttpsRequestMode::Batch,
            &headers,
            psk,
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn requests_carry_type_headers_and_signature() {
        let s = sink("https://hooks.example.com/in?x=1", Some("wJalrXUtnFEMI"));
        let req = s.request(Bytes::from_static(br#"[{"a":1},{"b":2}]"#), 1_700_000_000);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "https://hooks.example.com/in?x=1");
        let h = |n: &str| req.headers().get(n).unwrap().to_str().unwrap();
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(h("x-tenant"), "acme");
        assert!(h("user-agent").starts_with("simgate/"));
        assert_eq!(h("x-simgate-timestamp"), "1700000000");
        // openssl dgst -sha256 -hmac, as in request.rs.
        assert_eq!(
            h("x-simgate-signature"),
            "sha256=3a76654760e20703446724e560481be06209a9062783cb389472fe6f7ea66dea"
        );
        assert!(!format!("{s:?}").contains("wJalrXUtnFEMI"));

        let unsigned = sink("https://hooks.example.com/in", None);
        let req = unsigned.request(Bytes::from_static(b"[]"), 1);
        assert!(req.headers().get("x-simgate-signature").is_none());
        assert!(req.headers().get("x-simgate-timestamp").is_none());
        assert!(!unsigned.signs() && s.signs());
        assert_eq!(s.kind(), "https");
        assert_eq!(s.limits(), super::super::LIMITS);
    }

    #[tokio::test]
    async fn connection_refused_is_transient_in_both_modes() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let records = [
            SinkRecord {
                partition_key: "k".into(),
                data: Bytes::from_static(b"{}"),
            },
            SinkRecord {
                partition_key: "k".into(),
                data: Bytes::from_static(b"1"),
            },
        ];
        for mode in [HttpsRequestMode::Batch, HttpsRequestMode::Record] {
            let s = HttpsSink::with_upstream(
                &Upstream::shared_default().unwrap(),
                &format!("http://127.0.0.1:{port}/"),
                mode,
                &BTreeMap::new(),
                None,
                Duration::from_secs(5),
            )
            .unwrap();
            match s.put_batch(&records).await {
                BatchOutcome::Failed(e) => {
                    assert_eq!(
                        (e.kind, e.reason),
                        (FailureKind::Transient, "connect_refused")
                    );
                }
                other => panic!("{mode:?}: {other:?}"),
            }
            assert_eq!(s.put_batch(&[]).await, BatchOutcome::PerRecord(vec![]));
        }
    }
}
