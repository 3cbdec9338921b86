//! A small etcd v3 client over etcd's own JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`, `/v3/lease/grant`, `/v3/auth/authenticate`):
//! the same v3 API as gRPC, served by every etcd since 3.3, spoken here with
//! the hyper client simgate already has. The gRPC crates would bring tonic,
//! prost and a `protoc` build step for the five calls used here.
//!
//! The gateway's JSON is protobuf's: bytes are base64, 64-bit integers are
//! strings, and zero values (a `PUT` event's type, revision 0) are left out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Why a call to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (connection refused, timed out, TLS failed).
    #[error("etcd unreachable ({endpoint}): {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// etcd answered with an error.
    #[error("etcd refused {call}: {message} (HTTP {status})")]
    Refused {
        call: &'static str,
        status: u16,
        message: String,
    },
    /// etcd answered something that is not the v3 API's JSON.
    #[error("etcd {call} answer unreadable: {reason}")]
    Malformed { call: &'static str, reason: String },
    /// The revision asked for has been compacted away.
    #[error("etcd revision {0} has been compacted")]
    Compacted(i64),
}

/// Connection settings of a [`Client`](EtcdClient).
#[derive(Clone)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// `(user, password)` for etcd's authentication.
    pub auth: Option<(String, String)>,
    /// TLS for `https://` endpoints (trusted roots, optional client certificate).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Each unary call (not a watch) must finish within this long.
    pub timeout: Duration,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("user", &self.auth.as_ref().map(|a| &a.0))
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One key and its value as etcd holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct KeyValue {
    #[serde(deserialize_with = "b64", default)]
    pub key: Vec<u8>,
    #[serde(deserialize_with = "b64", default)]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int", default)]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int", default)]
    pub lease: i64,
}

/// A watch event: a key written (`Put`) or removed (`Delete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete(KeyValue),
}

impl Event {
    pub fn kv(&self) -> &KeyValue {
        match self {
            Self::Put(kv) | Self::Delete(kv) => kv,
        }
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

/// A condition of a transaction, on one key.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key was last written at this revision (0: it does not exist).
    ModRevision(Vec<u8>, i64),
    /// The key was created at this revision (0: it does not exist).
    CreateRevision(Vec<u8>, i64),
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The store's revision after it (the transaction's, when it wrote).
    pub revision: i64,
}

/// A page of one watch: events in revision order, and the revision the
/// watched range is now known to be complete up to.
#[derive(Debug, Clone, Default)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    pub revision: i64,
}

