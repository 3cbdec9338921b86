//! SORACOM Beam settings of a group (namespace `SoracomBeam`).
//!
//! SORACOM keys the namespace by entry point URL
//! (`http://beam.soracom.io:8888/<path>`, `tcp://beam.soracom.io:8023`,
//! `mqtt://beam.soracom.io:1883`, …); each value is one [`BeamEntry`] with
//! SORACOM's camelCase field names. The same shape is used in the API, in the
//! TOML file (`[groups.beam."http://beam.soracom.io:8888/"]`) and in the store,
//! so a configuration copied from SORACOM works unchanged.
//!
//! Choices where SORACOM's documentation is silent (*unconfirmed*):
//! * `enabled` defaults to **false**, as a Go SDK client that leaves it out
//!   sends (`bool` zero value);
//! * the website entry's key is `http://beam.soracom.io:18080`;
//! * an HTTP entry's path prefix matches whole path segments (`/api` matches
//!   `/api` and `/api/x`, not `/apix`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CredentialId, IdError, Imsi, Secret};

/// The host SORACOM's entry keys name.
const BEAM_HOST: &str = "beam.soracom.io";
/// Longest HTTP entry path prefix accepted.
const MAX_PATH_PREFIX: usize = 256;
/// Longest destination URL accepted.
const MAX_DESTINATION: usize = 2048;
/// Most custom headers per entry.
const MAX_CUSTOM_HEADERS: usize = 64;
/// Longest custom header value.
pub(crate) const MAX_HEADER_VALUE: usize = 4096;

/// One Beam entry point, as named by its key in `SoracomBeam`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BeamEntryPoint {
    /// `http://beam.soracom.io:8888{path_prefix}`: HTTP → HTTP(S), chosen by
    /// the longest matching path prefix. The prefix starts with `/`.
    Http { path_prefix: String },
    /// `http://beam.soracom.io:18080`: the website entry; the device's path is
    /// appended to the destination.
    Website,
    /// `tcp://beam.soracom.io:8023`: TCP → TCP(S) with an identity line.
    TcpToTcp,
    /// `udp://beam.soracom.io:23080`: one datagram → one HTTP(S) `POST`.
    UdpToHttp,
    /// `tcp://beam.soracom.io:23080`: one TCP message → one HTTP(S) `POST`.
    TcpToHttp,
    /// `mqtt://beam.soracom.io:1883`: MQTT → MQTT(S).
    Mqtt,
}

impl BeamEntryPoint {
    /// Parses a `SoracomBeam` key.
    pub fn parse(key: &str) -> Result<Self, String> {
        let fixed = [
            ("http://beam.soracom.io:18080", Self::Website),
            ("http://beam.soracom.io:18080/", Self::Website),
            ("tcp://beam.soracom.io:8023", Self::TcpToTcp),
            ("udp://beam.soracom.io:23080", Self::UdpToHttp),
            ("tcp://beam.soracom.io:23080", Self::TcpToHttp),
            ("mqtt://beam.soracom.io:1883", Self::Mqtt),
        ];
        if let Some((_, p)) = fixed.into_iter().find(|(k, _)| *k == key) {
            return Ok(p);
        }
        if let Some(path) = key.strip_prefix("http://beam.soracom.io:8888") {
            let path = if path.is_empty() { "/" } else { path };
            check_path_prefix(path)?;
            return Ok(Self::Http {
                path_prefix: path.to_owned(),
            });
        }
        Err(format!(
            "unknown Beam entry {:?}; keys are http://{BEAM_HOST}:8888/<path>, \
             http://{BEAM_HOST}:18080, tcp://{BEAM_HOST}:8023, udp://{BEAM_HOST}:23080, \
             tcp://{BEAM_HOST}:23080 or mqtt://{BEAM_HOST}:1883",
            key.chars().take(64).collect::<String>()
        ))
    }

