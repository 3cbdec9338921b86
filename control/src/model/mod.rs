//! What simgate knows about: operators, groups with per-service configuration,
//! subscribers (SIMs) and credentials.

mod beam;
mod credential;
mod ids;
pub mod unified;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use beam::{
    split_destination, BeamConfig, BeamEntry, BeamEntryPoint, CredentialsRef, CustomHeader,
    DestinationParts, HeaderAction, IMSI_PLACEHOLDER,
};
pub use credential::{
    AwsCredentials, AzureCredentials, Credential, CredentialKind, GoogleServiceAccountJson,
    PskCredentials, Secret, X509Credentials,
};
pub use ids::{CredentialId, GroupId, IdError, Imei, Imsi, Msisdn, OperatorId, SimId};

/// An account that owns SIMs and groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub id: OperatorId,
    #[serde(default)]
    pub name: String,
}

/// A set of SIMs sharing one service configuration, as SORACOM groups do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: GroupId,
    /// Filled from the only operator when the config file leaves it out.
    #[serde(default)]
    pub operator_id: Option<OperatorId>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub funnel: Option<FunnelConfig>,
    #[serde(default)]
    pub harvest: HarvestConfig,
    /// Beam entry points (namespace `SoracomBeam`), keyed by entry URL.
    /// Left out of the stored record when empty, so groups without Beam
    /// are written as before.
    #[serde(default, skip_serializing_if = "BeamConfig::is_empty")]
    pub beam: BeamConfig,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Configuration namespaces simgate does not model yet (`SoracomAir`,
    /// `SoracomEndorse`, …): namespace → key → value, kept verbatim so they
    /// round-trip through the API. `SoracomFunnel`, `SoracomHarvest` and
    /// `SoracomBeam` live in the typed fields above, never here.
    #[serde(default)]
    pub configuration: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

/// SORACOM Funnel settings of a group (namespace `SoracomFunnel`), in the
/// shape of SORACOM's `FunnelConfiguration`: `enabled` (default false, as
/// SORACOM), `destination` (with its per-service flags), `credentialsId`,
/// `contentType` and `addSimId`.
///
/// Read from the configuration file (`[groups.funnel]`, SORACOM's field
/// names or their snake_case spelling) and from stored records; written to
/// the store in snake_case. Records of earlier simgate versions, with
/// `payloads_only` beside `destination` and `content_type = "auto"`, still
/// read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FunnelConfigRepr")]
pub struct FunnelConfig {
    pub enabled: bool,
    pub destination: Destination,
    pub credentials_id: CredentialId,
    /// How UDP/TCP payloads are interpreted; HTTP follows its Content-Type.
    pub content_type: FunnelContentType,
    /// Add the SIM's `simId` (ICCID) to the envelope.
    pub add_sim_id: bool,
}

/// What `[groups.funnel]` and stored records may hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunnelConfigRepr {
    #[serde(default)]
    enabled: Option<bool>,
    destination: Destination,
    #[serde(alias = "credentialsId")]
    credentials_id: CredentialId,
    #[serde(default, alias = "contentType")]
    content_type: FunnelContentType,
    #[serde(default, alias = "addSimId")]
    add_sim_id: bool,
    /// Earlier simgate versions kept `payloads_only` beside `destination`;
    /// SORACOM (and simgate now) has it inside.
    #[serde(default, alias = "payloadsOnly")]
    payloads_only: bool,
}

impl From<FunnelConfigRepr> for FunnelConfig {
    fn from(r: FunnelConfigRepr) -> Self {
        let mut destination = r.destination;
        destination.payloads_only |= r.payloads_only;
        if r.enabled.is_none() {
            // Stored records always say; a configuration file may not.
            tracing::warn!(
                destination = %destination.resource_url,
                "a Funnel configuration without `enabled` is off (SORACOM's default); add enabled = true"
            );
        }
        Self {
            enabled: r.enabled.unwrap_or(false),
            destination,
            credentials_id: r.credentials_id,
            content_type: r.content_type,
            add_sim_id: r.add_sim_id,
        }
    }
}

