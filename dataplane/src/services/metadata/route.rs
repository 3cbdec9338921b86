//! The Metadata service's requests and policy, sans-IO: the method and
//! path in, what to do (or why not) out; the group's `SoracomAir`
//! `metadata` settings read from its verbatim configuration; a field of
//! the rendered subscriber picked out as its raw value.
//!
//! Nothing here touches a socket, the store or the clock, so every
//! refusal (disabled, read-only, another SIM, unmapped call) is decided by
//! [`decide`] and tested below.

use serde_json::Value;
use simgate_control::Group;

/// The `SoracomAir` namespace, where SORACOM keeps `metadata` and
/// `userdata`.
const AIR: &str = "SoracomAir";

/// What a device asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `GET /v1/subscriber`, `GET /v1/subscribers/{imsi}`: the SIM's JSON.
    Subscriber,
    /// `GET /v1/subscriber.{field}`: one field's raw value; `tags.{name}`
    /// is one tag (a tag name may contain dots).
    Field(String),
    /// `GET /v1/userdata`: the group's `SoracomAir` `userdata`, as is.
    Userdata,
    /// `PUT /v1/subscriber/tags`, `PUT /v1/subscribers/{imsi}/tags`.
    PutTags,
    /// `DELETE /v1/subscriber/tags/{name}`,
    /// `DELETE /v1/subscribers/{imsi}/tags/{name}`.
    DeleteTag(String),
    /// `OPTIONS` (a browser's CORS preflight).
    Preflight,
}

impl Op {
    /// Whether this changes the SIM (refused when the group's metadata is
    /// read-only).
    pub fn is_write(&self) -> bool {
        matches!(self, Self::PutTags | Self::DeleteTag(_))
    }
}

/// Why a path names nothing this service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No such path.
    NotFound,
    /// `/v1/subscribers/{imsi}/…` that SORACOM's API has but the Metadata
    /// service does not offer here (only the read and the tag calls).
    NotMapped,
    /// The path exists, not with this method; the `Allow` value.
    MethodNotAllowed(&'static str),
    /// A percent-escape that is not UTF-8.
    BadEncoding,
}

/// A parsed request: the IMSI its path names (to be the caller's own) and
/// what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// `{imsi}` of `/v1/subscribers/{imsi}…`, raw; `None` for the
    /// `/v1/subscriber…` forms, which always mean the caller.
    pub imsi: Option<String>,
    pub target: Result<Op, RouteError>,
}

const GET: &str = "GET, OPTIONS";
const PUT: &str = "PUT, OPTIONS";
const DELETE: &str = "DELETE, OPTIONS";

/// Parses `method` and `path` (without the query).
pub fn parse(method: &str, path: &str) -> Parsed {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (imsi, rest): (Option<String>, &[&str]) = match segments.as_slice() {
        ["v1", "subscribers", imsi, rest @ ..] => (Some((*imsi).to_owned()), rest),
        _ => (None, &[]),
    };
    let target = if imsi.is_some() {
        subscribers_call(method, rest)
    } else {
        own_call(method, &segments)
    };
    Parsed { imsi, target }
}

/// `/v1/subscriber…` and `/v1/userdata`.
fn own_call(method: &str, segments: &[&str]) -> Result<Op, RouteError> {
    let preflight = method == "OPTIONS";
    match segments {
        ["v1", "userdata"] => get_only(method, Op::Userdata),
        ["v1", "subscriber"] => get_only(method, Op::Subscriber),
        ["v1", "subscriber", "tags"] => tags_call(method),
        ["v1", "subscriber", "tags", name] => delete_tag(method, name),
        ["v1", field] => match field.strip_prefix("subscriber.") {
            Some("") | None => Err(RouteError::NotFound),
            Some(_) if preflight => Ok(Op::Preflight),
            Some(f) => get_only(method, Op::Field(decode(f)?)),
        },
        _ => Err(RouteError::NotFound),
    }
}

