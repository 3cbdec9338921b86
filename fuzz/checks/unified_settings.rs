//! Properties of the Unified Endpoint's response settings
//! (`simgate_control::model::unified`) and the answer built from them
//! (`simgate::services::unified::reply::compose`).
//!
//! Input: byte 0 is a bit set of which services answered successfully
//! (bits 0–3: beam, funnel, funk, harvest; bits 4–7: which of them took
//! part, none meaning harvest alone); the rest is the `response` value as
//! JSON text, or, when it is not JSON, a custom success body template.
//!
//! Properties:
//! * `ResponseFormat::from_namespace` never panics; an error names the
//!   namespace;
//! * a template without `{{` renders to itself; a parsed template renders
//!   every placeholder (what it renders with `""` is never longer than the
//!   template);
//! * `compose` never panics: auto with one service is that service's
//!   answer, unified is 200 exactly when every service succeeded, a
//!   one-service format is that service's answer or a 400 naming it, custom
//!   is the configured status.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use simgate::services::unified::reply::compose;
use simgate::services::Reply;
use simgate_control::model::unified::{ResponseFormat, Template, UnifiedService};

pub(crate) fn check(data: &[u8]) {
    let [bits, rest @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let response: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => {
            template(&text);
            json!({"format": "custom",
                   "success": {"statusCode": 200, "body": text},
                   "failure": {"statusCode": 500}})
        }
    };
    let ns: BTreeMap<String, Value> = [("response".to_owned(), response)].into_iter().collect();
    let format = match ResponseFormat::from_namespace(&ns) {
        Ok(f) => f,
        Err(e) => {
            assert!(e.to_string().starts_with("UnifiedEndpoint: "), "{e}");
            return;
        }
    };

    let took_part = match bits >> 4 {
        0 => 0b1000,
        n => n,
    };
    let replies: Vec<(UnifiedService, Reply)> = UnifiedService::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| took_part & (1 << i) != 0)
        .map(|(i, s)| {
            let status = if bits & (1 << i) != 0 { 201 } else { 502 };
            (s, Reply::error(status, "answer"))
        })
        .collect();
    let parts: Vec<(UnifiedService, &Reply)> = replies.iter().map(|(s, r)| (*s, r)).collect();
    let all_ok = parts.iter().all(|(_, r)| r.status == 201);
    let r = compose(&format, "001010000000001", &parts);
    match &format {
        ResponseFormat::Auto if parts.len() == 1 => assert_eq!(&r, parts[0].1),
        ResponseFormat::Auto | ResponseFormat::Unified => {
            assert_eq!(r.status, if all_ok { 200 } else { 207 });
            let v: Value = serde_json::from_slice(&r.body).expect("unified JSON");
            assert_eq!(v["statusCode"], r.status);
            let detail = v["body"]["detail"].as_object().expect("detail");
            assert_eq!(detail.len(), parts.len());
        }
        ResponseFormat::Service(s) => match parts.iter().find(|(n, _)| n == s) {
            Some((_, answer)) => assert_eq!(&r, *answer),
            None => {
                assert_eq!(r.status, 400);
                assert!(String::from_utf8_lossy(&r.body).contains(s.title()));
            }
        },
        ResponseFormat::Custom { success, failure } => {
            let want = if all_ok { success } else { failure };
            assert_eq!(r.status, want.status);
            assert_eq!(r.content_type, want.content_type);
            assert_eq!(r.line, r.body);
        }
    }
}

fn template(text: &str) {
    let Ok(t) = Template::parse(text) else {
        return;
    };
    if !text.contains("{{") {
        assert_eq!(
            t.render(|p| panic!("no placeholder in {text:?}, got {p:?}")),
            text
        );
    }
    assert!(t.render(|_| String::new()).len() <= text.len());
    let mut seen = 0;
    t.render(|_| {
        seen += 1;
        String::new()
    });
    assert_eq!(seen, text.matches("{{").count(), "{text:?}");
}