    /// The key, as SORACOM writes it.
    pub fn key(&self) -> String {
        match self {
            Self::Http { path_prefix } => format!("http://{BEAM_HOST}:8888{path_prefix}"),
            Self::Website => format!("http://{BEAM_HOST}:18080"),
            Self::TcpToTcp => format!("tcp://{BEAM_HOST}:8023"),
            Self::UdpToHttp => format!("udp://{BEAM_HOST}:23080"),
            Self::TcpToHttp => format!("tcp://{BEAM_HOST}:23080"),
            Self::Mqtt => format!("mqtt://{BEAM_HOST}:1883"),
        }
    }

    /// Short name for logs and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Website => "website",
            Self::TcpToTcp => "tcp",
            Self::UdpToHttp => "udp_http",
            Self::TcpToHttp => "tcp_http",
            Self::Mqtt => "mqtt",
        }
    }

    /// Whether the entry sends HTTP requests upstream (headers, signature
    /// headers and `customHeaders` apply).
    pub fn is_http_upstream(&self) -> bool {
        matches!(
            self,
            Self::Http { .. } | Self::Website | Self::UdpToHttp | Self::TcpToHttp
        )
    }

    /// Destination schemes allowed, TLS first.
    fn schemes(&self) -> &'static [&'static str] {
        match self {
            Self::Http { .. } | Self::Website | Self::UdpToHttp | Self::TcpToHttp => {
                &["https", "http"]
            }
            Self::TcpToTcp => &["tcps", "tcp"],
            Self::Mqtt => &["mqtts", "mqtt"],
        }
    }
}

impl fmt::Display for BeamEntryPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl TryFrom<String> for BeamEntryPoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl Serialize for BeamEntryPoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key())
    }
}

impl<'de> Deserialize<'de> for BeamEntryPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn check_path_prefix(p: &str) -> Result<(), String> {
    let ok = p.starts_with('/')
        && p.len() <= MAX_PATH_PREFIX
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a Beam HTTP entry's path must start with '/', have no query, spaces or '#', \
             and be at most {MAX_PATH_PREFIX} bytes"
        ))
    }
}

/// A `{"$credentialsId": "…"}` reference. The id may contain `#{imsi}`,
/// replaced by the sending SIM's IMSI (one credential set per device).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CredentialsRefIn")]
pub struct CredentialsRef {
    #[serde(rename = "$credentialsId")]
    template: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsRefIn {
    #[serde(rename = "$credentialsId")]
    template: String,
}

impl TryFrom<CredentialsRefIn> for CredentialsRef {
    type Error = IdError;
    fn try_from(r: CredentialsRefIn) -> Result<Self, IdError> {
        Self::parse(&r.template)
    }
}

/// The placeholder SORACOM replaces with the IMSI in credential ids.
pub const IMSI_PLACEHOLDER: &str = "#{imsi}";

impl CredentialsRef {
    /// Checks that the id is valid once `#{imsi}` is replaced by an IMSI.
    pub fn parse(template: &str) -> Result<Self, IdError> {
        // Any 15-digit IMSI gives the same verdict: digits are valid id bytes.
        CredentialId::parse(&template.replace(IMSI_PLACEHOLDER, "001010000000001"))?;
        Ok(Self {
            template: template.to_owned(),
        })
    }

    /// The id as written, placeholders included.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// Whether the id depends on the IMSI.
    pub fn is_per_imsi(&self) -> bool {
        self.template.contains(IMSI_PLACEHOLDER)
    }

    /// The credentials id for `imsi`.
    pub fn resolve(&self, imsi: &Imsi) -> Result<CredentialId, IdError> {
        if self.is_per_imsi() {
            CredentialId::parse(&self.template.replace(IMSI_PLACEHOLDER, imsi.as_str()))
        } else {
            CredentialId::parse(&self.template)
        }
    }

    /// The fixed id, when the reference has no placeholder.
    pub fn fixed(&self) -> Option<CredentialId> {
        if self.is_per_imsi() {
            None
        } else {
            CredentialId::parse(&self.template).ok()
        }
    }
}

impl fmt::Debug for CredentialsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialsRef({})", self.template)
    }
}

/// What a custom header does to the request sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    /// Adds a value, keeping any the device sent.
    Append,
    /// Sets the value, removing any the device sent.
    Replace,
    /// Removes the header.
    Delete,
}

