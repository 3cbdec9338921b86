//! Harvest Files paths and the device side's policy, sans-IO: a request
//! path in (percent-decoded exactly once here), a normalised [`FilePath`]
//! out, or the reason it was refused; the group's `SoracomHarvestFiles`
//! settings; where a device's request lands.
//!
//! A [`FilePath`] can only be built through [`FilePath::from_decoded`], so
//! every path the store sees has no `..`, no `.`, no empty component, no
//! NUL or control character and no backslash, and fits SORACOM's limits
//! (1,024 bytes, 16 levels). Its components become file and directory names
//! on disk as they are; nothing here can name a place outside the scope's
//! directory.
//!
//! Nothing here touches the disk or the clock.

use std::fmt;

use serde_json::Value;
use simgate_control::Group;

/// The group configuration namespace SORACOM uses for Harvest Files.
pub const NAMESPACE: &str = "SoracomHarvestFiles";
/// Longest file path (SORACOM: 1,024 bytes).
pub const MAX_PATH_BYTES: usize = 1024;
/// Deepest file path (SORACOM: 16 directory levels; the file is one more).
pub const MAX_DEPTH: usize = 17;
/// Longest single name (what Linux file systems take).
pub const MAX_NAME_BYTES: usize = 255;
/// Where a SIM's files live when its group sets no `defaultPathPrefix`:
/// a directory of its own, so that one SIM cannot read another's files.
pub const DEFAULT_PREFIX: &str = "/:imsi/";

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path's percent-escapes are malformed or not UTF-8")]
    BadEncoding,
    #[error("`..` is not allowed in a Harvest Files path")]
    DotDot,
    #[error("a Harvest Files path may not contain NUL, control characters or backslashes")]
    BadChar,
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("the path is deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("a name in the path is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    #[error("the group's Harvest Files path setting must start with `/`")]
    NotAbsolute,
}

impl PathError {
    /// The `code` of the JSON error and the metrics' `reason`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::BadEncoding => "bad_encoding",
            Self::DotDot => "path_escape",
            Self::BadChar => "bad_char",
            Self::TooLong => "path_too_long",
            Self::TooDeep => "path_too_deep",
            Self::NameTooLong => "name_too_long",
            Self::NotAbsolute => "bad_group_path",
        }
    }
}

/// A normalised path inside a scope: the root, or names joined by `/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePath {
    parts: Vec<String>,
}

impl FilePath {
    pub fn root() -> Self {
        Self::default()
    }

    /// Normalises an already-decoded path: `/` separates names, empty
    /// names and `.` are dropped (`a//./b` is `a/b`), `..` is refused
    /// rather than resolved (so no path means something other than it
    /// says), as are NUL, control characters and `\`.
    pub fn from_decoded(s: &str) -> Result<Self, PathError> {
        let mut parts = Vec::new();
        for name in s.split('/') {
            match name {
                "" | "." => {}
                ".." => return Err(PathError::DotDot),
                _ => {
                    check_name(name)?;
                    parts.push(name.to_owned());
                }
            }
        }
        let p = Self { parts };
        p.check_limits()?;
        Ok(p)
    }

    fn check_limits(&self) -> Result<(), PathError> {
        if self.parts.len() > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        let bytes: usize = self.parts.iter().map(|p| p.len() + 1).sum();
        if bytes > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        Ok(())
    }

    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The last name (none for the root).
    pub fn name(&self) -> Option<&str> {
        self.parts.last().map(String::as_str)
    }

    /// The directory holding this path (the root holds itself).
    pub fn parent(&self) -> Self {
        let mut parts = self.parts.clone();
        parts.pop();
        Self { parts }
    }

    /// `self` then `rest`, within the limits.
    pub fn join(&self, rest: &Self) -> Result<Self, PathError> {
        let mut parts = self.parts.clone();
        parts.extend(rest.parts.iter().cloned());
        let p = Self { parts };
        p.check_limits()?;
        Ok(p)
    }

    /// One more name (checked as [`Self::from_decoded`] checks names).
    pub fn child(&self, name: &str) -> Result<Self, PathError> {
        Self::from_decoded(name).and_then(|n| {
            if n.parts.len() == 1 {
                self.join(&n)
            } else {
                Err(PathError::BadChar)
            }
        })
    }

    pub fn starts_with(&self, prefix: &Self) -> bool {
        self.parts.starts_with(&prefix.parts)
    }

    /// `/a/b/` (the root is `/`), as listings show directories.
    pub fn dir_string(&self) -> String {
        if self.is_root() {
            "/".to_owned()
        } else {
            format!("{self}/")
        }
    }
}

impl fmt::Display for FilePath {
    /// `/a/b`; the root is `/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parts.is_empty() {
            return f.write_str("/");
        }
        for p in &self.parts {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), PathError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(PathError::NameTooLong);
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::BadChar);
    }
    Ok(())
}

