//! API bearer tokens. A token is shown once when it is made; the store keeps
//! only its SHA-256, and checking compares digests in constant time.

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Every token simgate makes starts with this, so a leaked one is easy to
/// recognise (and to grep for in logs and repositories).
pub const TOKEN_PREFIX: &str = "sgt_";

/// Random bytes per token: 192 bits, hex-encoded after the prefix.
const TOKEN_BYTES: usize = 24;

/// SHA-256 of a token: what the store keeps instead of the token.
pub type TokenDigest = [u8; 32];

/// A new random token, `sgt_` followed by 48 hex digits.
pub fn generate() -> String {
    let mut raw = [0u8; TOKEN_BYTES];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("{TOKEN_PREFIX}{}", hex::encode(raw))
}

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` is one of the tokens whose digests are given.
///
/// Digests are compared, so the length of a stored token leaks nothing, and
/// each comparison (and the loop) runs to the end whatever matches, so the
/// time taken does not tell which token or which byte was close.
pub fn verify<'a>(presented: &str, digests: impl IntoIterator<Item = &'a TokenDigest>) -> bool {
    let d = digest(presented);
    let mut found = 0u8;
    for stored in digests {
        let diff = d
            .iter()
            .zip(stored.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // 1 when diff == 0, else 0, without a branch on the secret.
        found |= ((u16::from(diff).wrapping_sub(1)) >> 8) as u8 & 1;
    }
    found == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_random_hex() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 2 * TOKEN_BYTES);
        assert!(a[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn digest_is_sha256() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hex::encode(digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verify_matches_any_stored_digest_and_nothing_else() {
        let a = generate();
        let b = generate();
        let stored = [digest(&a), digest(&b)];
        assert!(verify(&a, &stored));
        assert!(verify(&b, &stored));
        assert!(!verify("sgt_wrong", &stored));
        assert!(!verify("", &stored));
        assert!(!verify(&a, &[]));
        // A prefix or an extension of a token is not the token.
        assert!(!verify(&a[..a.len() - 1], &stored));
        assert!(!verify(&format!("{a}0"), &stored));
    }
}
