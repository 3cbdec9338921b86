//! What Funk sends and how it reads the answer, sans-IO: the event built
//! from the device's bytes, the SIM's context (Lambda's client context,
//! the HTTPS functions' `x-soracom-token` claims), and the device's answer
//! from a Lambda or HTTPS function response.
//!
//! Nothing here touches a socket, a key or the clock: times and the `jti`
//! are arguments.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::settings::ContentType;
use crate::services::funnel::SourceProtocol;

/// Lambda's largest synchronous invocation payload.
pub const MAX_EVENT_BYTES: usize = 6 << 20;
/// `sub` of every `x-soracom-token` (SORACOM's value).
pub const TOKEN_SUBJECT: &str = "funk.soracom.io";
/// `typ` claim of every `x-soracom-token` (SORACOM's value).
pub const TOKEN_TYPE: &str = "soracom/token/v1";
/// How long an `x-soracom-token` is good for. SORACOM's example shows no
/// `exp`; a token without one could be replayed forever by anyone who saw
/// it, so simgate's expire (a function is invoked right away).
pub const TOKEN_LIFETIME_SECS: u64 = 300;

/// Why the device's bytes cannot become an event (the device's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the group's Funk takes JSON and the data is not JSON")]
    NotJson,
    #[error("the group's Funk takes text and the data is not UTF-8")]
    NotText,
    #[error("the event would be {0} bytes; a function takes at most {MAX_EVENT_BYTES}")]
    TooLarge(usize),
}

/// The form the bytes are sent in, once [`ContentType::Auto`] is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Json,
    Text,
    Binary,
}

/// Decides [`ContentType::Auto`] as SORACOM does: UDP and TCP are binary;
/// HTTP follows its `Content-Type` (JSON types as JSON, `text/*` as text,
/// anything else, or none, as binary).
pub fn form(
    content_type: ContentType,
    protocol: SourceProtocol,
    http_content_type: Option<&str>,
) -> Form {
    match content_type {
        ContentType::Json => Form::Json,
        ContentType::Text => Form::Text,
        ContentType::Binary => Form::Binary,
        ContentType::Auto => match protocol {
            SourceProtocol::Udp | SourceProtocol::Tcp => Form::Binary,
            SourceProtocol::Http => {
                let essence = http_content_type
                    .and_then(|c| c.split(';').next())
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if essence == "application/json" || essence.ends_with("+json") {
                    Form::Json
                } else if essence.starts_with("text/") {
                    Form::Text
                } else {
                    Form::Binary
                }
            }
        },
    }
}

/// The event (Lambda) or request body (HTTPS functions): JSON as it came;
/// text as `{"payload":"<text>"}`; anything else as
/// `{"payload":"<base64>"}`.
pub fn event(form: Form, payload: &[u8]) -> Result<Bytes, EventError> {
    let body = match form {
        Form::Json => {
            // Strings decoded, not skipped: the function must get an
            // event it can parse (Funnel's check, which the fuzzer hardened).
            if !crate::services::funnel::envelope::is_json(payload) {
                return Err(EventError::NotJson);
            }
            Bytes::copy_from_slice(payload)
        }
        Form::Text => {
            let text = std::str::from_utf8(payload).map_err(|_| EventError::NotText)?;
            Bytes::from(json!({ "payload": text }).to_string())
        }
        Form::Binary => Bytes::from(json!({ "payload": STANDARD.encode(payload) }).to_string()),
    };
    if body.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge(body.len()));
    }
    Ok(body)
}

/// The SIM facts a function is told.
#[derive(Debug, Clone, Copy)]
pub struct Sim<'a> {
    pub operator_id: &'a str,
    pub coverage: &'a str,
    pub imsi: &'a str,
    pub sim_id: Option<&'a str>,
    pub imei: Option<&'a str>,
    pub protocol: SourceProtocol,
}

