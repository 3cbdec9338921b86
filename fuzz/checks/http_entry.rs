//! Properties of what the device HTTP listener itself reads from a request
//! before (or instead of) a service: Host routing
//! (`simgate::ingress::http::route`), the request head
//! (`simgate::ingress::request_head`), `X-Soracom-Timestamp`
//! (`services::harvest::entry_time`), JSON Content-Type detection
//! (`services::is_json_type`), and Beam's path routing and header rewriting
//! (`services::beam::{select_http_entry, website_url,
//! prepare_request_headers}`, `services::beam::http::strip_hop_by_hop`).
//!
//! Input: byte 0 picks the part (modulo 6), byte 1 is a parameter (ignored
//! by parts 0 and 3), the rest is the text under test:
//! 0. a `Host` value. `route` is total and ignores ASCII case and a numeric
//!    port; a Host without a dot is the Unified Endpoint; a known first
//!    label followed by a dot and anything routes to its service whatever
//!    follows. `host_of` prefers a text `Host` header to the target's host.
//! 1. a `Content-Length` value, byte 1 the body limit (× 16). A valid
//!    decimal over the limit is refused unread, nothing else is;
//!    `header_text` is `Some` exactly for visible ASCII (and blanks).
//! 2. an `X-Soracom-Timestamp`, byte 1 the retention in days (0: none).
//!    Accepted exactly when it is a decimal `u64` (surrounding whitespace
//!    ignored) within the retention and the allowed clock skew; an accepted
//!    time printed again (as Beam's own header prints it) parses to itself.
//! 3. a `Content-Type`. JSON detection ignores ASCII case, parameters and
//!    surrounding blanks; `application/json` and every `+json` type are
//!    JSON, nothing else is.
//! 4. a request target (`/path?query`), byte 1 bit 0 whether the root entry
//!    is enabled. The chosen entry is enabled, matches on whole segments and
//!    is the longest that does; none is chosen only when none matches; the
//!    upstream URL is the destination, the rest of the path, then the
//!    destination's and the request's queries. Likewise the website entry.
//! 5. header lines (`name: value`), byte 1 bit 0 whether the entry signs.
//!    After `strip_hop_by_hop` no hop-by-hop, `Proxy-*` or
//!    `Connection`-named header is left and every other header is as sent;
//!    after `prepare_request_headers` the identity headers are exactly
//!    simgate's (never the device's), `customHeaders` are applied and
//!    everything else is untouched.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;
use simgate::ingress::http::{route, Route};
use simgate::ingress::request_head::{declared_too_big, header_text, host_of};
use simgate::services::beam::http::strip_hop_by_hop;
use simgate::services::beam::{
    http_signature, prepare_request_headers, select_http_entry, website_url, BeamIdentity,
};
use simgate::services::harvest::{entry_time, InvalidTimestamp, MAX_FUTURE_SKEW_MS};
use simgate::services::{is_json_type, Entry};
use simgate_control::{BeamConfig, BeamEntry};

pub(crate) fn check(data: &[u8]) {
    let [part, param, rest @ ..] = data else {
        return;
    };
    match part % 6 {
        0 => host(rest),
        1 => content_length(*param, rest),
        2 => timestamp(*param, rest),
        3 => content_type(rest),
        4 => beam_path(*param, rest),
        _ => beam_headers(*param, rest),
    }
}

/// First labels that name a service, and where they go.
const SERVICES: [(&str, Route); 8] = [
    ("funnel", Route::Service(Entry::Funnel)),
    ("harvest", Route::Service(Entry::Harvest)),
    ("funk", Route::Service(Entry::Funk)),
    ("metadata", Route::Metadata),
    ("endorse", Route::Endorse),
    ("krypton", Route::Krypton),
    ("harvest-files", Route::HarvestFiles),
    ("beam", Route::Beam),
];

