//! The Krypton service's requests and policy, sans-IO: the method and path
//! in, what to do out; the group's `SoracomKrypton` settings read from its
//! verbatim configuration; the bootstrap body; the JSON a device gets
//! back; and the bounded table of operations a device polls after
//! `register` (SORACOM's Azure flow: register → operation id → GET the
//! registration).
//!
//! Nothing here touches a socket, a key, a file or the clock: time is an
//! argument.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value};
use simgate_control::Group;

/// The group configuration namespace SORACOM uses for Krypton.
pub const NAMESPACE: &str = "SoracomKrypton";
/// The provider key inside it: a certificate from simgate's own CA.
pub const PROVIDER: &str = "x509";
/// Path prefix of the X.509 provider, after SORACOM's
/// `/v1/provisioning/{provider}/…` (`aws/iot`, `azure/iot`,
/// `soracom/inventory`).
pub const PREFIX: &str = "/v1/provisioning/x509";

/// Certificate lifetime when the group sets none.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// Longest lifetime a group may set (ten years).
pub const MAX_VALIDITY_DAYS: u32 = 3650;
/// An operation's credentials can be fetched this long after `register`
/// (the private key is in memory only; a device that comes back later
/// registers again).
pub const OPERATION_TTL_MS: u64 = 10 * 60 * 1000;
/// Most operations kept at once (each holds a certificate and a key, a
/// few KiB): a flood of `register` calls evicts the oldest, never grows
/// memory without bound.
pub const MAX_OPERATIONS: usize = 10_000;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `POST …/bootstrap`: credentials now (as SORACOM's AWS IoT bootstrap).
    Bootstrap,
    /// `POST …/register`: an operation id to poll (as SORACOM's Azure flow).
    Register,
    /// `GET …/registrations/{operationId}`.
    Registration(OperationId),
}

/// Why a request names nothing this service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The `Allow` value.
    MethodNotAllowed(&'static str),
    /// A SORACOM provider simgate does not provision (AWS IoT, Azure IoT
    /// Hub, Inventory, Cognito, Arc): it would need that cloud's account.
    ProviderNotAvailable(&'static str),
}

/// Parses `method` and `path` (without the query).
pub fn parse(method: &str, path: &str) -> Result<Op, RouteError> {
    let post_only = |op: Op| match method {
        "POST" => Ok(op),
        _ => Err(RouteError::MethodNotAllowed("POST")),
    };
    if let Some(rest) = path.strip_prefix(PREFIX) {
        return match rest {
            "/bootstrap" => post_only(Op::Bootstrap),
            "/register" => post_only(Op::Register),
            _ => match rest
                .strip_prefix("/registrations/")
                .and_then(OperationId::parse)
            {
                Some(id) => match method {
                    "GET" | "HEAD" => Ok(Op::Registration(id)),
                    _ => Err(RouteError::MethodNotAllowed("GET")),
                },
                None => Err(RouteError::NotFound),
            },
        };
    }
    const OTHERS: [(&str, &str); 5] = [
        ("/v1/provisioning/aws/iot/", "AWS IoT"),
        ("/v1/provisioning/aws/cognito/", "Amazon Cognito"),
        ("/v1/provisioning/azure/iot/", "Azure IoT Hub"),
        ("/v1/provisioning/soracom/inventory/", "SORACOM Inventory"),
        ("/v1/provisioning/soracom/arc/", "SORACOM Arc"),
    ];
    match OTHERS.iter().find(|(p, _)| path.starts_with(p)) {
        Some((_, name)) => Err(RouteError::ProviderNotAvailable(name)),
        None => Err(RouteError::NotFound),
    }
}

/// An operation id: 32 lowercase hex digits (128 random bits), the only
/// form simgate makes, so a path can never name anything else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperationId(String);

impl OperationId {
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    /// From 128 random bits (the caller's).
    pub fn from_random(bits: u128) -> Self {
        Self(format!("{bits:032x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key algorithm of a device's key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256: small, fast, what every TLS stack and
    /// broker accepts.
    #[default]
    EcdsaP256,
    EcdsaP384,
    /// For devices whose TLS stack has no ECDSA; its generation takes
    /// tens of milliseconds.
    Rsa2048,
}

impl KeyAlgorithm {
    /// The names the group configuration uses.
    pub const NAMES: [&'static str; 3] = ["ECDSA_P256", "ECDSA_P384", "RSA_2048"];

    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => Self::NAMES[0],
            Self::EcdsaP384 => Self::NAMES[1],
            Self::Rsa2048 => Self::NAMES[2],
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Self::EcdsaP256, Self::EcdsaP384, Self::Rsa2048]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }
}

/// The group's `SoracomKrypton` settings for the X.509 provider:
///
/// ```json
/// {"enabled": true,
///  "x509": {"host": "mqtt.example.com", "port": 8883,
///           "validityDays": 365, "keyAlgorithm": "ECDSA_P256"}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    /// What the device should connect to, reported back as `host`.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub validity_days: u32,
    pub key_algorithm: KeyAlgorithm,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            host: None,
            port: None,
            validity_days: DEFAULT_VALIDITY_DAYS,
            key_algorithm: KeyAlgorithm::default(),
        }
    }
}

