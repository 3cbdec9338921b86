//! Which Beam entry a request goes to, and the upstream URL it becomes.
//!
//! HTTP entry (:8888): the enabled entry whose path prefix is the longest
//! one matching the request path, on whole segments (`/api` matches `/api`
//! and `/api/v1`, not `/apix`; `/` matches everything). The rest of the path
//! after the prefix is appended to the destination, then the query.
//! Website entry (:18080): the whole path and query appended to the
//! destination. Paths are passed as the device sent them (still
//! percent-encoded).

use simgate_control::{BeamConfig, BeamEntry, BeamEntryPoint};

/// Where one HTTP request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoute<'a> {
    /// The matched entry's path prefix (its key is
    /// `http://beam.soracom.io:8888{prefix}`).
    pub path_prefix: &'a str,
    pub entry: &'a BeamEntry,
    /// Destination + the rest of the path + the query.
    pub upstream_url: String,
}

/// The prefix without a trailing `/`: `""` for `/`.
fn base(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

fn matches(base: &str, path: &str) -> bool {
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Splits `path?query` (an origin-form request target).
fn split_query(path_and_query: &str) -> (&str, Option<&str>) {
    match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    }
}

/// `destination` + `rest` (empty or starting with `/`) + `?query`.
fn join(destination: &str, rest: &str, query: Option<&str>) -> String {
    let (dest, dest_query) = split_query(destination);
    let mut url = String::with_capacity(destination.len() + rest.len() + 16);
    if rest.is_empty() {
        url.push_str(dest);
    } else {
        url.push_str(dest.trim_end_matches('/'));
        url.push_str(rest);
    }
    let queries: Vec<&str> = [dest_query, query]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect();
    if !queries.is_empty() {
        url.push('?');
        url.push_str(&queries.join("&"));
    }
    url
}

/// The HTTP entry (:8888) for a request target (`/path?query`), if an
/// enabled one matches.
pub fn select_http_entry<'a>(
    config: &'a BeamConfig,
    path_and_query: &str,
) -> Option<HttpRoute<'a>> {
    let (path, query) = split_query(path_and_query);
    let path = if path.is_empty() { "/" } else { path };
    let (prefix, entry) = config
        .http_entries()
        .filter(|(prefix, _)| matches(base(prefix), path))
        .max_by_key(|(prefix, _)| base(prefix).len())?;
    let rest = &path[base(prefix).len()..];
    Some(HttpRoute {
        path_prefix: prefix,
        entry,
        upstream_url: join(&entry.destination, rest, query),
    })
}

/// The website entry (:18080), if enabled.
pub fn website_entry(config: &BeamConfig) -> Option<&BeamEntry> {
    config.enabled(&BeamEntryPoint::Website)
}

/// The website entry's upstream URL: the whole path and query appended to
/// the destination.
pub fn website_url(entry: &BeamEntry, path_and_query: &str) -> String {
    let (path, query) = split_query(path_and_query);
    let path = if path == "/" { "" } else { path };
    join(&entry.destination, path, query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn config(entries: serde_json::Value) -> BeamConfig {
        serde_json::from_value(entries).unwrap()
    }

    fn demo() -> BeamConfig {
        config(json!({
            "http://beam.soracom.io:8888/": {"destination": "https://root.example/base", "enabled": true},
            "http://beam.soracom.io:8888/api": {"destination": "https://api.example/v2/", "enabled": true},
            "http://beam.soracom.io:8888/api/admin": {"destination": "https://admin.example", "enabled": false},
            "http://beam.soracom.io:8888/q": {"destination": "https://q.example/x?key=1", "enabled": true},
        }))
    }

    #[test]
    fn longest_enabled_prefix_on_segments() {
        let c = demo();
        let r = |p: &str| {
            let r = select_http_entry(&c, p).unwrap();
            (r.path_prefix.to_owned(), r.upstream_url)
        };
        assert_eq!(
            r("/api/v1/data?x=1"),
            ("/api".into(), "https://api.example/v2/v1/data?x=1".into())
        );
        assert_eq!(r("/api"), ("/api".into(), "https://api.example/v2/".into()));
        // Disabled entries are skipped: the enabled shorter prefix wins.
        assert_eq!(
            r("/api/admin/x"),
            ("/api".into(), "https://api.example/v2/admin/x".into())
        );
        // Whole segments only.
        assert_eq!(
            r("/apix"),
            ("/".into(), "https://root.example/base/apix".into())
        );
        assert_eq!(r("/"), ("/".into(), "https://root.example/base/".into()));
        assert_eq!(r(""), ("/".into(), "https://root.example/base/".into()));
        // A destination's own query is kept.
        assert_eq!(
            r("/q/a?b=2"),
            ("/q".into(), "https://q.example/x/a?key=1&b=2".into())
        );
        // No root entry: no match.
        let only = config(
            json!({"http://beam.soracom.io:8888/api": {"destination": "https://a", "enabled": true}}),
        );
        assert!(select_http_entry(&only, "/other").is_none());
        assert!(select_http_entry(&BeamConfig::default(), "/").is_none());
    }

    #[test]
    fn website_appends_the_whole_path() {
        let c = config(
            json!({"http://beam.soracom.io:18080": {"destination": "https://site.example/", "enabled": true}}),
        );
        let e = website_entry(&c).unwrap();
        assert_eq!(
            website_url(e, "/index.html?a=1"),
            "https://site.example/index.html?a=1"
        );
        assert_eq!(website_url(e, "/"), "https://site.example/");
        let e2: BeamEntry =
            serde_json::from_value(json!({"destination": "https://site.example/sub"})).unwrap();
        assert_eq!(website_url(&e2, "/a/b"), "https://site.example/sub/a/b");
    }

    proptest! {
        /// The chosen prefix matches the path, and no longer enabled prefix does.
        #[test]
        fn chosen_prefix_is_the_longest_match(path in "(/[a-c]{0,2}){0,4}") {
            let c = config(json!({
                "http://beam.soracom.io:8888/": {"destination": "https://r", "enabled": true},
                "http://beam.soracom.io:8888/a": {"destination": "https://a", "enabled": true},
                "http://beam.soracom.io:8888/a/b": {"destination": "https://ab", "enabled": true},
                "http://beam.soracom.io:8888/b/": {"destination": "https://b", "enabled": true},
            }));
            let route = select_http_entry(&c, &path).unwrap();
            let p = if path.is_empty() { "/" } else { path.as_str() };
            prop_assert!(matches(base(route.path_prefix), p));
            for (other, _) in c.http_entries() {
                if matches(base(other), p) {
                    prop_assert!(base(other).len() <= base(route.path_prefix).len());
                }
            }
            prop_assert!(route.upstream_url.starts_with(&route.entry.destination));
        }
    }
}
