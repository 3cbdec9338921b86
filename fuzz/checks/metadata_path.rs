//! Properties of the Metadata service's request decisions
//! (`simgate::services::metadata::route`).
//!
//! Input: byte 0 picks the method (GET, PUT, DELETE, OPTIONS, POST), byte 1
//! the group's settings (bit 0 enabled, bit 1 read-only) and whether the
//! caller is `001010000000001`; the rest is the path (invalid UTF-8
//! replaced).
//!
//! Properties:
//! * `parse` never panics; a write is only ever PUT or DELETE, a preflight
//!   only OPTIONS, a read only GET.
//! * `decide` refuses everything when Metadata is off, anything naming
//!   another SIM's IMSI, and every write when read-only; whatever it allows
//!   is what `parse` found. Refusals have a 4xx status, a code and a JSON
//!   body that parses; a 405 carries `Allow`.
//! * `field` on a rendered subscriber never panics.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use simgate::services::metadata::route::{decide, field, parse, Op, Settings};

const METHODS: [&str; 5] = ["GET", "PUT", "DELETE", "OPTIONS", "POST"];
const CALLER: &str = "001010000000001";

pub(crate) fn check(data: &[u8]) {
    let [m, flags, rest @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    let path = String::from_utf8_lossy(rest);
    let parsed = parse(method, &path);
    if let Ok(op) = &parsed.target {
        match op {
            Op::PutTags => assert_eq!(method, "PUT", "{path}"),
            Op::DeleteTag(_) => assert_eq!(method, "DELETE", "{path}"),
            Op::Preflight => assert_eq!(method, "OPTIONS", "{path}"),
            Op::Subscriber | Op::Field(_) | Op::Userdata => assert_eq!(method, "GET", "{path}"),
        }
    }
    let settings = Settings {
        enabled: flags & 1 == 1,
        readonly: flags & 2 == 2,
        allow_origin: None,
    };
    let names_other = parsed.imsi.as_deref().is_some_and(|i| i != CALLER);
    let expected = parsed.target.clone();
    match decide(parsed, CALLER, &settings) {
        Ok(op) => {
            assert!(settings.enabled, "allowed while off: {path}");
            assert!(!names_other, "allowed another SIM: {path}");
            assert!(
                !(settings.readonly && op.is_write()),
                "write while read-only: {path}"
            );
            assert_eq!(Ok(op), expected, "{path}");
        }
        Err(r) => {
            assert!((400..500).contains(&r.status), "{r:?}");
            assert!(!r.code.is_empty());
            let body: serde_json::Value = serde_json::from_str(&r.body()).expect("JSON body");
            assert_eq!(body["code"], r.code);
            assert_eq!(r.status == 405, r.allow.is_some(), "{r:?}");
        }
    }
    let subscriber = serde_json::json!({
        "imsi": CALLER, "groupId": "g", "tags": {"name": "a", "x.y": "b"},
        "sessionStatus": {"online": true, "imei": "353000000000001"}, "msisdn": null,
    });
    if let Some(name) = path.rsplit('.').next() {
        let _ = field(&subscriber, name);
    }
    let _ = field(&subscriber, &path);
}