/// Why a group's `SoracomKrypton` cannot be used (the configuration is
/// stored verbatim, so this is found when a device asks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("SoracomKrypton x509 must be an object")]
    NotAnObject,
    #[error("SoracomKrypton x509.host must be a non-empty string of at most 253 characters")]
    Host,
    #[error("SoracomKrypton x509.port must be an integer from 1 to 65535")]
    Port,
    #[error("SoracomKrypton x509.validityDays must be an integer from 1 to {MAX_VALIDITY_DAYS}")]
    Validity,
    #[error("SoracomKrypton x509.keyAlgorithm must be one of ECDSA_P256, ECDSA_P384, RSA_2048")]
    KeyAlgorithm,
}

impl Settings {
    /// The settings of `group`; without a group or without
    /// `enabled: true`, Krypton is off.
    pub fn of(group: Option<&Group>) -> Result<Self, SettingsError> {
        match group.and_then(|g| g.configuration.get(NAMESPACE)) {
            Some(ns) => Self::from_namespace(ns),
            None => Ok(Self::default()),
        }
    }

    /// From the namespace's keys (`enabled`, `x509`).
    pub fn from_namespace(ns: &BTreeMap<String, Value>) -> Result<Self, SettingsError> {
        let mut s = Self {
            enabled: ns.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            ..Self::default()
        };
        let p = match ns.get(PROVIDER) {
            None | Some(Value::Null) => return Ok(s),
            Some(Value::Object(p)) => p,
            Some(_) => return Err(SettingsError::NotAnObject),
        };
        if let Some(h) = p.get("host").filter(|v| !v.is_null()) {
            let h = h.as_str().ok_or(SettingsError::Host)?;
            if h.is_empty() || h.len() > 253 || h.chars().any(char::is_control) {
                return Err(SettingsError::Host);
            }
            s.host = Some(h.to_owned());
        }
        if let Some(v) = p.get("port").filter(|v| !v.is_null()) {
            let port = v
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or(SettingsError::Port)?;
            s.port = Some(port);
        }
        if let Some(v) = p.get("validityDays").filter(|v| !v.is_null()) {
            s.validity_days = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_VALIDITY_DAYS).contains(n))
                .ok_or(SettingsError::Validity)?;
        }
        if let Some(v) = p.get("keyAlgorithm").filter(|v| !v.is_null()) {
            s.key_algorithm = v
                .as_str()
                .and_then(KeyAlgorithm::from_name)
                .ok_or(SettingsError::KeyAlgorithm)?;
        }
        Ok(s)
    }
}