/// What follows `/v1/subscribers/{imsi}`.
fn subscribers_call(method: &str, rest: &[&str]) -> Result<Op, RouteError> {
    match rest {
        [] => get_only(method, Op::Subscriber),
        ["tags"] => tags_call(method),
        ["tags", name] => delete_tag(method, name),
        _ => Err(RouteError::NotMapped),
    }
}

fn get_only(method: &str, op: Op) -> Result<Op, RouteError> {
    match method {
        "GET" => Ok(op),
        "OPTIONS" => Ok(Op::Preflight),
        _ => Err(RouteError::MethodNotAllowed(GET)),
    }
}

fn tags_call(method: &str) -> Result<Op, RouteError> {
    match method {
        "PUT" => Ok(Op::PutTags),
        "OPTIONS" => Ok(Op::Preflight),
        _ => Err(RouteError::MethodNotAllowed(PUT)),
    }
}

fn delete_tag(method: &str, name: &str) -> Result<Op, RouteError> {
    match method {
        "DELETE" if name.is_empty() => Err(RouteError::NotFound),
        "DELETE" => Ok(Op::DeleteTag(decode(name)?)),
        "OPTIONS" => Ok(Op::Preflight),
        _ => Err(RouteError::MethodNotAllowed(DELETE)),
    }
}

/// Percent-decodes one path segment (tag names may hold spaces and the
/// like); `%` not followed by two hex digits is kept as is.
fn decode(s: &str) -> Result<String, RouteError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 255.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(u8::MAX));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| RouteError::BadEncoding)
}

/// The group's `SoracomAir` `metadata` settings
/// (`{"enabled","readonly","allowOrigin"}`). Without a group, or without
/// the key, Metadata is off (SORACOM's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub readonly: bool,
    /// `Access-Control-Allow-Origin` for every answer; `None` when unset
    /// or empty.
    pub allow_origin: Option<String>,
}

impl Settings {
    pub fn of(group: Option<&Group>) -> Self {
        let Some(m) = air(group, "metadata") else {
            return Self::default();
        };
        let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
        Self {
            enabled: flag("enabled"),
            readonly: flag("readonly"),
            allow_origin: m
                .get("allowOrigin")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }

    /// The methods a preflight may announce.
    pub fn allow_methods(&self) -> &'static str {
        if self.readonly {
            "GET, OPTIONS"
        } else {
            "GET, PUT, DELETE, OPTIONS"
        }
    }
}

fn air<'a>(group: Option<&'a Group>, key: &str) -> Option<&'a Value> {
    group?.configuration.get(AIR)?.get(key)
}

/// The group's `SoracomAir` `userdata`: a string as is, anything else as
/// its JSON text; `None` when unset (or null).
pub fn userdata(group: Option<&Group>) -> Option<String> {
    raw(air(group, "userdata")?)
}

/// A refusal: status, the JSON error's `code`, and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// `Allow` for a 405.
    pub allow: Option<&'static str>,
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    /// The JSON body, `{"code","message"}` as the control API's errors.
    pub fn body(&self) -> String {
        serde_json::json!({"code": self.code, "message": self.message}).to_string()
    }
}