impl Sim<'_> {
    /// `srn:soracom:{operatorId}:{coverage}:Subscriber:{imsi}`.
    pub fn srn(&self) -> String {
        format!(
            "srn:soracom:{}:{}:Subscriber:{}",
            self.operator_id, self.coverage, self.imsi
        )
    }

    /// SORACOM's context object (absent facts left out, not null).
    pub fn context(&self) -> Map<String, Value> {
        let mut c = Map::new();
        let mut put = |k: &str, v: &str| {
            c.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        put("operatorId", self.operator_id);
        put("coverage", self.coverage);
        put("resourceType", "Subscriber");
        put("resourceId", self.imsi);
        put("sourceProtocol", self.protocol.as_str());
        put("srn", &self.srn());
        put("imsi", self.imsi);
        if let Some(s) = self.sim_id {
            put("simId", s);
        }
        if let Some(i) = self.imei {
            put("imei", i);
        }
        c
    }
}

/// `X-Amz-Client-Context`: base64 of `{"custom": context}` (what Lambda
/// hands the function as `context.client_context.custom`).
pub fn client_context(sim: &Sim<'_>) -> String {
    STANDARD.encode(json!({ "custom": sim.context() }).to_string())
}

/// The claims of an HTTPS function's `x-soracom-token`, SORACOM's set plus
/// `exp` ([`TOKEN_LIFETIME_SECS`]).
pub fn token_claims(issuer: &str, sim: &Sim<'_>, now_secs: u64, jti: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": sim.srn(),
        "sub": TOKEN_SUBJECT,
        "typ": TOKEN_TYPE,
        "iat": now_secs,
        "exp": now_secs.saturating_add(TOKEN_LIFETIME_SECS),
        "jti": jti,
        "ctx": sim.context(),
    })
}

/// What the device is answered, before it becomes a [`crate::services::Reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub content_type: &'static str,
    /// The metric's `outcome`.
    pub outcome: &'static str,
}

/// The device's answer to a Lambda Invoke response: `200` and the
/// function's result; a function that failed (`X-Amz-Function-Error`) is
/// `500` with the function's error document; Lambda refusing the call
/// (throttled, unknown function, bad signature…) is `502` naming its error.
pub fn lambda_answer(
    status: u16,
    function_error: Option<&str>,
    error_type: Option<&str>,
    body: Bytes,
) -> Answer {
    if let Some(kind) = function_error {
        return Answer {
            status: 500,
            body: if body.is_empty() {
                Bytes::from(json!({ "errorType": kind }).to_string())
            } else {
                body
            },
            content_type: "application/json",
            outcome: "function_error",
        };
    }
    if (200..300).contains(&status) {
        return Answer {
            status: 200,
            content_type: "application/json",
            body,
            outcome: "ok",
        };
    }
    let message = format!(
        "AWS Lambda refused the invocation: HTTP {status}{}{}",
        if error_type.is_some() { " " } else { "" },
        error_type.unwrap_or("")
    );
    Answer {
        status: if status == 429 { 429 } else { 502 },
        body: Bytes::from(message),
        content_type: "text/plain",
        outcome: "refused",
    }
}

