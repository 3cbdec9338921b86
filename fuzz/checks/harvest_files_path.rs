//! Properties of the Harvest Files path normaliser and the device side's
//! policy (`simgate::services::harvest_files::path`).
//!
//! Input: byte 0 picks the method (GET, HEAD, PUT, POST, DELETE, PATCH),
//! byte 1 the group's `defaultPathPrefix` and `defaultPath` from a fixed
//! set (including unusable ones); the rest is the request path (invalid
//! UTF-8 replaced).
//!
//! Properties:
//! * nothing panics;
//! * a parsed path has no empty, `.` or `..` name, no NUL, control
//!   character or `\`, and fits the length, depth and name limits;
//! * normalisation is idempotent: a path's text parses to the same path;
//! * whatever a device asks, the place it is given is under its own
//!   expanded prefix (never another SIM's, never above it); a write is only
//!   PUT or POST, a delete only DELETE; refusals have a 4xx status and a
//!   code.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use simgate::services::harvest_files::path::{
    device_op, expand, parse_request, DeviceOp, FilePath, Settings, MAX_DEPTH, MAX_NAME_BYTES,
    MAX_PATH_BYTES,
};

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"];
const PREFIXES: [&str; 5] = [
    "/:imsi/",
    "/",
    "/devices/:imsi/up",
    "relative/:imsi",
    "/a/../:imsi",
];
const DEFAULTS: [Option<&str>; 4] = [None, Some("/logs/:time.txt"), Some("/:imsi/"), Some("nope")];
const IMSI: &str = "001010000000001";

fn check_path(p: &FilePath) {
    let text = p.to_string();
    for name in p.parts() {
        assert!(!name.is_empty() && name != "." && name != "..", "{text}");
        assert!(name.len() <= MAX_NAME_BYTES, "{text}");
        assert!(
            !name.contains('/') && !name.chars().any(|c| c.is_control() || c == '\\'),
            "{text:?}"
        );
    }
    assert!(p.parts().len() <= MAX_DEPTH, "{text}");
    assert!(text.len() <= MAX_PATH_BYTES || p.is_root(), "{text}");
    assert_eq!(
        FilePath::from_decoded(&text).as_ref(),
        Ok(p),
        "not idempotent: {text}"
    );
}

pub(crate) fn check(data: &[u8]) {
    let [m, s, rest @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    let raw = String::from_utf8_lossy(rest);
    if let Ok(r) = parse_request(&raw) {
        check_path(&r.path);
    }
    if let Ok(p) = FilePath::from_decoded(&raw) {
        check_path(&p);
    }
    let settings = Settings {
        enabled: true,
        prefix: PREFIXES[usize::from(*s) % PREFIXES.len()].to_owned(),
        default_path: DEFAULTS[usize::from(*s / 8) % DEFAULTS.len()].map(str::to_owned),
    };
    match device_op(method, &raw, &settings, IMSI, 1_700_000_000_000) {
        Ok(op) => {
            let root = expand(&settings.prefix, IMSI, None).expect("an op implies a usable prefix");
            check_path(op.path());
            assert!(
                op.path().starts_with(&root),
                "{raw} → {} escapes {root}",
                op.path()
            );
            match op {
                DeviceOp::Put(_) => assert!(method == "PUT" || method == "POST", "{method}"),
                DeviceOp::Delete(_) | DeviceOp::DeleteDir(_) => assert_eq!(method, "DELETE"),
                DeviceOp::Get(_) | DeviceOp::List(_) => {
                    assert!(method == "GET" || method == "HEAD", "{method}")
                }
            }
        }
        Err(e) => {
            assert!((400..500).contains(&e.status()), "{e:?}");
            assert!(!e.code().is_empty());
        }
    }
}