/// Decides whether the caller (`caller_imsi`, its group's `settings`) may
/// do what it asked. Order: Metadata off for the group, then another
/// SIM's IMSI (whatever the call), then an unknown call or method, then a
/// write to read-only metadata.
pub fn decide(parsed: Parsed, caller_imsi: &str, settings: &Settings) -> Result<Op, Refusal> {
    if !settings.enabled {
        return Err(Refusal::new(
            403,
            "metadata_disabled",
            "the Metadata service is not enabled for this SIM's group \
             (SoracomAir metadata.enabled)",
        ));
    }
    if parsed.imsi.as_deref().is_some_and(|i| i != caller_imsi) {
        return Err(Refusal::new(
            403,
            "forbidden",
            "a SIM may read and change only itself through the Metadata service",
        ));
    }
    let op = match parsed.target {
        Ok(op) => op,
        Err(RouteError::NotFound) => {
            return Err(Refusal::new(
                404,
                "not_found",
                "no such Metadata call; try GET /v1/subscriber, /v1/subscriber.{field}, \
                 /v1/userdata or PUT /v1/subscriber/tags",
            ))
        }
        Err(RouteError::NotMapped) => {
            return Err(Refusal::new(
                404,
                "not_mapped",
                "this call is not offered by the Metadata service here: only \
                 GET /v1/subscribers/{imsi}, PUT …/tags and DELETE …/tags/{name}",
            ))
        }
        Err(RouteError::MethodNotAllowed(allow)) => {
            return Err(Refusal {
                allow: Some(allow),
                ..Refusal::new(
                    405,
                    "method_not_allowed",
                    format!("this path takes {allow}"),
                )
            })
        }
        Err(RouteError::BadEncoding) => {
            return Err(Refusal::new(
                400,
                "invalid_request",
                "the path's percent-escapes are not UTF-8",
            ))
        }
    };
    if settings.readonly && op.is_write() {
        return Err(Refusal::new(
            403,
            "metadata_readonly",
            "the Metadata service is read-only for this SIM's group \
             (SoracomAir metadata.readonly)",
        ));
    }
    Ok(op)
}

/// One field of a rendered subscriber as its raw value: `tags.{name}` is
/// the tag `name` whole; other names walk nested objects by dots
/// (`sessionStatus.imei`). `None` when absent or null.
pub fn field(subscriber: &Value, name: &str) -> Option<String> {
    if let Some(tag) = name.strip_prefix("tags.") {
        return raw(subscriber.get("tags")?.get(tag)?);
    }
    let mut v = subscriber;
    for part in name.split('.') {
        v = v.get(part)?;
    }
    raw(v)
}

