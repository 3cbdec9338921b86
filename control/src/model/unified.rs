//! The Unified Endpoint's response settings (group namespace
//! `UnifiedEndpoint`, key `response`): which answer a device gets when one
//! message went to several services.
//!
//! SORACOM's console offers Auto (the default), Unified, one service's own
//! answer (SORACOM Beam, Funnel, Funk, Harvest) and Custom (a fixed answer
//! for success and one for failure). The stored shape is
//! `{"response":{"format":"SoracomHarvest"}}`; the Custom answers' keys are
//! simgate's reading (SORACOM documents the console, not the JSON):
//!
//! ```json
//! {"response": {"format": "custom",
//!   "success": {"statusCode": 200, "contentType": "text/plain", "body": "OK {{imsi}}"},
//!   "failure": {"statusCode": 500, "body": "NG {{funnel.statusCode}}"}}}
//! ```
//!
//! The settings are kept verbatim in [`Group::configuration`]; this module
//! parses them, both when they are written (so a bad one is refused with a
//! clear message) and when a device sends.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::Group;

/// The configuration namespace.
pub const NAMESPACE: &str = "UnifiedEndpoint";

/// The key holding the response settings.
pub const RESPONSE_KEY: &str = "response";

/// Longest custom body template accepted.
pub const MAX_TEMPLATE_BYTES: usize = 4096;

/// The services the Unified Endpoint forwards to, in the order SORACOM lists
/// them in a unified answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnifiedService {
    Beam,
    Funnel,
    Funk,
    Harvest,
}

impl UnifiedService {
    pub const ALL: [Self; 4] = [Self::Beam, Self::Funnel, Self::Funk, Self::Harvest];

    /// The name used in the unified answer's `detail` and in templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Beam => "beam",
            Self::Funnel => "funnel",
            Self::Funk => "funk",
            Self::Harvest => "harvest",
        }
    }

    /// The format value that selects this service's own answer.
    pub fn format_name(self) -> &'static str {
        match self {
            Self::Beam => "SoracomBeam",
            Self::Funnel => "SoracomFunnel",
            Self::Funk => "SoracomFunk",
            Self::Harvest => "SoracomHarvest",
        }
    }

    /// A human name for messages.
    pub fn title(self) -> &'static str {
        match self {
            Self::Beam => "Beam",
            Self::Funnel => "Funnel",
            Self::Funk => "Funk",
            Self::Harvest => "Harvest",
        }
    }
}

/// How the Unified Endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// One service enabled: its own answer; several: the unified JSON.
    #[default]
    Auto,
    /// Always the unified JSON, even for one service.
    Unified,
    /// This service's own answer; the others still get the message.
    Service(UnifiedService),
    /// A fixed answer for success and one for failure.
    Custom {
        success: CustomResponse,
        failure: CustomResponse,
    },
}

/// One fixed answer of the Custom format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Template,
}

/// A body with `{{name}}` placeholders, checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Var(Placeholder),
}

/// What a template can insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Imsi,
    /// `ok` or `ng`, as in the unified answer.
    Result,
    /// The unified answer's status (200 or 207).
    StatusCode,
    ServiceStatus(UnifiedService),
    ServiceBody(UnifiedService),
}

impl Placeholder {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "imsi" => return Some(Self::Imsi),
            "result" => return Some(Self::Result),
            "statusCode" => return Some(Self::StatusCode),
            _ => {}
        }
        let (service, field) = name.split_once('.')?;
        let service = UnifiedService::ALL
            .into_iter()
            .find(|s| s.as_str() == service)?;
        match field {
            "statusCode" => Some(Self::ServiceStatus(service)),
            "body" => Some(Self::ServiceBody(service)),
            _ => None,
        }
    }
}

/// The names a template may use.
pub const PLACEHOLDERS: &str = "imsi, result, statusCode, \
    {beam,funnel,funk,harvest}.statusCode, {beam,funnel,funk,harvest}.body";

impl Template {
    /// Parses `{{name}}` placeholders; text outside them is kept as is.
    pub fn parse(s: &str) -> Result<Self, UnifiedSettingsError> {
        if s.len() > MAX_TEMPLATE_BYTES {
            return Err(UnifiedSettingsError(format!(
                "a custom body is at most {MAX_TEMPLATE_BYTES} bytes"
            )));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                UnifiedSettingsError("a custom body has `{{` without a closing `}}`".to_owned())
            })?;
            let name = after[..end].trim();
            let var = Placeholder::parse(name).ok_or_else(|| {
                UnifiedSettingsError(format!(
                    "unknown placeholder {{{{{}}}}} in a custom body; known: {PLACEHOLDERS}",
                    name.chars().take(40).collect::<String>()
                ))
            })?;
            if start > 0 {
                parts.push(TemplatePart::Text(rest[..start].to_owned()));
            }
            parts.push(TemplatePart::Var(var));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Fills the placeholders with `value`.
    pub fn render(&self, mut value: impl FnMut(Placeholder) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Var(v) => out.push_str(&value(*v)),
            }
        }
        out
    }
}

/// A `UnifiedEndpoint` setting simgate cannot use; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("UnifiedEndpoint: {0}")]
pub struct UnifiedSettingsError(String);

impl ResponseFormat {
    /// The group's setting; Auto without a group or without the key.
    pub fn of(group: Option<&Group>) -> Result<Self, UnifiedSettingsError> {
        match group.and_then(|g| g.configuration.get(NAMESPACE)) {
            Some(ns) => Self::from_namespace(ns),
            None => Ok(Self::Auto),
        }
    }

