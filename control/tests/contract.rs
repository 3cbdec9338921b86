//! Contract test: simgate's OpenAPI against SORACOM's own
//! (`shared/reference/soracom-api.en.yaml`, or `$SORACOM_API_YAML`).
//!
//! Where SORACOM's file is not beside the checkout (a CI clone), the test
//! uses `tests/data/soracom-contract.json`: the same spec cut down to the
//! paths simgate implements and the schemas they reference, without prose.
//! Where the file is there, the test also checks that this extract is what
//! the file gives (`SIMGATE_UPDATE_CONTRACT=1` rewrites it).
//!
//! For every `/v1/…` operation simgate describes that SORACOM also has (its
//! paths are relative to `/v1`): the same method, the same path parameter
//! names, query parameters SORACOM knows (simgate may have fewer), request
//! body and 2xx response field names SORACOM knows (`$ref`s resolved, nested
//! objects and array items compared too, free-form objects on SORACOM's side
//! not looked into). What SORACOM does not have must say so: an operation,
//! parameter or field whose description contains "simgate extension".
//! Every mismatch is printed; the test fails if there is any.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

const EXTENSION: &str = "simgate extension";
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `$SORACOM_API_YAML`, else `shared/reference/soracom-api.en.yaml` beside
/// the checkout or beside any folder above it (the project's `shared/`).
/// `SORACOM_API_YAML=` (empty) uses the committed extract alone.
fn soracom_yaml() -> Option<PathBuf> {
    const REL: &str = "shared/reference/soracom-api.en.yaml";
    if let Some(p) = std::env::var_os("SORACOM_API_YAML") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join(REL))
        .find(|p| p.is_file())
}

/// The committed extract of SORACOM's spec.
fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/soracom-contract.json")
}

/// SORACOM paths the extract keeps: every resource simgate serves.
const FIXTURE_PREFIXES: [&str; 9] = [
    "/auth",
    "/groups",
    "/subscribers",
    "/credentials",
    "/data",
    "/files",
    "/operators/{operator_id}/auth_keys",
    "/sessions",
    "/tokens",
];

/// Keys of prose and examples, dropped from the extract (kept when they
/// name a property).
const PROSE: [&str; 6] = [
    "description",
    "summary",
    "example",
    "examples",
    "externalDocs",
    "x-soracom-cli",
];

fn under_prefix(path: &str) -> bool {
    FIXTURE_PREFIXES
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// `v` without prose; inside `properties` the keys are field names, kept.
fn strip(v: &Value, field_names: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    field_names || !(PROSE.contains(&k.as_str()) || k.starts_with("x-soracom-cli"))
                })
                .map(|(k, v)| (k.clone(), strip(v, !field_names && k == "properties")))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| strip(v, false)).collect()),
        other => other.clone(),
    }
}

/// Every `#/…` reference in `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                out.insert(r.to_owned());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// SORACOM's spec cut down to [`FIXTURE_PREFIXES`] and what they reference.
fn extract(full: &Value) -> Value {
    let mut doc = serde_json::Map::new();
    let paths: serde_json::Map<String, Value> = full["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(p, _)| under_prefix(p))
        .map(|(p, v)| (p.clone(), strip(v, false)))
        .collect();
    let mut pending = BTreeSet::new();
    paths.values().for_each(|v| refs(v, &mut pending));
    let mut seen = BTreeSet::new();
    let mut components = Value::Object(serde_json::Map::new());
    while let Some(r) = pending.pop_first() {
        if !seen.insert(r.clone()) {
            continue;
        }
        let Some(ptr) = r.strip_prefix('#') else {
            continue;
        };
        let Some(target) = full.pointer(ptr) else {
            continue;
        };
        let target = strip(target, false);
        refs(&target, &mut pending);
        // `#/components/schemas/X` → components.schemas.X
        let mut at = &mut components;
        let parts: Vec<&str> = ptr.trim_start_matches("/components/").split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let obj = at.as_object_mut().expect("components are objects");
            if i + 1 == parts.len() {
                obj.insert((*part).to_owned(), target.clone());
                break;
            }
            at = obj
                .entry((*part).to_owned())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
    }
    doc.insert(
        "x-simgate-source".into(),
        Value::String(
            "Extract of soracom-api.en.yaml (soracom/soracom-cli, MIT licence, Copyright (c) 2015 \
             Soracom, Inc.; see soracom-api.LICENSE): paths, parameters and schemas only, \
             regenerated by control/tests/contract.rs with SIMGATE_UPDATE_CONTRACT=1"
                .into(),
        ),
    );
    doc.insert("paths".into(), Value::Object(paths));
    doc.insert("components".into(), components);
    Value::Object(doc)
}

/// YAML → JSON, with non-string keys (e.g. response codes) as strings.
fn to_json(v: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Y::String(s) => s,
                        other => serde_yaml::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => to_json(t.value),
    }
}