/// The client: tries each endpoint in turn, keeps the one that answered.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    options: EtcdOptions,
    http: Client<Https, Full<Bytes>>,
    /// Index of the endpoint that answered last.
    current: AtomicUsize,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl EtcdClient {
    pub fn new(options: EtcdOptions) -> Result<Self, EtcdError> {
        let tls = match options.tls.clone() {
            Some(tls) => tls,
            // Plain-http endpoints only; an https one then fails its
            // handshake, naming the missing trust.
            None => Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| EtcdError::Unreachable {
                    endpoint: "(tls)".into(),
                    reason: e.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                http,
                current: AtomicUsize::new(0),
                token: Mutex::new(None),
            }),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.options.endpoints
    }

    /// Every key in `[key, range_end)` at one revision, in pages, and that
    /// revision.
    pub async fn range_all(
        &self,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        const PAGE: i64 = 5000;
        let mut out = Vec::new();
        let mut from = key.to_vec();
        let mut revision = 0i64;
        loop {
            let mut req = json!({
                "key": B64.encode(&from),
                "range_end": B64.encode(range_end),
                "limit": PAGE.to_string(),
            });
            if revision > 0 {
                req["revision"] = revision.to_string().into();
            }
            let v = self.call("range", "/v3/kv/range", &req).await?;
            let page: RangeResponse = parse("range", v)?;
            if revision == 0 {
                revision = page.header.revision;
            }
            let more = page.more;
            if let Some(last) = page.kvs.last() {
                from = last.key.clone();
                from.push(0);
            }
            out.extend(page.kvs);
            if !more {
                return Ok((out, revision));
            }
        }
    }

    /// The store's current revision (a cheap read), to measure lag.
    pub async fn current_revision(&self, key: &[u8]) -> Result<i64, EtcdError> {
        let req = json!({"key": B64.encode(key), "count_only": true});
        let v = self.call("range", "/v3/kv/range", &req).await?;
        let r: RangeResponse = parse("range", v)?;
        Ok(r.header.revision)
    }

    /// One transaction: if every comparison holds, `ops`; else nothing.
    pub async fn txn(&self, compare: &[Compare], ops: &[Op]) -> Result<TxnOutcome, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, r) => json!({
                    "key": B64.encode(k), "target": "MOD", "result": "EQUAL",
                    "mod_revision": r.to_string(),
                }),
                Compare::CreateRevision(k, r) => json!({
                    "key": B64.encode(k), "target": "CREATE", "result": "EQUAL",
                    "create_revision": r.to_string(),
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let mut put = json!({"key": B64.encode(key), "value": B64.encode(value)});
                    if *lease != 0 {
                        put["lease"] = lease.to_string().into();
                    }
                    json!({ "request_put": put })
                }
                Op::Delete { key } => json!({"request_delete_range": {"key": B64.encode(key)}}),
            })
            .collect();
        let req = json!({"compare": compare, "success": success});
        let v = self.call("txn", "/v3/kv/txn", &req).await?;
        let r: TxnResponse = parse("txn", v)?;
        Ok(TxnOutcome {
            succeeded: r.succeeded,
            revision: r.header.revision,
        })
    }

    /// A lease of `ttl` seconds; its id.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let req = json!({"TTL": ttl.as_secs().max(1).to_string()});
        let v = self.call("lease grant", "/v3/lease/grant", &req).await?;
        #[derive(Deserialize)]
        struct Grant {
            #[serde(rename = "ID", deserialize_with = "int", default)]
            id: i64,
        }
        let g: Grant = parse("lease grant", v)?;
        if g.id == 0 {
            return Err(EtcdError::Malformed {
                call: "lease grant",
                reason: "no lease ID".into(),
            });
        }
        Ok(g.id)
    }

    /// Watches `[key, range_end)` from `start_revision`; `on_batch` gets each
    /// batch of events in order. Returns when the stream ends (the member went
    /// away): the caller resumes from the last revision it saw.
    pub async fn watch(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        mut on_batch: impl FnMut(WatchBatch),
    ) -> Result<(), EtcdError> {
        let req = json!({"create_request": {
            "key": B64.encode(key),
            "range_end": B64.encode(range_end),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }});
        let token = self.token(self.inner.options.timeout).await?;
        let (endpoint, response) = self
            .send("watch", "/v3/watch", &req, token.as_deref())
            .await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = collect(&endpoint, body, self.inner.options.timeout).await?;
            let err = refused("watch", status.as_u16(), &bytes);
            self.forget_token_if(&err);
            return Err(err);
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| EtcdError::Unreachable {
                endpoint: endpoint.clone(),
                reason: format!("watch stream: {e}"),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let mut consumed = 0;
            while let Some(item) = stream.next() {
                match item {
                    Ok(v) => {
                        consumed = stream.byte_offset();
                        let result = watch_result(v).inspect_err(|e| self.forget_token_if(e));
                        if let Some(batch) = result? {
                            on_batch(batch);
                        }
                    }
                    Err(e) if e.is_eof() => break,
                    Err(e) => {
                        return Err(EtcdError::Malformed {
                            call: "watch",
                            reason: e.to_string(),
                        })
                    }
                }
            }
            buf.drain(..consumed);
        }
        Ok(())
    }

    /// One unary call, on the endpoint that answered last, then the others.
    async fn call(&self, name: &'static str, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let timeout = self.inner.options.timeout;
        let mut reauthenticated = false;
        loop {
            let token = self.token(timeout).await?;
            let (endpoint, response) = self.send(name, path, body, token.as_deref()).await?;
            let status = response.status();
            let bytes = collect(&endpoint, response.into_body(), timeout).await?;
            if status.is_success() {
                return serde_json::from_slice(&bytes).map_err(|e| EtcdError::Malformed {
                    call: name,
                    reason: e.to_string(),
                });
            }
            let err = refused(name, status.as_u16(), &bytes);
            // An expired or revoked auth token: authenticate again, once.
            if !reauthenticated && self.inner.options.auth.is_some() && is_auth_error(&err) {
                *self
                    .inner
                    .token
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                reauthenticated = true;
                continue;
            }
            return Err(err);
        }
    }

    /// After an auth error: the next call authenticates again.
    fn forget_token_if(&self, e: &EtcdError) {
        if is_auth_error(e) {
            *self
                .inner
                .token
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    async fn token(&self, timeout: Duration) -> Result<Option<String>, EtcdError> {
        let Some((name, password)) = &self.inner.options.auth else {
            return Ok(None);
        };
        if let Some(t) = self
            .inner
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(Some(t));
        }
        let req = json!({"name": name, "password": password});
        let (endpoint, response) = self
            .send("authenticate", "/v3/auth/authenticate", &req, None)
            .await?;
        let status = response.status();
        let bytes = collect(&endpoint, response.into_body(), timeout).await?;
        if !status.is_success() {
            return Err(refused("authenticate", status.as_u16(), &bytes));
        }
        #[derive(Deserialize)]
        struct Auth {
            token: String,
        }
        let a: Auth = serde_json::from_slice(&bytes).map_err(|e| EtcdError::Malformed {
            call: "authenticate",
            reason: e.to_string(),
        })?;
        *self
            .inner
            .token
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(a.token.clone());
        Ok(Some(a.token))
    }

    /// Sends to each endpoint in turn until one answers (any HTTP status).
    async fn send(
        &self,
        name: &'static str,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<(String, hyper::Response<hyper::body::Incoming>), EtcdError> {
        let endpoints = &self.inner.options.endpoints;
        let first = self.inner.current.load(Ordering::Relaxed);
        let body = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let mut last = None;
        for i in 0..endpoints.len() {
            let idx = (first + i) % endpoints.len();
            let endpoint = &endpoints[idx];
            let uri = format!("{}{path}", endpoint.trim_end_matches('/'));
            let mut req = hyper::Request::post(uri).header("content-type", "application/json");
            if let Some(t) = token {
                req = req.header("authorization", t);
            }
            let req = match req.body(Full::new(body.clone())) {
                Ok(r) => r,
                Err(e) => {
                    return Err(EtcdError::Unreachable {
                        endpoint: endpoint.clone(),
                        reason: format!("bad endpoint URL: {e}"),
                    })
                }
            };
            // A watch's answer streams for as long as it runs: only its
            // headers are bounded.
            match tokio::time::timeout(self.inner.options.timeout, self.inner.http.request(req))
                .await
            {
                Ok(Ok(response)) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok((endpoint.clone(), response));
                }
                Ok(Err(e)) => last = Some((endpoint.clone(), error_chain(&e))),
                Err(_) => last = Some((endpoint.clone(), "timed out".to_owned())),
            }
            tracing::debug!(
                call = name,
                endpoint,
                "etcd endpoint did not answer; trying the next"
            );
        }
        let (endpoint, reason) = last.unwrap_or_else(|| ("(none)".into(), "no endpoints".into()));
        Err(EtcdError::Unreachable { endpoint, reason })
    }
}

