//! The TOML configuration file, and the embedded default that `simgate serve`
//! runs when given none.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    Credential, Destination, Group, Imei, Imsi, Msisdn, Operator, SinkService, Subscriber,
};
use crate::snapshot::{Session, Snapshot};

mod cluster;
pub use cluster::ClusterSettings;

/// The embedded default: demo operator, a demo group with Harvest on, and a
/// demo SIM bound to 127.0.0.1, so `simgate serve` works with no cloud.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot parse configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub listen: Listeners,
    #[serde(default)]
    pub funnel: FunnelSettings,
    #[serde(default)]
    pub harvest: HarvestSettings,
    #[serde(default)]
    pub endorse: EndorseSettings,
    /// SORACOM Harvest Files storage limits (the per-group settings are the
    /// groups' `SoracomHarvestFiles` configuration).
    #[serde(default)]
    pub harvest_files: HarvestFilesSettings,
    /// SORACOM Krypton's CA (the per-group settings are the groups'
    /// `SoracomKrypton` configuration).
    #[serde(default)]
    pub krypton: KryptonSettings,
    /// SORACOM Funk (the per-group settings are the groups' `SoracomFunk`
    /// configuration).
    #[serde(default)]
    pub funk: FunkSettings,
    #[serde(default)]
    pub ingress: IngressSettings,
    /// Outbound connections (Beam upstreams and Funnel sinks).
    #[serde(default)]
    pub upstream: UpstreamSettings,
    /// RADIUS accounting (sessions from the packet gateway).
    #[serde(default)]
    pub radius: crate::radius::RadiusConfig,
    /// A fleet: control state in etcd, Harvest in PostgreSQL.
    #[serde(default)]
    pub cluster: ClusterSettings,
    #[serde(default)]
    pub operators: Vec<Operator>,
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub subscribers: Vec<Subscriber>,
    #[serde(default)]
    pub credentials: Vec<Credential>,
    #[serde(default)]
    pub sessions: Vec<StaticSession>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./simgate-data")
}

/// Listener addresses. A listener set to `None` (omitted with
/// `disabled = [...]`) is not started.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    /// HTTP entry for Funnel, Harvest and the other device-side services,
    /// routed by `Host`.
    #[serde(default = "Listeners::http_default")]
    pub http: Option<SocketAddr>,
    /// UDP and TCP entry (SORACOM's port 23080): Funnel and the Unified
    /// Endpoint.
    #[serde(default = "Listeners::unified_default")]
    pub unified: Option<SocketAddr>,
    /// Harvest Data UDP and TCP entry (SORACOM's port 8514).
    #[serde(default = "Listeners::harvest_default")]
    pub harvest: Option<SocketAddr>,
    /// Control API, `/metrics` and the Harvest query API.
    #[serde(default = "Listeners::api_default")]
    pub api: Option<SocketAddr>,
    /// Beam HTTP entry (SORACOM's `beam.soracom.io:8888`): the group's
    /// `http://beam.soracom.io:8888/<path>` entries, by path prefix.
    #[serde(default = "Listeners::beam_http_default")]
    pub beam_http: Option<SocketAddr>,
    /// Beam website entry (SORACOM's `beam.soracom.io:18080`): the whole
    /// path appended to the destination.
    #[serde(default = "Listeners::beam_website_default")]
    pub beam_website: Option<SocketAddr>,
    /// Beam TCP → TCP(S) entry (SORACOM's `beam.soracom.io:8023`): the
    /// group's `tcp://beam.soracom.io:8023` entry.
    #[serde(default = "Listeners::beam_tcp_default")]
    pub beam_tcp: Option<SocketAddr>,
    /// Beam MQTT → MQTT(S) entry (SORACOM's `beam.soracom.io:1883`): the
    /// group's `mqtt://beam.soracom.io:1883` entry.
    #[serde(default = "Listeners::beam_mqtt_default")]
    pub beam_mqtt: Option<SocketAddr>,
}

