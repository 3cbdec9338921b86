//! Properties of the control API's JSON request bodies
//! (`simgate_control::api::bodies`) and of the pure checks the handlers
//! run on them (`store::configuration::{put, delete, render}`, `tag_map`,
//! `credential_of`, the id parsers).
//!
//! Input: byte 0 picks the body (modulo 9), byte 1 is a parameter, the rest
//! is the request body:
//! 0. `PUT /v1/groups/{id}/configuration/{ns}`: `[{"key","value"}]`, byte 1
//!    the namespace (low nibble, modulo 9) and whether the group has
//!    settings already (bit 4). A refused PUT changes nothing and is the
//!    client's fault; an accepted one shows what was sent (keys as sent for
//!    the verbatim namespaces), the group still round-trips through its
//!    stored JSON, PUTting what GET shows changes nothing, and deleting
//!    every shown key one by one succeeds and empties the namespace.
//! 1. `POST /v1/groups`, as the handler applies it: the id is checked
//!    exactly, unknown namespaces refused, and a created group
//!    round-trips.
//! 2. `PUT …/tags` (`[{"tagName","tagValue"}]`): `tag_map` accepts exactly
//!    names of 1 to 32 and values of up to 256 characters, the last value
//!    of a name winning.
//! 3. `POST /v1/subscribers`, 4. `POST /v1/subscribers/{imsi}/register`,
//!    5. `set_group` (byte 1 even) / `set_imei_lock` (odd), 7.
//!    `PUT /v1/sessions/{ip}`: every id is accepted exactly when it has its
//!    documented form, prints back as sent and round-trips through JSON; a
//!    SIM made of them round-trips too.
//! 6. `POST`/`PUT /v1/credentials/{id}`: `credential_of` keeps the type (as
//!    SORACOM names it) and a non-empty description of at most 1024
//!    characters; a stored credential serializes with every secret
//!    redacted; a refusal is 400 and never quotes a secret it was sent.
//! 8. `POST /v1/auth` (byte 1 even) / `POST /v1/tokens` (odd): never
//!    panics.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use simgate_control::api::bodies::{
    credential_of, tag_map, AuthRequest, ConfigurationEntry, CreateGroup, CreateToken,
    PutCredential, PutSession, RegisterSim, RegisterSubscriber, SetGroup, SetImeiLock, Status,
    TagUpdate,
};
use simgate_control::store::configuration::{self, Namespace};
use simgate_control::{
    BeamEntry, BeamEntryPoint, Credential, CredentialId, CredentialKind, Group, GroupId,
    HarvestConfig, IdError, Imei, Imsi, Msisdn, Secret, SimId, Subscriber, SubscriberStatus,
};

pub(crate) fn check(data: &[u8]) {
    let [part, param, body @ ..] = data else {
        return;
    };
    match part % 9 {
        0 => put_configuration(*param, body),
        1 => create_group(body),
        2 => tags(body),
        3 => {
            if let Some(r) = object::<RegisterSubscriber>(body) {
                let imsi = r.imsi.clone();
                register(&imsi, r.into());
            }
        }
        4 => {
            if let Some(r) = object::<RegisterSim>(body) {
                register("001010000000001", r);
            }
        }
        5 => set_group_or_lock(*param, body),
        6 => credential(body),
        7 => {
            if let Some(s) = json::<PutSession>(body) {
                id("IMSI", &s.imsi, digits(&s.imsi, 14, 15), Imsi::parse);
                if let Some(i) = &s.imei {
                    id("IMEI", i, digits(i, 14, 16), Imei::parse);
                }
                if let Some(m) = &s.msisdn {
                    id("MSISDN", m, msisdn_ok(m), Msisdn::parse);
                }
            }
        }
        _ => {
            if param % 2 == 0 {
                let _ = json::<AuthRequest>(body);
            } else {
                let _ = json::<CreateToken>(body);
            }
        }
    }
}

/// What `ApiJson<T>` accepts.
fn json<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

/// What `ApiObject<T>` accepts: one JSON object that reads as `T`.
fn object<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if !v.is_object() {
        return None;
    }
    serde_json::from_value(v).ok()
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    s.bytes().all(|b| b.is_ascii_digit()) && (min..=max).contains(&s.len())
}

fn msisdn_ok(s: &str) -> bool {
    digits(s.strip_prefix('+').unwrap_or(s), 1, 15)
}