/// One entry of `customHeaders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomHeader {
    pub action: HeaderAction,
    pub header_key: String,
    /// Ignored (and may be left out) for `delete`.
    #[serde(default)]
    pub header_value: String,
}

/// One Beam entry point's settings, with SORACOM's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BeamEntry {
    #[serde(default)]
    pub name: String,
    /// `https://…`/`http://…` (HTTP, website, UDP/TCP → HTTP),
    /// `tcps://host:port`/`tcp://host:port` (TCP → TCP),
    /// `mqtts://host[:port]`/`mqtt://host[:port]` (MQTT).
    pub destination: String,
    #[serde(default)]
    pub enabled: bool,
    /// `X-Soracom-IMSI` (TCP line: `imsi=`).
    #[serde(default)]
    pub add_subscriber_header: bool,
    /// `X-Soracom-IMEI` (TCP line: `imei=`).
    #[serde(default)]
    pub add_equipment_header: bool,
    /// `X-Soracom-MSISDN` (TCP line: `msisdn=`).
    #[serde(default)]
    pub add_msisdn_header: bool,
    /// `X-Soracom-SIM-ID` (TCP line: `simId=`).
    #[serde(default)]
    pub add_sim_id_header: bool,
    /// Timestamp, version and signature computed with `psk`.
    #[serde(default)]
    pub add_signature: bool,
    /// A `psk` credential: the key of the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<CredentialsRef>,
    /// HTTP upstreams only: header name → what to do.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_headers: BTreeMap<String, CustomHeader>,
    /// UDP/TCP → HTTP: answer the device with the response body only,
    /// without `{status} `.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_status_code: bool,
    /// MQTT only: CONNECT user name sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// MQTT only: CONNECT password sent upstream. Write-only in the API;
    /// kept in clear in the store (see [`stored_secret`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "stored_secret::serialize"
    )]
    pub password: Option<Secret>,
    /// MQTT only: authenticate upstream with `clientCerts["default"]`.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "bool_or_string"
    )]
    pub use_client_cert: bool,
    /// MQTT only: name (`default`) → an `x509` credential.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_certs: BTreeMap<String, CredentialsRef>,
    /// SORACOM's configuration format version (e.g. `201912`); kept, unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// SORACOM's Go SDK sends `useClientCert` as a string.
fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    match B::deserialize(d)? {
        B::B(b) => Ok(b),
        B::S(s) if s == "true" => Ok(true),
        B::S(s) if s == "false" || s.is_empty() => Ok(false),
        B::S(_) => Err(serde::de::Error::custom("must be true or false")),
    }
}

/// The MQTT password is part of the group record in the store, which must
/// keep it to use it; the API renders Beam through
/// [`BeamConfig::render`], which leaves it out.
mod stored_secret {
    use serde::Serializer;

    use super::Secret;

    pub(super) fn serialize<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(secret) => s.serialize_str(secret.expose()),
            None => s.serialize_none(),
        }
    }
}

impl BeamEntry {
    /// Checks the entry against what its entry point allows.
    pub fn validate(&self, point: &BeamEntryPoint) -> Result<(), String> {
        check_destination(point, &self.destination)?;
        if self.add_signature && self.psk.is_none() {
            return Err("addSignature needs psk ({\"$credentialsId\": …})".into());
        }
        if !self.custom_headers.is_empty() {
            if !point.is_http_upstream() {
                return Err(format!(
                    "customHeaders apply to HTTP destinations only, not {}",
                    point.key()
                ));
            }
            if self.custom_headers.len() > MAX_CUSTOM_HEADERS {
                return Err(format!("at most {MAX_CUSTOM_HEADERS} customHeaders"));
            }
            for h in self.custom_headers.values() {
                check_custom_header(h)?;
            }
        }
        if self.skip_status_code
            && !matches!(point, BeamEntryPoint::UdpToHttp | BeamEntryPoint::TcpToHttp)
        {
            return Err("skipStatusCode applies to UDP/TCP → HTTP entries only".into());
        }
        let mqtt_only = self.username.is_some()
            || self.password.is_some()
            || self.use_client_cert
            || !self.client_certs.is_empty();
        if mqtt_only && *point != BeamEntryPoint::Mqtt {
            return Err(
                "username, password, useClientCert and clientCerts apply to the MQTT entry only"
                    .into(),
            );
        }
        if self.use_client_cert && !self.client_certs.contains_key("default") {
            return Err(
                "useClientCert needs clientCerts {\"default\": {\"$credentialsId\": …}}".into(),
            );
        }
        Ok(())
    }