fn host(rest: &[u8]) {
    let h = String::from_utf8_lossy(rest);
    let r = route(Some(&h));
    assert_eq!(route(None), Route::Service(Entry::Unified));
    assert_eq!(route(Some(&h.to_ascii_uppercase())), r, "{h:?}");
    assert_eq!(route(Some(&h.to_ascii_lowercase())), r, "{h:?}");
    let port = u16::from_le_bytes([rest.first().copied().unwrap_or(0), 0x1f]);
    assert_eq!(route(Some(&format!("{h}:{port}"))), r, "{h:?}:{port}");
    if !h.contains('.') {
        assert_eq!(r, Route::Service(Entry::Unified), "{h:?}");
    }
    let known = SERVICES.iter().find(|(label, _)| {
        h.split('.')
            .next()
            .is_some_and(|l| l.eq_ignore_ascii_case(label))
    });
    if let (Some((_, expected)), true) = (known, h.contains('.')) {
        // Unless a port-looking suffix was all that held the dot.
        let name = h.rsplit_once(':').map_or(&*h, |(n, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                &h
            }
        });
        if name.contains('.') {
            assert_eq!(r, *expected, "{h:?}");
        }
    }
    for (label, expected) in SERVICES {
        for l in [label.to_owned(), label.to_ascii_uppercase()] {
            assert_eq!(route(Some(&format!("{l}.{h}"))), expected, "{l}.{h:?}");
        }
    }

    // The name routed by: the Host header when it is text, else the target's.
    let mut headers = HeaderMap::new();
    let header = HeaderValue::from_bytes(rest).ok();
    if let Some(v) = &header {
        headers.insert(http::header::HOST, v.clone());
    }
    for target in ["/x", "http://funnel.example:8080/x"] {
        let uri: Uri = target.parse().expect("a valid target");
        let expected = header
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.host());
        assert_eq!(host_of(&headers, &uri), expected, "{h:?} {target}");
    }
}

fn content_length(param: u8, rest: &[u8]) {
    let max_body = usize::from(param) * 16;
    let Ok(value) = HeaderValue::from_bytes(rest) else {
        return;
    };
    let mut headers = HeaderMap::new();
    assert!(!declared_too_big(&headers, max_body));
    headers.insert(http::header::CONTENT_LENGTH, value);
    let text = header_text(&headers, "content-length");
    let visible = rest
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    assert_eq!(text.is_some(), visible, "{rest:?}");
    // Decimal, as `u64::from_str` reads it: an optional '+', then digits,
    // at most u64::MAX.
    let declared = text.and_then(|t| {
        let digits = t.strip_prefix('+').unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.bytes().try_fold(0u64, |n, b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
    });
    assert_eq!(
        declared_too_big(&headers, max_body),
        declared.is_some_and(|n| n > max_body as u64),
        "{text:?} over {max_body}"
    );
}

const ARRIVAL_MS: u64 = 1_700_000_000_000;
const MS_PER_DAY: u64 = 86_400_000;

fn timestamp(param: u8, rest: &[u8]) {
    let retention = u32::from(param % 64);
    let earliest = if retention == 0 {
        0
    } else {
        ARRIVAL_MS - u64::from(retention) * MS_PER_DAY
    };
    let latest = ARRIVAL_MS + MAX_FUTURE_SKEW_MS;
    assert_eq!(entry_time(None, ARRIVAL_MS, retention), Ok(ARRIVAL_MS));

    let raw = String::from_utf8_lossy(rest);
    let s = raw.trim();
    let number = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>().ok()
    } else {
        None
    };
    let result = entry_time(Some(&raw), ARRIVAL_MS, retention);
    let _ = result.as_ref().map_err(ToString::to_string);
    match (number, &result) {
        (None, Err(InvalidTimestamp::Malformed(_))) => {}
        (Some(t), Ok(got)) => {
            assert_eq!(*got, t);
            assert!((earliest..=latest).contains(&t), "{t} accepted");
            assert_eq!(
                entry_time(Some(&t.to_string()), ARRIVAL_MS, retention),
                Ok(t)
            );
        }
        (Some(t), Err(InvalidTimestamp::OutOfRange { time, .. })) => {
            assert_eq!(*time, t);
            assert!(!(earliest..=latest).contains(&t), "{t} refused");
        }
        (n, r) => panic!("{raw:?} (number {n:?}) gave {r:?}"),
    }

    // Every time in range, written as Beam writes its own header, is read back.
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(rest) {
        *d = *s;
    }
    let offset = u64::from_le_bytes(b) % (2 * 400 * MS_PER_DAY);
    let t = (ARRIVAL_MS + MAX_FUTURE_SKEW_MS * 2).saturating_sub(offset);
    let written = HeaderValue::from(t);
    let text = written.to_str().expect("digits are text");
    let got = entry_time(Some(text), ARRIVAL_MS, retention);
    if (earliest..=latest).contains(&t) {
        assert_eq!(got, Ok(t), "{text}");
    } else {
        assert!(
            matches!(got, Err(InvalidTimestamp::OutOfRange { time, .. }) if time == t),
            "{text}: {got:?}"
        );
    }
}