    /// Parses the namespace's keys (`response`; `enabled` and others are
    /// accepted and ignored, SORACOM stores `enabled` there too).
    pub fn from_namespace(ns: &BTreeMap<String, Value>) -> Result<Self, UnifiedSettingsError> {
        match ns.get(RESPONSE_KEY) {
            None | Some(Value::Null) => Ok(Self::Auto),
            Some(Value::Object(response)) => Self::from_response(response),
            Some(_) => Err(UnifiedSettingsError(
                "`response` must be an object like {\"format\":\"auto\"}".to_owned(),
            )),
        }
    }

    fn from_response(r: &serde_json::Map<String, Value>) -> Result<Self, UnifiedSettingsError> {
        let format = match r.get("format") {
            None | Some(Value::Null) => return Ok(Self::Auto),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(UnifiedSettingsError(
                    "`response.format` must be a string".to_owned(),
                ))
            }
        };
        let lower = format.to_ascii_lowercase();
        match lower.as_str() {
            "auto" => return Ok(Self::Auto),
            "unified" => return Ok(Self::Unified),
            "custom" => {
                return Ok(Self::Custom {
                    success: custom(r, "success")?,
                    failure: custom(r, "failure")?,
                })
            }
            _ => {}
        }
        UnifiedService::ALL
            .into_iter()
            .find(|s| s.format_name().eq_ignore_ascii_case(format))
            .map(Self::Service)
            .ok_or_else(|| {
                UnifiedSettingsError(format!(
                    "unknown response format {:?}; known: auto, unified, SoracomBeam, \
                     SoracomFunnel, SoracomFunk, SoracomHarvest, custom",
                    format.chars().take(40).collect::<String>()
                ))
            })
    }
}

fn custom(
    r: &serde_json::Map<String, Value>,
    key: &'static str,
) -> Result<CustomResponse, UnifiedSettingsError> {
    let err = |what: &str| UnifiedSettingsError(format!("`response.{key}`: {what}"));
    let Some(Value::Object(o)) = r.get(key) else {
        return Err(err(
            "the custom format needs an object {\"statusCode\":…,\"body\":…}",
        ));
    };
    let status = match o.get("statusCode") {
        Some(v) => v
            .as_u64()
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| err("`statusCode` must be an HTTP status from 200 to 599"))?,
        None => return Err(err("`statusCode` is required")),
    };
    let content_type = match o.get("contentType") {
        None | Some(Value::Null) => "text/plain".to_owned(),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            s.clone()
        }
        Some(_) => return Err(err("`contentType` must be a printable media type")),
    };
    let body = match o.get("body") {
        None | Some(Value::Null) => Template::parse("")?,
        Some(Value::String(s)) => Template::parse(s).map_err(|e| err(&e.0))?,
        Some(_) => return Err(err("`body` must be a string")),
    };
    Ok(CustomResponse {
        status,
        content_type,
        body,
    })
}

impl fmt::Display for UnifiedService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn formats() {
        assert_eq!(
            ResponseFormat::from_namespace(&ns(json!({}))),
            Ok(ResponseFormat::Auto)
        );
        assert_eq!(
            ResponseFormat::from_namespace(&ns(
                json!({"response": {"format": "SoracomHarvest"}, "enabled": true})
            )),
            Ok(ResponseFormat::Service(UnifiedService::Harvest))
        );
        assert_eq!(
            ResponseFormat::from_namespace(&ns(json!({"response": {"format": "Unified"}}))),
            Ok(ResponseFormat::Unified)
        );
        let e = ResponseFormat::from_namespace(&ns(json!({"response": {"format": "beam"}})))
            .unwrap_err();
        assert!(e.to_string().contains("unknown response format"), "{e}");
    }

    #[test]
    fn custom_templates() {
        let f = ResponseFormat::from_namespace(&ns(json!({"response": {
            "format": "custom",
            "success": {"statusCode": 200, "body": "OK {{imsi}} {{ harvest.statusCode }}"},
            "failure": {"statusCode": 500, "contentType": "application/json", "body": "{\"r\":\"{{result}}\"}"},
        }})))
        .unwrap();
        let ResponseFormat::Custom { success, failure } = f else {
            panic!("{f:?}")
        };
        let out = success.body.render(|p| match p {
            Placeholder::Imsi => "001".into(),
            Placeholder::ServiceStatus(UnifiedService::Harvest) => "201".into(),
            _ => "?".into(),
        });
        assert_eq!(out, "OK 001 201");
        assert_eq!(failure.content_type, "application/json");
        assert_eq!(failure.body.render(|_| "ng".into()), "{\"r\":\"ng\"}");
    }

    #[test]
    fn custom_refusals() {
        for (bad, says) in [
            (json!({"format": "custom"}), "success"),
            (
                json!({"format": "custom", "success": {"statusCode": 99}, "failure": {"statusCode": 500}}),
                "statusCode",
            ),
            (
                json!({"format": "custom", "success": {"statusCode": 200, "body": "{{nope}}"}, "failure": {"statusCode": 500}}),
                "unknown placeholder",
            ),
            (
                json!({"format": "custom", "success": {"statusCode": 200, "body": "{{imsi"}, "failure": {"statusCode": 500}}),
                "closing",
            ),
        ] {
            let e = ResponseFormat::from_namespace(&ns(json!({ "response": bad }))).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