    /// The `x509` credential to present upstream, when `useClientCert` is on.
    pub fn client_cert(&self) -> Option<&CredentialsRef> {
        if self.use_client_cert {
            self.client_certs.get("default")
        } else {
            None
        }
    }

    /// Every credential reference the entry holds.
    pub fn credential_refs(&self) -> impl Iterator<Item = &CredentialsRef> {
        self.psk.iter().chain(self.client_certs.values())
    }
}

/// A header name as HTTP allows it (RFC 9110 token).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn check_custom_header(h: &CustomHeader) -> Result<(), String> {
    if !is_token(&h.header_key) {
        return Err(format!(
            "customHeaders: {:?} is not a valid header name",
            h.header_key.chars().take(64).collect::<String>()
        ));
    }
    let value_ok = h.header_value.len() <= MAX_HEADER_VALUE
        && h.header_value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    if !value_ok {
        return Err(format!(
            "customHeaders: the value of {} must be printable ASCII, at most {MAX_HEADER_VALUE} bytes",
            h.header_key
        ));
    }
    if h.action != HeaderAction::Delete && h.header_value.is_empty() {
        return Err(format!(
            "customHeaders: {} needs a headerValue to {}",
            h.header_key,
            match h.action {
                HeaderAction::Append => "append",
                _ => "replace",
            }
        ));
    }
    Ok(())
}

/// A destination split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationParts<'a> {
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    /// Path and query, `""` or starting with `/`.
    pub rest: &'a str,
}

impl DestinationParts<'_> {
    /// Whether the scheme asks for TLS (`https`, `tcps`, `mqtts`).
    pub fn tls(&self) -> bool {
        self.scheme.ends_with('s')
    }

    /// The explicit port, else the scheme's usual one.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.scheme {
            "https" => 443,
            "http" => 80,
            "mqtts" => 8883,
            "mqtt" => 1883,
            _ => 0,
        })
    }
}

/// Splits `scheme://host[:port][/rest]`; IPv6 hosts in brackets.
pub fn split_destination(url: &str) -> Result<DestinationParts<'_>, String> {
    let (scheme, after) = url
        .split_once("://")
        .ok_or_else(|| "destination must be scheme://host…".to_owned())?;
    let split = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(split);
    if authority.contains('@') {
        return Err("destination must not carry user information".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in destination".to_owned())?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or("bad port in destination")?),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| "destination port must be 1 to 65535".to_owned())
        })
        .transpose()?;
    if host.is_empty() {
        return Err("destination needs a host".into());
    }
    Ok(DestinationParts {
        scheme,
        host,
        port,
        rest,
    })
}

fn check_destination(point: &BeamEntryPoint, url: &str) -> Result<(), String> {
    let schemes = point.schemes();
    let wrong = || {
        format!(
            "destination of {} must be a {} URL",
            point.key(),
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        )
    };
    if url.len() > MAX_DESTINATION || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "destination must be printable ASCII without spaces, at most {MAX_DESTINATION} bytes"
        ));
    }
    let parts = split_destination(url).map_err(|e| format!("{}: {e}", wrong()))?;
    if !schemes.contains(&parts.scheme) {
        return Err(wrong());
    }
    match point {
        BeamEntryPoint::TcpToTcp if parts.port.is_none() || !parts.rest.is_empty() => {
            Err(format!("{}: it is host:port, nothing more", wrong()))
        }
        BeamEntryPoint::Mqtt if !parts.rest.is_empty() && parts.rest != "/" => {
            Err(format!("{}: it is host[:port], nothing more", wrong()))
        }
        _ => Ok(()),
    }
}