impl Listeners {
    fn http_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
    fn unified_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 23080)))
    }
    fn harvest_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 8514)))
    }
    fn api_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 7070)))
    }
    fn beam_http_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 8888)))
    }
    fn beam_website_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 18080)))
    }
    fn beam_tcp_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 8023)))
    }
    fn beam_mqtt_default() -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 1883)))
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            http: Self::http_default(),
            unified: Self::unified_default(),
            harvest: Self::harvest_default(),
            api: Self::api_default(),
            beam_http: Self::beam_http_default(),
            beam_website: Self::beam_website_default(),
            beam_tcp: Self::beam_tcp_default(),
            beam_mqtt: Self::beam_mqtt_default(),
        }
    }
}

/// Limits and tuning of the ingress listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSettings {
    /// UDP sockets (SO_REUSEPORT) per UDP listener; 0 = one per core.
    pub udp_workers: usize,
    /// Answer each UDP message (`200`, `201`, errors) as SORACOM does. Off
    /// for fleets whose devices never read the answer: replies cost about as
    /// much CPU as receiving.
    pub udp_reply: bool,
    /// Largest HTTP request body accepted (SORACOM Funnel: 800,000 bytes).
    pub http_max_body: usize,
    /// Largest request body Beam forwards (streamed, so this bounds the
    /// upstream's work, not simgate's memory); larger ones get `413`.
    pub beam_max_body: u64,
    /// Largest single TCP message (one read); longer reads are split.
    pub tcp_max_message: usize,
    /// Idle TCP connections are closed after this long.
    pub tcp_idle_timeout_ms: u64,
    /// Concurrent TCP connections per listener.
    pub tcp_max_connections: usize,
    /// HTTP listeners (devices and the API): a request's headers must
    /// arrive within this long, or the connection is closed.
    pub http_header_timeout_ms: u64,
    /// HTTP listeners (devices and the API): a request's body must arrive
    /// within this long after its headers; a device that stops sending gets
    /// `408` (counted as `body_timeout`) and the connection is closed.
    pub http_body_timeout_ms: u64,
    /// Concurrent connections on the API listener; more are closed at once.
    pub api_max_connections: usize,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            udp_workers: 0,
            udp_reply: true,
            http_max_body: 800_000,
            beam_max_body: 10 << 20,
            tcp_max_message: 65_536,
            tcp_idle_timeout_ms: 300_000,
            tcp_max_connections: 10_000,
            http_header_timeout_ms: 30_000,
            http_body_timeout_ms: 30_000,
            api_max_connections: 1024,
        }
    }
}

/// Outbound connections: Beam upstreams and Funnel sinks. Certificates are
/// always verified, against the system roots, the PEM bundle named by
/// `SSL_CERT_FILE` (if set) and `ca_file` (if set); there is no way to turn
/// verification off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Extra trusted CA certificates (PEM), added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// TCP connect (all resolved addresses together).
    pub connect_timeout_ms: u64,
    /// TLS handshake, after the TCP connection is up.
    pub tls_timeout_ms: u64,
    /// From the request sent to the response headers received.
    pub response_timeout_ms: u64,
    /// Idle keep-alive connections are closed after this long.
    pub pool_idle_timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host (and per client
    /// certificate).
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            ca_file: None,
            connect_timeout_ms: 5_000,
            tls_timeout_ms: 5_000,
            response_timeout_ms: 30_000,
            // AWS and most load balancers drop idle connections after about
            // a minute; closing first avoids sending on a dying connection.
            pool_idle_timeout_ms: 50_000,
            pool_max_idle_per_host: 64,
        }
    }
}

/// What a device's 2xx from Funnel promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The record is fsynced in the destination's spool (group commit):
    /// it survives a crash or restart.
    Spool,
    /// The record is in a bounded memory queue: a crash loses it.
    Memory,
}

/// What the spool does when its disk budget is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse new records (HTTP 429, UDP dropped and counted, TCP waits):
    /// nothing acknowledged is ever dropped.
    Refuse,
    /// Delete the oldest segment to make room; its undelivered records are
    /// counted as `funnel_dropped{reason="spool_full"}`.
    DropOldest,
}