/// What the device may ask for in the body (all optional): SORACOM's
/// clients send `{"requestParameters": {...}}` (and `keyId` when they
/// authenticate with Endorse, which simgate does not need: the SIM is
/// known by its address, so `keyId` is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootstrapRequest {
    /// A shorter lifetime than the group's (`requestParameters.validityDays`).
    pub validity_days: Option<u32>,
}

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not a JSON object")]
    NotAnObject,
    #[error("requestParameters must be an object")]
    Parameters,
    #[error("requestParameters.validityDays must be an integer from 1 to {MAX_VALIDITY_DAYS}")]
    Validity,
}

impl BootstrapRequest {
    /// Parses a body: empty (or only whitespace) is the default request.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let v: Value = serde_json::from_slice(body).map_err(|_| BodyError::NotAnObject)?;
        let Value::Object(o) = v else {
            return Err(BodyError::NotAnObject);
        };
        let p = match o.get("requestParameters") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(p)) => p,
            Some(_) => return Err(BodyError::Parameters),
        };
        let validity_days = match p.get("validityDays") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=MAX_VALIDITY_DAYS).contains(n))
                    .ok_or(BodyError::Validity)?,
            ),
        };
        Ok(Self { validity_days })
    }

    /// The lifetime to issue: the device's wish, never past the group's.
    pub fn validity_days(&self, settings: &Settings) -> u32 {
        self.validity_days
            .map_or(settings.validity_days, |d| d.min(settings.validity_days))
    }
}

/// What was issued, for the device's JSON and the registration record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub ca_pem: String,
    /// Lowercase hex.
    pub serial: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// The device's JSON: AWS IoT bootstrap's names (`certificate`,
/// `privateKey`, `rootCaCertificate`, `host`, `clientId`) and Azure's
/// (`deviceId`, `operationId`, `status`), plus the certificate's serial
/// and lifetime (milliseconds, as SORACOM's timestamps).
pub fn response(op: &OperationId, imsi: &str, settings: &Settings, issued: &Issued) -> Value {
    let mut v = json!({
        "operationId": op.as_str(),
        "status": "assigned",
        "certificate": issued.certificate_pem,
        "privateKey": issued.private_key_pem,
        "rootCaCertificate": issued.ca_pem,
        "clientId": imsi,
        "deviceId": imsi,
        "serialNumber": issued.serial,
        "notBefore": issued.not_before_ms,
        "notAfter": issued.not_after_ms,
        "keyAlgorithm": settings.key_algorithm.name(),
    });
    if let Some(h) = &settings.host {
        v["host"] = Value::String(h.clone());
    }
    if let Some(p) = settings.port {
        v["port"] = Value::from(p);
    }
    v
}

/// What a poll of an operation finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a Value),
    /// Unknown, expired, or another SIM's (the same answer for all three:
    /// a SIM must not learn that another SIM's operation exists).
    NotFound,
}

#[derive(Debug)]
struct Operation {
    imsi: String,
    expires_ms: u64,
    body: Value,
}

/// Operations waiting to be fetched, oldest first; bounded in count and
/// age.
#[derive(Debug, Default)]
pub struct Operations {
    by_id: HashMap<OperationId, Operation>,
    order: VecDeque<OperationId>,
}