/// A string as is, null as absent, anything else as its JSON text.
fn raw(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn on() -> Settings {
        Settings {
            enabled: true,
            ..Settings::default()
        }
    }

    fn op(method: &str, path: &str) -> Result<Op, Refusal> {
        decide(parse(method, path), "001010000000001", &on())
    }

    #[test]
    fn own_forms_parse() {
        assert_eq!(op("GET", "/v1/subscriber"), Ok(Op::Subscriber));
        assert_eq!(
            op("GET", "/v1/subscriber.imsi"),
            Ok(Op::Field("imsi".into()))
        );
        assert_eq!(
            op("GET", "/v1/subscriber.tags.room%20a.b"),
            Ok(Op::Field("tags.room a.b".into()))
        );
        assert_eq!(op("GET", "/v1/userdata"), Ok(Op::Userdata));
        assert_eq!(op("PUT", "/v1/subscriber/tags"), Ok(Op::PutTags));
        assert_eq!(
            op("DELETE", "/v1/subscriber/tags/a%2Fb"),
            Ok(Op::DeleteTag("a/b".into()))
        );
        assert_eq!(op("OPTIONS", "/v1/subscriber/tags"), Ok(Op::Preflight));
        assert_eq!(op("OPTIONS", "/v1/subscriber.imsi"), Ok(Op::Preflight));
    }

    #[test]
    fn subscribers_forms_name_the_imsi() {
        let p = parse("GET", "/v1/subscribers/001010000000001");
        assert_eq!(p.imsi.as_deref(), Some("001010000000001"));
        assert_eq!(p.target, Ok(Op::Subscriber));
        assert_eq!(
            op("PUT", "/v1/subscribers/001010000000001/tags"),
            Ok(Op::PutTags)
        );
        assert_eq!(
            op("DELETE", "/v1/subscribers/001010000000001/tags/k"),
            Ok(Op::DeleteTag("k".into()))
        );
    }

    #[test]
    fn unknown_paths_methods_and_calls() {
        let status = |r: Result<Op, Refusal>| r.map_err(|e| (e.status, e.code, e.allow));
        assert_eq!(
            status(op("GET", "/v1/nothing")),
            Err((404, "not_found", None))
        );
        assert_eq!(
            status(op("GET", "/v1/subscriber.")),
            Err((404, "not_found", None))
        );
        assert_eq!(
            status(op("POST", "/v1/subscribers/001010000000001/set_group")),
            Err((404, "not_mapped", None))
        );
        assert_eq!(
            status(op("POST", "/v1/subscriber")),
            Err((405, "method_not_allowed", Some("GET, OPTIONS")))
        );
        assert_eq!(
            status(op("GET", "/v1/subscriber/tags")),
            Err((405, "method_not_allowed", Some("PUT, OPTIONS")))
        );
        assert_eq!(
            status(op("GET", "/v1/subscriber.tags.%FF")),
            Err((400, "invalid_request", None))
        );
    }

    #[test]
    fn another_sims_imsi_is_forbidden_whatever_the_call() {
        for (m, p) in [
            ("GET", "/v1/subscribers/001010000000002"),
            ("PUT", "/v1/subscribers/001010000000002/tags"),
            ("DELETE", "/v1/subscribers/001010000000002/tags/k"),
            ("POST", "/v1/subscribers/001010000000002/terminate"),
        ] {
            let e = op(m, p).unwrap_err();
            assert_eq!((e.status, e.code), (403, "forbidden"), "{m} {p}");
        }
    }

    #[test]
    fn disabled_and_readonly() {
        let off = Settings::default();
        let e = decide(parse("GET", "/v1/subscriber"), "001010000000001", &off).unwrap_err();
        assert_eq!((e.status, e.code), (403, "metadata_disabled"));
        let ro = Settings {
            readonly: true,
            ..on()
        };
        assert_eq!(
            decide(parse("GET", "/v1/subscriber"), "001010000000001", &ro),
            Ok(Op::Subscriber)
        );
        let e = decide(parse("PUT", "/v1/subscriber/tags"), "001010000000001", &ro).unwrap_err();
        assert_eq!((e.status, e.code), (403, "metadata_readonly"));
        assert_eq!(ro.allow_methods(), "GET, OPTIONS");
    }

    #[test]
    fn settings_and_userdata_from_the_group() {
        let mut g: Group = serde_json::from_value(json!({"id": "g"})).unwrap();
        assert_eq!(Settings::of(Some(&g)), Settings::default());
        assert_eq!(Settings::of(None), Settings::default());
        g.configuration.insert(
            AIR.into(),
            [
                (
                    "metadata".to_owned(),
                    json!({"enabled": true, "readonly": true, "allowOrigin": "https://x.example"}),
                ),
                ("userdata".to_owned(), json!("hello {\"a\":1}")),
            ]
            .into_iter()
            .collect(),
        );
        let s = Settings::of(Some(&g));
        assert!(s.enabled && s.readonly);
        assert_eq!(s.allow_origin.as_deref(), Some("https://x.example"));
        assert_eq!(userdata(Some(&g)).as_deref(), Some("hello {\"a\":1}"));
        assert_eq!(userdata(None), None);
    }

    #[test]
    fn fields_are_raw_values() {
        let s = json!({
            "imsi": "001010000000001",
            "groupId": null,
            "createdAt": 17,
            "tags": {"name": "dev-1", "a.b": "dotted"},
            "sessionStatus": {"online": true, "imei": "353000000000001"},
        });
        assert_eq!(field(&s, "imsi").as_deref(), Some("001010000000001"));
        assert_eq!(field(&s, "createdAt").as_deref(), Some("17"));
        assert_eq!(field(&s, "groupId"), None);
        assert_eq!(field(&s, "missing"), None);
        assert_eq!(field(&s, "tags.name").as_deref(), Some("dev-1"));
        assert_eq!(field(&s, "tags.a.b").as_deref(), Some("dotted"));
        assert_eq!(field(&s, "tags.none"), None);
        assert_eq!(
            field(&s, "sessionStatus.imei").as_deref(),
            Some("353000000000001")
        );
        assert_eq!(field(&s, "sessionStatus.online").as_deref(), Some("true"));
        assert_eq!(
            field(&s, "tags").as_deref(),
            Some(r#"{"a.b":"dotted","name":"dev-1"}"#)
        );
    }
}