/// SORACOM's `FunnelContentType`: how Funnel reads UDP and TCP payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FunnelContentType {
    /// The device promises JSON: anything else is refused with 400.
    #[serde(rename = "json", alias = "application/json")]
    Json,
    /// Text: delivered wrapped, `{"payload":"<base64>"}`.
    #[serde(rename = "text", alias = "text/plain")]
    Text,
    /// Embedded as JSON when the bytes are a JSON object or array, else
    /// wrapped. `auto` is what earlier simgate versions called it.
    #[default]
    #[serde(rename = "unspecified", alias = "auto")]
    Unspecified,
    /// Always wrapped, even if the bytes happen to be JSON.
    #[serde(rename = "binary", alias = "application/octet-stream")]
    Binary,
    /// SORACOM's Binary Parser format. simgate has no Binary Parser yet:
    /// the bytes are delivered wrapped, as `binary`.
    #[serde(rename = "application/x-soracom-bf-v1")]
    BinaryParser,
}

impl FunnelContentType {
    pub const ALL: [Self; 5] = [
        Self::Json,
        Self::Text,
        Self::Unspecified,
        Self::Binary,
        Self::BinaryParser,
    ];

    /// SORACOM's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Text => "text",
            Self::Unspecified => "unspecified",
            Self::Binary => "binary",
            Self::BinaryParser => "application/x-soracom-bf-v1",
        }
    }

    /// SORACOM's names, plus the earlier simgate and MIME spellings
    /// (`auto`, `application/json`, `text/plain`, `application/octet-stream`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).or(match s {
            "auto" => Some(Self::Unspecified),
            "application/json" => Some(Self::Json),
            "text/plain" => Some(Self::Text),
            "application/octet-stream" => Some(Self::Binary),
            _ => None,
        })
    }
}

/// Where Funnel delivers: SORACOM's `destination` object (`provider`,
/// `service`, `resourceUrl` — what the envelope repeats — and the
/// per-service flags), plus simgate's `endpoint` override.
///
/// Serialized in snake_case with the flags left out when false, so that a
/// destination without them has the same JSON (and spool directory) as in
/// earlier versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "DestinationRepr")]
pub struct Destination {
    pub provider: String,
    pub service: SinkService,
    /// e.g. `https://kinesis.ap-northeast-1.amazonaws.com/devices`.
    pub resource_url: String,
    /// Send to this URL instead of the one implied by `resource_url` (an
    /// emulator such as kinesalite, a VPC endpoint). Not part of the envelope.
    pub endpoint: Option<String>,
    /// Deliver only the payload, not the envelope (Kinesis, Firehose,
    /// AWS IoT, Event Hubs, Pub/Sub).
    #[serde(skip_serializing_if = "is_false")]
    pub payloads_only: bool,
    /// Kinesis: a random partition key per record instead of the IMSI.
    #[serde(skip_serializing_if = "is_false")]
    pub randomize_partition_key: bool,
    /// AWS IoT: publish the device's bytes as they came (no envelope, no
    /// base64 wrapping).
    #[serde(skip_serializing_if = "is_false")]
    pub send_payloads_as_binary: bool,
    /// `https` (simgate's own service): one POST per batch or per record.
    #[serde(skip_serializing_if = "HttpsRequestMode::is_batch")]
    pub request_mode: HttpsRequestMode,
    /// `https`: extra request headers, checked by
    /// [`Destination::check_flags`]. Not secret (the API lists them and
    /// they name the spool directory), hence no `Authorization`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// How the `https` sink sends a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpsRequestMode {
    /// One POST per batch, the body a JSON array of the records.
    #[default]
    Batch,
    /// One POST per record, the body the record itself; each record's
    /// outcome comes from its own response.
    Record,
}