fn content_type(rest: &[u8]) {
    let ct = String::from_utf8_lossy(rest);
    let json = is_json_type(Some(&ct));
    assert!(!is_json_type(None));
    assert_eq!(is_json_type(Some(&ct.to_ascii_uppercase())), json, "{ct:?}");
    assert_eq!(is_json_type(Some(&ct.to_ascii_lowercase())), json, "{ct:?}");
    assert_eq!(
        is_json_type(Some(&format!("{ct}; charset=utf-8"))),
        json,
        "{ct:?}"
    );
    assert_eq!(is_json_type(Some(&format!(" \t{ct}"))), json, "{ct:?}");
    assert!(is_json_type(Some(&format!("Application/JSON;{ct}"))));
    let no_params = ct.replace(';', "");
    assert!(is_json_type(Some(&format!("{no_params}+JSON"))), "{ct:?}");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    assert_eq!(
        json,
        essence == "application/json" || essence.ends_with("+json"),
        "{ct:?}"
    );
}

fn beam_config(root_enabled: bool) -> BeamConfig {
    serde_json::from_value(serde_json::json!({
        "http://beam.soracom.io:8888/": {"destination": "https://root.example/base", "enabled": root_enabled},
        "http://beam.soracom.io:8888/api": {"destination": "https://api.example/v2/", "enabled": true},
        "http://beam.soracom.io:8888/api/admin": {"destination": "https://admin.example", "enabled": false},
        "http://beam.soracom.io:8888/q": {"destination": "https://q.example/x?key=1", "enabled": true},
        "http://beam.soracom.io:8888/b/": {"destination": "https://b.example", "enabled": true},
    }))
    .expect("a valid Beam configuration")
}

/// `url` as destination + rest + queries, split at the first `?`.
fn expect_url(url: &str, destination: &str, rest: &str, query: Option<&str>) {
    let (dest_path, dest_query) = match destination.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (destination, None),
    };
    let path = if rest.is_empty() {
        dest_path.to_owned()
    } else {
        format!("{}{rest}", dest_path.trim_end_matches('/'))
    };
    let queries: Vec<&str> = [dest_query, query]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect();
    let (got_path, got_query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    assert_eq!(got_path, path, "{url} from {destination} + {rest:?}");
    let joined = queries.join("&");
    assert_eq!(
        got_query,
        (!queries.is_empty()).then_some(joined.as_str()),
        "{url}"
    );
}

fn beam_path(param: u8, rest: &[u8]) {
    let config = beam_config(param & 1 == 1);
    let target = String::from_utf8_lossy(rest);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&*target, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    let base = |prefix: &str| prefix.trim_end_matches('/').to_owned();
    let matches = |prefix: &str| {
        let b = base(prefix);
        path.strip_prefix(b.as_str())
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    };
    let longest = config
        .http_entries()
        .filter(|(p, _)| matches(p))
        .map(|(p, _)| base(p).len())
        .max();
    match select_http_entry(&config, &target) {
        Some(r) => {
            assert!(r.entry.enabled, "{target:?}");
            assert!(matches(r.path_prefix), "{target:?} to {}", r.path_prefix);
            assert_eq!(Some(base(r.path_prefix).len()), longest, "{target:?}");
            let rest = &path[base(r.path_prefix).len()..];
            expect_url(&r.upstream_url, &r.entry.destination, rest, query);
        }
        None => {
            assert_eq!(longest, None, "{target:?}");
            // An origin-form path (hyper's only form with a path) always
            // matches an enabled root entry.
            assert!(
                param & 1 == 0 || !path.starts_with('/'),
                "the root entry matches every path: {target:?}"
            );
        }
    }

    for destination in ["https://site.example/sub", "https://site.example/?k=v"] {
        let entry: BeamEntry =
            serde_json::from_value(serde_json::json!({"destination": destination}))
                .expect("an entry");
        let url = website_url(&entry, &target);
        let rest = if path == "/" { "" } else { path };
        expect_url(&url, destination, rest, query);
    }
}

