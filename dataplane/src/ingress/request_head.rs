//! What the device HTTP listener reads from a request's head itself, before
//! any service sees the request: the name a request is routed by, whether
//! its declared length is refused unread, and the header texts handed to
//! the services. Pure (no I/O), so the `http_entry` fuzz target can check
//! it on any input.

use http::header::{self, HeaderMap};
use http::Uri;

/// The name a request is routed by: its `Host` header when that is
/// visible ASCII, else the host of an absolute-form request target.
pub fn host_of<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.host())
}

/// Whether the request's `Content-Length` already says the body is over
/// `max_body`, so it is refused without reading it. A length that is not
/// a number is left to hyper, which refuses it, and a body longer than it
/// says is cut off at `max_body` by the reader anyway.
pub fn declared_too_big(headers: &HeaderMap, max_body: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max_body as u64)
}

/// A header's value as text, as the services get it (`None` when absent or
/// not visible ASCII, e.g. `X-Soracom-Timestamp`, `Content-Type`).
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn host_header_first_then_the_target() {
        let uri: Uri = "http://funnel.example/x".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(host_of(&h, &uri), Some("funnel.example"));
        h.insert(
            header::HOST,
            HeaderValue::from_static("harvest.example:8080"),
        );
        assert_eq!(host_of(&h, &uri), Some("harvest.example:8080"));
        // Not text: the target's host, as if there were no header.
        h.insert(header::HOST, HeaderValue::from_bytes(b"\xffx").unwrap());
        assert_eq!(host_of(&h, &uri), Some("funnel.example"));
        assert_eq!(host_of(&h, &Uri::from_static("/x")), None);
    }

    #[test]
    fn declared_length() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(v));
            h
        };
        assert!(!declared_too_big(&HeaderMap::new(), 10));
        assert!(!declared_too_big(&with("10"), 10));
        assert!(declared_too_big(&with("11"), 10));
        assert!(!declared_too_big(&with("ten"), 10));
        assert!(!declared_too_big(&with("99999999999999999999999"), 10));
    }
}