impl HttpsRequestMode {
    pub fn is_batch(&self) -> bool {
        *self == Self::Batch
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Record => "record",
        }
    }
}

/// Headers the `https` sink writes itself (framing, body type, signature)
/// or that would carry a secret in a destination that is not one.
pub const HTTPS_RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "authorization",
    "proxy-authorization",
    "x-simgate-timestamp",
    "x-simgate-signature",
];

/// Most extra headers of an `https` destination.
pub const HTTPS_MAX_HEADERS: usize = 32;

/// Refuses extra `https` headers that are not valid HTTP, that the sink
/// writes itself, or that would hold a secret (see
/// [`HTTPS_RESERVED_HEADERS`]); names are case-insensitive, so two
/// spellings of one name are refused too.
pub fn check_https_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > HTTPS_MAX_HEADERS {
        return Err(format!(
            "destination.headers: at most {HTTPS_MAX_HEADERS} headers"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in headers {
        let shown = || name.chars().take(64).collect::<String>();
        if !beam::is_token(name) {
            return Err(format!(
                "destination.headers: {:?} is not a valid header name",
                shown()
            ));
        }
        let lower = name.to_ascii_lowercase();
        if HTTPS_RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "destination.headers: {} is set by simgate or would hold a secret \
                 (sign with a psk credential instead of an Authorization header)",
                shown()
            ));
        }
        let value_ok = value.len() <= beam::MAX_HEADER_VALUE
            && !value.starts_with([' ', '\t'])
            && !value.ends_with([' ', '\t'])
            && value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !value_ok {
            return Err(format!(
                "destination.headers: the value of {} must be printable ASCII without \
                 leading or trailing blanks, at most {} bytes",
                shown(),
                beam::MAX_HEADER_VALUE
            ));
        }
        if !seen.insert(lower) {
            return Err(format!(
                "destination.headers: {} is given twice (names ignore case)",
                shown()
            ));
        }
    }
    Ok(())
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a `destination` may hold (SORACOM's names or snake_case).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationRepr {
    #[serde(default)]
    provider: Option<String>,
    service: SinkService,
    #[serde(alias = "resourceUrl")]
    resource_url: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default, alias = "payloadsOnly")]
    payloads_only: bool,
    #[serde(default, alias = "randomizePartitionKey")]
    randomize_partition_key: bool,
    #[serde(default, alias = "sendPayloadsAsBinary")]
    send_payloads_as_binary: bool,
    #[serde(default, alias = "requestMode")]
    request_mode: HttpsRequestMode,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl From<DestinationRepr> for Destination {
    fn from(r: DestinationRepr) -> Self {
        Self {
            provider: r
                .provider
                .unwrap_or_else(|| r.service.provider().to_owned()),
            service: r.service,
            resource_url: r.resource_url,
            endpoint: r.endpoint,
            payloads_only: r.payloads_only,
            randomize_partition_key: r.randomize_partition_key,
            send_payloads_as_binary: r.send_payloads_as_binary,
            request_mode: r.request_mode,
            headers: r.headers,
        }
    }
}

impl Destination {
    /// A destination with no flags set (`provider` from the service).
    pub fn new(service: SinkService, resource_url: impl Into<String>) -> Self {
        Self {
            provider: service.provider().to_owned(),
            service,
            resource_url: resource_url.into(),
            endpoint: None,
            payloads_only: false,
            randomize_partition_key: false,
            send_payloads_as_binary: false,
            request_mode: HttpsRequestMode::Batch,
            headers: BTreeMap::new(),
        }
    }

