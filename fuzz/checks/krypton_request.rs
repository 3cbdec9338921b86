//! Properties of the Krypton service's request parsing
//! (`simgate::services::krypton::request`).
//!
//! Input: byte 0 picks the method (GET, POST, HEAD, PUT); the rest is the
//! path, then a NUL, then a body that is read both as a bootstrap request
//! and, when it is a JSON object, as a group's `SoracomKrypton` namespace.
//!
//! Properties:
//! * `parse` never panics; bootstrap and register only for POST on their
//!   exact paths; a registration poll only for GET or HEAD, its id a
//!   well-formed operation id that is exactly the path's last part.
//! * `BootstrapRequest::parse` never panics; an accepted validity is in
//!   1..=MAX_VALIDITY_DAYS and, written again as SORACOM's
//!   `requestParameters`, parses back the same.
//! * `Settings::from_namespace` never panics; accepted settings have a
//!   validity in range, a host that is non-empty and short, a key
//!   algorithm whose name reads back as itself; and the validity issued
//!   for any accepted request is at least a day and never past the
//!   group's.
//!
//! * `der::ca_fields` (the CA certificate reader) never panics on the
//!   whole input; what it accepts has a SubjectPublicKeyInfo that is a
//!   DER SEQUENCE inside the input, and names whose attributes all have
//!   an OID of at least two arcs.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use std::collections::BTreeMap;

use serde_json::Value;
use simgate::services::krypton::der::ca_fields;
use simgate::services::krypton::request::{
    parse, BootstrapRequest, KeyAlgorithm, Op, OperationId, Settings, MAX_VALIDITY_DAYS, PREFIX,
};

const METHODS: [&str; 4] = ["GET", "POST", "HEAD", "PUT"];

pub(crate) fn check(data: &[u8]) {
    if let Ok(f) = ca_fields(data) {
        assert_eq!(f.spki.first(), Some(&0x30));
        assert!(data.windows(f.spki.len()).any(|w| w == f.spki.as_slice()));
        assert!(f.subject.iter().flatten().all(|a| a.oid.len() >= 2));
    }
    let [m, rest @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    let (path, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let path = String::from_utf8_lossy(path);
    match parse(method, &path) {
        Ok(Op::Bootstrap) => {
            assert_eq!(method, "POST");
            assert_eq!(path, format!("{PREFIX}/bootstrap"));
        }
        Ok(Op::Register) => {
            assert_eq!(method, "POST");
            assert_eq!(path, format!("{PREFIX}/register"));
        }
        Ok(Op::Registration(id)) => {
            assert!(matches!(method, "GET" | "HEAD"), "{method}");
            assert_eq!(OperationId::parse(id.as_str()), Some(id.clone()));
            assert_eq!(path, format!("{PREFIX}/registrations/{}", id.as_str()));
        }
        Err(_) => {}
    }

    let request = BootstrapRequest::parse(body);
    if let Ok(r) = request {
        if let Some(d) = r.validity_days {
            assert!((1..=MAX_VALIDITY_DAYS).contains(&d), "{d}");
            let again = format!(r#"{{"requestParameters":{{"validityDays":{d}}}}}"#);
            assert_eq!(BootstrapRequest::parse(again.as_bytes()), Ok(r));
        }
    }

    let Ok(Value::Object(ns)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let ns: BTreeMap<String, Value> = ns.into_iter().collect();
    let Ok(s) = Settings::from_namespace(&ns) else {
        return;
    };
    assert!((1..=MAX_VALIDITY_DAYS).contains(&s.validity_days));
    if let Some(h) = &s.host {
        assert!(!h.is_empty() && h.len() <= 253, "{h:?}");
    }
    assert_eq!(
        KeyAlgorithm::from_name(s.key_algorithm.name()),
        Some(s.key_algorithm)
    );
    assert_eq!(
        s.enabled,
        ns.get("enabled").and_then(Value::as_bool).unwrap_or(false)
    );
    if let Ok(r) = request {
        let days = r.validity_days(&s);
        assert!(days >= 1 && days <= s.validity_days, "{days}");
    }
}
