//! Service-account access tokens for Pub/Sub: the key file, the signed JWT
//! assertion, the OAuth 2 JWT-bearer exchange (RFC 7523, as Google's
//! "Using OAuth 2.0 for Server to Server Applications" describes it), and a
//! cache that refreshes before expiry, one exchange at a time.
//!
//! Everything but [`TokenSource::bearer`] is pure: time is an argument.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Uri};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::sinks::aws::error::truncate;
use crate::sinks::exchange::exchange;
use crate::sinks::{FailureKind, SinkError};
use crate::upstream::HttpClient;

/// The one scope publishing needs.
pub const PUBSUB_SCOPE: &str = "https://www.googleapis.com/auth/pubsub";

/// `grant_type` of the JWT-bearer exchange.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Lifetime asked for in the assertion: Google refuses more than an hour.
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// A token is replaced this long before it expires, so that a batch never
/// leaves with a token that runs out in flight or at a skewed clock.
pub const REFRESH_MARGIN_SECS: u64 = 300;

/// `expires_in` is RECOMMENDED, not required (RFC 6749 §5.1); Google always
/// sends it. Without it, assume Google's usual hour.
const DEFAULT_EXPIRES_IN_SECS: u64 = 3600;

/// Largest token response read: Google's are under 2 KiB.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;

// ---------------------------------------------------------------------------
// Key file
// ---------------------------------------------------------------------------

/// Why a service-account key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("the service account key file is not a JSON object: {0}")]
    NotJson(String),
    #[error("the key file's type is {0:?}, not \"service_account\"")]
    WrongType(String),
    #[error("the key file has no {0:?} (a non-empty string)")]
    Missing(&'static str),
    #[error("the key file's private_key is not a PKCS#8 PEM RSA key: {0}")]
    InvalidPrivateKey(String),
    #[error("the key file's token_uri {0:?} is not an https:// URL")]
    InvalidTokenUri(String),
}

/// What the sink uses of a Google service-account key file.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: Uri,
    pub project_id: String,
    /// `token_uri` exactly as the key file spells it: Google compares the
    /// assertion's `aud` with it as a string.
    audience: String,
    key: EncodingKey,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately no key.
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

/// The JWT claims Google's token endpoint expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

impl ServiceAccountKey {
    /// Parses the key file as Google issues it (`"type":"service_account"`,
    /// `client_email`, `private_key`, `private_key_id`, `token_uri`,
    /// `project_id`; other fields ignored) and checks that its key signs.
    pub fn parse(json: &str) -> Result<Self, KeyFileError> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| KeyFileError::NotJson(e.to_string()))?;
        let Some(obj) = v.as_object() else {
            return Err(KeyFileError::NotJson("not an object".into()));
        };
        let field = |name: &'static str| {
            obj.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or(KeyFileError::Missing(name))
        };
        let kind = field("type")?;
        if kind != "service_account" {
            return Err(KeyFileError::WrongType(kind.to_owned()));
        }
        let client_email = field("client_email")?.to_owned();
        let private_key_id = field("private_key_id")?.to_owned();
        let project_id = field("project_id")?.to_owned();
        let token_uri_text = field("token_uri")?;
        let token_uri: Uri = token_uri_text
            .parse()
            .ok()
            .filter(|u: &Uri| u.scheme_str() == Some("https") && u.host().is_some())
            .ok_or_else(|| KeyFileError::InvalidTokenUri(token_uri_text.to_owned()))?;
        let pem = field("private_key")?;
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyFileError::InvalidPrivateKey(e.to_string()))?;
        let parsed = Self {
            client_email,
            private_key_id,
            token_uri,
            project_id,
            audience: token_uri_text.to_owned(),
            key,
        };
        // The PEM decoder checks the framing only; a trial signature proves
        // the key itself, so a broken one fails the credential now and not
        // every batch later.
        parsed
            .assertion(0)
            .map_err(|e| KeyFileError::InvalidPrivateKey(e.message))?;
        Ok(parsed)
    }

    /// The claims of an assertion made at `now` (Unix seconds).
    pub fn claims(&self, now: u64) -> AssertionClaims {
        AssertionClaims {
            iss: self.client_email.clone(),
            scope: PUBSUB_SCOPE.to_owned(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        }
    }

    /// The RS256 assertion made at `now`, its header naming the key
    /// (`kid` = `private_key_id`) so Google need not try each of the
    /// account's keys.
    pub fn assertion(&self, now: u64) -> Result<String, SinkError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        jsonwebtoken::encode(&header, &self.claims(now), &self.key).map_err(|e| SinkError {
            kind: FailureKind::Permanent,
            reason: "signing",
            message: format!("signing the token assertion: {e}"),
        })
    }
}