const IMSI: &str = "295000012345678";
const IMEI: &str = "860000012345678";
const NOW_MS: u64 = 1_445_587_157_992;
const PSK: &[u8] = b"mysecretkey";

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const IDENTITY: [&str; 7] = [
    "x-soracom-imsi",
    "x-soracom-imei",
    "x-soracom-msisdn",
    "x-soracom-sim-id",
    "x-soracom-timestamp",
    "x-soracom-signature-version",
    "x-soracom-signature",
];
const CUSTOM: [&str; 3] = ["x-added", "x-replaced", "x-deleted"];

fn values(h: &HeaderMap, name: &str) -> Vec<HeaderValue> {
    h.get_all(name).iter().cloned().collect()
}

fn beam_headers(param: u8, rest: &[u8]) {
    let signs = param & 1 == 1;
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let sent = headers.clone();
    let named: Vec<HeaderName> = sent
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    strip_hop_by_hop(&mut headers);
    let hop = |n: &HeaderName| {
        HOP_BY_HOP.contains(&n.as_str()) || n.as_str().starts_with("proxy-") || named.contains(n)
    };
    for name in sent.keys() {
        if hop(name) {
            assert!(!headers.contains_key(name), "{name} kept");
        } else {
            assert_eq!(
                values(&headers, name.as_str()),
                values(&sent, name.as_str()),
                "{name}"
            );
        }
    }
    assert_eq!(headers.keys_len(), sent.keys().filter(|n| !hop(n)).count());

    let mut entry = serde_json::json!({
        "destination": "https://x.example/", "enabled": true,
        "addSubscriberHeader": true, "addEquipmentHeader": true,
        "customHeaders": {
            "a": {"action": "append", "headerKey": "X-Added", "headerValue": "1"},
            "r": {"action": "replace", "headerKey": "X-Replaced", "headerValue": "r"},
            "d": {"action": "delete", "headerKey": "X-Deleted"}},
    });
    if signs {
        entry["addSignature"] = true.into();
        entry["psk"] = serde_json::json!({"$credentialsId": "k"});
    }
    let entry: BeamEntry = serde_json::from_value(entry).expect("an entry");
    let id = BeamIdentity {
        imsi: IMSI,
        imei: Some(IMEI),
        msisdn: Some("818000000001"),
        sim_id: None,
    };
    let stripped = headers.clone();
    let psk = signs.then_some(PSK);
    prepare_request_headers(&mut headers, &id, &entry, psk, NOW_MS).expect("a valid entry");
    let one = |name: &str| -> Vec<String> {
        values(&headers, name)
            .iter()
            .map(|v| v.to_str().expect("text").to_owned())
            .collect()
    };
    assert_eq!(one("x-soracom-imsi"), [IMSI]);
    assert_eq!(one("x-soracom-imei"), [IMEI]);
    assert!(one("x-soracom-msisdn").is_empty(), "not switched on");
    assert!(one("x-soracom-sim-id").is_empty(), "not switched on");
    if signs {
        let fields = id.fields(&entry, NOW_MS);
        assert_eq!(one("x-soracom-timestamp"), [NOW_MS.to_string()]);
        assert_eq!(one("x-soracom-signature-version"), ["20151001"]);
        assert_eq!(one("x-soracom-signature"), [http_signature(PSK, &fields)]);
    } else {
        for name in &IDENTITY[4..] {
            assert!(one(name).is_empty(), "{name} without a signature");
        }
    }
    let mut added = values(&stripped, "x-added");
    added.push(HeaderValue::from_static("1"));
    assert_eq!(values(&headers, "x-added"), added);
    assert_eq!(one("x-replaced"), ["r"]);
    assert!(one("x-deleted").is_empty());
    for name in headers.keys() {
        let ours = IDENTITY.contains(&name.as_str()) || CUSTOM.contains(&name.as_str());
        assert!(ours || stripped.contains_key(name), "{name} added");
    }
    for name in stripped.keys() {
        if !IDENTITY.contains(&name.as_str()) && !CUSTOM.contains(&name.as_str()) {
            assert_eq!(
                values(&headers, name.as_str()),
                values(&stripped, name.as_str()),
                "{name}"
            );
        }
    }
}