/// The device's answer to an HTTPS function's response: its status (an
/// invalid one as `502`) and body, with the content type narrowed to one
/// of JSON, text or bytes.
pub fn https_answer(status: u16, content_type: Option<&str>, body: Bytes) -> Answer {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let content_type = if essence == "application/json" || essence.ends_with("+json") {
        "application/json"
    } else if essence.starts_with("text/") {
        "text/plain"
    } else {
        "application/octet-stream"
    };
    let (status, outcome) = match status {
        200..=299 => (status, "ok"),
        400..=599 => (status, "function_error"),
        _ => (502, "refused"),
    };
    Answer {
        status,
        body,
        content_type,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Sim<'static> {
        Sim {
            operator_id: "OP0000000001",
            coverage: "jp",
            imsi: "440101234567890",
            sim_id: None,
            imei: Some("353000000000001"),
            protocol: SourceProtocol::Udp,
        }
    }

    #[test]
    fn forms_follow_soracoms_table() {
        use SourceProtocol::{Http, Tcp, Udp};
        let auto = ContentType::Auto;
        assert_eq!(form(auto, Udp, Some("application/json")), Form::Binary);
        assert_eq!(form(auto, Tcp, None), Form::Binary);
        assert_eq!(
            form(auto, Http, Some("application/json; charset=utf-8")),
            Form::Json
        );
        assert_eq!(form(auto, Http, Some("text/csv")), Form::Text);
        assert_eq!(form(auto, Http, None), Form::Binary);
        assert_eq!(form(ContentType::Json, Udp, None), Form::Json);
        assert_eq!(
            form(ContentType::Binary, Http, Some("application/json")),
            Form::Binary
        );
    }

    #[test]
    fn events_as_soracom_documents_them() {
        let hello = br#"{"hello": "funk"}"#;
        assert_eq!(event(Form::Json, hello).unwrap(), &hello[..]);
        assert_eq!(
            event(Form::Text, hello).unwrap(),
            r#"{"payload":"{\"hello\": \"funk\"}"}"#
        );
        // SORACOM's own example of binary.
        assert_eq!(
            event(Form::Binary, br#"{"hello": "funk"}"#).unwrap(),
            r#"{"payload":"eyJoZWxsbyI6ICJmdW5rIn0="}"#
        );
        assert_eq!(event(Form::Json, b"nope"), Err(EventError::NotJson));
        assert_eq!(
            event(Form::Json, b"{\"a\xb0\": 1}"),
            Err(EventError::NotJson)
        );
        assert_eq!(
            event(Form::Json, br#"["\ud800"]"#),
            Err(EventError::NotJson)
        );
        assert_eq!(event(Form::Text, b"\xff"), Err(EventError::NotText));
        assert!(matches!(
            event(Form::Binary, &vec![0u8; MAX_EVENT_BYTES]),
            Err(EventError::TooLarge(_))
        ));
    }

    #[test]
    fn context_and_token() {
        let s = sim();
        let custom: Value =
            serde_json::from_slice(&STANDARD.decode(client_context(&s)).unwrap()).unwrap();
        assert_eq!(
            custom,
            json!({"custom": {
                "operatorId": "OP0000000001", "coverage": "jp",
                "resourceType": "Subscriber", "resourceId": "440101234567890",
                "sourceProtocol": "udp",
                "srn": "srn:soracom:OP0000000001:jp:Subscriber:440101234567890",
                "imsi": "440101234567890", "imei": "353000000000001",
            }})
        );
        let c = token_claims("https://soracom.io", &s, 1_000, "j");
        assert_eq!(
            c["aud"],
            "srn:soracom:OP0000000001:jp:Subscriber:440101234567890"
        );
        assert_eq!(c["sub"], TOKEN_SUBJECT);
        assert_eq!(c["typ"], TOKEN_TYPE);
        assert_eq!(c["exp"], 1_300);
        assert_eq!(c["ctx"], custom["custom"]);
    }

    #[test]
    fn answers() {
        let a = lambda_answer(200, None, None, Bytes::from_static(b"{\"ok\":1}"));
        assert_eq!((a.status, a.outcome), (200, "ok"));
        let a = lambda_answer(200, Some("Unhandled"), None, Bytes::new());
        assert_eq!((a.status, a.outcome), (500, "function_error"));
        assert_eq!(a.body, r#"{"errorType":"Unhandled"}"#);
        let a = lambda_answer(404, None, Some("ResourceNotFoundException"), Bytes::new());
        assert_eq!((a.status, a.outcome), (502, "refused"));
        assert!(String::from_utf8_lossy(&a.body).contains("ResourceNotFoundException"));
        assert_eq!(lambda_answer(429, None, None, Bytes::new()).status, 429);
        let a = https_answer(201, Some("text/html"), Bytes::new());
        assert_eq!((a.status, a.content_type), (201, "text/plain"));
        assert_eq!(
            https_answer(503, None, Bytes::new()).outcome,
            "function_error"
        );
        assert_eq!(https_answer(302, None, Bytes::new()).status, 502);
    }
}