fn load_soracom() -> Value {
    let fixture = fixture_path();
    let Some(path) = soracom_yaml() else {
        let text = std::fs::read_to_string(&fixture)
            .unwrap_or_else(|e| panic!("no SORACOM OpenAPI and no {}: {e}", fixture.display()));
        return serde_json::from_str(&text).expect("the extract is JSON");
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read SORACOM's OpenAPI at {} (set SORACOM_API_YAML): {e}",
            path.display()
        )
    });
    let full = to_json(serde_yaml::from_str(&text).expect("SORACOM's OpenAPI is YAML"));
    let fresh = extract(&full);
    let committed: Option<Value> = std::fs::read_to_string(&fixture)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if committed.as_ref() != Some(&fresh) {
        if std::env::var("SIMGATE_UPDATE_CONTRACT").as_deref() == Ok("1") {
            let mut text = serde_json::to_string_pretty(&fresh).expect("JSON");
            text.push('\n');
            std::fs::write(&fixture, text).expect("write the extract");
        } else {
            panic!(
                "{} is not the extract of {}: rerun with SIMGATE_UPDATE_CONTRACT=1 and commit it",
                fixture.display(),
                path.display()
            );
        }
    }
    full
}

/// One OpenAPI document and its `$ref` resolution.
struct Doc<'a> {
    root: &'a Value,
}

