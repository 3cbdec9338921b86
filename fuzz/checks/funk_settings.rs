//! Properties of Funk's sans-IO parts (`simgate::services::funk::{settings,
//! request}`): the group's `SoracomFunk`, the event built from a device's
//! bytes, and the answers read from a function's response.
//!
//! Input: byte 0 picks the entry protocol (bits 0–1: UDP, TCP, HTTP),
//! whether insecure endpoints are allowed (bit 2) and the HTTP
//! Content-Type (bits 3–4: none, JSON, text, other); bytes 1–2 are a
//! response status. The rest, up to the first NUL, is the `SoracomFunk`
//! namespace as JSON (invalid UTF-8 replaced); after it, the device's
//! bytes (also tried as a Lambda ARN).
//!
//! Properties:
//! * `settings::parse` never panics; a usable Lambda has an Invoke path
//!   of `/2015-03-31/functions/{name}/invocations[?Qualifier=…]` with only
//!   `[A-Za-z0-9_-]` in the name, and, like an HTTPS function's URL, an
//!   `https://` endpoint unless insecure endpoints are allowed.
//! * `parse_arn` accepts only ARNs it can write back: the ARN rebuilt
//!   from its parts parses to the same function.
//! * `event` never panics; what it builds is JSON within the size limit:
//!   the bytes themselves (JSON), `{"payload": text}` (text) or
//!   `{"payload": base64}` decoding back to the bytes (binary); JSON is
//!   refused only for bytes that are not JSON, text only for non-UTF-8.
//! * The answers keep a status in 200..=599, and call a status `ok`
//!   exactly when it is 2xx (and no function error is reported).
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use base64::Engine as _;
use serde_json::Value;
use simgate::services::funk::request::{
    event, form, https_answer, lambda_answer, EventError, Form, MAX_EVENT_BYTES,
};
use simgate::services::funk::settings::{parse, ContentType, LambdaFunction, Target};
use simgate::services::funnel::SourceProtocol;

pub(crate) fn check(data: &[u8]) {
    let [flags, s_hi, s_lo, rest @ ..] = data else {
        return;
    };
    let protocol = match flags & 3 {
        0 => SourceProtocol::Udp,
        1 => SourceProtocol::Tcp,
        _ => SourceProtocol::Http,
    };
    let insecure = flags & 4 != 0;
    let http_type = [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("image/png"),
    ][usize::from((flags >> 3) & 3)];
    let status = u16::from_be_bytes([*s_hi, *s_lo]);
    let (config, payload) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };

    let mut content_type = ContentType::Auto;
    if let Ok(Value::Object(ns)) = serde_json::from_str::<Value>(&String::from_utf8_lossy(config)) {
        if let Ok(Some(s)) = parse(&ns, insecure) {
            content_type = s.content_type;
            match &s.target {
                Target::Lambda {
                    function, endpoint, ..
                } => {
                    let path = function.invoke_path();
                    let name = path
                        .strip_prefix("/2015-03-31/functions/")
                        .and_then(|p| p.split_once("/invocations"))
                        .map(|(n, _)| n)
                        .expect("the Invoke path");
                    assert!(!name.is_empty(), "{path}");
                    assert!(
                        name.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                        "{path}"
                    );
                    assert_secure(endpoint, insecure);
                }
                Target::Https { url } => assert_secure(url, insecure),
            }
        }
    }

    if let Some(f) = std::str::from_utf8(payload)
        .ok()
        .and_then(LambdaFunction::parse_arn)
    {
        let again = format!(
            "arn:aws:lambda:{}:{}:function:{}{}",
            f.region,
            f.account,
            f.name,
            f.qualifier
                .as_deref()
                .map(|q| format!(":{q}"))
                .unwrap_or_default()
        );
        assert_eq!(
            LambdaFunction::parse_arn(&again).as_ref(),
            Some(&f),
            "{again}"
        );
    }

    let chosen = form(content_type, protocol, http_type);
    match event(chosen, payload) {
        Ok(body) => {
            assert!(body.len() <= MAX_EVENT_BYTES);
            let v: Value = serde_json::from_slice(&body).expect("the event is JSON");
            match chosen {
                Form::Json => assert_eq!(body.as_ref(), payload),
                Form::Text => assert_eq!(v["payload"].as_str().map(str::as_bytes), Some(payload)),
                Form::Binary => {
                    let b64 = v["payload"].as_str().expect("a base64 string");
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("valid base64");
                    assert_eq!(bytes, payload);
                }
            }
        }
        Err(EventError::NotJson) => {
            assert_eq!(chosen, Form::Json);
            assert!(serde_json::from_slice::<Value>(payload).is_err());
        }
        Err(EventError::NotText) => {
            assert_eq!(chosen, Form::Text);
            assert!(std::str::from_utf8(payload).is_err());
        }
        Err(EventError::TooLarge(n)) => assert!(n > MAX_EVENT_BYTES),
    }

    let function_error = (flags & 0x20 != 0).then_some("Unhandled");
    let a = lambda_answer(status, function_error, None, payload.to_vec().into());
    assert!((200..=599).contains(&a.status), "{}", a.status);
    assert_eq!(
        a.outcome == "ok",
        function_error.is_none() && (200..300).contains(&status)
    );
    let a = https_answer(status, http_type, payload.to_vec().into());
    assert!((200..=599).contains(&a.status), "{}", a.status);
    assert_eq!(a.outcome == "ok", (200..300).contains(&status));
}

/// Schemes are case-insensitive (RFC 3986), and `http::Uri` reads them so.
fn assert_secure(url: &str, insecure: bool) {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    assert!(
        scheme.as_deref() == Some("https") || (insecure && scheme.as_deref() == Some("http")),
        "{url}"
    );
}
