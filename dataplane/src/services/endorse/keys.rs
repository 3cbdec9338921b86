//! Endorse's signing keys: a key made on first use (RSA 2048 for RS256,
//! as SORACOM, or P-256 for ES256: `[endorse] algorithm`) and kept in
//! the data dir as PKCS#8 PEM (`endorse/current.pem`, owner-only, written
//! atomically by [`secret_file`]); after a rotation the key it replaced is
//! kept as `endorse/previous.pem` and still published, so tokens signed
//! before the rotation verify until they expire (a token lives at most the
//! group's `tokenTimeoutSeconds`; rotate again only after that).
//!
//! A key signs with its own algorithm, read from the file; changing
//! `[endorse] algorithm` takes effect at the next rotation, and the key it
//! replaces stays published as usual.
//!
//! A key's id is SORACOM's form, `v1-<32 hex>-x509.pem`, the hex being the
//! first 16 bytes of SHA-256 of the public key's DER (SubjectPublicKeyInfo).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use simgate_control::config::EndorseAlgorithm;
use simgate_control::secret_file;

const CURRENT: &str = "current.pem";
const PREVIOUS: &str = "previous.pem";

/// Why the keys cannot be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a PKCS#8 PEM RSA or P-256 private key")]
    Invalid { path: PathBuf },
    #[error("cannot generate a signing key")]
    Generate,
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// One key: the private half for signing, the public half as published.
pub struct SigningKey {
    pub kid: String,
    private_pem: String,
    encoding: EncodingKey,
    /// SubjectPublicKeyInfo as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_pem: String,
    /// The JWK (RFC 7517) of the public key.
    jwk: Value,
    algorithm: EndorseAlgorithm,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately no private key.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key for `algorithm`: RSA 2048 or P-256.
    pub fn generate(algorithm: EndorseAlgorithm) -> Result<Self, KeyError> {
        let der = match algorithm {
            EndorseAlgorithm::Rs256 => {
                let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
                pair.as_der()
                    .map_err(|_| KeyError::Generate)?
                    .as_ref()
                    .to_vec()
            }
            EndorseAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| KeyError::Generate)?
                    .as_ref()
                    .to_vec()
            }
        };
        Self::from_pem(&pem("PRIVATE KEY", &der)).ok_or(KeyError::Generate)
    }

    /// A PKCS#8 PEM RSA or P-256 private key; `None` if it is neither.
    pub fn from_pem(private_pem: &str) -> Option<Self> {
        let der = unpem(private_pem, "PRIVATE KEY")?;
        let (algorithm, spki, encoding, mut jwk) = if let Ok(pair) = KeyPair::from_pkcs8(&der) {
            let public = pair.public_key();
            let jwk = json!({"kty": "RSA", "alg": "RS256",
                "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero())});
            (
                EndorseAlgorithm::Rs256,
                public.as_der().ok()?.as_ref().to_vec(),
                EncodingKey::from_rsa_pem(private_pem.as_bytes()).ok()?,
                jwk,
            )
        } else {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).ok()?;
            let public = pair.public_key();
            // The uncompressed point: 0x04, then x and y, 32 bytes each.
            let point = public.as_ref();
            let (x, y) = point.get(1..)?.split_at_checked(32)?;
            let jwk = json!({"kty": "EC", "alg": "ES256", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
            (
                EndorseAlgorithm::Es256,
                public.as_der().ok()?.as_ref().to_vec(),
                EncodingKey::from_ec_pem(private_pem.as_bytes()).ok()?,
                jwk,
            )
        };
        let digest = Sha256::digest(&spki);
        let kid = format!("v1-{}-x509.pem", hex::encode(&digest[..16]));
        if let Some(o) = jwk.as_object_mut() {
            o.insert("kid".into(), json!(kid));
            o.insert("use".into(), json!("sig"));
        }
        Some(Self {
            kid,
            private_pem: private_pem.trim().to_owned(),
            encoding,
            public_pem: pem("PUBLIC KEY", &spki),
            jwk,
            algorithm,
        })
    }

    /// The JWK (RFC 7517) of the public key.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> EndorseAlgorithm {
        self.algorithm
    }

    /// Signs `claims` as a JWT (RS256 or ES256, as the key is) with this
    /// key's `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        let alg = match self.algorithm {
            EndorseAlgorithm::Rs256 => Algorithm::RS256,
            EndorseAlgorithm::Es256 => Algorithm::ES256,
        };
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}

/// The key that signs and the one it replaced (still published).
#[derive(Debug)]
pub struct KeySet {
    pub current: SigningKey,
    pub previous: Option<SigningKey>,
}

impl KeySet {
    /// The published key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| k.kid == kid)
    }

    /// `{"keys":[…]}`, the signing key first.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = std::iter::once(&self.current)
            .chain(self.previous.as_ref().filter(|p| p.kid != self.current.kid))
            .map(SigningKey::jwk)
            .collect();
        json!({ "keys": keys })
    }
}

/// The keys in `{dir}`, swapped atomically on rotation: signing reads,
/// never locks.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    /// What new keys are made with.
    algorithm: EndorseAlgorithm,
    set: ArcSwap<KeySet>,
    /// One rotation at a time (two at once would lose the overlap).
    rotating: Mutex<()>,
}

