//! Outbound connections, for Beam upstreams and the Funnel sinks alike.
//!
//! * [`tls`] — the rustls client configuration: system roots,
//!   `SSL_CERT_FILE`, `[upstream] ca_file`, an optional client certificate
//!   (mTLS from an `x509` credential). Verification is always on.
//! * [`connect`] — TCP connect and TLS handshake, each under its timeout.
//! * [`http`] — the pooled keep-alive HTTP/1.1 + HTTP/2 (ALPN) client.
//! * [`error`] — one classification of failures, with a metric label each.
//!
//! [`Upstream`] ties them together: one per process, built from the
//! `[upstream]` settings, cheap to clone.

mod connect;
pub mod error;
pub mod http;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::{ClientConfig, RootCertStore};
use simgate_control::config::UpstreamSettings;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use error::{UpstreamError, UpstreamErrorKind};
pub use http::{full_body, Body, BoxError, HttpClient};
pub use tls::{ClientIdentity, RootSources, UpstreamConfigError};

/// A raw outbound byte stream, TLS or not.
pub trait StreamIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> StreamIo for T {}

/// Timeouts and pool limits, from `[upstream]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub tls_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl From<&UpstreamSettings> for Limits {
    fn from(s: &UpstreamSettings) -> Self {
        Self {
            connect_timeout: Duration::from_millis(s.connect_timeout_ms),
            tls_timeout: Duration::from_millis(s.tls_timeout_ms),
            response_timeout: Duration::from_millis(s.response_timeout_ms),
            pool_idle_timeout: Duration::from_millis(s.pool_idle_timeout_ms),
            pool_max_idle_per_host: s.pool_max_idle_per_host,
        }
    }
}

/// The TLS configurations and the HTTP pool of one client identity.
#[derive(Debug)]
struct Profile {
    fingerprint: Option<[u8; 32]>,
    tls: tls::TlsConfigs,
    http: HttpClient,
}

struct Inner {
    limits: Limits,
    roots: Arc<RootCertStore>,
    anonymous: Profile,
    /// Per credential id, the profile of its current certificate. Read
    /// without locking on every request; written (copy on write) only when
    /// a credential is first used or rotated, so its size is the number of
    /// credentials in use.
    identities: ArcSwap<HashMap<Arc<str>, Arc<Profile>>>,
    /// Serialises writers of `identities`, so two first uses of the same
    /// credential build one pool, not two.
    building: Mutex<()>,
}