impl Operations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Keeps `body` for `imsi` under `id` until `now_ms` +
    /// [`OPERATION_TTL_MS`]; drops the expired and, past
    /// [`MAX_OPERATIONS`], the oldest. Returns how many were evicted
    /// before their time.
    pub fn insert(&mut self, now_ms: u64, id: OperationId, imsi: &str, body: Value) -> usize {
        self.expire(now_ms);
        let mut evicted = 0;
        while self.by_id.len() >= MAX_OPERATIONS {
            match self.order.pop_front() {
                Some(old) => {
                    if self.by_id.remove(&old).is_some() {
                        evicted += 1;
                    }
                }
                None => break,
            }
        }
        let op = Operation {
            imsi: imsi.to_owned(),
            expires_ms: now_ms.saturating_add(OPERATION_TTL_MS),
            body,
        };
        if self.by_id.insert(id.clone(), op).is_none() {
            self.order.push_back(id);
        }
        evicted
    }

    /// The operation `id` of `imsi`, if it is still kept.
    pub fn get(&self, now_ms: u64, id: &OperationId, imsi: &str) -> Lookup<'_> {
        match self.by_id.get(id) {
            Some(op) if op.imsi == imsi && now_ms < op.expires_ms => Lookup::Found(&op.body),
            _ => Lookup::NotFound,
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(first) = self.order.front() {
            match self.by_id.get(first) {
                Some(op) if now_ms < op.expires_ms => break,
                _ => {
                    if let Some(id) = self.order.pop_front() {
                        self.by_id.remove(&id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn routes() {
        assert_eq!(
            parse("POST", "/v1/provisioning/x509/bootstrap"),
            Ok(Op::Bootstrap)
        );
        assert_eq!(
            parse("POST", "/v1/provisioning/x509/register"),
            Ok(Op::Register)
        );
        assert_eq!(
            parse("GET", "/v1/provisioning/x509/bootstrap"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        let id = OperationId::parse(ID).unwrap();
        assert_eq!(
            parse("GET", &format!("/v1/provisioning/x509/registrations/{ID}")),
            Ok(Op::Registration(id))
        );
        assert_eq!(
            parse(
                "DELETE",
                &format!("/v1/provisioning/x509/registrations/{ID}")
            ),
            Err(RouteError::MethodNotAllowed("GET"))
        );
        assert_eq!(
            parse("GET", "/v1/provisioning/x509/registrations/../x"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse(
                "GET",
                "/v1/provisioning/x509/registrations/0123456789ABCDEF0123456789abcdef"
            ),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse("POST", "/v1/provisioning/aws/iot/bootstrap"),
            Err(RouteError::ProviderNotAvailable("AWS IoT"))
        );
        assert_eq!(
            parse("POST", "/v1/provisioning/azure/iot/register"),
            Err(RouteError::ProviderNotAvailable("Azure IoT Hub"))
        );
        assert_eq!(parse("POST", "/"), Err(RouteError::NotFound));
        assert_eq!(
            parse("POST", "/v1/provisioning/x509/bootstrap/"),
            Err(RouteError::NotFound)
        );
    }

    fn group(ns: Value) -> Group {
        let mut g: Group = serde_json::from_value(json!({"id": "g"})).unwrap();
        if let Value::Object(ns) = ns {
            g.configuration
                .insert(NAMESPACE.into(), ns.into_iter().collect());
        }
        g
    }

    #[test]
    fn settings_from_the_group() {
        assert_eq!(Settings::of(None), Ok(Settings::default()));
        assert!(!Settings::of(Some(&group(json!({})))).unwrap().enabled);
        let s = Settings::of(Some(&group(json!({
            "enabled": true,
            "x509": {"host": "mqtt.example.com", "port": 8883, "validityDays": 30,
                     "keyAlgorithm": "rsa_2048"}
        }))))
        .unwrap();
        assert_eq!(
            s,
            Settings {
                enabled: true,
                host: Some("mqtt.example.com".into()),
                port: Some(8883),
                validity_days: 30,
                key_algorithm: KeyAlgorithm::Rsa2048,
            }
        );
        let bad = |x509: Value| Settings::of(Some(&group(json!({"enabled": true, "x509": x509}))));
        assert_eq!(bad(json!(1)), Err(SettingsError::NotAnObject));
        assert_eq!(bad(json!({"host": ""})), Err(SettingsError::Host));
        assert_eq!(bad(json!({"port": 0})), Err(SettingsError::Port));
        assert_eq!(bad(json!({"port": 70000})), Err(SettingsError::Port));
        assert_eq!(
            bad(json!({"validityDays": 3651})),
            Err(SettingsError::Validity)
        );
        assert_eq!(
            bad(json!({"keyAlgorithm": "DSA"})),
            Err(SettingsError::KeyAlgorithm)
        );
        assert_eq!(bad(json!({"host": null})).unwrap().host, None);
    }

    #[test]
    fn bodies() {
        assert_eq!(
            BootstrapRequest::parse(b""),
            Ok(BootstrapRequest::default())
        );
        assert_eq!(
            BootstrapRequest::parse(b" \n"),
            Ok(BootstrapRequest::default())
        );
        assert_eq!(
            BootstrapRequest::parse(br#"{"keyId":"k","requestParameters":{"validityDays":7}}"#),
            Ok(BootstrapRequest {
                validity_days: Some(7)
            })
        );
        assert_eq!(BootstrapRequest::parse(b"[]"), Err(BodyError::NotAnObject));
        assert_eq!(BootstrapRequest::parse(b"{"), Err(BodyError::NotAnObject));
        assert_eq!(
            BootstrapRequest::parse(br#"{"requestParameters":1}"#),
            Err(BodyError::Parameters)
        );
        assert_eq!(
            BootstrapRequest::parse(br#"{"requestParameters":{"validityDays":0}}"#),
            Err(BodyError::Validity)
        );
        let s = Settings {
            validity_days: 30,
            ..Settings::default()
        };
        let r = BootstrapRequest {
            validity_days: Some(90),
        };
        assert_eq!(r.validity_days(&s), 30);
        assert_eq!(BootstrapRequest::default().validity_days(&s), 30);
        let r = BootstrapRequest {
            validity_days: Some(7),
        };
        assert_eq!(r.validity_days(&s), 7);
    }

    #[test]
    fn operations_are_per_sim_bounded_and_expire() {
        let mut ops = Operations::new();
        let id = OperationId::from_random(1);
        assert_eq!(id.as_str(), "00000000000000000000000000000001");
        ops.insert(1000, id.clone(), "001", json!({"a": 1}));
        assert_eq!(ops.get(1000, &id, "001"), Lookup::Found(&json!({"a": 1})));
        assert_eq!(ops.get(1000, &id, "002"), Lookup::NotFound);
        assert_eq!(
            ops.get(1000 + OPERATION_TTL_MS, &id, "001"),
            Lookup::NotFound
        );
        // A later insert sweeps the expired one.
        ops.insert(
            2000 + OPERATION_TTL_MS,
            OperationId::from_random(2),
            "001",
            json!({}),
        );
        assert_eq!(ops.len(), 1);

        let mut ops = Operations::new();
        let mut evicted = 0;
        for i in 0..=MAX_OPERATIONS as u128 {
            evicted += ops.insert(0, OperationId::from_random(i), "001", Value::Null);
        }
        assert_eq!(evicted, 1);
        assert_eq!(ops.len(), MAX_OPERATIONS);
        assert_eq!(
            ops.get(0, &OperationId::from_random(0), "001"),
            Lookup::NotFound
        );
        assert!(matches!(
            ops.get(0, &OperationId::from_random(1), "001"),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn response_has_both_providers_names() {
        let issued = Issued {
            certificate_pem: "C".into(),
            private_key_pem: "K".into(),
            ca_pem: "A".into(),
            serial: "01".into(),
            not_before_ms: 1,
            not_after_ms: 2,
        };
        let mut s = Settings::default();
        let id = OperationId::from_random(7);
        let v = response(&id, "001", &s, &issued);
        assert_eq!(v["certificate"], "C");
        assert_eq!(v["privateKey"], "K");
        assert_eq!(v["rootCaCertificate"], "A");
        assert_eq!(v["clientId"], "001");
        assert_eq!(v["deviceId"], "001");
        assert_eq!(v["operationId"], id.as_str());
        assert!(v.get("host").is_none());
        s.host = Some("h".into());
        s.port = Some(8883);
        let v = response(&id, "001", &s, &issued);
        assert_eq!(
            (v["host"].as_str(), v["port"].as_u64()),
            (Some("h"), Some(8883))
        );
    }
}
