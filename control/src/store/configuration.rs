//! Group configuration in SORACOM's shape: namespaces of key/value pairs
//! (`PUT /v1/groups/{id}/configuration/{namespace}` with
//! `[{"key":…,"value":…}]`).
//!
//! Namespaces simgate models (`SoracomFunnel`, `SoracomHarvest`,
//! `SoracomBeam`) are mapped onto the typed [`FunnelConfig`],
//! [`HarvestConfig`](crate::model::HarvestConfig) and
//! [`BeamConfig`](crate::model::BeamConfig) and validated; the
//! others are kept verbatim in [`Group::configuration`] so they round-trip
//! until a service reads them. Pure functions: no store, no clock.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::StoreError;
use crate::model::unified::ResponseFormat;
use crate::model::{
    BeamEntry, BeamEntryPoint, CredentialId, Destination, FunnelConfig, FunnelContentType, Group,
    HttpsRequestMode, SinkService,
};

/// Longest configuration key accepted in an unmodelled namespace.
const MAX_KEY_LEN: usize = 128;

/// A SORACOM group configuration namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Air,
    Beam,
    Funnel,
    Harvest,
    Endorse,
    Funk,
    HarvestFiles,
    Krypton,
    UnifiedEndpoint,
}

impl Namespace {
    pub const ALL: [Self; 9] = [
        Self::Air,
        Self::Beam,
        Self::Funnel,
        Self::Harvest,
        Self::Endorse,
        Self::Funk,
        Self::HarvestFiles,
        Self::Krypton,
        Self::UnifiedEndpoint,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Air => "SoracomAir",
            Self::Beam => "SoracomBeam",
            Self::Funnel => "SoracomFunnel",
            Self::Harvest => "SoracomHarvest",
            Self::Endorse => "SoracomEndorse",
            Self::Funk => "SoracomFunk",
            Self::HarvestFiles => "SoracomHarvestFiles",
            Self::Krypton => "SoracomKrypton",
            Self::UnifiedEndpoint => "UnifiedEndpoint",
        }
    }

    /// Whether the namespace lives in typed fields of [`Group`].
    pub fn is_modelled(self) -> bool {
        matches!(self, Self::Funnel | Self::Harvest | Self::Beam)
    }
}

/// Parses a namespace name, refusing unknown ones.
pub fn namespace(s: &str) -> Result<Namespace, StoreError> {
    Namespace::parse(s).ok_or_else(|| {
        let known: Vec<_> = Namespace::ALL.iter().map(|n| n.as_str()).collect();
        StoreError::Invalid(format!(
            "unknown configuration namespace {:?}; known: {}",
            truncate(s),
            known.join(", ")
        ))
    })
}