async fn collect(
    endpoint: &str,
    body: hyper::body::Incoming,
    timeout: Duration,
) -> Result<Bytes, EtcdError> {
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(EtcdError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: format!("reading the answer: {e}"),
        }),
        Err(_) => Err(EtcdError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason: "answer timed out".into(),
        }),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn refused(call: &'static str, status: u16, bytes: &[u8]) -> EtcdError {
    let message = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(200).collect());
    EtcdError::Refused {
        call,
        status,
        message,
    }
}

fn is_auth_error(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Refused { message, .. } if message.contains("token"))
}

fn parse<T: for<'de> Deserialize<'de>>(call: &'static str, v: Value) -> Result<T, EtcdError> {
    serde_json::from_value(v).map_err(|e| EtcdError::Malformed {
        call,
        reason: e.to_string(),
    })
}

/// One watch answer: events, a progress notice, the watch's creation, or
/// its cancellation (compaction).
fn watch_result(v: Value) -> Result<Option<WatchBatch>, EtcdError> {
    if let Some(err) = v.get("error") {
        return Err(EtcdError::Malformed {
            call: "watch",
            reason: err.to_string(),
        });
    }
    let Some(result) = v.get("result") else {
        return Ok(None);
    };
    let r: WatchResponse = parse("watch", result.clone())?;
    if r.compact_revision > 0 {
        return Err(EtcdError::Compacted(r.compact_revision));
    }
    if r.canceled {
        return Err(EtcdError::Refused {
            call: "watch",
            status: 200,
            message: r.cancel_reason.unwrap_or_else(|| "canceled".into()),
        });
    }
    let events = r
        .events
        .into_iter()
        .map(|e| match e.kind.as_deref() {
            Some("DELETE") => Event::Delete(e.kv),
            _ => Event::Put(e.kv),
        })
        .collect();
    Ok(Some(WatchBatch {
        events,
        revision: r.header.revision,
    }))
}