/// What a request's path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub path: FilePath,
    /// It ended with `/` (or was the root): a directory.
    pub dir: bool,
}

/// Percent-decodes `raw` (the URI's path, without the query) once and
/// normalises it. `%2F` becomes a separator like `/` (both name the same
/// thing once decoded); `%252e` stays the literal name `%2e`.
pub fn parse_request(raw: &str) -> Result<Requested, PathError> {
    let decoded = percent_decode(raw)?;
    let path = FilePath::from_decoded(&decoded)?;
    let dir = path.is_root() || decoded.ends_with('/');
    Ok(Requested { path, dir })
}

/// `%XX` → the byte; the result must be UTF-8.
pub fn percent_decode(raw: &str) -> Result<String, PathError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let h = std::str::from_utf8(hex).map_err(|_| PathError::BadEncoding)?;
            let v = u8::from_str_radix(h, 16).map_err(|_| PathError::BadEncoding)?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEncoding)
}

/// A group's `SoracomHarvestFiles` settings. Without a group, or without
/// `enabled: true`, Harvest Files is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    /// simgate's `defaultPathPrefix`: the directory a SIM's device-side
    /// paths are under (`:imsi` expanded); `/` shares the whole scope
    /// among the group's SIMs, as SORACOM does without a role.
    pub prefix: String,
    /// SORACOM's `defaultPath`: the file a `PUT /` (no name) writes,
    /// `:imsi` and `:time` expanded, under the prefix.
    pub default_path: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: DEFAULT_PREFIX.to_owned(),
            default_path: None,
        }
    }
}

impl Settings {
    pub fn of(group: Option<&Group>) -> Self {
        let Some(ns) = group.and_then(|g| g.configuration.get(NAMESPACE)) else {
            return Self::default();
        };
        let text = |k: &str| ns.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            enabled: ns.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            prefix: text("defaultPathPrefix").unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            default_path: text("defaultPath").filter(|s| !s.is_empty()),
        }
    }
}

/// Replaces `:imsi` and, given a time, `:time` (Unix ms) in a group's path
/// setting, which must start with `/` (SORACOM answers 404 otherwise).
/// The setting is not percent-decoded: it is the operator's text.
pub fn expand(template: &str, imsi: &str, time_ms: Option<u64>) -> Result<FilePath, PathError> {
    if !template.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut s = template.replace(":imsi", imsi);
    if let Some(t) = time_ms {
        s = s.replace(":time", &t.to_string());
    }
    FilePath::from_decoded(&s)
}

/// What a device asked for, resolved to a place in the `private` scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    /// `PUT` or `POST`: store the body here.
    Put(FilePath),
    /// `GET` or `HEAD` of a file.
    Get(FilePath),
    /// `GET` of a directory (a path ending in `/`, or `/`).
    List(FilePath),
    /// `DELETE` of a file.
    Delete(FilePath),
    /// `DELETE` of an (empty) directory.
    DeleteDir(FilePath),
}

impl DeviceOp {
    pub fn path(&self) -> &FilePath {
        match self {
            Self::Put(p) | Self::Get(p) | Self::List(p) | Self::Delete(p) | Self::DeleteDir(p) => p,
        }
    }
}

/// Why a device's request cannot be served as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Path(#[from] PathError),
    /// The group's prefix or `defaultPath` is not a usable path.
    #[error("the group's {setting} is not a usable path: {error}")]
    BadSetting {
        setting: &'static str,
        error: PathError,
    },
    #[error("PUT / needs a file name, or the group's defaultPath")]
    NoFileName,
    #[error("a file cannot be written to a directory path (ending in /)")]
    PutToDirectory,
    #[error("the device's own directory cannot be deleted")]
    DeleteRoot,
    #[error("Harvest Files takes GET, HEAD, PUT, POST and DELETE")]
    Method,
}

impl DeviceError {
    pub const fn status(&self) -> u16 {
        match self {
            Self::Path(_) | Self::NoFileName | Self::DeleteRoot => 400,
            // The path names a directory, which cannot hold content.
            Self::PutToDirectory => 409,
            // SORACOM: a defaultPath without a leading `/` → 404.
            Self::BadSetting { .. } => 404,
            Self::Method => 405,
        }
    }

    pub const fn code(&self) -> &'static str {
        match self {
            Self::Path(e) => e.code(),
            Self::BadSetting { .. } => "bad_group_path",
            Self::NoFileName => "no_file_name",
            Self::PutToDirectory => "put_to_directory",
            Self::DeleteRoot => "delete_root",
            Self::Method => "method_not_allowed",
        }
    }
}

