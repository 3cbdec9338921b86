//! A small SigV4-signing AWS client: the JSON protocol (`POST /` with
//! `X-Amz-Target`: Kinesis, Firehose and the test tools in
//! [`crate::sinks::kinesis::admin`]) and REST-style posts to a path (AWS IoT
//! Data's `POST /topics/{topic}`).

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use simgate_control::AwsCredentials;

use super::error::classify_error;
use super::resource_url::ResourceUrlError;
use super::CONTENT_TYPE as AWS_JSON_CONTENT_TYPE;
use crate::sinks::exchange::exchange;
use crate::sinks::{FailureKind, SinkError};
use crate::upstream::{HttpClient, Upstream, UpstreamConfigError};

/// Why an AWS client (or a sink built on one) could not be built from its
/// configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsConfigError {
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("endpoint scheme must be http or https, not {0:?}")]
    UnsupportedScheme(String),
    #[error("region must not be empty")]
    EmptyRegion,
    /// A Kinesis stream or Firehose delivery stream name.
    #[error("invalid stream name {0:?}: 1 to {max} characters of a-z, A-Z, 0-9, '_', '.', '-'", max = .1)]
    InvalidStreamName(String, usize),
    #[error(transparent)]
    ResourceUrl(#[from] ResourceUrlError),
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
}

/// A response of the AWS JSON protocol, read completely.
#[derive(Debug)]
pub struct AwsResponse {
    pub status: StatusCode,
    /// `x-amzn-ErrorType`, if present.
    pub error_type: Option<String>,
    pub body: Bytes,
}

impl AwsResponse {
    /// The failure this non-2xx response stands for.
    pub fn error(&self) -> SinkError {
        classify_error(self.status.as_u16(), self.error_type.as_deref(), &self.body)
    }
}

/// A client for one AWS service endpoint speaking the JSON protocol
/// (`POST /`, `X-Amz-Target`), signing every request with SigV4 at the time
/// it is sent. Cheap to share: hold it in an `Arc` or clone it (the
/// connection pool is shared between clones).
#[derive(Clone)]
pub struct AwsJsonClient {
    http: HttpClient,
    /// `http` or `https`.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The Host header exactly as signed (no default port).
    host: HeaderValue,
    region: String,
    service: &'static str,
    identity: Identity,
    timeout: Duration,
}