    /// Refuses flags SORACOM does not define for the destination's service.
    pub fn check_flags(&self) -> Result<(), String> {
        use SinkService::*;
        let misplaced = |flag: &str, services: &str| {
            Err(format!(
                "destination.{flag} applies to {services} only, not {}",
                self.service.as_str()
            ))
        };
        if self.randomize_partition_key && self.service != Kinesis {
            return misplaced("randomizePartitionKey", "kinesis");
        }
        if self.send_payloads_as_binary && self.service != AwsIot {
            return misplaced("sendPayloadsAsBinary", "aws-iot");
        }
        if !self.request_mode.is_batch() && self.service != Https {
            return misplaced("requestMode", "https");
        }
        if !self.headers.is_empty() && self.service != Https {
            return misplaced("headers", "https");
        }
        check_https_headers(&self.headers)
    }
}

/// Cloud services Funnel can deliver to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkService {
    Kinesis,
    Firehose,
    AwsIot,
    Eventhubs,
    Pubsub,
    /// simgate's own: accept every record and keep nothing (benchmarks that
    /// measure simgate without a cloud behind it). Not a SORACOM service;
    /// `resource_url` is only a label, credentials are not used.
    Discard,
    /// simgate's own generic webhook: records are POSTed as JSON to
    /// `resource_url`, signed with HMAC-SHA256 when the credential is a
    /// `psk`. Not a SORACOM service.
    Https,
}

impl SinkService {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kinesis => "kinesis",
            Self::Firehose => "firehose",
            Self::AwsIot => "aws-iot",
            Self::Eventhubs => "eventhubs",
            Self::Pubsub => "pubsub",
            Self::Discard => "discard",
            Self::Https => "https",
        }
    }
    /// SORACOM's `provider` for the service.
    pub fn provider(self) -> &'static str {
        match self {
            Self::Kinesis | Self::Firehose | Self::AwsIot => "aws",
            Self::Eventhubs => "azure",
            Self::Pubsub => "google",
            Self::Discard | Self::Https => "simgate",
        }
    }
}

/// SORACOM Harvest Data settings of a group (namespace `SoracomHarvest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarvestConfig {
    #[serde(default)]
    pub enabled: bool,
}

/// Lifecycle state of a SIM, as in the SORACOM API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberStatus {
    Ready,
    #[default]
    Active,
    Inactive,
    Standby,
    Suspended,
    Terminated,
}

impl SubscriberStatus {
    /// Whether traffic from a SIM in this state is served.
    pub fn may_send(self) -> bool {
        matches!(self, Self::Ready | Self::Active)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Standby => "standby",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
        }
    }
}