/// `grant_type=…&assertion=…`, form-encoded.
pub fn token_request_body(assertion: &str) -> String {
    format!(
        "grant_type={}&assertion={}",
        form_encode(JWT_BEARER_GRANT),
        form_encode(assertion)
    )
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Token response
// ---------------------------------------------------------------------------

/// An access token and when to stop using it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    value: String,
    /// Unix seconds from which a new token is fetched instead.
    refresh_at: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// A token received at `now`, valid `expires_in` seconds. It is replaced
    /// [`REFRESH_MARGIN_SECS`] before it expires, or halfway through a
    /// lifetime shorter than twice the margin.
    pub fn new(value: String, now: u64, expires_in: u64) -> Self {
        let margin = REFRESH_MARGIN_SECS.min(expires_in / 2);
        Self {
            value,
            refresh_at: now.saturating_add(expires_in - margin),
        }
    }

    /// Whether this token may still be sent at `now`.
    pub fn is_usable(&self, now: u64) -> bool {
        now < self.refresh_at
    }

    pub fn refresh_at(&self) -> u64 {
        self.refresh_at
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
    token_type: Option<String>,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

/// The outcome of the token endpoint's answer received at `now`.
///
/// A refused grant (400 `invalid_grant`, 401 `invalid_client` /
/// `unauthorized_client`: a wrong or deleted key, a disabled account) will
/// not fix itself and is permanent; 429 is throttling; 5xx and malformed
/// successes are transient.
pub fn parse_token_response(status: u16, body: &[u8], now: u64) -> Result<AccessToken, SinkError> {
    if (200..300).contains(&status) {
        let bad = |message: String| SinkError {
            kind: FailureKind::Transient,
            reason: "token_bad_response",
            message: truncate(message),
        };
        let parsed: TokenResponse = serde_json::from_slice(body)
            .map_err(|e| bad(format!("token response is not the expected JSON: {e}")))?;
        if parsed.access_token.is_empty() {
            return Err(bad("token response has an empty access_token".into()));
        }
        if let Some(t) = parsed.token_type.as_deref() {
            if !t.eq_ignore_ascii_case("bearer") {
                return Err(bad(format!("token_type is {t:?}, not Bearer")));
            }
        }
        // The token goes into a header: refuse what cannot be one.
        if HeaderValue::from_str(&parsed.access_token).is_err() {
            return Err(bad("access_token is not a valid header value".into()));
        }
        let expires_in = parsed.expires_in.unwrap_or(DEFAULT_EXPIRES_IN_SECS);
        return Ok(AccessToken::new(parsed.access_token, now, expires_in));
    }
    let parsed: TokenErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let (kind, reason) = match (status, parsed.error.as_deref()) {
        (429, _) => (FailureKind::Throttled, "token_throttled"),
        (500..=599, _) => (FailureKind::Transient, "token_unavailable"),
        (_, Some("invalid_grant")) => (FailureKind::Permanent, "token_invalid_grant"),
        (_, Some("invalid_client" | "unauthorized_client")) => {
            (FailureKind::Permanent, "token_invalid_client")
        }
        _ => (FailureKind::Permanent, "token_refused"),
    };
    let detail = match (parsed.error, parsed.error_description) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e,
        (None, _) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    Err(SinkError {
        kind,
        reason,
        message: truncate(format!("token endpoint answered HTTP {status}: {detail}")),
    })
}

// ---------------------------------------------------------------------------
// The cache (I/O)
// ---------------------------------------------------------------------------

/// A token to send, and what the cache needs to hear back about it.
#[derive(Clone)]
pub struct Bearer {
    /// `Bearer <token>`, marked sensitive.
    pub header: HeaderValue,
    /// Which cached token this is, for [`TokenSource::invalidate`].
    pub generation: u64,
    /// The token was fetched because the previous one was refused: if it
    /// is refused too, the credential itself is the problem.
    pub after_rejection: bool,
}

#[derive(Default)]
struct Cache {
    token: Option<AccessToken>,
    generation: u64,
    after_rejection: bool,
    /// The last token was dropped because the service refused it.
    rejected: bool,
}

/// Access tokens for one key file, cached until shortly before they expire.
///
/// The cache is behind an async mutex held across the exchange: batches
/// that find no usable token wait for the one exchange in flight instead
/// of each asking the token endpoint (which rate-limits per account).
pub struct TokenSource {
    http: HttpClient,
    key: ServiceAccountKey,
    timeout: Duration,
    cache: tokio::sync::Mutex<Cache>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(http: HttpClient, key: ServiceAccountKey, timeout: Duration) -> Self {
        Self {
            http,
            key,
            timeout,
            cache: tokio::sync::Mutex::default(),
        }
    }

    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// A usable token: the cached one, or a new one from the token endpoint.
    pub async fn bearer(&self) -> Result<Bearer, SinkError> {
        let mut cache = self.cache.lock().await;
        let now = unix_now();
        let usable = cache.token.as_ref().filter(|t| t.is_usable(now));
        let token = match usable {
            Some(t) => t.clone(),
            None => {
                let token = self.fetch(now).await?;
                cache.generation += 1;
                cache.after_rejection = std::mem::take(&mut cache.rejected);
                cache.token = Some(token.clone());
                token
            }
        };
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", token.value)).map_err(|e| SinkError {
                kind: FailureKind::Transient,
                reason: "token_bad_response",
                message: format!("access token: {e}"),
            })?;
        header.set_sensitive(true);
        Ok(Bearer {
            header,
            generation: cache.generation,
            after_rejection: cache.after_rejection,
        })
    }

    /// Drops the token of `generation` (the service refused it), unless a
    /// newer one has replaced it already.
    pub async fn invalidate(&self, generation: u64) {
        let mut cache = self.cache.lock().await;
        if cache.generation == generation && cache.token.is_some() {
            cache.token = None;
            cache.rejected = true;
        }
    }

    /// The service accepted the token of `generation`: a later refusal is
    /// a revocation again, not proof that the credential is broken.
    pub async fn confirm(&self, generation: u64) {
        let mut cache = self.cache.lock().await;
        if cache.generation == generation {
            cache.after_rejection = false;
        }
    }

    async fn fetch(&self, now: u64) -> Result<AccessToken, SinkError> {
        let assertion = self.key.assertion(now)?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.key.token_uri.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(Bytes::from(token_request_body(&assertion)))
            .map_err(|e| SinkError {
                kind: FailureKind::Permanent,
                reason: "token_request",
                message: format!("building the token request: {e}"),
            })?;
        let (status, body) = exchange(&self.http, req, self.timeout, MAX_TOKEN_RESPONSE)
            .await
            .map(|r| (r.status, r.body))
            .map_err(|mut e| {
                e.message = format!("token endpoint {}: {}", self.key.token_uri, e.message);
                e
            })?;
        let token = parse_token_response(status.as_u16(), &body, unix_now());
        match &token {
            Ok(t) => {
                tracing::debug!(client_email = %self.key.client_email, refresh_at = t.refresh_at, "Pub/Sub access token issued")
            }
            Err(e) => {
                tracing::debug!(client_email = %self.key.client_email, reason = e.reason, error = %e.message, "Pub/Sub access token refused")
            }
        }
        token
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    /// A 2048-bit RSA key pair (PKCS#8 private, SPKI public), made once per
    /// test process with openssl.
    pub(crate) fn test_key_pem() -> &'static (String, String) {
        static KEY: OnceLock<(String, String)> = OnceLock::new();
        KEY.get_or_init(|| {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .output()
                .unwrap();
            assert!(out.status.success());
            let private = String::from_utf8(out.stdout).unwrap();
            let mut child = std::process::Command::new("openssl")
                .args(["pkey", "-pubout"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(private.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            (private, String::from_utf8(out.stdout).unwrap())
        })
    }

    pub(crate) fn key_file(token_uri: &str) -> serde_json::Value {
        serde_json::json!({
            "type": "service_account",
            "project_id": "simgate-test",
            "private_key_id": "0123456789abcdef",
            "private_key": test_key_pem().0,
            "client_email": "funnel@simgate-test.iam.gserviceaccount.com",
            "client_id": "123456789",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
    }

    #[test]
    fn key_file_fields_are_checked() {
        let good = key_file("https://oauth2.googleapis.com/token");
        let key = ServiceAccountKey::parse(&good.to_string()).unwrap();
        assert_eq!(key.project_id, "simgate-test");
        assert_eq!(key.token_uri, "https://oauth2.googleapis.com/token");
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");

        let with = |name: &str, value: serde_json::Value| {
            let mut v = good.clone();
            v[name] = value;
            ServiceAccountKey::parse(&v.to_string()).unwrap_err()
        };
        let without = |name: &str| {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove(name);
            ServiceAccountKey::parse(&v.to_string()).unwrap_err()
        };
        for f in [
            "type",
            "client_email",
            "private_key",
            "private_key_id",
            "token_uri",
            "project_id",
        ] {
            assert_eq!(without(f), KeyFileError::Missing(f));
            assert_eq!(with(f, "".into()), KeyFileError::Missing(f));
            assert_eq!(with(f, 7.into()), KeyFileError::Missing(f));
        }
        assert_eq!(
            with("type", "authorized_user".into()),
            KeyFileError::WrongType("authorized_user".into())
        );
        assert!(matches!(
            with("token_uri", "http://oauth2.googleapis.com/token".into()),
            KeyFileError::InvalidTokenUri(_)
        ));
        assert!(matches!(
            with(
                "private_key",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into()
            ),
            KeyFileError::InvalidPrivateKey(_)
        ));
        assert!(matches!(
            with("private_key", "not a pem".into()),
            KeyFileError::InvalidPrivateKey(_)
        ));
        assert!(matches!(
            ServiceAccountKey::parse("{"),
            Err(KeyFileError::NotJson(_))
        ));
        assert!(matches!(
            ServiceAccountKey::parse("[]"),
            Err(KeyFileError::NotJson(_))
        ));
    }

    #[test]
    fn assertion_is_what_google_verifies() {
        let key =
            ServiceAccountKey::parse(&key_file("https://oauth2.googleapis.com/token").to_string())
                .unwrap();
        let now = 1_700_000_000;
        let jwt = key.assertion(now).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("0123456789abcdef"));
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["https://oauth2.googleapis.com/token"]);
        v.validate_exp = false;
        let decoded = jsonwebtoken::decode::<AssertionClaims>(
            &jwt,
            &DecodingKey::from_rsa_pem(test_key_pem().1.as_bytes()).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(
            decoded.claims,
            AssertionClaims {
                iss: "funnel@simgate-test.iam.gserviceaccount.com".into(),
                scope: PUBSUB_SCOPE.into(),
                aud: "https://oauth2.googleapis.com/token".into(),
                iat: now,
                exp: now + 3600,
            }
        );
        // `aud` is the key file's text, not a normalised URL.
        let bare =
            ServiceAccountKey::parse(&key_file("https://token.example").to_string()).unwrap();
        assert_eq!(bare.claims(now).aud, "https://token.example");
        let body = token_request_body(&jwt);
        assert_eq!(
            body,
            format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
            )
        );
    }

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        let t = AccessToken::new("ya29.x".into(), 1000, 3599);
        assert_eq!(t.refresh_at(), 1000 + 3599 - REFRESH_MARGIN_SECS);
        assert!(t.is_usable(1000));
        assert!(t.is_usable(1000 + 3599 - REFRESH_MARGIN_SECS - 1));
        assert!(!t.is_usable(1000 + 3599 - REFRESH_MARGIN_SECS));
        assert!(!t.is_usable(1000 + 3599));
        // A short lifetime is used for its first half.
        let short = AccessToken::new("x".into(), 1000, 4);
        assert!(short.is_usable(1001));
        assert!(!short.is_usable(1002));
        assert!(!AccessToken::new("x".into(), 1000, 0).is_usable(1000));
        assert!(!format!("{t:?}").contains("ya29"));
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(
            200,
            br#"{"access_token":"ya29.c.abc","expires_in":3599,"token_type":"Bearer"}"#,
            50,
        )
        .unwrap();
        assert_eq!(t.refresh_at(), 50 + 3599 - REFRESH_MARGIN_SECS);
        let t = parse_token_response(200, br#"{"access_token":"x"}"#, 0).unwrap();
        assert_eq!(t.refresh_at(), 3600 - REFRESH_MARGIN_SECS);

        use FailureKind::{Permanent, Throttled, Transient};
        let cases: &[(u16, &str, FailureKind, &str)] = &[
            (200, "", Transient, "token_bad_response"),
            (
                200,
                r#"{"access_token":""}"#,
                Transient,
                "token_bad_response",
            ),
            (
                200,
                r#"{"access_token":"x","token_type":"MAC"}"#,
                Transient,
                "token_bad_response",
            ),
            (
                200,
                r#"{"access_token":"a\nb"}"#,
                Transient,
                "token_bad_response",
            ),
            (
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                Permanent,
                "token_invalid_grant",
            ),
            (
                401,
                r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#,
                Permanent,
                "token_invalid_client",
            ),
            (
                401,
                r#"{"error":"unauthorized_client"}"#,
                Permanent,
                "token_invalid_client",
            ),
            (403, "forbidden", Permanent, "token_refused"),
            (429, "", Throttled, "token_throttled"),
            (500, "", Transient, "token_unavailable"),
            (
                503,
                r#"{"error":"internal_failure"}"#,
                Transient,
                "token_unavailable",
            ),
        ];
        for &(status, body, kind, reason) in cases {
            let e = parse_token_response(status, body.as_bytes(), 0).unwrap_err();
            assert_eq!((e.kind, e.reason), (kind, reason), "{status} {body}");
        }
        let e = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            0,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "token endpoint answered HTTP 400: invalid_grant: Invalid JWT Signature."
        );
    }
}
