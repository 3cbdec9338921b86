//! The Endorse service's requests and policy, sans-IO: the method and path
//! in, what to do out; the group's `SoracomEndorse` settings read from its
//! verbatim configuration; the `requestParameters` parsed from a query or
//! a form; the token's claims built from the SIM, the settings, the
//! parameters and a time and `jti` the caller passes in.
//!
//! Nothing here touches a socket, a key or the clock.

use serde_json::{json, Map, Value};
use simgate_control::Group;

/// The group configuration namespace SORACOM uses for Endorse.
const NAMESPACE: &str = "SoracomEndorse";

/// `aud` of every token (SORACOM's fixed value).
pub const AUDIENCE: &str = "soracom-endorse-audience";
/// `sub` of every token.
pub const SUBJECT: &str = "soracom-endorse";
/// `tokenTimeoutSeconds` when the group sets none. SORACOM's OpenAPI gives
/// no default; a day is what its documentation's examples imply.
pub const DEFAULT_TIMEOUT_SECS: u64 = 86_400;
/// `nbf` is this much before `iat`, for devices and verifiers whose clocks
/// run a little behind.
pub const NOT_BEFORE_SKEW_SECS: u64 = 60;
/// Most request parameters copied into a token (a token is a header
/// value for many verifiers; it should not grow without bound).
pub const MAX_PARAMETERS: usize = 64;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `GET /` (query parameters) or `POST /` (form parameters): a token.
    Token,
    /// `GET /v1/endorse/keys/{kid}`: one public key as PEM.
    Key(String),
    /// `GET /.well-known/jwks.json`: every published public key.
    Jwks,
}

impl Op {
    /// Whether this needs the caller's SIM (the public keys do not: anyone
    /// verifying a token fetches them).
    pub fn needs_identity(&self) -> bool {
        matches!(self, Self::Token)
    }
}

/// Why a request names nothing this service does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The `Allow` value.
    MethodNotAllowed(&'static str),
}

/// Parses `method` and `path` (without the query).
pub fn parse(method: &str, path: &str) -> Result<Op, RouteError> {
    let get_only = |op: Op| match method {
        "GET" | "HEAD" => Ok(op),
        _ => Err(RouteError::MethodNotAllowed("GET")),
    };
    match path {
        "/" | "" => match method {
            "GET" | "POST" => Ok(Op::Token),
            _ => Err(RouteError::MethodNotAllowed("GET, POST")),
        },
        "/.well-known/jwks.json" => get_only(Op::Jwks),
        _ => match path.strip_prefix("/v1/endorse/keys/") {
            Some(kid) if is_kid(kid) => get_only(Op::Key(kid.to_owned())),
            _ => Err(RouteError::NotFound),
        },
    }
}

/// `v1-<32 lowercase hex>-x509.pem`, the only key names simgate makes.
pub fn is_kid(s: &str) -> bool {
    s.strip_prefix("v1-")
        .and_then(|r| r.strip_suffix("-x509.pem"))
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Which of the SIM's facts a token carries
/// (`SoracomEndorse.parametersToEndorse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endorsed {
    pub imsi: bool,
    pub imei: bool,
    pub msisdn: bool,
    pub sim_id: bool,
    pub request_parameters: bool,
}

impl Default for Endorsed {
    /// SORACOM's default: the IMSI only.
    fn default() -> Self {
        Self {
            imsi: true,
            imei: false,
            msisdn: false,
            sim_id: false,
            request_parameters: false,
        }
    }
}

/// The group's `SoracomEndorse` settings. Without a group, or without
/// `enabled: true`, Endorse is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub endorsed: Endorsed,
    pub timeout_secs: u64,
    /// `allowOrigin`: sent as `Access-Control-Allow-Origin` on token answers.
    pub allow_origin: Option<String>,
    /// `authorizedRedirectUrls`: where a `redirect_url` may send the device.
    pub authorized_redirect_urls: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            endorsed: Endorsed::default(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            allow_origin: None,
            authorized_redirect_urls: Vec::new(),
        }
    }
}

