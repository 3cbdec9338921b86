//! SORACOM-style auth keys (`POST /v1/auth` with `authKeyId` + `authKey`)
//! and the API key / token pairs they are exchanged for.
//!
//! An auth key's secret is shown once, when it is made; the store keeps a
//! random 16-byte salt and SHA-256(salt ‖ secret), compared in constant time.
//! The secrets are 256 random bits, so a fast salted hash is as strong as a
//! slow one would be. Auth keys live in the `auth_keys` table (schema v3):
//! `authKeyId → {"operatorId","salt","sha256","createdAt","lastUsedAt"}`.
//!
//! API key / token pairs ([`ApiKeys`]) are kept in memory only, with their
//! expiry: a restart (or deleting the auth key that made them) ends them, and
//! a SORACOM client then authenticates again. Only digests are held. The
//! registry is pure (it is given the time), so expiry is tested without a
//! clock.

use std::collections::HashMap;

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::StoreError;
use crate::model::OperatorId;

/// Auth key ids look like SORACOM's: `keyId-` and 32 hex digits.
pub const AUTH_KEY_ID_PREFIX: &str = "keyId-";
/// Auth key secrets: `secret-` and 64 hex digits (256 random bits).
pub const AUTH_KEY_SECRET_PREFIX: &str = "secret-";
/// API keys: `api-` and a UUID-shaped 128-bit random hex string.
pub const API_KEY_PREFIX: &str = "api-";

/// SORACOM's `tokenTimeoutSeconds` default (24 h) and maximum (48 h); the
/// spec gives no minimum, simgate takes 1 s.
pub const DEFAULT_TOKEN_TIMEOUT_SECONDS: u64 = 86_400;
pub const MAX_TOKEN_TIMEOUT_SECONDS: u64 = 172_800;
pub const MIN_TOKEN_TIMEOUT_SECONDS: u64 = 1;

/// Live API key / token pairs kept at most; past it, the pair closest to
/// expiry is dropped to make room (after dropping expired ones).
pub const MAX_API_KEYS: usize = 10_000;

/// Auth keys an operator may have; SORACOM allows 2 per user, simgate is
/// laxer but bounded.
pub const MAX_AUTH_KEYS: usize = 100;

pub type Digest32 = [u8; 32];

/// A stored auth key: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthKeyRecord {
    pub(crate) id: String,
    pub(crate) operator_id: OperatorId,
    pub(crate) salt: [u8; 16],
    pub(crate) digest: Digest32,
    /// Unix ms.
    pub(crate) created_at: u64,
    /// Unix ms of the last successful `POST /v1/auth` with this key.
    pub(crate) last_used_at: Option<u64>,
}

impl AuthKeyRecord {
    /// Whether `secret` is this key's secret (constant time).
    pub(crate) fn verify(&self, secret: &str) -> bool {
        ct_eq(&salted(&self.salt, secret), &self.digest)
    }
}

/// A new auth key id, `keyId-` and 32 hex digits.
pub fn generate_id() -> String {
    format!("{AUTH_KEY_ID_PREFIX}{}", random_hex::<16>())
}

/// A new auth key secret, `secret-` and 64 hex digits.
pub fn generate_secret() -> String {
    format!("{AUTH_KEY_SECRET_PREFIX}{}", random_hex::<32>())
}

/// A fresh salt and the salted digest of `secret`.
pub(crate) fn hash_secret(secret: &str) -> ([u8; 16], Digest32) {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    (salt, salted(&salt, secret))
}