/// A group's Beam entries (namespace `SoracomBeam`): entry point → settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BeamConfig {
    pub entries: BTreeMap<BeamEntryPoint, BeamEntry>,
}

impl BeamConfig {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks every entry.
    pub fn validate(&self) -> Result<(), String> {
        for (point, entry) in &self.entries {
            entry.validate(point).map_err(|e| format!("{point}: {e}"))?;
        }
        Ok(())
    }

    /// The entry for `point`, if configured and enabled.
    pub fn enabled(&self, point: &BeamEntryPoint) -> Option<&BeamEntry> {
        self.entries.get(point).filter(|e| e.enabled)
    }

    /// Enabled HTTP entries (:8888) as `(path prefix, entry)`.
    pub fn http_entries(&self) -> impl Iterator<Item = (&str, &BeamEntry)> {
        self.entries.iter().filter_map(|(p, e)| match p {
            BeamEntryPoint::Http { path_prefix } if e.enabled => Some((path_prefix.as_str(), e)),
            _ => None,
        })
    }

    /// Every credential id the configuration names without a placeholder.
    pub fn fixed_credentials(&self) -> impl Iterator<Item = CredentialId> + '_ {
        self.entries
            .values()
            .flat_map(BeamEntry::credential_refs)
            .filter_map(CredentialsRef::fixed)
    }

    /// Each fixed credential id with the SORACOM type it must have (`psk`
    /// for `psk`, `x509` for `clientCerts`).
    pub fn fixed_credentials_typed(
        &self,
    ) -> impl Iterator<Item = (CredentialId, &'static str)> + '_ {
        self.entries.values().flat_map(|e| {
            let psk = e.psk.iter().filter_map(|r| r.fixed()).map(|id| (id, "psk"));
            let certs = e
                .client_certs
                .values()
                .filter_map(CredentialsRef::fixed)
                .map(|id| (id, "x509"));
            psk.chain(certs)
        })
    }

    /// The configuration as the API shows it: key → value, the MQTT password
    /// left out (write-only).
    pub fn render(&self) -> BTreeMap<String, serde_json::Value> {
        self.entries
            .iter()
            .map(|(point, entry)| {
                let mut shown = entry.clone();
                shown.password = None;
                let v = serde_json::to_value(&shown).unwrap_or(serde_json::Value::Null);
                (point.key(), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: serde_json::Value) -> BeamEntry {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn keys_parse_and_print_back() {
        for key in [
            "http://beam.soracom.io:8888/",
            "http://beam.soracom.io:8888/api/v1",
            "http://beam.soracom.io:18080",
            "tcp://beam.soracom.io:8023",
            "udp://beam.soracom.io:23080",
            "tcp://beam.soracom.io:23080",
            "mqtt://beam.soracom.io:1883",
        ] {
            assert_eq!(BeamEntryPoint::parse(key).unwrap().key(), key);
        }
        assert_eq!(
            BeamEntryPoint::parse("http://beam.soracom.io:8888").unwrap(),
            BeamEntryPoint::Http {
                path_prefix: "/".into()
            }
        );
        for bad in [
            "",
            "http://beam.soracom.io:8888/a b",
            "http://beam.soracom.io:8888/a?x=1",
            "http://beam.soracom.io:8888x",
            "http://example.com:8888/",
            "tcp://beam.soracom.io:8024",
        ] {
            assert!(BeamEntryPoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations_are_checked_per_entry_type() {
        let http = BeamEntryPoint::parse("http://beam.soracom.io:8888/").unwrap();
        let tcp = BeamEntryPoint::TcpToTcp;
        let mqtt = BeamEntryPoint::Mqtt;
        let ok = [
            (&http, "https://example.com/path?q=1"),
            (&http, "http://127.0.0.1:8080"),
            (&http, "https://[::1]:8443/x"),
            (&tcp, "tcps://example.com:8883"),
            (&tcp, "tcp://10.0.0.1:9000"),
            (&mqtt, "mqtts://example.com:8883"),
            (&mqtt, "mqtt://example.com"),
        ];
        for (p, d) in ok {
            check_destination(p, d).unwrap_or_else(|e| panic!("{p} {d}: {e}"));
        }
        let bad = [
            (&http, "tcps://example.com:1"),
            (&http, "ftp://example.com"),
            (&http, "https://"),
            (&http, "https://a b"),
            (&http, "https://user:pw@example.com"),
            (&tcp, "https://example.com"),
            (&tcp, "tcps://example.com"),
            (&tcp, "tcps://example.com:0"),
            (&tcp, "tcps://example.com:1/path"),
            (&mqtt, "https://example.com"),
            (&mqtt, "mqtts://example.com:8883/topic"),
        ];
        for (p, d) in bad {
            assert!(check_destination(p, d).is_err(), "{p} {d}");
        }
    }

    #[test]
    fn entries_follow_soracom_shape_and_rules() {
        let e = entry(json!({
            "name": "api", "destination": "https://example.com/", "enabled": true,
            "addSubscriberHeader": true, "addSignature": true,
            "psk": {"$credentialsId": "psk-#{imsi}"},
            "customHeaders": {"X-A": {"action": "append", "headerKey": "X-A", "headerValue": "1"},
                              "X-B": {"action": "delete", "headerKey": "X-B"}},
        }));
        let http = BeamEntryPoint::parse("http://beam.soracom.io:8888/").unwrap();
        e.validate(&http).unwrap();
        assert!(e.psk.as_ref().unwrap().is_per_imsi());
        // Signature without a key, headers on TCP, MQTT fields on HTTP.
        let mut no_psk = e.clone();
        no_psk.psk = None;
        assert!(no_psk.validate(&http).is_err());
        assert!(e.validate(&BeamEntryPoint::TcpToTcp).is_err());
        let mqtt = entry(json!({
            "destination": "mqtts://example.com:8883", "enabled": true,
            "useClientCert": "true",
            "clientCerts": {"default": {"$credentialsId": "cert-#{imsi}"}},
            "username": "u", "password": "p",
        }));
        mqtt.validate(&BeamEntryPoint::Mqtt).unwrap();
        assert!(mqtt.validate(&http).is_err());
        let imsi = Imsi::parse("001010000000001").unwrap();
        assert_eq!(
            mqtt.client_cert().unwrap().resolve(&imsi).unwrap().as_str(),
            "cert-001010000000001"
        );
        // Unknown fields, bad references and bad headers are refused.
        assert!(serde_json::from_value::<BeamEntry>(
            json!({"destination": "https://x", "bogus": 1})
        )
        .is_err());
        assert!(serde_json::from_value::<BeamEntry>(
            json!({"destination": "https://x", "psk": {"$credentialsId": "a b"}})
        )
        .is_err());
        assert!(serde_json::from_value::<BeamEntry>(
            json!({"destination": "https://x", "psk": "plain-key"})
        )
        .is_err());
        let bad_header = entry(json!({"destination": "https://x",
            "customHeaders": {"x": {"action": "replace", "headerKey": "Bad Name", "headerValue": "v"}}}));
        assert!(bad_header.validate(&http).is_err());
        let no_value = entry(json!({"destination": "https://x",
            "customHeaders": {"x": {"action": "replace", "headerKey": "X-Ok"}}}));
        assert!(no_value.validate(&http).is_err());
        // Defaults: disabled until enabled, as a Go client leaving it out sends.
        assert!(!entry(json!({"destination": "https://x"})).enabled);
    }

    #[test]
    fn config_serializes_by_key_and_hides_the_password_when_rendered() {
        let mut c = BeamConfig::default();
        c.entries.insert(
            BeamEntryPoint::Mqtt,
            entry(json!({"destination": "mqtts://h:8883", "username": "u", "password": "hunter2"})),
        );
        let stored = serde_json::to_string(&c).unwrap();
        assert!(stored.contains("mqtt://beam.soracom.io:1883"), "{stored}");
        assert!(stored.contains("hunter2"), "the store keeps it: {stored}");
        let back: BeamConfig = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, c);
        let shown = serde_json::to_string(&c.render()).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
