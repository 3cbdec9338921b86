//! Shared access signatures for Event Hubs, sans-IO: the token for a
//! resource URI, policy and key at a given time, and a cache that decides
//! when to mint the next one.
//!
//! `Authorization: SharedAccessSignature sr={uri}&sig={sig}&se={expiry}&skn={policy}`
//! where `uri` is the URL-encoded resource URI, `expiry` Unix seconds and
//! `sig` the URL-encoded base64 of HMAC-SHA256(key, `uri` + "\n" + `expiry`).
//! The key is used as the policy shows it (its base64 text, not decoded).
//! Source: Microsoft Learn, "Authenticate access to Event Hubs resources
//! using shared access signatures (SAS)".

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine as _;

/// How long a minted token is valid.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// A token is replaced this long before it expires, so a request signed
/// just before expiry (and slowed by a retry or a slow network) does not
/// arrive with an expired token.
pub const REFRESH_MARGIN_SECS: u64 = 300;

/// Percent-encodes everything but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), as .NET's `WebUtility.UrlEncode` and
/// JavaScript's `encodeURIComponent` do for the characters that matter
/// here (`:`, `/`, `+`, `=`). The signed string and the `sr` sent must be
/// the same bytes, so one function produces both.
pub fn url_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Signs tokens for one resource with one shared access policy.
#[derive(Clone)]
pub struct SasSigner {
    /// The resource URI, URL-encoded once (it is both signed and sent).
    encoded_uri: String,
    policy_name: String,
    key: hmac::Key,
}

impl fmt::Debug for SasSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately no key.
        f.debug_struct("SasSigner")
            .field("encoded_uri", &self.encoded_uri)
            .field("policy_name", &self.policy_name)
            .finish_non_exhaustive()
    }
}

impl SasSigner {
    pub fn new(resource_uri: &str, policy_name: &str, key: &str) -> Self {
        Self {
            encoded_uri: url_encode(resource_uri),
            policy_name: policy_name.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()),
        }
    }

    /// The base64 signature (not URL-encoded) of a token expiring at `expiry`.
    pub fn signature(&self, expiry: u64) -> String {
        let string_to_sign = format!("{}\n{expiry}", self.encoded_uri);
        let tag = hmac::sign(&self.key, string_to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }

    /// The `Authorization` header value of a token expiring at `expiry`
    /// (Unix seconds).
    pub fn token(&self, expiry: u64) -> String {
        format!(
            "SharedAccessSignature sr={}&sig={}&se={expiry}&skn={}",
            self.encoded_uri,
            url_encode(&self.signature(expiry)),
            url_encode(&self.policy_name),
        )
    }
}

/// The current token of one sink and when it expires.
#[derive(Debug)]
pub struct SasCache {
    signer: SasSigner,
    current: Option<(String, u64)>,
}

impl SasCache {
    pub fn new(signer: SasSigner) -> Self {
        Self {
            signer,
            current: None,
        }
    }

    /// The token to send at `now` (Unix seconds): the cached one while it
    /// has more than [`REFRESH_MARGIN_SECS`] left, else a new one valid for
    /// [`TOKEN_LIFETIME_SECS`].
    pub fn token(&mut self, now: u64) -> &str {
        let fresh = matches!(&self.current, Some((_, expiry)) if now.saturating_add(REFRESH_MARGIN_SECS) < *expiry);
        if !fresh {
            let expiry = now.saturating_add(TOKEN_LIFETIME_SECS);
            self.current = Some((self.signer.token(expiry), expiry));
        }
        match &self.current {
            Some((token, _)) => token,
            None => "",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const URI: &str = "https://my-namespace.servicebus.windows.net/devices/messages";
    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";

    #[test]
    fn url_encoding() {
        assert_eq!(
            url_encode(URI),
            "https%3A%2F%2Fmy-namespace.servicebus.windows.net%2Fdevices%2Fmessages"
        );
        assert_eq!(url_encode("a+b/c=d ~_.-"), "a%2Bb%2Fc%3Dd%20~_.-");
        assert_eq!(url_encode("é"), "%C3%A9");
        assert_eq!(url_encode(""), "");
    }

    /// Vectors computed independently with Python:
    /// `base64.b64encode(hmac.new(KEY.encode(), (quote(URI, safe="") + "\n" + se).encode(), sha256).digest())`.
    #[test]
    fn signature_matches_an_independent_computation() {
        let signer = SasSigner::new(URI, "send", KEY);
        assert_eq!(
            signer.signature(1_700_000_000),
            "H15mmMfLKvWnHGZ87hvegqspchLfbqUcoqMQVddaPmU="
        );
        assert_eq!(
            signer.token(1_700_000_000),
            "SharedAccessSignature sr=https%3A%2F%2Fmy-namespace.servicebus.windows.net%2Fdevices%2Fmessages\
             &sig=H15mmMfLKvWnHGZ87hvegqspchLfbqUcoqMQVddaPmU%3D&se=1700000000&skn=send"
        );
        // A signature with `+` and `/`: both are encoded in the token.
        assert_eq!(
            signer.signature(1_700_000_001),
            "+ac3ZAllrLhBLzzSWLbOhmKm38KacYhwD4E4/2Mskmk="
        );
        assert!(signer
            .token(1_700_000_001)
            .contains("&sig=%2Bac3ZAllrLhBLzzSWLbOhmKm38KacYhwD4E4%2F2Mskmk%3D&"));
        let debug = format!("{signer:?}");
        assert!(!debug.contains(KEY), "{debug}");
    }

    #[test]
    fn cached_token_is_reused_then_refreshed_before_expiry() {
        let mut cache = SasCache::new(SasSigner::new(URI, "send", KEY));
        let t0 = 1_700_000_000;
        let first = cache.token(t0).to_owned();
        assert!(first.contains(&format!("&se={}&", t0 + TOKEN_LIFETIME_SECS)));
        // Reused while more than the margin is left.
        let last_reuse = t0 + TOKEN_LIFETIME_SECS - REFRESH_MARGIN_SECS - 1;
        assert_eq!(cache.token(t0 + 1), first);
        assert_eq!(cache.token(last_reuse), first);
        // Replaced once only the margin is left, before it expires.
        let refresh_at = last_reuse + 1;
        assert!(refresh_at < t0 + TOKEN_LIFETIME_SECS);
        let second = cache.token(refresh_at).to_owned();
        assert_ne!(second, first);
        assert!(second.contains(&format!("&se={}&", refresh_at + TOKEN_LIFETIME_SECS)));
        assert_eq!(cache.token(refresh_at + 10), second);
        // A clock that jumped past expiry also gets a fresh token.
        let third = cache.token(t0 + 10 * TOKEN_LIFETIME_SECS).to_owned();
        assert!(third.contains(&format!("&se={}&", t0 + 11 * TOKEN_LIFETIME_SECS)));
    }
}
