//! SORACOM Beam: plaintext from the device, TLS to the server, with the SIM's
//! identity (and a signature the server can check) added on the way.
//!
//! The protocol logic is sans-IO: the signature and TCP identity line
//! ([`signature`]), the headers added to an upstream HTTP request
//! ([`headers`]), and which entry a request on :8888 or :18080 goes to and
//! the upstream URL it becomes ([`route`]). The proxies are thin drivers
//! around them, each an `impl` block of [`Beam`] in its own module: HTTP and
//! website entries ([`http`]), UDP/TCP → HTTP ([`payload`]), TCP → TLS
//! ([`stream`]) and MQTT → MQTTS ([`mqtt`]). The configuration is the
//! group's [`simgate_control::BeamConfig`], reached as `identity.group.beam`,
//! with credentials resolved by [`simgate_control::snapshot::resolve_psk`] /
//! [`simgate_control::snapshot::resolve_x509`].

pub mod headers;
pub mod http;
pub mod mqtt;
pub mod payload;
pub mod route;
pub mod signature;
pub mod stream;

use std::sync::Arc;

use simgate_control::config::UpstreamSettings;
use simgate_control::{BeamEntry, BeamEntryPoint};
use tokio::sync::OnceCell;

use crate::metrics::Metrics;
use crate::upstream::Upstream;

pub use headers::{prepare_request_headers, BeamIdentity, HeaderError};
pub use route::{select_http_entry, website_entry, website_url, HttpRoute};
pub use signature::{http_signature, tcp_identity_line, SIGNATURE_VERSION};

/// Beam's proxies: one outbound side (TLS settings, pools) and one set of
/// metrics shared by every entry point.
pub struct Beam {
    /// Built at start by the server, or on first use (servers started
    /// with a test sink factory build none until Beam is used).
    upstream: OnceCell<Upstream>,
    settings: UpstreamSettings,
    /// Largest device request body forwarded (`[ingress] beam_max_body`).
    max_body: u64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Beam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beam").finish_non_exhaustive()
    }
}

impl Beam {
    pub fn new(
        upstream: Option<Upstream>,
        settings: UpstreamSettings,
        max_body: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            upstream: OnceCell::new_with(upstream),
            settings,
            max_body,
            metrics,
        }
    }

    async fn upstream(&self) -> Result<&Upstream, String> {
        self.upstream
            .get_or_try_init(|| async {
                let settings = self.settings.clone();
                tokio::task::spawn_blocking(move || Upstream::new(&settings))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            })
            .await
    }
}

/// Beam's answer to an upstream failure: `504` when a step ran out of
/// time, else `502`, with its reason phrase.
fn failure_status(e: &crate::upstream::UpstreamError) -> (::http::StatusCode, &'static str) {
    if e.is_timeout() {
        (::http::StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout")
    } else {
        (::http::StatusCode::BAD_GATEWAY, "Bad Gateway")
    }
}

impl Beam {
    /// Records how long reaching `entry`'s upstream took (to the response
    /// headers, or to the open stream, or to the failure).
    fn observe_upstream(&self, entry: &str, started: std::time::Instant) {
        self.metrics
            .beam_request_seconds
            .get_or_create(&crate::metrics::BeamEntryLabels {
                entry: entry.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The metric and log name of an entry: its `name`, else its key.
fn entry_label(entry: &BeamEntry, point: &BeamEntryPoint) -> String {
    if entry.name.is_empty() {
        point.key()
    } else {
        entry.name.clone()
    }
}

/// The key to sign with: the entry's `psk` when `addSignature` is on.
fn signing_key(
    entry: &BeamEntry,
    snapshot: &simgate_control::Snapshot,
    imsi: &simgate_control::Imsi,
) -> Result<Option<simgate_control::Secret>, simgate_control::snapshot::CredentialRefError> {
    match (entry.add_signature, entry.psk.as_ref()) {
        (true, Some(r)) => simgate_control::snapshot::resolve_psk(snapshot, r, imsi).map(Some),
        _ => Ok(None),
    }
}

/// The client certificate to present upstream: the entry's
/// `clientCerts.default` when `useClientCert` is on.
fn client_identity(
    entry: &BeamEntry,
    snapshot: &simgate_control::Snapshot,
    imsi: &simgate_control::Imsi,
) -> Result<Option<crate::upstream::ClientIdentity>, String> {
    let Some(r) = entry.client_cert() else {
        return Ok(None);
    };
    let (credential, x509) =
        simgate_control::snapshot::resolve_x509(snapshot, r, imsi).map_err(|e| e.to_string())?;
    let identity = crate::upstream::ClientIdentity::from_pem(
        credential.id.to_string(),
        &x509.cert,
        x509.key.expose(),
    )
    .map_err(|e| e.to_string())?;
    match x509.ca.as_deref().filter(|ca| !ca.trim().is_empty()) {
        Some(ca) => identity
            .with_ca_pem(ca)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(Some(identity)),
    }
}