impl<'a> Doc<'a> {
    fn resolve(&self, mut v: &'a Value) -> &'a Value {
        for _ in 0..32 {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else {
                return v;
            };
            let Some(ptr) = r.strip_prefix('#') else {
                return v;
            };
            match self.root.pointer(ptr) {
                Some(t) => v = t,
                None => return v,
            }
        }
        v
    }

    /// Named properties of an object schema (merging allOf/oneOf/anyOf),
    /// or None for a schema that names none (free-form object, scalar).
    fn properties(&self, s: &'a Value) -> Option<BTreeMap<String, &'a Value>> {
        let s = self.resolve(s);
        let mut out = BTreeMap::new();
        let mut named = false;
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            named = true;
            out.extend(p.iter().map(|(k, v)| (k.clone(), v)));
        }
        for k in ["allOf", "oneOf", "anyOf"] {
            for sub in s.get(k).and_then(Value::as_array).into_iter().flatten() {
                if let Some(p) = self.properties(sub) {
                    named = true;
                    out.extend(p);
                }
            }
        }
        named.then_some(out)
    }

    /// The item schema of an array schema (through allOf/oneOf/anyOf).
    fn items(&self, s: &'a Value) -> Option<&'a Value> {
        let s = self.resolve(s);
        if let Some(i) = s.get("items") {
            return Some(i);
        }
        ["allOf", "oneOf", "anyOf"]
            .iter()
            .flat_map(|k| s.get(*k).and_then(Value::as_array).into_iter().flatten())
            .find_map(|sub| self.items(sub))
    }

    /// Whether the description of `s` (or of what it refers to, or of a
    /// branch of its allOf/oneOf/anyOf, as an `Option<T>` field is shown)
    /// says it is a simgate extension.
    fn is_extension(&self, s: &'a Value) -> bool {
        let says = |s: &Value| {
            ["description", "summary"].iter().any(|k| {
                s.get(*k)
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.to_ascii_lowercase().contains(EXTENSION))
            })
        };
        let branches = ["allOf", "oneOf", "anyOf"]
            .iter()
            .flat_map(|k| s.get(*k).and_then(Value::as_array).into_iter().flatten());
        says(s) || says(self.resolve(s)) || branches.into_iter().any(says)
    }

    fn json_schema(&self, content_holder: &'a Value) -> Option<&'a Value> {
        let c = self.resolve(content_holder).get("content")?;
        c.get("application/json")
            .or_else(|| c.as_object()?.values().next())?
            .get("schema")
    }

    /// (name, `in`, extension?) of an operation's parameters, path-level ones
    /// included.
    fn params(&self, path_item: &'a Value, op: &'a Value) -> Vec<(String, String, bool)> {
        [path_item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .map(|p| self.resolve(p))
            .filter_map(|p| {
                Some((
                    p.get("name")?.as_str()?.to_owned(),
                    p.get("in")?.as_str()?.to_owned(),
                    self.is_extension(p),
                ))
            })
            .collect()
    }
}

/// Compares simgate's schema `ours` with SORACOM's `theirs`: every field
/// simgate names must exist there (unless marked as an extension).
fn compare(
    o: &Doc<'_>,
    t: &Doc<'_>,
    ours: &Value,
    theirs: &Value,
    at: &str,
    depth: usize,
    errors: &mut Vec<String>,
) {
    if depth > 8 {
        return;
    }
    if let Some(oi) = o.items(ours) {
        match t.items(theirs) {
            Some(ti) => compare(o, t, oi, ti, &format!("{at}[]"), depth + 1, errors),
            None if t.properties(theirs).is_some() => {
                errors.push(format!("{at}: simgate has an array, SORACOM an object"));
            }
            None => {}
        }
        return;
    }
    let Some(op) = o.properties(ours) else {
        return;
    };
    let Some(tp) = t.properties(theirs) else {
        if t.items(theirs).is_some() {
            errors.push(format!("{at}: simgate has an object, SORACOM an array"));
        }
        return; // free-form on SORACOM's side
    };
    for (name, schema) in op {
        if o.is_extension(schema) {
            continue;
        }
        match tp.get(&name) {
            Some(ts) => compare(o, t, schema, ts, &format!("{at}.{name}"), depth + 1, errors),
            None => errors.push(format!(
                "{at}.{name}: not a SORACOM field (mark it \"{EXTENSION}\" if it is one)"
            )),
        }
    }
}

/// `/a/{x}/b` → `/a/{}/b`.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn check(ours_root: &Value, theirs_root: &Value) -> (Vec<String>, usize, usize) {
    let o = Doc { root: ours_root };
    let t = Doc { root: theirs_root };
    let theirs_paths = theirs_root["paths"].as_object().expect("SORACOM paths");
    let by_shape: BTreeMap<String, (&String, &Value)> = theirs_paths
        .iter()
        .map(|(p, v)| (shape(p), (p, v)))
        .collect();
    let mut errors = Vec::new();
    let (mut matched, mut extensions) = (0, 0);
    let ours_paths = ours_root["paths"].as_object().expect("simgate paths");
    for (path, item) in ours_paths {
        let Some(rel) = path.strip_prefix("/v1") else {
            continue;
        };
        for method in METHODS {
            let Some(op) = item.get(method) else {
                continue;
            };
            let id = format!("{} {path}", method.to_uppercase());
            let theirs = by_shape
                .get(&shape(rel))
                .and_then(|(tp, ti)| Some((*tp, *ti, ti.get(method)?)));
            let Some((tpath, titem, top)) = theirs else {
                if o.is_extension(op) {
                    extensions += 1;
                } else {
                    errors.push(format!(
                        "{id}: SORACOM has no such operation; its description must say \"{EXTENSION}\""
                    ));
                }
                continue;
            };
            matched += 1;
            if tpath != rel {
                errors.push(format!(
                    "{id}: path parameters differ from SORACOM's /v1{tpath}"
                ));
            }
            let ours_params = o.params(item, op);
            let theirs_params = t.params(titem, top);
            let names = |ps: &[(String, String, bool)], loc: &str| -> BTreeSet<String> {
                ps.iter()
                    .filter(|p| p.1 == loc)
                    .map(|p| p.0.clone())
                    .collect()
            };
            if names(&ours_params, "path") != names(&theirs_params, "path") {
                errors.push(format!(
                    "{id}: path parameters {:?}, SORACOM's {:?}",
                    names(&ours_params, "path"),
                    names(&theirs_params, "path")
                ));
            }
            let tq = names(&theirs_params, "query");
            for (name, _, ext) in ours_params.iter().filter(|p| p.1 == "query") {
                if !ext && !tq.contains(name) {
                    errors.push(format!(
                        "{id}: query parameter {name:?} is not SORACOM's (it has {tq:?})"
                    ));
                }
            }
            if let Some(ob) = op.get("requestBody").and_then(|b| o.json_schema(b)) {
                match top.get("requestBody").and_then(|b| t.json_schema(b)) {
                    Some(tb) => compare(&o, &t, ob, tb, &format!("{id} body"), 0, &mut errors),
                    None if o.is_extension(o.resolve(op.get("requestBody").unwrap_or(ob))) => {}
                    None => errors.push(format!("{id}: SORACOM takes no request body")),
                }
            }
            let ours_resp = op["responses"].as_object().into_iter().flatten();
            let theirs_resp = top["responses"].as_object();
            for (code, resp) in ours_resp.filter(|(c, _)| c.starts_with('2')) {
                let Some(os) = o.json_schema(resp) else {
                    continue;
                };
                let ts = theirs_resp.and_then(|r| {
                    r.get(code).and_then(|x| t.json_schema(x)).or_else(|| {
                        r.iter()
                            .filter(|(c, _)| c.starts_with('2'))
                            .find_map(|(_, x)| t.json_schema(x))
                    })
                });
                match ts {
                    Some(ts) => compare(&o, &t, os, ts, &format!("{id} {code}"), 0, &mut errors),
                    None => errors.push(format!("{id} {code}: SORACOM answers no JSON body")),
                }
            }
        }
    }
    (errors, matched, extensions)
}

#[test]
fn control_api_matches_soracom() {
    let theirs = load_soracom();
    let ours = serde_json::to_value(simgate_control::api::openapi()).expect("OpenAPI as JSON");
    // The extract must cover every resource simgate serves, or a route
    // could pass as "not SORACOM's" in a checkout without the full spec.
    for path in ours["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(p, _)| p)
    {
        let rel = path.strip_prefix("/v1").unwrap_or(path);
        assert!(
            under_prefix(rel) || path == "/openapi.json",
            "{path}: add its prefix to FIXTURE_PREFIXES"
        );
    }
    // And the checks give the same answer on the extract as on the full spec.
    let extracted = extract(&theirs);
    let (errors, matched, extensions) = check(&ours, &theirs);
    assert_eq!(
        check(&ours, &extracted),
        (errors.clone(), matched, extensions),
        "the extract and the full spec disagree"
    );
    println!("{matched} operations compared with SORACOM's, {extensions} simgate extensions");
    for e in &errors {
        println!("MISMATCH {e}");
    }
    assert!(
        errors.is_empty(),
        "{} mismatches with SORACOM's API (listed above)",
        errors.len()
    );
    assert!(matched >= 20, "only {matched} operations matched SORACOM's");
}

/// The checker itself: it sees a renamed field, an unknown query parameter
/// and an undeclared extra route, and accepts declared extensions.
#[test]
fn checker_reports_mismatches() {
    let theirs = serde_json::json!({"paths": {
        "/things/{thing_id}": {"get": {
            "parameters": [{"name": "thing_id", "in": "path"}, {"name": "limit", "in": "query"}],
            "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}}}},
        "components": {"schemas": {"Thing": {"properties": {"thingId": {}, "tags": {"type": "object"}}}}}});
    let ours = serde_json::json!({"paths": {
        "/v1/things/{id}": {"get": {
            "parameters": [{"name": "id", "in": "path"}, {"name": "limit", "in": "query"}, {"name": "sort", "in": "query"}],
            "responses": {"200": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                "thingId": {}, "tags": {"properties": {"x": {}}}, "name": {}, "extra": {"description": "A simgate extension."}}}}}}}}},
        "/v1/mine": {"get": {"responses": {}}},
        "/v1/ours": {"get": {"description": "simgate extension: ours", "responses": {}}}}});
    let (errors, matched, extensions) = check(&ours, &theirs);
    assert_eq!((matched, extensions), (1, 1), "{errors:#?}");
    let all = errors.join("\n");
    for needle in ["path parameters", "\"sort\"", ".name", "GET /v1/mine"] {
        assert!(all.contains(needle), "{needle} not in {all}");
    }
    assert!(!all.contains(".extra") && !all.contains(".tags"), "{all}");
}
