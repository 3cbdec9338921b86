//! The web console under `/console/` on the API listener: static files
//! compiled into the binary (no CDN, works with no internet), nothing else.
//!
//! The console is a client of the public REST API like any other: the page
//! sends the token the operator typed (kept in the tab's `sessionStorage`)
//! on every call, so it has exactly the API's authorisation and no route of
//! its own that reads or changes state. That is why serving these files
//! needs no token: they hold no data.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file the console serves; the first is the page itself.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", CSS),
    asset!("app.js", JS),
    asset!("sims.js", JS),
    asset!("groups.js", JS),
    asset!("harvest.js", JS),
    asset!("live.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
    asset!("vendor/uPlot.LICENSE", TEXT),
];

/// The file at `path` (relative to `/console/`; empty = the page).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let name = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|a| a.name == name)
}

/// Only this origin's scripts, styles and API; no framing (clickjacking of
/// the suspend button), no inline script (an XSS in a SIM's tag stays text).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

/// `GET /console` (→ `/console/`), `GET /console/` and its files. No token:
/// see the module comment.
pub fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { serve("") }))
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

fn serve(path: &str) -> Response {
    let Some(a) = asset(path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, TEXT)],
            "no such console file\n",
        )
            .into_response();
    };
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        )],
        a.body,
    )
        .into_response();
    let h = r.headers_mut();
    // The files change with the binary: revalidate rather than run an old
    // app.js against a newer API after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if a.content_type == HTML {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_path_is_the_page() {
        assert_eq!(asset("").map(|a| a.name), Some("index.html"));
        assert_eq!(ASSETS[0].content_type, HTML);
    }

    #[test]
    fn unknown_and_traversal_paths_are_not_found() {
        for p in [
            "nope.js",
            "../Cargo.toml",
            "vendor/../app.js",
            "/app.js",
            "APP.JS",
        ] {
            assert!(asset(p).is_none(), "{p}");
        }
    }

    #[test]
    fn types_follow_extensions() {
        for a in ASSETS {
            let want = match a.name.rsplit_once('.').map(|(_, e)| e) {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => CSS,
                _ => TEXT,
            };
            assert_eq!(a.content_type, want, "{}", a.name);
            assert!(!a.body.is_empty(), "{}", a.name);
        }
    }

    /// Every `src="…"`/`href="…"` of the page names an embedded file, so
    /// a renamed script fails here rather than in a browser.
    #[test]
    fn page_references_embedded_files_only() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap_or_default();
        let mut refs = 0;
        for attr in ["src=\"", "href=\""] {
            for (i, _) in page.match_indices(attr) {
                let rest = &page[i + attr.len()..];
                let target = &rest[..rest.find('"').unwrap_or(0)];
                if target.starts_with('#') {
                    continue;
                }
                assert!(asset(target).is_some(), "index.html refers to {target}");
                refs += 1;
            }
        }
        assert!(refs >= 7, "{refs}");
    }

    #[tokio::test]
    async fn serves_with_headers() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt as _;
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap_or_default();
        let r = router().oneshot(get("/console/")).await.ok();
        let r = r.as_ref();
        assert_eq!(r.map(Response::status), Some(StatusCode::OK));
        let h = r.map(Response::headers);
        assert!(h
            .and_then(|h| h.get(header::CONTENT_SECURITY_POLICY))
            .is_some());
        let r = router()
            .oneshot(get("/console/vendor/uPlot.min.css"))
            .await
            .ok();
        assert_eq!(
            r.as_ref()
                .and_then(|r| r.headers().get(header::CONTENT_TYPE))
                .and_then(|v| v.to_str().ok()),
            Some(CSS)
        );
        let r = router().oneshot(get("/console/x.js")).await.ok();
        assert_eq!(r.map(|r| r.status()), Some(StatusCode::NOT_FOUND));
        let r = router().oneshot(get("/console")).await.ok();
        assert_eq!(r.map(|r| r.status()), Some(StatusCode::PERMANENT_REDIRECT));
    }
}