/// Checks the verbatim part of a group's configuration (from the config file
/// or the store): known, unmodelled namespaces and sane keys only.
pub fn check_verbatim(group: &Group) -> Result<(), StoreError> {
    for (ns, values) in &group.configuration {
        let parsed = namespace(ns)?;
        if parsed.is_modelled() {
            return Err(StoreError::Invalid(format!(
                "group {}: {ns} is set with the typed `funnel`/`harvest`/`beam` settings, not `configuration`",
                group.id
            )));
        }
        for key in values.keys() {
            check_key(key)?;
        }
        check_namespace(parsed, values)
            .map_err(|e| StoreError::Invalid(format!("group {}: {e}", group.id)))?;
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid(format!(
            "configuration keys must be 1 to {MAX_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

/// Sets `entries` in a namespace of `group`. `credential_exists` tells
/// whether a `credentialsId` names a stored credential set.
pub fn put(
    group: &mut Group,
    ns: Namespace,
    entries: Vec<(String, Value)>,
    credential_exists: &dyn Fn(&CredentialId) -> bool,
) -> Result<(), StoreError> {
    match ns {
        Namespace::Harvest => {
            // All are checked before any is set: a refused PUT changes nothing.
            let mut enabled = group.harvest.enabled;
            for (key, value) in entries {
                match key.as_str() {
                    "enabled" => enabled = as_bool(ns, &key, &value)?,
                    _ => return Err(unknown_key(ns, &key, &["enabled"])),
                }
            }
            group.harvest.enabled = enabled;
            Ok(())
        }
        Namespace::Funnel => {
            let mut map = group.funnel.as_ref().map(funnel_to_map).unwrap_or_default();
            map.extend(entries);
            group.funnel = Some(funnel_from_map(&map, credential_exists)?);
            Ok(())
        }
        Namespace::Beam => {
            // Each key is one entry point; its value replaces the entry, as
            // SORACOM does. All are checked before any is set.
            let mut parsed = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let (point, entry) = beam_entry(&key, value)?;
                for id in entry.credential_refs().filter_map(|r| r.fixed()) {
                    if !credential_exists(&id) {
                        return Err(StoreError::Invalid(format!(
                            "SoracomBeam: {point}: credentials {id} do not exist \
                             (PUT /v1/credentials/{id} first)"
                        )));
                    }
                }
                parsed.push((point, entry));
            }
            group.beam.entries.extend(parsed);
            Ok(())
        }
        _ => {
            for (key, _) in &entries {
                check_key(key)?;
            }
            let mut values = group
                .configuration
                .get(ns.as_str())
                .cloned()
                .unwrap_or_default();
            values.extend(entries);
            check_namespace(ns, &values)?;
            // An empty namespace is no namespace, as `delete` leaves it:
            // otherwise `PUT []` would show `{}` that no DELETE removes.
            if !values.is_empty() {
                group.configuration.insert(ns.as_str().to_owned(), values);
            }
            Ok(())
        }
    }
}

/// Checks the settings of an unmodelled namespace that simgate reads and
/// can tell are wrong, so a bad one is refused when written rather than
/// when a device sends.
fn check_namespace(ns: Namespace, values: &BTreeMap<String, Value>) -> Result<(), StoreError> {
    if ns == Namespace::UnifiedEndpoint {
        ResponseFormat::from_namespace(values).map_err(|e| StoreError::Invalid(e.to_string()))?;
    }
    Ok(())
}

/// Removes one key from a namespace of `group`.
///
/// Removing `destination` or `credentialsId` from `SoracomFunnel` removes the
/// whole Funnel configuration, since Funnel cannot run without them; removing
/// another Funnel or Harvest key restores its default.
pub fn delete(group: &mut Group, ns: Namespace, key: &str) -> Result<(), StoreError> {
    let missing = || StoreError::NotFound {
        kind: "configuration key",
        id: format!("{}/{}", ns.as_str(), truncate(key)),
    };
    match ns {
        Namespace::Harvest => match key {
            "enabled" => {
                group.harvest.enabled = false;
                Ok(())
            }
            _ => Err(missing()),
        },
        Namespace::Funnel => {
            let Some(funnel) = &group.funnel else {
                return Err(missing());
            };
            let mut map = funnel_to_map(funnel);
            if map.remove(key).is_none() {
                return Err(missing());
            }
            group.funnel = match key {
                "destination" | "credentialsId" => None,
                _ => Some(funnel_from_map(&map, &|_| true)?),
            };
            Ok(())
        }
        Namespace::Beam => {
            let point = BeamEntryPoint::parse(key).map_err(|_| missing())?;
            group
                .beam
                .entries
                .remove(&point)
                .map(drop)
                .ok_or_else(missing)
        }
        _ => {
            let values = group
                .configuration
                .get_mut(ns.as_str())
                .ok_or_else(missing)?;
            values.remove(key).ok_or_else(missing)?;
            if values.is_empty() {
                group.configuration.remove(ns.as_str());
            }
            Ok(())
        }
    }
}

/// The group's whole configuration in SORACOM form: namespace → key → value,
/// the modelled namespaces included.
pub fn render(group: &Group) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = group
        .configuration
        .iter()
        .filter(|(ns, _)| Namespace::parse(ns).is_none_or(|n| !n.is_modelled()))
        .map(|(ns, v)| (ns.clone(), v.clone()))
        .collect();
    out.insert(
        Namespace::Harvest.as_str().to_owned(),
        BTreeMap::from([("enabled".to_owned(), Value::Bool(group.harvest.enabled))]),
    );
    if let Some(f) = &group.funnel {
        out.insert(Namespace::Funnel.as_str().to_owned(), funnel_to_map(f));
    }
    if !group.beam.is_empty() {
        out.insert(Namespace::Beam.as_str().to_owned(), group.beam.render());
    }
    out
}

/// One `SoracomBeam` key and value, parsed and checked (credentials not
/// looked up).
pub fn beam_entry(key: &str, value: Value) -> Result<(BeamEntryPoint, BeamEntry), StoreError> {
    let invalid = |m: String| StoreError::Invalid(format!("SoracomBeam: {m}"));
    let point = BeamEntryPoint::parse(key).map_err(invalid)?;
    let entry: BeamEntry = serde_json::from_value(value).map_err(|e| {
        invalid(format!(
            "{point}: {e} (fields: name, destination, enabled, addSubscriberHeader, \
             addEquipmentHeader, addMsisdnHeader, addSimIdHeader, addSignature, psk, \
             customHeaders, skipStatusCode, username, password, useClientCert, clientCerts, version)"
        ))
    })?;
    entry
        .validate(&point)
        .map_err(|e| invalid(format!("{point}: {e}")))?;
    Ok((point, entry))
}

fn funnel_to_map(f: &FunnelConfig) -> BTreeMap<String, Value> {
    let d = &f.destination;
    let mut destination = Map::new();
    destination.insert("provider".into(), json!(d.provider));
    destination.insert("service".into(), json!(d.service.as_str()));
    destination.insert("resourceUrl".into(), json!(d.resource_url));
    destination.insert("payloadsOnly".into(), json!(d.payloads_only));
    if d.service == SinkService::Kinesis || d.randomize_partition_key {
        destination.insert(
            "randomizePartitionKey".into(),
            json!(d.randomize_partition_key),
        );
    }
    if d.service == SinkService::AwsIot || d.send_payloads_as_binary {
        destination.insert(
            "sendPayloadsAsBinary".into(),
            json!(d.send_payloads_as_binary),
        );
    }
    if d.service == SinkService::Https {
        destination.insert("requestMode".into(), json!(d.request_mode.as_str()));
        destination.insert("headers".into(), json!(d.headers));
    }
    if let Some(e) = &d.endpoint {
        destination.insert("endpoint".into(), json!(e));
    }
    BTreeMap::from([
        ("enabled".to_owned(), json!(f.enabled)),
        ("destination".to_owned(), Value::Object(destination)),
        ("credentialsId".to_owned(), json!(f.credentials_id.as_str())),
        ("contentType".to_owned(), json!(f.content_type.as_str())),
        ("addSimId".to_owned(), json!(f.add_sim_id)),
    ])
}

/// SORACOM's `destination` object (`FunnelAWSKinesisDestination` and its
/// siblings), plus simgate's `endpoint`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationIn {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    service: Option<SinkService>,
    #[serde(default)]
    resource_url: Option<String>,
    #[serde(default)]
    payloads_only: Option<bool>,
    #[serde(default)]
    randomize_partition_key: Option<bool>,
    #[serde(default)]
    send_payloads_as_binary: Option<bool>,
    #[serde(default)]
    request_mode: Option<HttpsRequestMode>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    endpoint: Option<String>,
}

/// The keys of SORACOM's `FunnelConfiguration`.
const FUNNEL_KEYS: &[&str] = &[
    "enabled",
    "destination",
    "credentialsId",
    "contentType",
    "addSimId",
];

fn funnel_from_map(
    map: &BTreeMap<String, Value>,
    credential_exists: &dyn Fn(&CredentialId) -> bool,
) -> Result<FunnelConfig, StoreError> {
    let ns = Namespace::Funnel;
    let invalid = |m: String| StoreError::Invalid(format!("SoracomFunnel: {m}"));
    if let Some(k) = map.keys().find(|k| !FUNNEL_KEYS.contains(&k.as_str())) {
        if k == "payloadsOnly" {
            return Err(invalid(
                "payloadsOnly belongs inside destination (destination.payloadsOnly), \
                 as in SORACOM's FunnelConfiguration"
                    .into(),
            ));
        }
        return Err(unknown_key(ns, k, FUNNEL_KEYS));
    }
    let (Some(dest), Some(cred)) = (map.get("destination"), map.get("credentialsId")) else {
        return Err(invalid(
            "needs both destination and credentialsId (send them in one request)".into(),
        ));
    };
    let dest: DestinationIn = serde_json::from_value(dest.clone()).map_err(|e| {
        invalid(format!(
            "destination must be {{\"provider\",\"service\",\"resourceUrl\",\"payloadsOnly\"?,\
             \"randomizePartitionKey\"? (kinesis),\"sendPayloadsAsBinary\"? (aws-iot),\
             \"requestMode\"? (https),\"headers\"? (https),\"endpoint\"?}}: {e}"
        ))
    })?;
    let (Some(service), Some(resource_url)) = (dest.service, dest.resource_url) else {
        return Err(invalid("destination needs service and resourceUrl".into()));
    };
    check_url("destination.resourceUrl", &resource_url).map_err(invalid)?;
    if let Some(e) = &dest.endpoint {
        check_url("destination.endpoint", e).map_err(invalid)?;
    }
    let destination = Destination {
        provider: dest
            .provider
            .unwrap_or_else(|| service.provider().to_owned()),
        service,
        resource_url,
        endpoint: dest.endpoint,
        payloads_only: dest.payloads_only.unwrap_or(false),
        randomize_partition_key: dest.randomize_partition_key.unwrap_or(false),
        send_payloads_as_binary: dest.send_payloads_as_binary.unwrap_or(false),
        request_mode: dest.request_mode.unwrap_or_default(),
        headers: dest.headers.unwrap_or_default(),
    };
    destination.check_flags().map_err(invalid)?;
    let cred = cred
        .as_str()
        .ok_or_else(|| invalid("credentialsId must be a string".into()))?;
    let credentials_id = CredentialId::parse(cred).map_err(|e| invalid(e.to_string()))?;
    if !credential_exists(&credentials_id) {
        return Err(invalid(format!(
            "credentials {credentials_id} do not exist (PUT /v1/credentials/{credentials_id} first)"
        )));
    }
    let content_type = match map.get("contentType") {
        None | Some(Value::Null) => FunnelContentType::default(),
        Some(v) => v
            .as_str()
            .and_then(FunnelContentType::parse)
            .ok_or_else(|| {
                let known: Vec<_> = FunnelContentType::ALL.iter().map(|c| c.as_str()).collect();
                invalid(format!("contentType must be one of {}", known.join(", ")))
            })?,
    };
    let flag = |key: &str| {
        map.get(key)
            .filter(|v| !v.is_null())
            .map_or(Ok(false), |v| as_bool(ns, key, v))
    };
    Ok(FunnelConfig {
        enabled: flag("enabled")?,
        destination,
        credentials_id,
        content_type,
        add_sim_id: flag("addSimId")?,
    })
}

fn check_url(what: &str, url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && url.len() <= 2048 && !url.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!("{what} must be an http(s) URL")),
    }
}

