//! What simgate knows about: operators, groups with per-service configuration,
//! subscribers (SIMs) and credentials.

mod beam;
mod credential;
mod ids;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use beam::{
    split_destination, BeamConfig, BeamEntry, BeamEntryPoint, CredentialsRef, CustomHeader,
    DestinationParts, HeaderAction, IMSI_PLACEHOLDER,
};
pub use credential::{
    AwsCredentials, Credential, CredentialKind, PskCredentials, Secret, X509Credentials,
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

/// SORACOM Funnel settings of a group (namespace `SoracomFunnel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub destination: Destination,
    pub credentials_id: CredentialId,
    /// Deliver only the device's payload instead of the whole envelope.
    #[serde(default)]
    pub payloads_only: bool,
    /// How UDP/TCP payloads are interpreted; HTTP follows its Content-Type.
    #[serde(default)]
    pub content_type: FunnelContentType,
}

fn yes() -> bool {
    true
}

/// Interpretation of UDP and TCP payloads for Funnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunnelContentType {
    /// Embed the bytes as JSON when they are a JSON object or array, else base64.
    #[default]
    Auto,
    /// The device promises JSON: anything else is refused with 400.
    Json,
    /// Always base64, even if the bytes happen to be JSON.
    Binary,
}

/// Where Funnel delivers: the `destination` object of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(default = "aws")]
    pub provider: String,
    pub service: SinkService,
    /// e.g. `https://kinesis.ap-northeast-1.amazonaws.com/devices`.
    pub resource_url: String,
    /// Send to this URL instead of the one implied by `resource_url` (an
    /// emulator such as kinesalite, a VPC endpoint). Not part of the envelope.
    #[serde(default)]
    pub endpoint: Option<String>,
}

fn aws() -> String {
    "aws".to_owned()
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
}

impl SinkService {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kinesis => "kinesis",
            Self::Firehose => "firehose",
            Self::AwsIot => "aws-iot",
            Self::Eventhubs => "eventhubs",
            Self::Pubsub => "pubsub",
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