impl Settings {
    pub fn of(group: Option<&Group>) -> Self {
        let Some(ns) = group.and_then(|g| g.configuration.get(NAMESPACE)) else {
            return Self::default();
        };
        let d = Endorsed::default();
        let p = ns.get("parametersToEndorse");
        let flag = |k: &str, dflt: bool| {
            p.and_then(|p| p.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(dflt)
        };
        Self {
            enabled: ns.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            endorsed: Endorsed {
                imsi: flag("imsi", d.imsi),
                imei: flag("imei", d.imei),
                msisdn: flag("msisdn", d.msisdn),
                sim_id: flag("simId", d.sim_id),
                request_parameters: flag("requestParameters", d.request_parameters),
            },
            timeout_secs: ns
                .get("tokenTimeoutSeconds")
                .and_then(Value::as_u64)
                .filter(|&t| t > 0)
                .unwrap_or(DEFAULT_TIMEOUT_SECS),
            allow_origin: ns
                .get("allowOrigin")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            authorized_redirect_urls: ns
                .get("authorizedRedirectUrls")
                .and_then(Value::as_array)
                .map(|urls| {
                    urls.iter()
                        .filter_map(Value::as_str)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Takes `redirect_url` out of the request parameters (it says where
    /// the token goes, it is not endorsed) and checks it against
    /// `authorizedRedirectUrls`: only an exact match is followed, so
    /// Endorse can never be made an open redirector.
    pub fn redirect_target(
        &self,
        params: &mut Map<String, Value>,
    ) -> Result<Option<String>, RedirectRefused> {
        let Some(Value::String(url)) = params.remove(REDIRECT_PARAMETER) else {
            return Ok(None);
        };
        if self.authorized_redirect_urls.contains(&url) {
            Ok(Some(url))
        } else {
            Err(RedirectRefused(url))
        }
    }
}

/// The request parameter naming where to send the token.
pub const REDIRECT_PARAMETER: &str = "redirect_url";

/// The parameter carrying the token to a redirect target.
pub const TOKEN_PARAMETER: &str = "soracom_endorse_token";

/// A `redirect_url` that is not in the group's `authorizedRedirectUrls`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redirect_url {0:?} is not in the group's SoracomEndorse authorizedRedirectUrls")]
pub struct RedirectRefused(pub String);

/// Where a GET with `redirect_url` goes: the URL with
/// `soracom_endorse_token=<token>` added to its query.
pub fn redirect_location(url: &str, token: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let sep = if base.contains('?') {
        if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    let mut out = format!("{base}{sep}{TOKEN_PARAMETER}={}", form_encode(token));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// The page a POST with `redirect_url` answers with: it posts the token
/// (and the request parameters) to the target as a form, which is how
/// SORACOM describes the target receiving `soracom_endorse_token` in the
/// POST body.
pub fn redirect_form(url: &str, token: &str, params: &Map<String, Value>) -> String {
    let mut fields = format!(
        "<input type=\"hidden\" name=\"{TOKEN_PARAMETER}\" value=\"{}\">",
        html_escape(token)
    );
    for (k, v) in params {
        if let Some(v) = v.as_str() {
            fields.push_str(&format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                html_escape(k),
                html_escape(v)
            ));
        }
    }
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>SORACOM Endorse</title></head>\
         <body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">{fields}\
         <noscript><button type=\"submit\">Continue</button></noscript></form></body></html>",
        html_escape(url)
    )
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Why request parameters cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    /// A percent-escape decodes to bytes that are not UTF-8.
    BadEncoding,
    /// More than [`MAX_PARAMETERS`].
    TooMany,
}

/// Parses `application/x-www-form-urlencoded` text (a query string or a
/// form body): `+` is a space, `%XX` a byte (a `%` without two hex digits
/// is kept as is), a name without `=` has the empty value, empty pieces
/// are skipped, and a repeated name keeps its last value.
pub fn parse_params(text: &[u8]) -> Result<Map<String, Value>, ParamError> {
    let mut out = Map::new();
    for piece in text.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &[][..]),
        };
        let name = decode(name)?;
        if !out.contains_key(&name) && out.len() == MAX_PARAMETERS {
            return Err(ParamError::TooMany);
        }
        out.insert(name, Value::String(decode(value)?));
    }
    Ok(out)
}

fn decode(b: &[u8]) -> Result<String, ParamError> {
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
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
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ParamError::BadEncoding)
}

/// The SIM facts a token may carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sim<'a> {
    pub imsi: &'a str,
    pub imei: Option<&'a str>,
    pub msisdn: Option<&'a str>,
    pub sim_id: Option<&'a str>,
}

/// The token's claims, exactly SORACOM's set: `iss`, `aud`, `sub`, `iat`,
/// `nbf` (`iat` − 60), `exp` (`iat` + the group's timeout), `jti`, and
/// `soracom-endorse-claim` with the facts the group endorses (an absent
/// fact is left out, not null; `requestParameters` only when some were
/// sent).
pub fn claims(
    issuer: &str,
    sim: &Sim<'_>,
    settings: &Settings,
    params: Map<String, Value>,
    now_secs: u64,
    jti: &str,
) -> Value {
    let e = settings.endorsed;
    let mut c = Map::new();
    let mut put = |on: bool, k: &str, v: Option<&str>| {
        if let (true, Some(v)) = (on, v) {
            c.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    };
    put(e.imsi, "imsi", Some(sim.imsi));
    put(e.imei, "imei", sim.imei);
    put(e.msisdn, "msisdn", sim.msisdn);
    put(e.sim_id, "simId", sim.sim_id);
    if e.request_parameters && !params.is_empty() {
        c.insert("requestParameters".into(), Value::Object(params));
    }
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "iat": now_secs,
        "nbf": now_secs.saturating_sub(NOT_BEFORE_SKEW_SECS),
        "exp": now_secs.saturating_add(settings.timeout_secs),
        "jti": jti,
        "soracom-endorse-claim": c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("GET", "/"), Ok(Op::Token));
        assert_eq!(parse("POST", "/"), Ok(Op::Token));
        assert_eq!(
            parse("PUT", "/"),
            Err(RouteError::MethodNotAllowed("GET, POST"))
        );
        assert_eq!(parse("GET", "/.well-known/jwks.json"), Ok(Op::Jwks));
        let kid = "v1-0123456789abcdef0123456789abcdef-x509.pem";
        assert_eq!(
            parse("GET", &format!("/v1/endorse/keys/{kid}")),
            Ok(Op::Key(kid.into()))
        );
        assert_eq!(
            parse("GET", "/v1/endorse/keys/../etc"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            parse(
                "GET",
                "/v1/endorse/keys/v1-0123456789ABCDEF0123456789abcdef-x509.pem"
            ),
            Err(RouteError::NotFound)
        );
        assert_eq!(parse("GET", "/x"), Err(RouteError::NotFound));
        assert!(Op::Token.needs_identity() && !Op::Jwks.needs_identity());
    }

    #[test]
    fn params_decode_like_forms() {
        let p = parse_params(b"a=1&b=x+y%21&&c&a=2&%E3%81%82=%zz").unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"a": "2", "b": "x y!", "c": "", "あ": "%zz"})
        );
        assert!(parse_params(b"").unwrap().is_empty());
        assert_eq!(parse_params(b"a=%FF"), Err(ParamError::BadEncoding));
        let many: Vec<String> = (0..=MAX_PARAMETERS).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            parse_params(many.join("&").as_bytes()),
            Err(ParamError::TooMany)
        );
        let same: Vec<String> = (0..=MAX_PARAMETERS).map(|_| "k=v".to_owned()).collect();
        assert_eq!(parse_params(same.join("&").as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn settings_from_the_group() {
        let mut g: Group = serde_json::from_value(json!({"id": "g"})).unwrap();
        assert_eq!(Settings::of(Some(&g)), Settings::default());
        assert!(!Settings::of(None).enabled);
        g.configuration.insert(
            NAMESPACE.into(),
            [
                ("enabled".to_owned(), json!(true)),
                (
                    "parametersToEndorse".to_owned(),
                    json!({"imei": true, "imsi": false, "requestParameters": true}),
                ),
                ("tokenTimeoutSeconds".to_owned(), json!(600)),
            ]
            .into_iter()
            .collect(),
        );
        let s = Settings::of(Some(&g));
        assert!(s.enabled);
        assert_eq!(s.timeout_secs, 600);
        assert_eq!(
            s.endorsed,
            Endorsed {
                imsi: false,
                imei: true,
                msisdn: false,
                sim_id: false,
                request_parameters: true
            }
        );
    }

    #[test]
    fn redirects_only_to_authorized_urls() {
        let s = Settings {
            authorized_redirect_urls: vec!["https://app.example/login".into()],
            ..Settings::default()
        };
        let mut p =
            parse_params(b"user=sora&redirect_url=https%3A%2F%2Fapp.example%2Flogin").unwrap();
        assert_eq!(
            s.redirect_target(&mut p),
            Ok(Some("https://app.example/login".into()))
        );
        assert_eq!(p.len(), 1, "redirect_url is not endorsed: {p:?}");
        let mut p = parse_params(b"redirect_url=https://app.example/login/../evil").unwrap();
        assert!(s.redirect_target(&mut p).is_err());
        let mut p = parse_params(b"user=x").unwrap();
        assert_eq!(s.redirect_target(&mut p), Ok(None));
        assert_eq!(
            redirect_location("https://a.example/l?x=1#top", "a.b+c"),
            "https://a.example/l?x=1&soracom_endorse_token=a.b%2Bc#top"
        );
        assert_eq!(
            redirect_location("https://a.example/l", "t"),
            "https://a.example/l?soracom_endorse_token=t"
        );
        let form = redirect_form(
            "https://a.example/l?a=1&b=2",
            "t",
            &parse_params(b"u=<x>").unwrap(),
        );
        assert!(
            form.contains("action=\"https://a.example/l?a=1&amp;b=2\""),
            "{form}"
        );
        assert!(form.contains("name=\"u\" value=\"&lt;x&gt;\""), "{form}");
        assert!(
            form.contains("name=\"soracom_endorse_token\" value=\"t\""),
            "{form}"
        );
    }

    #[test]
    fn claims_follow_the_settings() {
        let sim = Sim {
            imsi: "001010000000001",
            imei: Some("353000000000001"),
            msisdn: None,
            sim_id: Some("8942"),
        };
        let mut s = Settings {
            enabled: true,
            ..Settings::default()
        };
        let params = parse_params(b"nonce=abc").unwrap();
        let c = claims("https://soracom.io", &sim, &s, params.clone(), 1000, "j1");
        assert_eq!(
            c,
            json!({
                "iss": "https://soracom.io", "aud": AUDIENCE, "sub": SUBJECT,
                "iat": 1000, "nbf": 940, "exp": 1000 + DEFAULT_TIMEOUT_SECS, "jti": "j1",
                "soracom-endorse-claim": {"imsi": "001010000000001"},
            })
        );
        s.endorsed = Endorsed {
            imsi: true,
            imei: true,
            msisdn: true,
            sim_id: true,
            request_parameters: true,
        };
        s.timeout_secs = 600;
        let c = claims("iss", &sim, &s, params, 1000, "j2");
        assert_eq!(c["exp"], 1600);
        assert_eq!(
            c["soracom-endorse-claim"],
            json!({"imsi": "001010000000001", "imei": "353000000000001",
                   "simId": "8942", "requestParameters": {"nonce": "abc"}})
        );
        let c = claims("iss", &sim, &s, Map::new(), 30, "j3");
        assert_eq!(c["nbf"], 0);
        assert!(c["soracom-endorse-claim"]
            .get("requestParameters")
            .is_none());
    }
}
