//! The answer a device gets from the Unified Endpoint once every service it
//! reached has answered: pure, from the services' replies and the group's
//! [`ResponseFormat`].

use std::borrow::Cow;

use bytes::Bytes;
use simgate_control::model::unified::{
    CustomResponse, Placeholder, ResponseFormat, UnifiedService,
};

use crate::services::Reply;

/// One service's answer, as the device would have had it from the service.
pub type Part<'a> = (UnifiedService, &'a Reply);

/// Whether a service's answer counts as a success (SORACOM: any 2xx).
fn ok(r: &Reply) -> bool {
    (200..300).contains(&r.status)
}

/// Composes the answer. `parts` holds the answers of the services that got
/// the message, in [`UnifiedService`] order; it is never empty.
pub fn compose(format: &ResponseFormat, imsi: &str, parts: &[Part<'_>]) -> Reply {
    match format {
        ResponseFormat::Auto => match parts {
            [(_, only)] => (*only).clone(),
            _ => unified(parts),
        },
        ResponseFormat::Unified => unified(parts),
        ResponseFormat::Service(s) => match parts.iter().find(|(name, _)| name == s) {
            Some((_, r)) => (*r).clone(),
            None => Reply::error(
                400,
                &format!(
                    "the Unified Endpoint answers with {} ({}), which is not enabled \
                     for this SIM's group",
                    s.title(),
                    s.format_name()
                ),
            ),
        },
        ResponseFormat::Custom { success, failure } => {
            let all_ok = parts.iter().all(|(_, r)| ok(r));
            custom(if all_ok { success } else { failure }, imsi, parts)
        }
    }
}

/// SORACOM's unified JSON: 200 and `"ok"` when every service succeeded,
/// else 207 and `"ng"`, with each service's status and body.
fn unified(parts: &[Part<'_>]) -> Reply {
    let all_ok = parts.iter().all(|(_, r)| ok(r));
    let mut detail = serde_json::Map::new();
    for (name, r) in parts {
        detail.insert(
            name.as_str().to_owned(),
            serde_json::json!({"statusCode": r.status, "body": String::from_utf8_lossy(&r.body)}),
        );
    }
    let status = unified_status(all_ok);
    let json = serde_json::json!({
        "statusCode": status,
        "body": {"result": result(all_ok), "detail": detail},
    });
    let text = json.to_string();
    Reply {
        status,
        line: Bytes::from(format!("{status} {text}")),
        body: Bytes::from(text),
        content_type: Cow::Borrowed("application/json"),
        retry_after: None,
        close: false,
        silent_on_udp: false,
    }
}

fn unified_status(all_ok: bool) -> u16 {
    if all_ok {
        200
    } else {
        207
    }
}

fn result(all_ok: bool) -> &'static str {
    if all_ok {
        "ok"
    } else {
        "ng"
    }
}

/// A Custom answer: the configured status and body with its placeholders
/// filled; UDP and TCP devices receive the body alone, since fixing the
/// bytes a device parses is what the Custom format is for.
fn custom(c: &CustomResponse, imsi: &str, parts: &[Part<'_>]) -> Reply {
    let all_ok = parts.iter().all(|(_, r)| ok(r));
    let find = |s: UnifiedService| parts.iter().find(|(n, _)| *n == s).map(|(_, r)| *r);
    let body = c.body.render(|p| match p {
        Placeholder::Imsi => imsi.to_owned(),
        Placeholder::Result => result(all_ok).to_owned(),
        Placeholder::StatusCode => unified_status(all_ok).to_string(),
        Placeholder::ServiceStatus(s) => find(s).map(|r| r.status.to_string()).unwrap_or_default(),
        Placeholder::ServiceBody(s) => find(s)
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .unwrap_or_default(),
    });
    let body = Bytes::from(body);
    Reply {
        status: c.status,
        line: body.clone(),
        body,
        content_type: Cow::Owned(c.content_type.clone()),
        retry_after: None,
        close: false,
        silent_on_udp: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn format(v: Value) -> ResponseFormat {
        let ns = serde_json::from_value(json!({ "response": v })).unwrap_or_default();
        ResponseFormat::from_namespace(&ns).unwrap_or_else(|e| panic!("{e}"))
    }

    fn body(r: &Reply) -> Value {
        serde_json::from_slice(&r.body).unwrap_or_default()
    }

    #[test]
    fn auto_answers_as_the_only_service_else_unified() {
        let harvest = Reply::ok(201, "201\n");
        let funnel = Reply::error(400, "Invalid JSON is send to funnel.");
        let only = compose(
            &ResponseFormat::Auto,
            "001",
            &[(UnifiedService::Harvest, &harvest)],
        );
        assert_eq!(only, harvest);
        let both = compose(
            &ResponseFormat::Auto,
            "001",
            &[
                (UnifiedService::Funnel, &funnel),
                (UnifiedService::Harvest, &harvest),
            ],
        );
        assert_eq!(both.status, 207);
        assert_eq!(body(&both)["body"]["result"], "ng");
        assert_eq!(body(&both)["body"]["detail"]["funnel"]["statusCode"], 400);
        assert_eq!(body(&both)["body"]["detail"]["harvest"]["statusCode"], 201);
    }

    #[test]
    fn unified_even_for_one_service() {
        let harvest = Reply::ok(201, "201\n");
        let r = compose(
            &format(json!({"format": "unified"})),
            "001",
            &[(UnifiedService::Harvest, &harvest)],
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            body(&r),
            json!({"statusCode": 200, "body": {"result": "ok",
                "detail": {"harvest": {"statusCode": 201, "body": ""}}}})
        );
        assert!(r.line.starts_with(b"200 {"));
    }

    #[test]
    fn one_service_format_picks_its_answer() {
        let harvest = Reply::ok(201, "201\n");
        let funnel = Reply::error(400, "bad");
        let parts = [
            (UnifiedService::Funnel, &funnel),
            (UnifiedService::Harvest, &harvest),
        ];
        let r = compose(&format(json!({"format": "SoracomHarvest"})), "001", &parts);
        assert_eq!(r, harvest);
        let r = compose(&format(json!({"format": "SoracomBeam"})), "001", &parts);
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("Beam"));
    }

    #[test]
    fn custom_fills_the_success_or_failure_template() {
        let f = format(json!({"format": "custom",
            "success": {"statusCode": 202, "contentType": "application/json",
                        "body": "{\"ok\":\"{{imsi}}\",\"h\":{{harvest.statusCode}}}"},
            "failure": {"statusCode": 503, "body": "NG {{result}} funnel={{funnel.statusCode}} {{funnel.body}}"}}));
        let harvest = Reply::ok(201, "201\n");
        let good = compose(
            &f,
            "001010000000001",
            &[(UnifiedService::Harvest, &harvest)],
        );
        assert_eq!(good.status, 202);
        assert_eq!(good.content_type, "application/json");
        assert_eq!(body(&good), json!({"ok": "001010000000001", "h": 201}));
        assert_eq!(good.line, good.body);
        let funnel = Reply::error(429, "busy");
        let bad = compose(
            &f,
            "001010000000001",
            &[
                (UnifiedService::Funnel, &funnel),
                (UnifiedService::Harvest, &harvest),
            ],
        );
        assert_eq!(bad.status, 503);
        assert_eq!(&bad.body[..], b"NG ng funnel=429 busy");
        assert_eq!(bad.content_type, "text/plain");
    }
}