#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(deserialize_with = "int", default)]
    revision: i64,
}

#[derive(Debug, Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<KeyValue>,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
}

#[derive(Debug, Deserialize)]
struct WatchResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(deserialize_with = "int", default)]
    compact_revision: i64,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    kv: KeyValue,
}

fn b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s).map_err(serde::de::Error::custom)
}

/// protobuf's JSON writes int64 as a string; accept a number too.
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        S(String),
        N(i64),
    }
    match Int::deserialize(d)? {
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
        Int::N(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_answers_are_read_as_the_gateway_writes_them() {
        let v: Value = serde_json::from_str(
            r#"{"result":{"header":{"revision":"3"},"events":[
                {"kv":{"key":"L3MveA==","create_revision":"2","mod_revision":"2","version":"1","value":"aGVsbG8="}},
                {"type":"DELETE","kv":{"key":"L3MveA==","mod_revision":"3"}}]}}"#,
        )
        .unwrap();
        let b = watch_result(v).unwrap().unwrap();
        assert_eq!(b.revision, 3);
        assert_eq!(
            b.events,
            vec![
                Event::Put(KeyValue {
                    key: b"/s/x".to_vec(),
                    value: b"hello".to_vec(),
                    mod_revision: 2,
                    lease: 0
                }),
                Event::Delete(KeyValue {
                    key: b"/s/x".to_vec(),
                    value: vec![],
                    mod_revision: 3,
                    lease: 0
                }),
            ]
        );
        let created: Value =
            serde_json::from_str(r#"{"result":{"header":{"revision":"2"},"created":true}}"#)
                .unwrap();
        assert_eq!(watch_result(created).unwrap().unwrap().events, vec![]);
        let compacted: Value = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"compact_revision":"5","canceled":true}}"#,
        )
        .unwrap();
        assert!(matches!(
            watch_result(compacted),
            Err(EtcdError::Compacted(5))
        ));
    }

    #[test]
    fn refusals_carry_etcds_message() {
        let e = refused(
            "txn",
            400,
            br#"{"error":"etcdserver: too many operations in txn request","code":3}"#,
        );
        assert!(e.to_string().contains("too many operations"), "{e}");
        assert!(!is_auth_error(&e));
        let e = refused(
            "range",
            401,
            br#"{"error":"etcdserver: invalid auth token","code":16}"#,
        );
        assert!(is_auth_error(&e));
    }
}