/// How Funnel queues, batches, retries and keeps records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunnelSettings {
    /// `spool` (default): acknowledged records survive crashes;
    /// `memory`: faster, lost on a crash.
    pub durability: Durability,
    /// Records held in memory per destination (the send window). With
    /// `memory` durability, ingress is refused beyond it.
    pub queue_records: usize,
    /// Bytes held in memory per destination, as `queue_records`.
    pub queue_bytes: usize,
    /// How long a partly filled batch waits for more records.
    pub linger_ms: u64,
    /// Most requests in flight per destination; the adaptive window moves
    /// between 1 and this.
    pub max_in_flight: usize,
    /// Attempts per record (first send included) for records the sink fails
    /// one by one; then the record is dead-lettered. Outages (refused,
    /// timed out, 5xx) spend no attempts.
    pub max_attempts: u32,
    /// Backoff base and cap (full jitter), per record and for a destination
    /// that is down.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A record not delivered within this time is dead-lettered.
    pub max_record_age_secs: u64,
    /// Per-request timeout towards the sink.
    pub request_timeout_ms: u64,
    /// On shutdown, how long requests in flight may still finish (spool:
    /// what is left is delivered after the restart; memory: it is lost and
    /// counted).
    pub shutdown_grace_ms: u64,
    /// Disk budget of one destination's spool.
    pub spool_max_bytes: u64,
    /// Size at which a spool segment is sealed and a new one started.
    pub spool_segment_bytes: u64,
    pub spool_when_full: WhenFull,
    /// Accept a plain `http://` `destination.endpoint` (emulators such as
    /// kinesalite); off, endpoints must be `https://` (see
    /// [`check_funnel_endpoint`]).
    pub allow_insecure_endpoints: bool,
}

impl Default for FunnelSettings {
    fn default() -> Self {
        Self {
            durability: Durability::Spool,
            queue_records: 100_000,
            queue_bytes: 64 << 20,
            linger_ms: 100,
            max_in_flight: 4,
            max_attempts: 8,
            retry_base_ms: 100,
            retry_max_ms: 10_000,
            // SORACOM keeps undeliverable data for hours; a day by default.
            max_record_age_secs: 86_400,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 64 << 20,
            spool_when_full: WhenFull::Refuse,
            allow_insecure_endpoints: false,
        }
    }
}

/// Harvest Data storage limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarvestSettings {
    /// Largest entry accepted (SORACOM: 1 KB by default, configurable).
    pub max_entry_bytes: usize,
    /// Entries older than this are deleted (SORACOM: 40 days by default).
    pub retention_days: u32,
    /// Disk budget of the stored entries (keys and values); when reached,
    /// new entries are refused (`507`) until the retention sweep or deletes
    /// make room. 0 = no limit.
    pub max_bytes: u64,
}

impl Default for HarvestSettings {
    fn default() -> Self {
        Self {
            max_entry_bytes: 1024,
            retention_days: 40,
            max_bytes: 1 << 30,
        }
    }
}

/// Harvest Files storage limits: files live under
/// `{data_dir}/harvest-files/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarvestFilesSettings {
    /// Largest file accepted (SORACOM: 100 MiB over cellular); `413` above.
    pub max_file_bytes: u64,
    /// Disk budget of all stored files; when reached, uploads are refused
    /// (`507`) until files are deleted. 0 = no limit.
    pub budget_bytes: u64,
}

impl Default for HarvestFilesSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 << 20,
            budget_bytes: 1 << 30,
        }
    }
}

/// SORACOM Endorse (the per-group settings are the groups'
/// `SoracomEndorse` configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndorseSettings {
    /// The tokens' `iss` (SORACOM's is `https://soracom.io`; a verifier
    /// that should tell simgate's tokens from SORACOM's sets its own).
    pub issuer: String,
    /// The algorithm of keys made from now on (the first key, and each
    /// rotation): `RS256` as SORACOM, or `ES256` (smaller tokens, cheaper
    /// to sign). An existing key keeps signing with its own algorithm
    /// until `simgate endorse rotate`.
    pub algorithm: EndorseAlgorithm,
}

impl Default for EndorseSettings {
    fn default() -> Self {
        Self {
            issuer: "https://soracom.io".into(),
            algorithm: EndorseAlgorithm::Rs256,
        }
    }
}

/// A JWS algorithm Endorse signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum EndorseAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys (SORACOM's).
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
}

/// SORACOM Krypton's certificate authority: PEM files of the CA that
/// signs device certificates (the key PKCS#8, SEC1 or PKCS#1), both or
/// neither; without them a CA is generated on first use in
/// `{data_dir}/krypton/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KryptonSettings {
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
}