/// A SIM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscriber {
    pub imsi: Imsi,
    #[serde(default)]
    pub imei: Option<Imei>,
    #[serde(default)]
    pub msisdn: Option<Msisdn>,
    #[serde(default)]
    pub sim_id: Option<SimId>,
    /// Filled from the only operator when the config file leaves it out.
    #[serde(default)]
    pub operator_id: Option<OperatorId>,
    #[serde(default)]
    pub group_id: Option<GroupId>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub status: SubscriberStatus,
    /// When set, sessions reporting another IMEI are refused.
    #[serde(default)]
    pub imei_lock: Option<Imei>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Funnel configuration as the previous version stored it
    /// (`payloads_only` beside `destination`, `content_type = "auto"`).
    #[test]
    fn funnel_records_of_the_previous_version_still_read() {
        let old = json!({"enabled": true,
            "destination": {"provider": "aws", "service": "kinesis",
                "resource_url": "https://kinesis.us-east-1.amazonaws.com/s", "endpoint": null},
            "credentials_id": "kin", "payloads_only": true, "content_type": "auto"});
        let f: FunnelConfig = serde_json::from_value(old).unwrap();
        assert!(f.enabled && f.destination.payloads_only && !f.add_sim_id);
        assert_eq!(f.content_type, FunnelContentType::Unspecified);
        // What is written now reads back the same.
        let again: FunnelConfig =
            serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(again, f);
    }

    /// A destination without flags serializes exactly as before, so its
    /// spool directory (named after the hash of this JSON) and dead letters
    /// keep their names.
    #[test]
    fn a_destination_without_flags_keeps_its_json() {
        let d = Destination::new(
            SinkService::Kinesis,
            "https://kinesis.us-east-1.amazonaws.com/s",
        );
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"provider": "aws", "service": "kinesis",
                "resource_url": "https://kinesis.us-east-1.amazonaws.com/s", "endpoint": null})
        );
        let mut flagged = d.clone();
        flagged.randomize_partition_key = true;
        let v = serde_json::to_value(&flagged).unwrap();
        assert_eq!(v["randomize_partition_key"], json!(true));
        assert_eq!(serde_json::from_value::<Destination>(v).unwrap(), flagged);
        assert!(flagged.check_flags().is_ok());
        flagged.service = SinkService::Firehose;
        assert!(flagged
            .check_flags()
            .unwrap_err()
            .contains("randomizePartitionKey"));
        // The https options, like the flags, only when set.
        let mut https = Destination::new(SinkService::Https, "https://hooks.example.com/in");
        assert_eq!(
            serde_json::to_value(&https).unwrap(),
            json!({"provider": "simgate", "service": "https",
                "resource_url": "https://hooks.example.com/in", "endpoint": null})
        );
        https.request_mode = HttpsRequestMode::Record;
        https.headers.insert("X-Tenant".into(), "a b".into());
        let v = serde_json::to_value(&https).unwrap();
        assert_eq!(v["request_mode"], "record");
        assert_eq!(v["headers"], json!({"X-Tenant": "a b"}));
        assert_eq!(serde_json::from_value::<Destination>(v).unwrap(), https);
        let camel: Destination = serde_json::from_value(json!({"service": "https",
            "resourceUrl": "https://hooks.example.com/in", "requestMode": "record",
            "headers": {"X-Tenant": "a b"}}))
        .unwrap();
        assert_eq!(camel, https);
        assert!(https.check_flags().is_ok());
        https.service = SinkService::Kinesis;
        assert!(https.check_flags().unwrap_err().contains("requestMode"));
        https.request_mode = HttpsRequestMode::Batch;
        assert!(https.check_flags().unwrap_err().contains("headers"));
        // Provider follows the service when left out.
        let d: Destination =
            serde_json::from_value(json!({"service": "eventhubs", "resourceUrl": "https://x"}))
                .unwrap();
        assert_eq!(d.provider, "azure");
    }

    #[test]
    fn https_headers_are_checked() {
        let h = |pairs: &[(&str, &str)]| {
            check_https_headers(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert!(h(&[]).is_ok());
        assert!(h(&[
            ("X-Tenant", "acme"),
            ("x-api-version", "2"),
            ("User-Agent", "me")
        ])
        .is_ok());
        for (name, value, why) in [
            ("X Tenant", "a", "not a valid header name"),
            ("", "a", "not a valid header name"),
            ("X-Ü", "a", "not a valid header name"),
            ("Host", "a", "set by simgate"),
            ("content-type", "text/plain", "set by simgate"),
            ("Content-Length", "1", "set by simgate"),
            ("Authorization", "Bearer x", "psk"),
            ("X-Simgate-Signature", "x", "set by simgate"),
            ("X-A", "line\nbreak", "printable ASCII"),
            ("X-A", "caf\u{e9}", "printable ASCII"),
            ("X-A", " padded", "printable ASCII"),
        ] {
            let e = h(&[(name, value)]).unwrap_err();
            assert!(e.contains(why), "{name:?}={value:?}: {e}");
        }
        assert!(h(&[("X-A", &"v".repeat(4097))]).is_err());
        assert!(h(&[("X-A", "1"), ("x-a", "2")])
            .unwrap_err()
            .contains("twice"));
        let many: Vec<(String, String)> = (0..=HTTPS_MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "v".to_owned()))
            .collect();
        assert!(check_https_headers(&many.into_iter().collect())
            .unwrap_err()
            .contains("at most"));
    }
}