/// Where a device request lands: `{prefix}{path}`, the prefix expanded for
/// the caller's IMSI. Whatever `raw` says, the result is under the prefix
/// (the path is normalised with `..` refused before it is joined).
pub fn device_op(
    method: &str,
    raw: &str,
    settings: &Settings,
    imsi: &str,
    now_ms: u64,
) -> Result<DeviceOp, DeviceError> {
    let req = parse_request(raw)?;
    let root = expand(&settings.prefix, imsi, None).map_err(|error| DeviceError::BadSetting {
        setting: "defaultPathPrefix",
        error,
    })?;
    let full = root.join(&req.path)?;
    match method {
        "PUT" | "POST" if req.path.is_root() => {
            let Some(default) = settings.default_path.as_deref() else {
                return Err(DeviceError::NoFileName);
            };
            let name =
                expand(default, imsi, Some(now_ms)).map_err(|error| DeviceError::BadSetting {
                    setting: "defaultPath",
                    error,
                })?;
            if name.is_root() {
                return Err(DeviceError::NoFileName);
            }
            Ok(DeviceOp::Put(root.join(&name)?))
        }
        "PUT" | "POST" if req.dir => Err(DeviceError::PutToDirectory),
        "PUT" | "POST" => Ok(DeviceOp::Put(full)),
        "GET" | "HEAD" if req.dir => Ok(DeviceOp::List(full)),
        "GET" | "HEAD" => Ok(DeviceOp::Get(full)),
        "DELETE" if req.path.is_root() => Err(DeviceError::DeleteRoot),
        "DELETE" if req.dir => Ok(DeviceOp::DeleteDir(full)),
        "DELETE" => Ok(DeviceOp::Delete(full)),
        _ => Err(DeviceError::Method),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMSI: &str = "001010000000001";

    fn on(prefix: &str, default_path: Option<&str>) -> Settings {
        Settings {
            enabled: true,
            prefix: prefix.to_owned(),
            default_path: default_path.map(str::to_owned),
        }
    }

    fn put(raw: &str, s: &Settings) -> Result<String, DeviceError> {
        device_op("PUT", raw, s, IMSI, 1_700_000_000_000).map(|op| op.path().to_string())
    }

    #[test]
    fn normalises_separators_and_dots() {
        let p = FilePath::from_decoded("//a/./b//c/").unwrap();
        assert_eq!(p.to_string(), "/a/b/c");
        assert_eq!(p.parts().len(), 3);
        assert_eq!(FilePath::from_decoded("").unwrap(), FilePath::root());
        assert_eq!(FilePath::root().to_string(), "/");
        assert_eq!(p.dir_string(), "/a/b/c/");
        assert_eq!(p.parent().to_string(), "/a/b");
        assert_eq!(p.name(), Some("c"));
    }

    #[test]
    fn refuses_dot_dot_anywhere_even_encoded() {
        for raw in [
            "/../x",
            "/a/../../x",
            "/a/..",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/a%2f..%2fx",
            "/.%2e/x",
        ] {
            assert_eq!(parse_request(raw), Err(PathError::DotDot), "{raw}");
        }
    }

    #[test]
    fn decodes_once_only() {
        // `%252e%252e` is the literal name `%2e%2e`, not `..`.
        let r = parse_request("/%252e%252e/f").unwrap();
        assert_eq!(r.path.parts(), ["%2e%2e", "f"]);
        assert_eq!(
            parse_request("/caf%C3%A9.txt").unwrap().path.to_string(),
            "/café.txt"
        );
        assert_eq!(parse_request("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(parse_request("/a%4"), Err(PathError::BadEncoding));
        assert_eq!(parse_request("/a%ff"), Err(PathError::BadEncoding));
    }

    #[test]
    fn refuses_nul_control_and_backslash() {
        assert_eq!(parse_request("/a%00b"), Err(PathError::BadChar));
        assert_eq!(parse_request("/a%0ab"), Err(PathError::BadChar));
        assert_eq!(parse_request("/a%5c..%5cb"), Err(PathError::BadChar));
    }

    #[test]
    fn enforces_soracom_limits() {
        let deep = "/d".repeat(MAX_DEPTH);
        assert!(parse_request(&deep).is_ok());
        assert_eq!(parse_request(&format!("{deep}/x")), Err(PathError::TooDeep));
        let long_name = "n".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            parse_request(&format!("/{long_name}")),
            Err(PathError::NameTooLong)
        );
        let long = format!(
            "/{}/{}/{}/{}/x",
            "a".repeat(255),
            "b".repeat(255),
            "c".repeat(255),
            "d".repeat(255)
        );
        assert_eq!(parse_request(&long), Err(PathError::TooLong));
    }

    #[test]
    fn trailing_slash_means_directory() {
        assert!(parse_request("/a/b/").unwrap().dir);
        assert!(!parse_request("/a/b").unwrap().dir);
        assert!(parse_request("/").unwrap().dir);
        assert!(parse_request("").unwrap().dir);
    }

    #[test]
    fn device_paths_are_under_the_expanded_prefix() {
        let s = on("/:imsi/", None);
        assert_eq!(
            put("/logs/a.txt", &s).unwrap(),
            format!("/{IMSI}/logs/a.txt")
        );
        // What looks absolute is still under the prefix.
        assert_eq!(
            put("//etc/passwd", &s).unwrap(),
            format!("/{IMSI}/etc/passwd")
        );
        assert_eq!(
            put("/../001010000000002/x", &s),
            Err(DeviceError::Path(PathError::DotDot))
        );
        let shared = on("/", None);
        assert_eq!(put("/a.txt", &shared).unwrap(), "/a.txt");
        let nested = on("/devices/:imsi/up", None);
        assert_eq!(put("/f", &nested).unwrap(), format!("/devices/{IMSI}/up/f"));
    }

    #[test]
    fn put_without_a_name_uses_default_path() {
        let s = on("/:imsi/", Some("/logs/:time/log.txt"));
        assert_eq!(
            put("/", &s).unwrap(),
            format!("/{IMSI}/logs/1700000000000/log.txt")
        );
        // SORACOM ignores a trailing `/` in defaultPath.
        let s = on("/", Some("/:imsi/"));
        assert_eq!(put("/", &s).unwrap(), format!("/{IMSI}"));
        assert_eq!(put("/", &on("/", None)), Err(DeviceError::NoFileName));
        let bad = on("/", Some("logs.txt"));
        let e = put("/", &bad).unwrap_err();
        assert_eq!(e.status(), 404, "SORACOM: defaultPath without a leading /");
        let escape = on("/:imsi/", Some("/../x"));
        assert!(matches!(
            put("/", &escape),
            Err(DeviceError::BadSetting { .. })
        ));
    }

    #[test]
    fn methods_map_to_operations() {
        let s = on("/:imsi/", None);
        let op = |m: &str, raw: &str| device_op(m, raw, &s, IMSI, 0);
        let at = |p: &str| FilePath::from_decoded(&format!("/{IMSI}{p}")).unwrap();
        assert_eq!(op("GET", "/a"), Ok(DeviceOp::Get(at("/a"))));
        assert_eq!(op("HEAD", "/a"), Ok(DeviceOp::Get(at("/a"))));
        assert_eq!(op("GET", "/"), Ok(DeviceOp::List(at(""))));
        assert_eq!(op("GET", "/d/"), Ok(DeviceOp::List(at("/d"))));
        assert_eq!(op("POST", "/a"), Ok(DeviceOp::Put(at("/a"))));
        assert_eq!(op("DELETE", "/a"), Ok(DeviceOp::Delete(at("/a"))));
        assert_eq!(op("DELETE", "/d/"), Ok(DeviceOp::DeleteDir(at("/d"))));
        assert_eq!(op("DELETE", "/"), Err(DeviceError::DeleteRoot));
        assert_eq!(op("PUT", "/d/"), Err(DeviceError::PutToDirectory));
        assert_eq!(op("PATCH", "/a"), Err(DeviceError::Method));
    }

    proptest::proptest! {
        /// Whatever the path, a device's place is under its own prefix,
        /// has no `..`, and normalising it again changes nothing.
        #[test]
        fn device_paths_never_escape(raw in "[/.%2eEfa5c0]{0,40}", shared in proptest::bool::ANY) {
            let s = on(if shared { "/" } else { "/:imsi/" }, Some("/x/:time"));
            let root = expand(&s.prefix, IMSI, None).unwrap();
            for m in ["GET", "PUT", "DELETE"] {
                if let Ok(op) = device_op(m, &raw, &s, IMSI, 5) {
                    let p = op.path();
                    proptest::prop_assert!(p.starts_with(&root));
                    proptest::prop_assert!(p.parts().iter().all(|n| n != ".." && n != "." && !n.is_empty()));
                    proptest::prop_assert_eq!(&FilePath::from_decoded(&p.to_string()).unwrap(), p);
                }
            }
        }
    }

    #[test]
    fn settings_from_the_group_namespace() {
        let mut g: Group = serde_json::from_value(serde_json::json!({"id": "g"})).unwrap();
        assert!(!Settings::of(Some(&g)).enabled);
        assert!(!Settings::of(None).enabled);
        g.configuration.insert(
            NAMESPACE.to_owned(),
            [
                ("enabled".to_owned(), Value::Bool(true)),
                ("defaultPath".to_owned(), Value::from("/x")),
                ("defaultPathPrefix".to_owned(), Value::from("/d/:imsi/")),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            Settings::of(Some(&g)),
            Settings {
                enabled: true,
                prefix: "/d/:imsi/".into(),
                default_path: Some("/x".into()),
            }
        );
    }
}