fn as_bool(ns: Namespace, key: &str, v: &Value) -> Result<bool, StoreError> {
    v.as_bool()
        .ok_or_else(|| StoreError::Invalid(format!("{}: {key} must be true or false", ns.as_str())))
}

fn unknown_key(ns: Namespace, key: &str, known: &[&str]) -> StoreError {
    StoreError::Invalid(format!(
        "{}: unknown key {:?}; known: {}",
        ns.as_str(),
        truncate(key),
        known.join(", ")
    ))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupId;

    fn group() -> Group {
        Group {
            id: GroupId::parse("g").unwrap(),
            operator_id: None,
            name: String::new(),
            funnel: None,
            harvest: Default::default(),
            beam: Default::default(),
            tags: Default::default(),
            configuration: Default::default(),
        }
    }

    fn kv(pairs: Value) -> Vec<(String, Value)> {
        pairs
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn funnel_entries() -> Vec<(String, Value)> {
        kv(json!({
            "destination": {"provider": "aws", "service": "kinesis",
                "resourceUrl": "https://kinesis.ap-northeast-1.amazonaws.com/devices",
                "payloadsOnly": true,
                "endpoint": "http://127.0.0.1:4567"},
            "credentialsId": "kin",
        }))
    }

    #[test]
    fn namespaces_parse_and_refuse_unknown() {
        for n in Namespace::ALL {
            assert_eq!(Namespace::parse(n.as_str()), Some(n));
        }
        let e = namespace("SoracomNope").unwrap_err();
        assert!(e.to_string().contains("SoracomNope"), "{e}");
    }

    #[test]
    fn harvest_maps_onto_typed_config() {
        let mut g = group();
        put(
            &mut g,
            Namespace::Harvest,
            kv(json!({"enabled": true})),
            &|_| true,
        )
        .unwrap();
        assert!(g.harvest.enabled);
        assert_eq!(render(&g)["SoracomHarvest"]["enabled"], json!(true));
        assert!(put(
            &mut g,
            Namespace::Harvest,
            kv(json!({"enabled": "yes"})),
            &|_| true
        )
        .is_err());
        assert!(
            put(&mut g, Namespace::Harvest, kv(json!({"other": 1})), &|_| {
                true
            })
            .is_err()
        );
        delete(&mut g, Namespace::Harvest, "enabled").unwrap();
        assert!(!g.harvest.enabled);
    }

    #[test]
    fn https_destination_options_round_trip() {
        let mut g = group();
        put(
            &mut g,
            Namespace::Funnel,
            kv(json!({
                "destination": {"service": "https", "resourceUrl": "https://hooks.example.com/in",
                    "requestMode": "record", "headers": {"X-Tenant": "acme"}},
                "credentialsId": "hook",
            })),
            &|_| true,
        )
        .unwrap();
        let d = &g.funnel.as_ref().unwrap().destination;
        assert_eq!(d.provider, "simgate");
        assert_eq!(d.request_mode, HttpsRequestMode::Record);
        assert_eq!(d.headers["X-Tenant"], "acme");
        let rendered = render(&g)["SoracomFunnel"].clone();
        assert_eq!(rendered["destination"]["requestMode"], json!("record"));
        assert_eq!(
            rendered["destination"]["headers"],
            json!({"X-Tenant": "acme"})
        );
        let mut h = group();
        put(
            &mut h,
            Namespace::Funnel,
            rendered.into_iter().collect(),
            &|_| true,
        )
        .unwrap();
        assert_eq!(h.funnel, g.funnel);
    }

    #[test]
    fn funnel_maps_validates_and_round_trips() {
        let mut g = group();
        let e = put(&mut g, Namespace::Funnel, funnel_entries(), &|_| false).unwrap_err();
        assert!(e.to_string().contains("do not exist"), "{e}");
        put(&mut g, Namespace::Funnel, funnel_entries(), &|_| true).unwrap();
        let f = g.funnel.clone().unwrap();
        // SORACOM's defaults: off, unspecified, no simId.
        assert!(!f.enabled && f.destination.payloads_only && !f.add_sim_id);
        assert_eq!(f.content_type, FunnelContentType::Unspecified);
        assert_eq!(f.destination.service, SinkService::Kinesis);
        assert_eq!(
            f.destination.endpoint.as_deref(),
            Some("http://127.0.0.1:4567")
        );
        // Rendering and putting back what was rendered changes nothing.
        let rendered = render(&g)["SoracomFunnel"].clone();
        assert_eq!(rendered["destination"]["payloadsOnly"], json!(true));
        assert_eq!(
            rendered["destination"]["randomizePartitionKey"],
            json!(false)
        );
        assert_eq!(rendered["contentType"], json!("unspecified"));
        assert_eq!(rendered["addSimId"], json!(false));
        let mut h = group();
        put(
            &mut h,
            Namespace::Funnel,
            rendered.into_iter().collect(),
            &|_| true,
        )
        .unwrap();
        assert_eq!(h.funnel, g.funnel);
        // A later PUT merges with what is there.
        put(
            &mut g,
            Namespace::Funnel,
            kv(json!({"enabled": true, "addSimId": true})),
            &|_| true,
        )
        .unwrap();
        let f = g.funnel.as_ref().unwrap();
        assert!(f.enabled && f.add_sim_id && f.destination.payloads_only);
        // Removing an optional key restores its default; a required one removes Funnel.
        delete(&mut g, Namespace::Funnel, "addSimId").unwrap();
        assert!(!g.funnel.as_ref().unwrap().add_sim_id);
        delete(&mut g, Namespace::Funnel, "enabled").unwrap();
        assert!(!g.funnel.as_ref().unwrap().enabled);
        delete(&mut g, Namespace::Funnel, "destination").unwrap();
        assert!(g.funnel.is_none());
        assert!(matches!(
            delete(&mut g, Namespace::Funnel, "destination"),
            Err(StoreError::NotFound { .. })
        ));
    }

    /// A configuration as SORACOM documents it (`FunnelConfiguration` with a
    /// `FunnelAWSKinesisDestination`), key for key.
    #[test]
    fn funnel_accepts_soracoms_own_shape() {
        let mut g = group();
        let entries = vec![
            ("enabled".to_owned(), json!(true)),
            (
                "destination".to_owned(),
                json!({"provider": "aws", "service": "kinesis",
                    "resourceUrl": "https://kinesis.ap-northeast-1.amazonaws.com/soracom-funnel",
                    "payloadsOnly": false, "randomizePartitionKey": true}),
            ),
            ("credentialsId".to_owned(), json!("my-aws-credentials")),
            ("contentType".to_owned(), json!("unspecified")),
            ("addSimId".to_owned(), json!(true)),
        ];
        put(&mut g, Namespace::Funnel, entries, &|_| true).unwrap();
        let f = g.funnel.clone().unwrap();
        assert!(f.enabled && f.add_sim_id);
        assert!(f.destination.randomize_partition_key && !f.destination.payloads_only);
        assert_eq!(f.credentials_id.as_str(), "my-aws-credentials");
        assert_eq!(f.destination.endpoint, None);
        // Every contentType of SORACOM's enum, and the earlier `auto`.
        for (given, want) in [
            ("json", FunnelContentType::Json),
            ("text", FunnelContentType::Text),
            ("unspecified", FunnelContentType::Unspecified),
            ("binary", FunnelContentType::Binary),
            (
                "application/x-soracom-bf-v1",
                FunnelContentType::BinaryParser,
            ),
            ("auto", FunnelContentType::Unspecified),
        ] {
            put(
                &mut g,
                Namespace::Funnel,
                kv(json!({"contentType": given})),
                &|_| true,
            )
            .unwrap();
            let got = g.funnel.as_ref().unwrap().content_type;
            assert_eq!(got, want, "{given}");
            if given != "auto" {
                assert_eq!(render(&g)["SoracomFunnel"]["contentType"], json!(given));
            }
        }
        // Other services: Firehose and Pub/Sub with payloadsOnly, provider
        // defaulting by service.
        let mut h = group();
        put(
            &mut h,
            Namespace::Funnel,
            kv(json!({"destination": {"service": "pubsub", "resourceUrl": "https://pubsub.googleapis.com/t",
                "payloadsOnly": true}, "credentialsId": "gcp"})),
            &|_| true,
        )
        .unwrap();
        let d = &h.funnel.as_ref().unwrap().destination;
        assert_eq!(d.provider, "google");
        assert!(d.payloads_only);
    }

    #[test]
    fn funnel_unknown_keys_are_refused_by_name() {
        let base = json!({"destination": {"service": "kinesis", "resourceUrl": "https://x"},
            "credentialsId": "kin"});
        for (extra, named) in [
            (json!({"bogusKey": 1}), "bogusKey"),
            (json!({"payloadsOnly": true}), "destination.payloadsOnly"),
            (
                json!({"destination": {"service": "kinesis", "resourceUrl": "https://x", "partitionKey": "k"}}),
                "partitionKey",
            ),
            (
                json!({"destination": {"service": "firehose", "resourceUrl": "https://x", "randomizePartitionKey": true}}),
                "randomizePartitionKey",
            ),
            (
                json!({"destination": {"service": "kinesis", "resourceUrl": "https://x", "sendPayloadsAsBinary": true}}),
                "sendPayloadsAsBinary",
            ),
            (
                json!({"destination": {"service": "kinesis", "resourceUrl": "https://x", "requestMode": "record"}}),
                "requestMode",
            ),
            (
                json!({"destination": {"service": "https", "resourceUrl": "https://x", "requestMode": "each"}}),
                "requestMode",
            ),
            (
                json!({"destination": {"service": "https", "resourceUrl": "https://x", "headers": {"Authorization": "Bearer t"}}}),
                "psk credential",
            ),
            (json!({"contentType": "xml"}), "unspecified"),
        ] {
            let mut entries = base.as_object().unwrap().clone();
            entries.extend(extra.as_object().unwrap().clone());
            let mut g = group();
            let e = put(
                &mut g,
                Namespace::Funnel,
                kv(Value::Object(entries)),
                &|_| true,
            )
            .unwrap_err();
            assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
            assert!(e.to_string().contains(named), "{named}: {e}");
            assert!(g.funnel.is_none());
        }
    }

    #[test]
    fn beam_entries_are_typed_validated_and_rendered() {
        let mut g = group();
        let entries = kv(json!({
            "http://beam.soracom.io:8888/api": {"name": "api", "destination": "https://example.com/",
                "enabled": true, "addSubscriberHeader": true, "addSignature": true,
                "psk": {"$credentialsId": "psk-#{imsi}"}},
            "mqtt://beam.soracom.io:1883": {"destination": "mqtts://broker:8883", "enabled": true,
                "useClientCert": true, "clientCerts": {"default": {"$credentialsId": "cert"}},
                "password": "hunter2"},
        }));
        // A fixed credential id must exist; a per-IMSI one cannot be checked.
        let e = put(&mut g, Namespace::Beam, entries.clone(), &|_| false).unwrap_err();
        assert!(e.to_string().contains("cert"), "{e}");
        assert!(g.beam.is_empty());
        put(&mut g, Namespace::Beam, entries, &|c| c.as_str() == "cert").unwrap();
        assert_eq!(g.beam.entries.len(), 2);
        assert!(g.configuration.is_empty());
        let r = render(&g);
        let beam = &r["SoracomBeam"];
        assert_eq!(
            beam["http://beam.soracom.io:8888/api"]["psk"]["$credentialsId"],
            "psk-#{imsi}"
        );
        assert!(!serde_json::to_string(&r).unwrap().contains("hunter2"));
        // A PUT replaces one entry and keeps the others.
        put(
            &mut g,
            Namespace::Beam,
            kv(json!({"http://beam.soracom.io:8888/api": {"destination": "http://other/"}})),
            &|_| true,
        )
        .unwrap();
        assert_eq!(g.beam.entries.len(), 2);
        assert!(
            !g.beam.http_entries().any(|_| true),
            "replaced by a disabled one"
        );
        delete(&mut g, Namespace::Beam, "http://beam.soracom.io:8888/api").unwrap();
        assert!(matches!(
            delete(&mut g, Namespace::Beam, "http://beam.soracom.io:8888/api"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            delete(&mut g, Namespace::Beam, "nonsense"),
            Err(StoreError::NotFound { .. })
        ));
        for bad in [
            json!({"http://beam.soracom.io:8888/": {"destination": "tcps://h:1"}}),
            json!({"tcp://beam.soracom.io:8023": {"destination": "https://h/"}}),
            json!({"mqtt://beam.soracom.io:1883": {"destination": "mqtts://h", "useClientCert": true}}),
            json!({"udp://beam.soracom.io:23080": {"destination": "https://h", "addSignature": true}}),
            json!({"http://beam.soracom.io:8888/": {"destination": "https://h", "unknown": 1}}),
            json!({"http://elsewhere:8888/": {"destination": "https://h"}}),
            json!({"http://beam.soracom.io:8888/": "https://h"}),
        ] {
            let mut h = group();
            let r = put(&mut h, Namespace::Beam, kv(bad.clone()), &|_| true);
            assert!(matches!(r, Err(StoreError::Invalid(_))), "{bad}: {r:?}");
            assert!(h.beam.is_empty(), "{bad}");
        }
    }

    #[test]
    fn other_namespaces_are_kept_verbatim() {
        let mut g = group();
        put(
            &mut g,
            Namespace::Air,
            kv(json!({"metadata": {"enabled": true, "readonly": false}, "userdata": "hello"})),
            &|_| true,
        )
        .unwrap();
        let r = render(&g);
        assert_eq!(r["SoracomAir"]["userdata"], json!("hello"));
        assert_eq!(r["SoracomAir"]["metadata"]["readonly"], json!(false));
        assert!(check_verbatim(&g).is_ok());
        delete(&mut g, Namespace::Air, "userdata").unwrap();
        delete(&mut g, Namespace::Air, "metadata").unwrap();
        assert!(g.configuration.is_empty());
        assert!(delete(&mut g, Namespace::Air, "metadata").is_err());
        assert!(put(&mut g, Namespace::Beam, kv(json!({"": 1})), &|_| true).is_err());
    }

    #[test]
    fn verbatim_check_refuses_modelled_and_unknown_namespaces() {
        let mut g = group();
        g.configuration.insert(
            "SoracomHarvest".into(),
            BTreeMap::from([("enabled".into(), json!(true))]),
        );
        assert!(check_verbatim(&g).is_err());
        let mut g = group();
        g.configuration.insert("Nope".into(), BTreeMap::new());
        assert!(check_verbatim(&g).is_err());
    }
}