/// SORACOM Funk's process-wide settings (which function a SIM invokes is
/// its group's `SoracomFunk` configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunkSettings {
    /// The `coverage` in the context a function receives and in its `srn`
    /// (SORACOM's are `jp` and `global`).
    pub coverage: String,
    /// Whole invocation, connect to last response byte.
    pub timeout_ms: u64,
    /// Largest function response relayed to the device (Lambda's own
    /// synchronous limit is 6 MB).
    pub max_response_bytes: usize,
    /// Accept a plain `http://` Lambda `destination.endpoint` or HTTPS
    /// function URL (emulators); off, both must be `https://`.
    pub allow_insecure_endpoints: bool,
}

impl Default for FunkSettings {
    fn default() -> Self {
        Self {
            coverage: "jp".into(),
            timeout_ms: 10_000,
            max_response_bytes: 6 << 20,
            allow_insecure_endpoints: false,
        }
    }
}

/// Whether a Funnel `destination.endpoint` override may be used: `https://`
/// (or anything else that is not plain HTTP; the sink refuses what it
/// cannot use) always; `http://` only when `allow_insecure` (`[funnel]
/// allow_insecure_endpoints = true`, for emulators), since records and
/// their SigV4-signed requests would cross the network in clear text.
/// Called for the configuration file and for API writes.
pub fn check_funnel_endpoint(endpoint: &str, allow_insecure: bool) -> Result<(), String> {
    let plain_http = endpoint
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if plain_http && !allow_insecure {
        return Err(format!(
            "destination.endpoint {endpoint:?} must be https:// (for an emulator set [funnel] allow_insecure_endpoints = true)"
        ));
    }
    Ok(())
}

/// [`check_funnel_endpoint`] for every URL a destination sends to: its
/// `endpoint` override, and for `https` (whose `resourceUrl` is where
/// records are POSTed) its `resourceUrl`, which must be an http(s) URL.
pub fn check_funnel_destination(d: &Destination, allow_insecure: bool) -> Result<(), String> {
    if let Some(e) = &d.endpoint {
        check_funnel_endpoint(e, allow_insecure)?;
    }
    if d.service == SinkService::Https {
        let url = &d.resource_url;
        let lower = url
            .get(..8)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if !lower.starts_with("https://") && !lower.starts_with("http://") {
            return Err(format!(
                "destination.resourceUrl {url:?} of an https destination must be an https:// URL"
            ));
        }
        check_funnel_endpoint(url, allow_insecure)
            .map_err(|m| m.replacen("destination.endpoint", "destination.resourceUrl", 1))?;
    }
    Ok(())
}