fn salted(salt: &[u8], secret: &str) -> Digest32 {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Spends as long as checking a real key does, for ids that do not exist.
pub(crate) fn verify_nothing(secret: &str) {
    std::hint::black_box(ct_eq(&salted(&[0u8; 16], secret), &[0u8; 32]));
}

fn random_hex<const N: usize>() -> String {
    let mut raw = [0u8; N];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Equality of two digests whose time does not depend on where they differ.
fn ct_eq(a: &Digest32, b: &Digest32) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// Whether `id` has the shape of an auth key id (1 to 128 of letters,
/// digits, `-`, `_`); anything else cannot name a key.
pub(crate) fn plausible_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

// ---- records ----

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    operator_id: OperatorId,
    salt: String,
    sha256: String,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used_at: Option<u64>,
}

pub(crate) fn encode(r: &AuthKeyRecord) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(&Stored {
        operator_id: r.operator_id.clone(),
        salt: hex::encode(r.salt),
        sha256: hex::encode(r.digest),
        created_at: r.created_at,
        last_used_at: r.last_used_at,
    })?)
}

pub(crate) fn decode(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<AuthKeyRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason,
    };
    let s: Stored = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut salt = [0u8; 16];
    hex::decode_to_slice(&s.salt, &mut salt).map_err(|e| corrupt(format!("salt: {e}")))?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&s.sha256, &mut digest).map_err(|e| corrupt(format!("sha256: {e}")))?;
    Ok(AuthKeyRecord {
        id: key.to_owned(),
        operator_id: s.operator_id,
        salt,
        digest,
        created_at: s.created_at,
        last_used_at: s.last_used_at,
    })
}

// ---- API key / token pairs ----

/// A pair handed out by `POST /v1/auth`: shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedPair {
    pub api_key: String,
    pub token: String,
    pub operator_id: OperatorId,
    /// Unix ms.
    pub expires_at: u64,
}

#[derive(Debug, Clone)]
struct Live {
    token: Digest32,
    expires_at: u64,
    auth_key_id: String,
}

/// Why a presented API key / token pair was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairError {
    /// Unknown API key, or the token does not match it.
    Invalid,
    /// It was valid, and has expired.
    Expired,
}

/// The live API key / token pairs, by SHA-256 of the API key (so the map's
/// lookup time says nothing about the key), each with its token's digest.
#[derive(Debug, Default)]
pub struct ApiKeys {
    live: HashMap<Digest32, Live>,
}