impl fmt::Debug for AwsJsonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately no identity: it holds the secret key.
        f.debug_struct("AwsJsonClient")
            .field(
                "uri",
                &format_args!("{}://{}/", self.scheme, self.authority),
            )
            .field("region", &self.region)
            .field("service", &self.service)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AwsJsonClient {
    /// `endpoint` is `http://` (emulators) or `https://` (verified as
    /// `upstream` verifies); only its scheme and authority are used.
    pub fn new(
        upstream: &Upstream,
        endpoint: &str,
        region: String,
        service: &'static str,
        credentials: &AwsCredentials,
        timeout: Duration,
    ) -> Result<Self, AwsConfigError> {
        let invalid = |reason: String| AwsConfigError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let parsed: Uri = endpoint
            .trim()
            .parse()
            .map_err(|e| invalid(format!("{e}")))?;
        let scheme = match parsed.scheme_str() {
            Some(s @ ("http" | "https")) => s.to_owned(),
            Some(other) => return Err(AwsConfigError::UnsupportedScheme(other.to_owned())),
            None => return Err(invalid("no scheme (expected http:// or https://)".into())),
        };
        let authority = parsed
            .authority()
            .ok_or_else(|| invalid("no host".into()))?;
        let host = authority.host();
        // Host header as hyper and aws-sigv4 both write it: the port only
        // when it is not the scheme's default.
        let host_header = match (authority.port_u16(), scheme.as_str()) {
            (Some(80), "http") | (Some(443), "https") | (None, _) => host.to_owned(),
            (Some(port), _) => format!("{host}:{port}"),
        };
        let host = HeaderValue::from_str(&host_header).map_err(|e| invalid(format!("{e}")))?;
        let authority = authority.clone();
        let scheme = parsed.scheme().cloned().unwrap_or(http::uri::Scheme::HTTPS);
        if region.trim().is_empty() {
            return Err(AwsConfigError::EmptyRegion);
        }

        let identity: Identity = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.expose().to_owned(),
            credentials
                .session_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            None,
            "simgate",
        )
        .into();

        Ok(Self {
            http: upstream.http().clone(),
            scheme,
            authority,
            host,
            region,
            service,
            identity,
            timeout,
        })
    }

    /// Sends one signed request and reads the whole response (at most
    /// `max_response` bytes of body). Timeouts, connection, TLS and
    /// transport errors are [`FailureKind::Transient`] (labelled as
    /// [`crate::upstream::UpstreamError::label`]); the HTTP status is left to the caller.
    pub async fn call(
        &self,
        target: &str,
        body: Bytes,
        max_response: usize,
    ) -> Result<AwsResponse, SinkError> {
        let req = self.signed_request(&Post::json_protocol(target), body, SystemTime::now())?;
        self.exchange(req, max_response).await
    }

    /// Sends one signed `POST` of `body` to `post.path_and_query` and reads
    /// the whole response, as [`AwsJsonClient::call`] does.
    pub async fn post(
        &self,
        post: &Post<'_>,
        body: Bytes,
        max_response: usize,
    ) -> Result<AwsResponse, SinkError> {
        let req = self.signed_request(post, body, SystemTime::now())?;
        self.exchange(req, max_response).await
    }

    /// As [`AwsJsonClient::post`], with `extra` headers (signed with the
    /// rest), returning the whole response, headers included (Lambda
    /// answers a function's failure with `X-Amz-Function-Error`).
    pub async fn post_with_headers(
        &self,
        post: &Post<'_>,
        extra: &[(&'static str, HeaderValue)],
        body: Bytes,
        max_response: usize,
    ) -> Result<crate::sinks::exchange::Response, SinkError> {
        let req = self.signed_request_with(post, extra, body, SystemTime::now())?;
        exchange(&self.http, req, self.timeout, max_response).await
    }

    async fn exchange(
        &self,
        req: Request<Bytes>,
        max_response: usize,
    ) -> Result<AwsResponse, SinkError> {
        let resp = exchange(&self.http, req, self.timeout, max_response).await?;
        let error_type = resp
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(AwsResponse {
            status: resp.status,
            error_type,
            body: resp.body,
        })
    }

    /// Builds the request `post` describes and signs it for time `now`.
    fn signed_request(
        &self,
        post: &Post<'_>,
        body: Bytes,
        now: SystemTime,
    ) -> Result<Request<Bytes>, SinkError> {
        self.signed_request_with(post, &[], body, now)
    }

    /// [`AwsJsonClient::signed_request`] with `extra` headers, signed too.
    fn signed_request_with(
        &self,
        post: &Post<'_>,
        extra: &[(&'static str, HeaderValue)],
        body: Bytes,
        now: SystemTime,
    ) -> Result<Request<Bytes>, SinkError> {
        let signing_failed = |message: String| SinkError {
            kind: FailureKind::Permanent,
            reason: "signing",
            message,
        };
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(post.path_and_query)
            .build()
            .map_err(|e| signing_failed(format!("request URI: {e}")))?;
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(post.content_type));
        if let Some(target) = post.target {
            builder = builder.header("x-amz-target", target);
        }
        for (name, value) in extra {
            builder = builder.header(*name, value.clone());
        }
        let mut req = builder
            .body(body.clone())
            .map_err(|e| signing_failed(format!("building request: {e}")))?;

        let params = SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(self.service)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_failed(format!("signing parameters: {e}")))?
            .into();
        let headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.uri().to_string(),
            headers,
            SignableBody::Bytes(&body),
        )
        .map_err(|e| signing_failed(format!("{e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| signing_failed(format!("{e}")))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut req);
        Ok(req)
    }
}

/// What to post: the JSON protocol's `/` with an `X-Amz-Target`, or a
/// REST-style path.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    /// Already percent-encoded, starting with `/`.
    pub path_and_query: &'a str,
    pub content_type: &'static str,
    pub target: Option<&'a str>,
}

impl<'a> Post<'a> {
    /// `POST /` with `X-Amz-Target: target` (Kinesis, Firehose).
    pub fn json_protocol(target: &'a str) -> Self {
        Self {
            path_and_query: "/",
            content_type: AWS_JSON_CONTENT_TYPE,
            target: Some(target),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::UNIX_EPOCH;

    use simgate_control::Secret;

    use super::*;

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
        }
    }

    fn client(endpoint: &str, token: Option<&str>) -> AwsJsonClient {
        AwsJsonClient::new(
            &Upstream::shared_default().unwrap(),
            endpoint,
            "ap-northeast-1".into(),
            "kinesis",
            &creds(token),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn header<'a>(req: &'a Request<Bytes>, name: &str) -> &'a str {
        req.headers().get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn signs_the_headers_it_sends() {
        let c = client("https://kinesis.ap-northeast-1.amazonaws.com", None);
        // 2015-08-30T12:36:00Z, the date of the AWS SigV4 test suite.
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let req = c
            .signed_request(
                &Post::json_protocol("Kinesis_20131202.PutRecords"),
                Bytes::from_static(b"{}"),
                now,
            )
            .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "https://kinesis.ap-northeast-1.amazonaws.com/");
        assert_eq!(header(&req, "host"), "kinesis.ap-northeast-1.amazonaws.com");
        assert_eq!(header(&req, "content-type"), "application/x-amz-json-1.1");
        assert_eq!(header(&req, "x-amz-target"), "Kinesis_20131202.PutRecords");
        assert_eq!(header(&req, "x-amz-date"), "20150830T123600Z");
        let auth = header(&req, "authorization");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/ap-northeast-1/kinesis/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
            ),
            "{auth}"
        );
        assert!(req.headers().get("x-amz-security-token").is_none());
        // The secret itself never goes on the wire.
        for (_, v) in req.headers() {
            assert!(!v.to_str().unwrap().contains("wJalrXUtnFEMI"));
        }
        // Signing is deterministic for a given time, and differs per time.
        let again = c
            .signed_request(
                &Post::json_protocol("Kinesis_20131202.PutRecords"),
                Bytes::from_static(b"{}"),
                now,
            )
            .unwrap();
        assert_eq!(header(&again, "authorization"), auth);
        let later = c
            .signed_request(
                &Post::json_protocol("Kinesis_20131202.PutRecords"),
                Bytes::from_static(b"{}"),
                now + Duration::from_secs(1),
            )
            .unwrap();
        assert_ne!(header(&later, "authorization"), auth);
    }

    /// HMAC-SHA256 from the SigV4 spec, written out so the test does not
    /// trust the crate under test.
    fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    #[tokio::test]
    async fn signature_matches_an_independent_computation() {
        use sha2::{Digest, Sha256};
        let c = client("https://kinesis.ap-northeast-1.amazonaws.com", None);
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let body = br#"{"StreamName":"devices","Records":[]}"#;
        let req = c
            .signed_request(
                &Post::json_protocol("Kinesis_20131202.PutRecords"),
                Bytes::from_static(body),
                now,
            )
            .unwrap();
        let canonical = format!(
            "POST\n/\n\ncontent-type:application/x-amz-json-1.1\n\
             host:kinesis.ap-northeast-1.amazonaws.com\nx-amz-date:20150830T123600Z\n\
             x-amz-target:Kinesis_20131202.PutRecords\n\n\
             content-type;host;x-amz-date;x-amz-target\n{}",
            hex::encode(Sha256::digest(body))
        );
        let scope = "20150830/ap-northeast-1/kinesis/aws4_request";
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_vec();
        for part in ["20150830", "ap-northeast-1", "kinesis", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        assert_eq!(
            header(&req, "authorization"),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={signature}"
            )
        );
    }

    #[tokio::test]
    async fn session_token_and_non_default_port() {
        let c = client("http://127.0.0.1:4567/ignored/path", Some("tok-123"));
        let req = c
            .signed_request(
                &Post::json_protocol("Kinesis_20131202.ListShards"),
                Bytes::new(),
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:4567/");
        assert_eq!(header(&req, "host"), "127.0.0.1:4567");
        assert_eq!(header(&req, "x-amz-security-token"), "tok-123");
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
        assert!(header(&req, "authorization").contains("x-amz-security-token"));

        let c = client("https://example.com:443", None);
        let req = c
            .signed_request(&Post::json_protocol("T"), Bytes::new(), SystemTime::now())
            .unwrap();
        assert_eq!(header(&req, "host"), "example.com");
    }
}