/// A static IP → IMSI binding, for labs and tests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSession {
    pub ip: IpAddr,
    pub imsi: Imsi,
    #[serde(default)]
    pub imei: Option<Imei>,
    #[serde(default)]
    pub msisdn: Option<Msisdn>,
}

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn embedded_default() -> Self {
        #[allow(clippy::expect_used)] // covered by a unit test
        Self::parse(EMBEDDED_DEFAULT).expect("embedded default config is valid")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        let mut seen = HashMap::new();
        for g in &self.groups {
            if seen.insert(g.id.clone(), ()).is_some() {
                return invalid(format!("group {} is declared twice", g.id));
            }
            if let Some(f) = &g.funnel {
                if let Err(m) =
                    check_funnel_destination(&f.destination, self.funnel.allow_insecure_endpoints)
                {
                    return invalid(format!("group {}: funnel {m}", g.id));
                }
                if let Err(m) = f.destination.check_flags() {
                    return invalid(format!("group {}: funnel {m}", g.id));
                }
                if !self.credentials.iter().any(|c| c.id == f.credentials_id) {
                    return invalid(format!(
                        "group {}: funnel credentials_id {} is not declared in [[credentials]]",
                        g.id, f.credentials_id
                    ));
                }
            }
            if let Some(op) = &g.operator_id {
                if !self.operators.iter().any(|o| &o.id == op) {
                    return invalid(format!("group {}: unknown operator {op}", g.id));
                }
            }
            if let Err(e) = g.beam.validate() {
                return invalid(format!("group {}: beam: {e}", g.id));
            }
            for (id, expected) in g.beam.fixed_credentials_typed() {
                match self.credentials.iter().find(|c| c.id == id) {
                    None => {
                        return invalid(format!(
                            "group {}: beam credentials {id} are not declared in [[credentials]]",
                            g.id
                        ))
                    }
                    Some(c) if c.kind.type_name() != expected => {
                        return invalid(format!(
                            "group {}: beam credentials {id} must be of type {expected}",
                            g.id
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        let mut imsis = HashMap::new();
        for s in &self.subscribers {
            if imsis.insert(s.imsi.clone(), ()).is_some() {
                return invalid(format!("subscriber {} is declared twice", s.imsi));
            }
            if let Some(g) = &s.group_id {
                if !self.groups.iter().any(|x| &x.id == g) {
                    return invalid(format!("subscriber {}: unknown group {g}", s.imsi));
                }
            }
            if let Some(op) = &s.operator_id {
                if !self.operators.iter().any(|o| &o.id == op) {
                    return invalid(format!("subscriber {}: unknown operator {op}", s.imsi));
                }
            }
        }
        for s in &self.sessions {
            if !imsis.contains_key(&s.imsi) {
                return invalid(format!(
                    "session {}: IMSI {} is not declared in [[subscribers]]",
                    s.ip, s.imsi
                ));
            }
        }
        if self.funnel.queue_records == 0 || self.funnel.queue_bytes == 0 {
            return invalid("funnel.queue_records and queue_bytes must be positive".into());
        }
        if self.funnel.max_attempts == 0 || self.funnel.max_in_flight == 0 {
            return invalid("funnel.max_attempts and max_in_flight must be positive".into());
        }
        let u = &self.upstream;
        if u.connect_timeout_ms == 0 || u.tls_timeout_ms == 0 || u.response_timeout_ms == 0 {
            return invalid(
                "upstream.connect_timeout_ms, tls_timeout_ms and response_timeout_ms must be positive"
                    .into(),
            );
        }
        let i = &self.ingress;
        if i.http_header_timeout_ms == 0
            || i.http_body_timeout_ms == 0
            || i.api_max_connections == 0
        {
            return invalid(
                "ingress.http_header_timeout_ms, http_body_timeout_ms and api_max_connections must be positive"
                    .into(),
            );
        }
        Ok(())
    }

    /// The configuration part of the control plane as a snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let only_operator = match self.operators.as_slice() {
            [one] => Some(one.id.clone()),
            _ => None,
        };
        Snapshot {
            version: 0,
            operators: self
                .operators
                .iter()
                .map(|o| (o.id.clone(), Arc::new(o.clone())))
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|g| {
                    let mut g = g.clone();
                    g.operator_id = g.operator_id.or_else(|| only_operator.clone());
                    (g.id.clone(), Arc::new(g))
                })
                .collect(),
            subscribers: self
                .subscribers
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.operator_id = s.operator_id.or_else(|| only_operator.clone());
                    (s.imsi.clone(), Arc::new(s))
                })
                .collect(),
            credentials: self
                .credentials
                .iter()
                .map(|c| (c.id.clone(), Arc::new(c.clone())))
                .collect(),
        }
    }

    /// Static sessions declared in the file.
    pub fn static_sessions(&self) -> impl Iterator<Item = (IpAddr, Session)> + '_ {
        self.sessions.iter().map(|s| {
            (
                s.ip,
                Session::new(s.imsi.clone(), s.imei.clone(), s.msisdn.clone()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endorse_issuer_defaults_to_soracoms() {
        assert_eq!(
            Config::embedded_default().endorse.issuer,
            "https://soracom.io"
        );
        let c = Config::parse("[endorse]\nissuer = \"https://id.example\"\n").unwrap();
        assert_eq!(c.endorse.issuer, "https://id.example");
        assert!(Config::parse("[endorse]\nissuer_typo = \"x\"\n").is_err());
        assert_eq!(c.endorse.algorithm, EndorseAlgorithm::Rs256);
        let c = Config::parse("[endorse]\nalgorithm = \"ES256\"\n").unwrap();
        assert_eq!(c.endorse.algorithm, EndorseAlgorithm::Es256);
        assert!(Config::parse("[endorse]\nalgorithm = \"HS256\"\n").is_err());
    }

    #[test]
    fn funnel_http_endpoint_needs_the_opt_in() {
        let body = |endpoint: &str, allow: &str| {
            format!(
                r#"
[funnel]
{allow}

[[credentials]]
id = "k"
type = "aws"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret"

[[groups]]
id = "g"
[groups.funnel]
credentials_id = "k"
destination = {{ service = "kinesis", resource_url = "https://kinesis.ap-northeast-1.amazonaws.com/s", endpoint = "{endpoint}" }}
"#
            )
        };
        let e = Config::parse(&body("http://127.0.0.1:4567", "")).unwrap_err();
        assert!(e.to_string().contains("allow_insecure_endpoints"), "{e}");
        assert!(Config::parse(&body("HTTP://127.0.0.1:4567", "")).is_err());
        let c = Config::parse(&body(
            "http://127.0.0.1:4567",
            "allow_insecure_endpoints = true",
        ))
        .unwrap();
        assert!(c.funnel.allow_insecure_endpoints);
        Config::parse(&body("https://vpce.example.com", "")).unwrap();
        Config::parse(&body("null:", "")).unwrap();
        assert!(check_funnel_endpoint("http://x", false).is_err());
        assert!(check_funnel_endpoint("http://x", true).is_ok());
        assert!(check_funnel_endpoint("https://x", false).is_ok());
    }

    #[test]
    fn https_resource_url_needs_the_opt_in_for_http() {
        let mut d = Destination::new(SinkService::Https, "https://hooks.example.com/in");
        assert!(check_funnel_destination(&d, false).is_ok());
        d.resource_url = "http://127.0.0.1:8080/in".into();
        let e = check_funnel_destination(&d, false).unwrap_err();
        assert!(
            e.contains("destination.resourceUrl") && e.contains("allow_insecure_endpoints"),
            "{e}"
        );
        assert!(check_funnel_destination(&d, true).is_ok());
        d.resource_url = "ftp://hooks.example.com/in".into();
        assert!(check_funnel_destination(&d, true).is_err());
        // Other services' resourceUrl names a resource, not where to send.
        let k = Destination::new(SinkService::Kinesis, "http://kinesis.x/s");
        assert!(check_funnel_destination(&k, false).is_ok());
    }

    #[test]
    fn harvest_max_bytes_defaults_to_one_gib() {
        assert_eq!(HarvestSettings::default().max_bytes, 1 << 30);
        let c = Config::parse("[harvest]\nmax_bytes = 4096\n").unwrap();
        assert_eq!(c.harvest.max_bytes, 4096);
    }

    fn funnel_toml(table: &str) -> String {
        format!(
            r#"
[[credentials]]
id = "kinesis-demo"
type = "aws"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret"

[[groups]]
id = "g"
[groups.funnel]
{table}
"#
        )
    }

    #[test]
    fn funnel_table_takes_soracoms_field_names() {
        use crate::model::{FunnelContentType, SinkService};
        let c = Config::parse(&funnel_toml(
            r#"enabled = true
credentialsId = "kinesis-demo"
contentType = "application/x-soracom-bf-v1"
addSimId = true
destination = { provider = "aws", service = "kinesis", resourceUrl = "https://kinesis.ap-northeast-1.amazonaws.com/devices", payloadsOnly = true, randomizePartitionKey = true }"#,
        ))
        .unwrap();
        let f = c.groups[0].funnel.clone().unwrap();
        assert!(f.enabled && f.add_sim_id);
        assert_eq!(f.content_type, FunnelContentType::BinaryParser);
        assert_eq!(f.destination.service, SinkService::Kinesis);
        assert!(f.destination.payloads_only && f.destination.randomize_partition_key);

        // The snake_case spelling and earlier versions' keys still read:
        // `payloads_only` beside destination, `content_type = "auto"`;
        // `enabled` left out is off, as SORACOM's default.
        let c = Config::parse(&funnel_toml(
            r#"credentials_id = "kinesis-demo"
payloads_only = true
content_type = "auto"
destination = { service = "kinesis", resource_url = "https://kinesis.ap-northeast-1.amazonaws.com/devices" }"#,
        ))
        .unwrap();
        let f = c.groups[0].funnel.clone().unwrap();
        assert!(!f.enabled && !f.add_sim_id && f.destination.payloads_only);
        assert_eq!(f.content_type, FunnelContentType::Unspecified);
        assert_eq!(f.destination.provider, "aws");

        // Unknown keys are refused by name; flags of other services too.
        for (table, named) in [
            (
                r#"credentialsId = "kinesis-demo"
sendSimId = true
destination = { service = "kinesis", resourceUrl = "https://x" }"#,
                "sendSimId",
            ),
            (
                r#"credentialsId = "kinesis-demo"
destination = { service = "kinesis", resourceUrl = "https://x", partitionKey = "k" }"#,
                "partitionKey",
            ),
            (
                r#"credentialsId = "kinesis-demo"
contentType = "xml"
destination = { service = "kinesis", resourceUrl = "https://x" }"#,
                "xml",
            ),
            (
                r#"credentialsId = "kinesis-demo"
destination = { service = "firehose", resourceUrl = "https://x", randomizePartitionKey = true }"#,
                "randomizePartitionKey",
            ),
        ] {
            let e = Config::parse(&funnel_toml(table)).unwrap_err().to_string();
            assert!(e.contains(named), "{named}: {e}");
        }
    }

    #[test]
    fn embedded_default_is_valid_and_binds_localhost() {
        let c = Config::embedded_default();
        let snap = c.snapshot();
        let (ip, session) = c.static_sessions().next().unwrap();
        assert_eq!(ip, IpAddr::from([127, 0, 0, 1]));
        let id = snap.resolve(&session).unwrap();
        assert!(id.group.unwrap().harvest.enabled);
        assert_eq!(id.operator_id.as_str(), "OP0000000001");
    }

    #[test]
    fn groups_carry_beam_entries() {
        let c = Config::parse(
            r#"
[[credentials]]
id = "beam-psk"
type = "psk"
key = "topsecret"

[[groups]]
id = "g"

[groups.beam."http://beam.soracom.io:8888/"]
destination = "https://example.com/"
enabled = true
addSubscriberHeader = true
addSignature = true
psk = { "$credentialsId" = "beam-psk" }

[groups.beam."tcp://beam.soracom.io:8023"]
destination = "tcps://example.com:9000"
enabled = true
"#,
        )
        .unwrap();
        let g = &c.groups[0];
        assert_eq!(g.beam.entries.len(), 2);
        let (prefix, e) = g.beam.http_entries().next().unwrap();
        assert_eq!(prefix, "/");
        assert!(e.add_signature);
        // Checked as the API checks them.
        let e = Config::parse(
            "[[groups]]\nid = \"g\"\n[groups.beam.\"tcp://beam.soracom.io:8023\"]\ndestination = \"https://x/\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("tcps://"), "{e}");
        let e = Config::parse(
            "[[groups]]\nid = \"g\"\n[groups.beam.\"http://beam.soracom.io:8888/\"]\ndestination = \"https://x/\"\npsk = { \"$credentialsId\" = \"nope\" }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn unknown_keys_and_dangling_references_are_refused() {
        assert!(Config::parse("nonsense = 1").is_err());
        let e = Config::parse("[[subscribers]]\nimsi = \"001010000000001\"\ngroup_id = \"nope\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("unknown group"), "{e}");
        let e = Config::parse(
            "[[subscribers]]\nimsi = \"001010000000001\"\noperator_id = \"OP0000000009\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown operator"), "{e}");
        let e = Config::parse("[[subscribers]]\nimsi = \"12\"\n").unwrap_err();
        assert!(e.to_string().contains("IMSI"), "{e}");
    }

    #[test]
    fn upstream_settings() {
        let c = Config::embedded_default();
        assert_eq!(c.upstream, UpstreamSettings::default());
        let c = Config::parse(
            "[upstream]\nca_file = \"/etc/simgate/ca.pem\"\nresponse_timeout_ms = 1500\n",
        )
        .unwrap();
        assert_eq!(
            c.upstream.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/simgate/ca.pem"))
        );
        assert_eq!(c.upstream.response_timeout_ms, 1500);
        assert_eq!(c.upstream.connect_timeout_ms, 5_000);
        // No switch to turn verification off, and unknown keys are refused.
        assert!(Config::parse("[upstream]\ninsecure = true\n").is_err());
        assert!(Config::parse("[upstream]\nconnect_timeout_ms = 0\n").is_err());
    }
}