impl ApiKeys {
    /// Makes a pair for `auth_key_id`, valid `ttl_ms` from `now`.
    pub fn issue(
        &mut self,
        auth_key_id: &str,
        operator_id: OperatorId,
        ttl_ms: u64,
        now: u64,
    ) -> IssuedPair {
        if self.live.len() >= MAX_API_KEYS {
            self.purge(now);
        }
        while self.live.len() >= MAX_API_KEYS {
            let Some(k) = self
                .live
                .iter()
                .min_by_key(|(_, l)| l.expires_at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.live.remove(&k);
        }
        let u = random_hex::<16>();
        let api_key = format!(
            "{API_KEY_PREFIX}{}-{}-{}-{}-{}",
            &u[..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..]
        );
        let token = random_hex::<32>();
        let expires_at = now.saturating_add(ttl_ms);
        self.live.insert(
            sha256(&api_key),
            Live {
                token: sha256(&token),
                expires_at,
                auth_key_id: auth_key_id.to_owned(),
            },
        );
        IssuedPair {
            api_key,
            token,
            operator_id,
            expires_at,
        }
    }

    /// Whether `api_key` and `token` are a live pair at `now`.
    pub fn verify(&self, api_key: &str, token: &str, now: u64) -> Result<(), PairError> {
        let t = sha256(token);
        match self.live.get(&sha256(api_key)) {
            Some(l) if ct_eq(&l.token, &t) => {
                if now < l.expires_at {
                    Ok(())
                } else {
                    Err(PairError::Expired)
                }
            }
            _ => Err(PairError::Invalid),
        }
    }

    /// Ends the pair whose API key is `api_key` (logout); whether there was one.
    pub fn revoke(&mut self, api_key: &str) -> bool {
        self.live.remove(&sha256(api_key)).is_some()
    }

    /// Ends every pair made with `auth_key_id` (the key was deleted).
    pub fn revoke_auth_key(&mut self, auth_key_id: &str) -> usize {
        let before = self.live.len();
        self.live.retain(|_, l| l.auth_key_id != auth_key_id);
        before - self.live.len()
    }

    /// Forgets pairs expired at `now`.
    pub fn purge(&mut self, now: u64) {
        self.live.retain(|_, l| now < l.expires_at);
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

fn sha256(s: &str) -> Digest32 {
    Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> OperatorId {
        OperatorId::parse("OP0000000001").unwrap()
    }

    #[test]
    fn ids_and_secrets_have_soracom_shapes() {
        let id = generate_id();
        assert!(id.starts_with("keyId-") && id.len() == 6 + 32, "{id}");
        assert!(plausible_id(&id));
        let s = generate_secret();
        assert!(s.starts_with("secret-") && s.len() == 7 + 64, "{s}");
        assert_ne!(generate_secret(), s);
        assert!(!plausible_id(""));
        assert!(!plausible_id("a/b"));
    }

    #[test]
    fn secrets_are_salted_and_checked() {
        let s = generate_secret();
        let (salt, digest) = hash_secret(&s);
        let (salt2, digest2) = hash_secret(&s);
        assert_ne!(salt, salt2);
        assert_ne!(
            digest, digest2,
            "same secret, different salt, different digest"
        );
        let r = AuthKeyRecord {
            id: generate_id(),
            operator_id: op(),
            salt,
            digest,
            created_at: 1,
            last_used_at: None,
        };
        assert!(r.verify(&s));
        assert!(!r.verify(&s[..s.len() - 1]));
        assert!(!r.verify(""));
        verify_nothing(&s);
    }

    #[test]
    fn records_round_trip_without_the_secret() {
        let s = generate_secret();
        let (salt, digest) = hash_secret(&s);
        let r = AuthKeyRecord {
            id: "keyId-x".into(),
            operator_id: op(),
            salt,
            digest,
            created_at: 5,
            last_used_at: Some(7),
        };
        let bytes = encode(&r).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(&s));
        assert_eq!(decode("auth_keys", "keyId-x", &bytes).unwrap(), r);
        assert!(decode("auth_keys", "k", b"{}").is_err());
    }

    #[test]
    fn pairs_expire_and_are_revoked() {
        let mut keys = ApiKeys::default();
        let p = keys.issue("keyId-a", op(), 1_000, 10_000);
        assert!(p.api_key.starts_with("api-") && p.api_key.len() == 4 + 36);
        assert_eq!(p.expires_at, 11_000);
        assert_eq!(keys.verify(&p.api_key, &p.token, 10_999), Ok(()));
        assert_eq!(
            keys.verify(&p.api_key, &p.token, 11_000),
            Err(PairError::Expired)
        );
        assert_eq!(
            keys.verify(&p.api_key, "nope", 10_500),
            Err(PairError::Invalid)
        );
        // Key and token of two different pairs are not a pair.
        let q = keys.issue("keyId-b", op(), 1_000, 10_000);
        assert_eq!(
            keys.verify(&p.api_key, &q.token, 10_500),
            Err(PairError::Invalid)
        );
        assert_eq!(keys.revoke_auth_key("keyId-a"), 1);
        assert_eq!(
            keys.verify(&p.api_key, &p.token, 10_500),
            Err(PairError::Invalid)
        );
        assert!(keys.revoke(&q.api_key));
        assert!(keys.is_empty());
    }

    #[test]
    fn the_registry_is_bounded() {
        let mut keys = ApiKeys::default();
        let first = keys.issue("k", op(), 10, 0);
        for i in 0..MAX_API_KEYS {
            keys.issue("k", op(), 1_000 + i as u64, 0);
        }
        assert_eq!(keys.len(), MAX_API_KEYS);
        // The one closest to expiry made room.
        assert!(keys.verify(&first.api_key, &first.token, 1).is_err());
        keys.purge(u64::MAX);
        assert!(keys.is_empty());
    }
}