impl KeyStore {
    /// Loads the keys from `dir` (made private if need be), generating the
    /// first one if there is none. Blocking (file I/O, RSA generation).
    pub fn open(dir: &Path, algorithm: EndorseAlgorithm) -> Result<Self, KeyError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        secret_file::create_private_dir(dir).map_err(io_err(dir))?;
        let current_path = dir.join(CURRENT);
        let current = match load(&current_path)? {
            Some(k) => k,
            None => {
                let k = SigningKey::generate(algorithm)?;
                secret_file::write(&current_path, &k.private_pem).map_err(io_err(&current_path))?;
                k
            }
        };
        let previous = load(&dir.join(PREVIOUS))?;
        if current.algorithm != algorithm {
            tracing::warn!(
                kid = %current.kid,
                "the Endorse key signs with {:?}, [endorse] algorithm asks for {:?}: \
                 `simgate endorse rotate` to switch",
                current.algorithm,
                algorithm
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            algorithm,
            set: ArcSwap::from_pointee(KeySet { current, previous }),
            rotating: Mutex::new(()),
        })
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// Makes a new signing key; the current one becomes the previous (the
    /// one before is no longer published). Durable before it takes effect:
    /// `previous.pem` is written first, then `current.pem`, so a crash
    /// between leaves the old key signing. Returns the new key's id.
    /// Blocking.
    pub fn rotate(&self) -> Result<String, KeyError> {
        let _one = self
            .rotating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.set.load_full();
        let new = SigningKey::generate(self.algorithm)?;
        let write = |name: &str, key: &SigningKey| {
            let path = self.dir.join(name);
            secret_file::write(&path, &key.private_pem)
                .map_err(|source| KeyError::Io { path, source })
        };
        write(PREVIOUS, &old.current)?;
        write(CURRENT, &new)?;
        let kid = new.kid.clone();
        let previous = SigningKey::from_pem(&old.current.private_pem);
        self.set.store(Arc::new(KeySet {
            current: new,
            previous,
        }));
        Ok(kid)
    }
}

fn load(path: &Path) -> Result<Option<SigningKey>, KeyError> {
    let text = secret_file::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    match text {
        None => Ok(None),
        Some(t) => SigningKey::from_pem(&t)
            .map(Some)
            .ok_or_else(|| KeyError::Invalid {
                path: path.to_owned(),
            }),
    }
}

/// PEM with 64-character lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str, label: &str) -> Option<Vec<u8>> {
    let body = text
        .trim()
        .strip_prefix(&format!("-----BEGIN {label}-----"))?
        .strip_suffix(&format!("-----END {label}-----"))?;
    let b64: String = body.split_whitespace().collect();
    STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn keys_persist_rotate_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("endorse");
        let store = KeyStore::open(&d, EndorseAlgorithm::Rs256).unwrap();
        let first = store.keys();
        assert!(super::super::claims::is_kid(&first.current.kid));
        assert!(first.previous.is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(d.join(CURRENT))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Loaded again: the same key.
        assert_eq!(
            KeyStore::open(&d, EndorseAlgorithm::Rs256)
                .unwrap()
                .keys()
                .current
                .kid,
            first.current.kid
        );

        let claims = json!({"sub": "x", "exp": 4_000_000_000u64});
        let token = first.current.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(first.current.kid.as_str()));

        let new_kid = store.rotate().unwrap();
        let after = store.keys();
        assert_eq!(after.current.kid, new_kid);
        assert_ne!(new_kid, first.current.kid);
        // The old token verifies with the still-published old key, from its JWK.
        let old = after.get(&first.current.kid).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(old.jwk()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 2);
        // And from disk.
        let reopened = KeyStore::open(&d, EndorseAlgorithm::Rs256).unwrap().keys();
        assert_eq!(reopened.current.kid, new_kid);
        assert_eq!(
            reopened.previous.as_ref().map(|k| k.kid.as_str()),
            Some(first.current.kid.as_str())
        );
        assert!(reopened
            .current
            .public_pem
            .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    #[test]
    fn es256_keys_sign_verify_and_rotate_from_rsa() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("endorse");
        let rsa = KeyStore::open(&d, EndorseAlgorithm::Rs256).unwrap();
        let rsa_kid = rsa.keys().current.kid.clone();
        drop(rsa);
        // The configured algorithm changes: the RSA key keeps signing until
        // a rotation, which makes a P-256 key.
        let store = KeyStore::open(&d, EndorseAlgorithm::Es256).unwrap();
        assert_eq!(store.keys().current.algorithm(), EndorseAlgorithm::Rs256);
        let kid = store.rotate().unwrap();
        let keys = store.keys();
        assert_eq!(keys.current.algorithm(), EndorseAlgorithm::Es256);
        assert_eq!(
            keys.previous.as_ref().map(|k| k.kid.as_str()),
            Some(rsa_kid.as_str())
        );
        assert!(super::super::claims::is_kid(&kid));
        let jwk = keys.current.jwk();
        assert_eq!(
            (&jwk["kty"], &jwk["crv"], &jwk["alg"]),
            (&json!("EC"), &json!("P-256"), &json!("ES256"))
        );

        let token = keys.current.sign(&json!({"sub": "x"})).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
        // The PEM published for the kid is the same key.
        let from_pem = DecodingKey::from_ec_pem(keys.current.public_pem.as_bytes()).unwrap();
        jsonwebtoken::decode::<Value>(&token, &from_pem, &v).unwrap();
        // Reloaded from disk: still ES256, same kid.
        let again = KeyStore::open(&d, EndorseAlgorithm::Es256).unwrap().keys();
        assert_eq!(again.current.kid, kid);
        assert_eq!(again.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        secret_file::create_private_dir(dir.path()).unwrap();
        secret_file::write(&dir.path().join(CURRENT), "junk").unwrap();
        assert!(matches!(
            KeyStore::open(dir.path(), EndorseAlgorithm::Rs256),
            Err(KeyError::Invalid { .. })
        ));
    }
}