/// Outbound connections: TLS configuration, pooled HTTP clients (one pool
/// per client identity, none shared between identities) and raw TLS
/// streams. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("limits", &self.inner.limits)
            .field("roots", &self.inner.roots.len())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Trusts the system roots, `SSL_CERT_FILE` (if set) and
    /// `settings.ca_file` (if set). Reads certificate files: call it once
    /// per process, at start.
    pub fn new(settings: &UpstreamSettings) -> Result<Self, UpstreamConfigError> {
        Self::with_roots(settings, &RootSources::from_env(settings.ca_file.clone()))
    }

    /// As [`Upstream::new`], with the roots spelled out (tests, tools).
    pub fn with_roots(
        settings: &UpstreamSettings,
        roots: &RootSources,
    ) -> Result<Self, UpstreamConfigError> {
        let roots = Arc::new(roots.load()?);
        let limits = Limits::from(settings);
        let anonymous = Self::profile(&roots, &limits, None)?;
        Ok(Self {
            inner: Arc::new(Inner {
                limits,
                roots,
                anonymous,
                identities: ArcSwap::default(),
                building: Mutex::new(()),
            }),
        })
    }

    /// One process-wide instance with the default `[upstream]` settings,
    /// for the tools and tests that build sinks outside a server (loading
    /// the system roots reads hundreds of files).
    pub fn shared_default() -> Result<Self, UpstreamConfigError> {
        static SHARED: OnceLock<Upstream> = OnceLock::new();
        if let Some(u) = SHARED.get() {
            return Ok(u.clone());
        }
        let u = Self::new(&UpstreamSettings::default())?;
        Ok(SHARED.get_or_init(|| u).clone())
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn profile(
        roots: &Arc<RootCertStore>,
        limits: &Limits,
        identity: Option<&ClientIdentity>,
    ) -> Result<Profile, UpstreamConfigError> {
        let tls = tls::TlsConfigs::build(roots, identity)?;
        let http = HttpClient::new(Arc::clone(&tls.http), limits);
        Ok(Profile {
            fingerprint: identity.map(ClientIdentity::fingerprint),
            tls,
            http,
        })
    }

    /// The profile of `identity`: cached by credential id, rebuilt (with a
    /// new pool) when the credential's certificate or key changed.
    fn profile_for(&self, identity: &ClientIdentity) -> Result<Arc<Profile>, UpstreamConfigError> {
        let current = |map: &HashMap<Arc<str>, Arc<Profile>>| {
            map.get(identity.id())
                .filter(|p| p.fingerprint == Some(identity.fingerprint()))
                .cloned()
        };
        if let Some(p) = current(&self.inner.identities.load()) {
            return Ok(p);
        }
        let _writer = self
            .inner
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = current(&self.inner.identities.load()) {
            return Ok(p);
        }
        let profile = Arc::new(Self::profile(
            &self.inner.roots,
            &self.inner.limits,
            Some(identity),
        )?);
        let mut map = HashMap::clone(&self.inner.identities.load());
        map.insert(Arc::clone(identity.id_arc()), Arc::clone(&profile));
        self.inner.identities.store(Arc::new(map));
        Ok(profile)
    }

    /// The pooled HTTP client without a client certificate.
    pub fn http(&self) -> &HttpClient {
        &self.inner.anonymous.http
    }

    /// The pooled HTTP client presenting `identity` (its own pool), or
    /// [`Upstream::http`] for `None`.
    pub fn http_for(
        &self,
        identity: Option<&ClientIdentity>,
    ) -> Result<HttpClient, UpstreamConfigError> {
        match identity {
            None => Ok(self.inner.anonymous.http.clone()),
            Some(id) => Ok(self.profile_for(id)?.http.clone()),
        }
    }

    /// The rustls configuration for raw streams (no ALPN) presenting
    /// `identity`, for protocols that drive TLS themselves.
    pub fn stream_tls_config(
        &self,
        identity: Option<&ClientIdentity>,
    ) -> Result<Arc<ClientConfig>, UpstreamConfigError> {
        match identity {
            None => Ok(Arc::clone(&self.inner.anonymous.tls.stream)),
            Some(id) => Ok(Arc::clone(&self.profile_for(id)?.tls.stream)),
        }
    }

    /// A stream to `host:port`: verified TLS when `tls` (`tcps://`,
    /// `mqtts://`), else plain TCP (`tcp://`, `mqtt://`).
    pub async fn connect_stream(
        &self,
        tls: bool,
        host: &str,
        port: u16,
        identity: Option<&ClientIdentity>,
    ) -> Result<Box<dyn StreamIo>, UpstreamError> {
        if tls {
            Ok(Box::new(self.connect_tls(host, port, identity).await?))
        } else {
            Ok(Box::new(self.connect_tcp(host, port).await?))
        }
    }

    /// A plain TCP stream to `host:port` (Beam `tcp://` and `mqtt://`
    /// destinations), within the connect timeout.
    pub async fn connect_tcp(&self, host: &str, port: u16) -> Result<TcpStream, UpstreamError> {
        connect::tcp(host, port, self.inner.limits.connect_timeout).await
    }

    /// A verified TLS stream to `host:port` (Beam TCP→TLS, MQTTS), within
    /// the connect and TLS timeouts; `identity` is shown if the server asks
    /// for a client certificate.
    pub async fn connect_tls(
        &self,
        host: &str,
        port: u16,
        identity: Option<&ClientIdentity>,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let config = self
            .stream_tls_config(identity)
            .map_err(|e| UpstreamError::new(UpstreamErrorKind::Tls, e.to_string()))?;
        let limits = &self.inner.limits;
        let tcp = connect::tcp(host, port, limits.connect_timeout).await?;
        connect::tls(config, host, tcp, limits.tls_timeout).await
    }
}