/// Group and credential ids: 1 to 64 letters, digits, `-`, `_`, `.`.
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses an id, checking it against its documented form; a valid one
/// prints back as sent and is a JSON string that reads back to itself.
fn id<T>(what: &str, s: &str, valid: bool, parse: fn(&str) -> Result<T, IdError>) -> Option<T>
where
    T: Display + Debug + PartialEq + Serialize + DeserializeOwned,
{
    let parsed = parse(s);
    assert_eq!(parsed.is_ok(), valid, "{what} {s:?}: {parsed:?}");
    let v = parsed.ok()?;
    assert_eq!(v.to_string(), s);
    let j = serde_json::to_value(&v).expect("an id serializes");
    assert_eq!(j, Value::String(s.to_owned()));
    assert_eq!(serde_json::from_value::<T>(j).ok().as_ref(), Some(&v));
    Some(v)
}

/// The stored form of a group reads back as the same group.
fn round_trips<T>(v: &T)
where
    T: Debug + PartialEq + Serialize + DeserializeOwned,
{
    let j = serde_json::to_value(v).expect("serializes");
    let back: T = serde_json::from_value(j.clone()).unwrap_or_else(|e| panic!("{e}: {j}"));
    assert_eq!(&back, v, "{j}");
}

fn exists(id: &CredentialId) -> bool {
    !id.as_str().starts_with("missing")
}

fn entries(v: Value) -> Vec<(String, Value)> {
    serde_json::from_value::<Vec<ConfigurationEntry>>(v)
        .expect("configuration entries")
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect()
}

/// A group with nothing set, or with every modelled namespace and one
/// verbatim one set.
fn base_group(configured: bool) -> Group {
    let mut g = Group {
        id: GroupId::parse("g").expect("an id"),
        operator_id: None,
        name: String::new(),
        funnel: None,
        harvest: HarvestConfig::default(),
        beam: Default::default(),
        tags: BTreeMap::new(),
        configuration: BTreeMap::new(),
    };
    if configured {
        let settings = [
            (
                Namespace::Funnel,
                serde_json::json!([
                    {"key": "enabled", "value": true},
                    {"key": "destination", "value": {"provider": "aws", "service": "kinesis",
                        "resourceUrl": "https://kinesis.ap-northeast-1.amazonaws.com/s"}},
                    {"key": "credentialsId", "value": "kinesis"}]),
            ),
            (
                Namespace::Harvest,
                serde_json::json!([{"key": "enabled", "value": true}]),
            ),
            (
                Namespace::Beam,
                serde_json::json!([{"key": "http://beam.soracom.io:8888/",
                    "value": {"destination": "https://example.com/", "enabled": true}}]),
            ),
            (
                Namespace::Air,
                serde_json::json!([{"key": "userdata", "value": "hello"}]),
            ),
        ];
        for (ns, e) in settings {
            configuration::put(&mut g, ns, entries(e), &exists).expect("valid settings");
        }
    }
    g
}

