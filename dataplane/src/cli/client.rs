//! A tiny JSON client for the control API: HTTP/1.1 over plain TCP (the API
//! binds loopback; reach a remote one through an SSH tunnel), the bearer
//! token on every request, bounded answers and an overall deadline.
//!
//! Every answer is turned into data or a [`CliError`]; nothing the server
//! sends can make it panic.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::table::clean;

/// Largest answer read (a Harvest page of 1,000 entries fits many times).
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Echo at most this much of an unexpected answer.
const ECHO_CHARS: usize = 200;

/// Why a command failed. Displayed after `error: `.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// The API answered with an error status.
    Api {
        status: u16,
        code: Option<String>,
        message: String,
        /// What might help, shown on its own line.
        hint: Option<String>,
    },
    /// Nothing answered at the API address.
    Connect { api: String, reason: String },
    /// The exchange failed: timeout, broken connection, an answer that is
    /// not what the API sends.
    Transport(String),
    /// Wrong input, caught before anything was sent.
    Usage(String),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// A hint to print under the error, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Api { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api {
                status,
                code: Some(code),
                message,
                ..
            } => write!(f, "{message} ({code}, HTTP {status})"),
            Self::Api {
                status,
                code: None,
                message,
                ..
            } => write!(f, "{message} (HTTP {status})"),
            Self::Connect { api, reason } => write!(
                f,
                "cannot reach the simgate API at {api}: {reason}; \
                 is simgate serve running? (--api URL or SIMGATE_API chooses the address)"
            ),
            Self::Transport(m) | Self::Usage(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {}

/// One successful (2xx) answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body decoded as `T`, or an error naming what was expected.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, CliError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::Transport(format!(
                "the API answered HTTP {} with something that is not {what}: {e}: {}",
                self.status.as_u16(),
                echo(&self.body)
            ))
        })
    }

    /// A header's value, when it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// The control API at one address, with one token.
pub struct Client {
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port` plus any path prefix, without a trailing `/`.
    base: String,
    auth: HeaderValue,
}

impl Client {
    /// `api` is `http://host:port[/prefix]` (`host:port` alone means http).
    pub fn new(api: &str, token: &str) -> Result<Self, CliError> {
        let base = base_url(api)?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CliError::usage("the API token contains characters a header cannot"))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Ok(Self { http, base, auth })
    }

    /// The API address requests go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` (path and query already encoded, starting with
    /// `/`) with an optional JSON body. Non-2xx answers are errors.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, CliError> {
        let uri: Uri = format!("{}{path_and_query}", self.base)
            .parse()
            .map_err(|e| CliError::usage(format!("cannot build a request URL: {e}")))?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json");
        let payload = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| CliError::usage(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| self.failed(&e))?;
            let (parts, incoming) = resp.into_parts();
            let body = Limited::new(incoming, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| CliError::Transport(format!("reading the API's answer failed: {e}")))?
                .to_bytes();
            Ok::<_, CliError>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                CliError::Transport(format!(
                    "{method} {path_and_query}: no answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })??;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(api_error(reply.status, &reply.body))
        }
    }

    fn failed(&self, e: &hyper_util::client::legacy::Error) -> CliError {
        let reason = root_cause(e);
        if e.is_connect() {
            CliError::Connect {
                api: self.base.clone(),
                reason,
            }
        } else {
            CliError::Transport(format!("the request to {} failed: {reason}", self.base))
        }
    }
}

/// The innermost cause of `e`, which says what actually went wrong
/// ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Turns an error answer into a [`CliError`]: the API's `{"code","message"}`
/// when it sent one, else the status and a little of the body.
pub fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    #[derive(Deserialize)]
    struct ErrorBody {
        code: Option<serde_json::Value>,
        message: Option<serde_json::Value>,
    }
    // The message goes to a terminal: one line, no control characters.
    let text = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => clean(&s),
        other => clean(&other.to_string()),
    };
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) if b.message.is_some() || b.code.is_some() => {
            (b.code.map(text), b.message.map(text).unwrap_or_default())
        }
        _ => (None, echo(body)),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        message
    };
    CliError::Api {
        status: status.as_u16(),
        code,
        message,
        hint: None,
    }
}

/// Up to [`ECHO_CHARS`] of `body` as one line of text.
fn echo(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text
        .trim()
        .chars()
        .take(ECHO_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().count() > ECHO_CHARS {
        s.push('…');
    }
    s
}

/// `http://host:port[/prefix]` without a trailing slash, from what the user
/// typed.
pub fn base_url(api: &str) -> Result<String, CliError> {
    let api = api.trim();
    let with_scheme = if api.contains("://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e| CliError::usage(format!("--api {api:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(CliError::usage(
                "--api must be http://: the API listens on loopback without TLS; \
                 reach a remote gateway through an SSH tunnel",
            ))
        }
        _ => {
            return Err(CliError::usage(format!(
                "--api {api:?} must be http://host:port"
            )))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(CliError::usage(format!("--api {api:?} has no host")));
    };
    if uri.query().is_some() {
        return Err(CliError::usage(format!(
            "--api {api:?} must not have a query"
        )));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("http://{authority}{prefix}"))
}

/// `/seg/seg/…` with each segment percent-encoded, so an IMSI, a tag name
/// or a key with `/`, `?` or spaces stays one segment.
pub fn path(segments: &[&str]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        encode_into(&mut out, s);
    }
    out
}

/// `path` plus `?k=v&…` for the pairs whose value is present.
pub fn with_query(path: String, pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = path;
    let mut sep = '?';
    for (k, v) in pairs {
        if let Some(v) = v {
            out.push(sep);
            encode_into(&mut out, k);
            out.push('=');
            encode_into(&mut out, v);
            sep = '&';
        }
    }
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(
            base_url("http://127.0.0.1:7070").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            base_url("http://127.0.0.1:7070/").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(base_url("localhost:7070").unwrap(), "http://localhost:7070");
        assert_eq!(
            base_url("http://[::1]:7070/simgate/").unwrap(),
            "http://[::1]:7070/simgate"
        );
        for bad in [
            "https://127.0.0.1:7070",
            "ftp://x",
            "http://",
            "http://h/?q=1",
            "",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_and_query_values_are_encoded() {
        assert_eq!(
            path(&["v1", "subscribers", "001010000000001", "tags", "a/b c?"]),
            "/v1/subscribers/001010000000001/tags/a%2Fb%20c%3F"
        );
        assert_eq!(
            with_query(
                path(&["v1", "subscribers"]),
                &[
                    ("status", Some("active|ready")),
                    ("group_id", None),
                    ("limit", Some("5"))
                ]
            ),
            "/v1/subscribers?status=active%7Cready&limit=5"
        );
        assert_eq!(path(&["v1", "x", "日"]), "/v1/x/%E6%97%A5");
    }

    #[test]
    fn error_answers_become_messages_whatever_they_hold() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"subscriber 1 does not exist"}"#,
        );
        assert_eq!(
            e.to_string(),
            "subscriber 1 does not exist (not_found, HTTP 404)"
        );
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>\nbad gateway</html>");
        assert_eq!(e.to_string(), "<html> bad gateway</html> (HTTP 502)");
        let e = api_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(e.to_string(), "Service Unavailable (HTTP 503)");
        let e = api_error(StatusCode::BAD_REQUEST, br#"{"code":7,"message":null}"#);
        assert_eq!(e.to_string(), "Bad Request (7, HTTP 400)");
        let e = api_error(StatusCode::BAD_REQUEST, &[0xff; 300]);
        assert!(e.to_string().contains('…'));
    }
}