fn put_configuration(param: u8, body: &[u8]) {
    let ns = Namespace::ALL[usize::from(param & 0x0f) % Namespace::ALL.len()];
    assert_eq!(configuration::namespace(ns.as_str()).ok(), Some(ns));
    let Some(sent) = json::<Vec<ConfigurationEntry>>(body) else {
        return;
    };
    let sent: Vec<(String, Value)> = sent.into_iter().map(|e| (e.key, e.value)).collect();
    let base = base_group(param & 0x10 != 0);
    let mut g = base.clone();
    if let Err(e) = configuration::put(&mut g, ns, sent.clone(), &exists) {
        assert!(e.is_client_error(), "{e}");
        assert_eq!(g, base, "a refused PUT changed the group: {e}");
        return;
    }
    round_trips(&g);
    let rendered = configuration::render(&g);
    // Only an empty PUT to a namespace with nothing set leaves it unshown.
    let shown = rendered.get(ns.as_str()).cloned().unwrap_or_else(|| {
        assert!(sent.is_empty(), "{} not shown after a PUT", ns.as_str());
        BTreeMap::new()
    });
    let last: BTreeMap<&str, &Value> = sent.iter().map(|(k, v)| (k.as_str(), v)).collect();
    match ns {
        Namespace::Funnel => assert!(g.funnel.is_some()),
        Namespace::Harvest => {
            if let Some(v) = last.get("enabled") {
                assert_eq!(shown.get("enabled"), Some(*v));
            }
        }
        Namespace::Beam => {
            let mut by_point: BTreeMap<BeamEntryPoint, &Value> = BTreeMap::new();
            for (k, v) in &sent {
                by_point.insert(BeamEntryPoint::parse(k).expect("accepted key"), v);
            }
            for (point, v) in by_point {
                let entry: BeamEntry = serde_json::from_value(v.clone()).expect("accepted entry");
                assert_eq!(g.beam.entries.get(&point), Some(&entry), "{point}");
                assert!(shown.contains_key(&point.key()), "{point} not shown");
                assert_eq!(BeamEntryPoint::parse(&point.key()).as_ref(), Ok(&point));
            }
        }
        _ => {
            configuration::check_verbatim(&g).expect("what PUT accepted is valid");
            for (k, v) in &last {
                assert_eq!(shown.get(*k), Some(*v), "{k}");
            }
        }
    }

    // PUT what GET shows: nothing shown changes.
    let mut again = g.clone();
    let shown_entries: Vec<(String, Value)> = shown.clone().into_iter().collect();
    configuration::put(&mut again, ns, shown_entries, &exists)
        .unwrap_or_else(|e| panic!("PUT of what GET shows refused: {e}"));
    assert_eq!(configuration::render(&again), rendered);

    // DELETE each shown key (as DELETE of the namespace does).
    let mut emptied = g.clone();
    for key in shown.keys() {
        let present = configuration::render(&emptied)
            .get(ns.as_str())
            .is_some_and(|m| m.contains_key(key));
        if present {
            configuration::delete(&mut emptied, ns, key)
                .unwrap_or_else(|e| panic!("DELETE of shown key {key:?} refused: {e}"));
        } else {
            let before = emptied.clone();
            assert!(configuration::delete(&mut emptied, ns, key).is_err());
            assert_eq!(emptied, before);
        }
    }
    let left = configuration::render(&emptied).remove(ns.as_str());
    if ns == Namespace::Harvest {
        assert_eq!(
            left,
            Some(BTreeMap::from([("enabled".to_owned(), Value::Bool(false))]))
        );
    } else {
        assert_eq!(left, None, "{} left after deleting every key", ns.as_str());
    }
    round_trips(&emptied);
}

fn create_group(body: &[u8]) {
    let Some(req) = object::<CreateGroup>(body) else {
        return;
    };
    let group_id = match &req.group_id {
        Some(s) => match id("group id", s, name_ok(s), GroupId::parse) {
            Some(g) => g,
            None => return,
        },
        None => GroupId::parse("generated").expect("an id"),
    };
    let mut g = Group {
        id: group_id,
        name: req.tags.get("name").cloned().unwrap_or_default(),
        tags: req.tags.clone(),
        ..base_group(false)
    };
    for (name, sent) in req.configuration {
        let parsed = configuration::namespace(&name);
        assert_eq!(
            parsed.is_ok(),
            Namespace::parse(&name).is_some(),
            "{name:?}"
        );
        let Ok(ns) = parsed else {
            return;
        };
        let before = g.clone();
        if let Err(e) = configuration::put(&mut g, ns, sent.into_iter().collect(), &exists) {
            assert!(e.is_client_error(), "{e}");
            assert_eq!(g, before);
            return;
        }
    }
    assert_eq!(g.tags, req.tags);
    round_trips(&g);
}

fn tags(body: &[u8]) {
    let Some(sent) = json::<Vec<TagUpdate>>(body) else {
        return;
    };
    let pairs: Vec<(String, String)> = sent
        .iter()
        .map(|t| (t.tag_name.clone(), t.tag_value.clone()))
        .collect();
    let valid = pairs
        .iter()
        .all(|(n, v)| (1..=32).contains(&n.chars().count()) && v.chars().count() <= 256);
    match tag_map(sent) {
        Ok(map) => {
            assert!(valid, "{pairs:?}");
            let expected: BTreeMap<String, String> = pairs.into_iter().collect();
            assert_eq!(map, expected);
        }
        Err(e) => {
            assert!(!valid, "refused: {}", e.message);
            assert_eq!(e.status.as_u16(), 400);
        }
    }
}

/// The API treats an empty optional id as absent.
fn present(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// An optional id as checked: absent is `Some(None)`, invalid `None`.
fn optional<T>(checked: Option<Option<T>>) -> Option<Option<T>> {
    checked.map_or(Some(None), |v| v.map(Some))
}

fn register(imsi: &str, req: RegisterSim) {
    let imsi = id("IMSI", imsi, digits(imsi, 14, 15), Imsi::parse);
    let imei = present(&req.imei).map(|s| id("IMEI", s, digits(s, 14, 16), Imei::parse));
    let msisdn = present(&req.msisdn).map(|s| id("MSISDN", s, msisdn_ok(s), Msisdn::parse));
    let sim_id = present(&req.sim_id).map(|s| id("SIM ID", s, digits(s, 18, 22), SimId::parse));
    let group_id = present(&req.group_id).map(|s| id("group id", s, name_ok(s), GroupId::parse));
    if let Some(st) = req.status {
        let ours = SubscriberStatus::from(st);
        assert_eq!(Status::from(ours), st);
        assert_eq!(
            serde_json::to_value(st).expect("a status"),
            Value::String(ours.as_str().to_owned())
        );
    }
    let (Some(imsi), Some(imei), Some(msisdn), Some(sim_id), Some(group_id)) = (
        imsi,
        optional(imei),
        optional(msisdn),
        optional(sim_id),
        optional(group_id),
    ) else {
        return;
    };
    let s = Subscriber {
        imsi,
        imei,
        msisdn,
        sim_id,
        operator_id: None,
        group_id,
        tags: req.tags,
        status: req.status.map_or(SubscriberStatus::Active, Into::into),
        imei_lock: None,
    };
    round_trips(&s);
}

fn set_group_or_lock(param: u8, body: &[u8]) {
    if param % 2 == 0 {
        if let Some(r) = object::<SetGroup>(body) {
            id(
                "group id",
                &r.group_id,
                name_ok(&r.group_id),
                GroupId::parse,
            );
        }
        return;
    }
    // `set_imei_lock`: no body (or `null`) locks to the known IMEI.
    let req = if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        Some(SetImeiLock::default())
    } else {
        object::<SetImeiLock>(body)
    };
    if let Some(i) = req.as_ref().and_then(|r| present(&r.imei)) {
        id("IMEI", i, digits(i, 14, 16), Imei::parse);
    }
}

const REDACTED: &str = "<redacted>";

/// The credential as its serialized form reads back: every secret
/// replaced by the redaction marker.
fn redacted(c: &Credential) -> Credential {
    let r = || Secret::new(REDACTED);
    let mut c = c.clone();
    match &mut c.kind {
        CredentialKind::Aws(a) => {
            a.secret_access_key = r();
            if let Some(t) = &mut a.session_token {
                *t = r();
            }
        }
        CredentialKind::Psk(p) => p.key = r(),
        CredentialKind::X509(x) => x.key = r(),
        CredentialKind::Azure(a) => a.key = r(),
        CredentialKind::GoogleServiceAccount(g) => g.credentials = r(),
    }
    c
}

/// Every string value inside `v` (not object keys).
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Every object key inside `v`.
fn keys(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            keys(x, out);
        }),
        _ => {}
    }
}

const TYPE_NAMES: &str =
    "aws-credentials, psk, x509, azure-credentials, google-service-account-json";

fn credential(body: &[u8]) {
    let Some(req) = object::<PutCredential>(body) else {
        return;
    };
    let kind = req.kind.clone();
    let description = req.description.clone();
    let sent = req.credentials.clone();
    let cid = CredentialId::parse("cred-1").expect("an id");
    match credential_of(cid.clone(), req) {
        Ok(c) => {
            assert_eq!(c.id, cid);
            let expected_type = if kind == "aws" {
                "aws-credentials"
            } else {
                kind.as_str()
            };
            assert_eq!(c.kind.type_name(), expected_type);
            match &c.description {
                Some(d) => {
                    assert_eq!(Some(d), description.as_ref());
                    assert!(!d.is_empty() && d.chars().count() <= 1024);
                }
                None => assert!(description.as_deref().is_none_or(str::is_empty)),
            }
            let j = serde_json::to_value(&c).expect("a credential serializes");
            let back: Credential =
                serde_json::from_value(j.clone()).unwrap_or_else(|e| panic!("{e}: {j}"));
            assert_eq!(back, redacted(&c), "{j}");
        }
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "{}", e.message);
            // Values sent as credentials are secrets: a refusal may name
            // fields and types, never quote a value. Short or blank values
            // could be words of the message itself, so only long, solid
            // ones are looked for.
            let mut values = Vec::new();
            strings(&sent, &mut values);
            let mut names = Vec::new();
            keys(&sent, &mut names);
            for v in values {
                let solid = v.len() >= 16 && !v.contains(|c: char| c.is_whitespace() || c == '`');
                let elsewhere = names.iter().any(|n| n.contains(&v))
                    || kind.contains(&v)
                    || TYPE_NAMES.contains(&v);
                assert!(
                    !(solid && !elsewhere && e.message.contains(&v)),
                    "a refusal quotes a secret: {}",
                    e.message
                );
            }
        }
    }
}
