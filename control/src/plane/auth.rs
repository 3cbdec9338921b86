//! [`ControlPlane`]'s SORACOM authentication: auth keys (stored hashed,
//! through the usual edit → commit pipeline) and the API key / token pairs
//! `POST /v1/auth` exchanges them for (memory only, checked without
//! touching the state lock).

use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard};

use super::{not_found, ControlPlane};
use crate::clock::now_ms;
use crate::model::OperatorId;
use crate::store::auth_key::{self, ApiKeys, AuthKeyRecord, IssuedPair, PairError};
use crate::store::StoreError;

/// An auth key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKeyInfo {
    pub auth_key_id: String,
    pub operator_id: OperatorId,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms of the last successful authentication with it.
    pub last_used_at: Option<u64>,
}

/// A new auth key: the only time its secret is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedAuthKey {
    pub auth_key_id: String,
    pub auth_key: String,
}

impl ControlPlane {
    fn api_keys(&self) -> RwLockReadGuard<'_, ApiKeys> {
        self.api_keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn api_keys_mut(&self) -> RwLockWriteGuard<'_, ApiKeys> {
        self.api_keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the operator is known (from the configuration file).
    pub fn operator_exists(&self, id: &OperatorId) -> bool {
        self.read().operators.contains_key(id)
    }

    /// Makes an auth key for `operator`; only a salted SHA-256 of its secret
    /// is kept, so this is the one time the secret can be seen.
    pub fn create_auth_key(&self, operator: &OperatorId) -> Result<CreatedAuthKey, StoreError> {
        let auth_key_id = auth_key::generate_id();
        let secret = auth_key::generate_secret();
        let (salt, digest) = auth_key::hash_secret(&secret);
        let record = AuthKeyRecord {
            id: auth_key_id.clone(),
            operator_id: operator.clone(),
            salt,
            digest,
            created_at: 0,
            last_used_at: None,
        };
        self.mutate(|e| {
            if !e.state().operators.contains_key(operator) {
                return Err(not_found("operator", operator));
            }
            e.put_auth_key(record.clone())
        })?;
        Ok(CreatedAuthKey {
            auth_key_id,
            auth_key: secret,
        })
    }

    /// The operator's auth keys, oldest first.
    pub fn list_auth_keys(&self, operator: &OperatorId) -> Result<Vec<AuthKeyInfo>, StoreError> {
        let st = self.read();
        if !st.operators.contains_key(operator) {
            return Err(not_found("operator", operator));
        }
        let mut keys: Vec<AuthKeyInfo> = st
            .auth_keys
            .values()
            .filter(|k| &k.operator_id == operator)
            .map(|k| AuthKeyInfo {
                auth_key_id: k.id.clone(),
                operator_id: k.operator_id.clone(),
                created_at: k.created_at,
                last_used_at: k.last_used_at,
            })
            .collect();
        keys.sort_by(|a, b| (a.created_at, &a.auth_key_id).cmp(&(b.created_at, &b.auth_key_id)));
        Ok(keys)
    }

    /// Deletes the operator's auth key `id`; the API keys it made stop
    /// working at once.
    pub fn delete_auth_key(&self, operator: &OperatorId, id: &str) -> Result<(), StoreError> {
        self.mutate(|e| {
            if !e.state().operators.contains_key(operator) {
                return Err(not_found("operator", operator));
            }
            match e.state().auth_keys.get(id) {
                Some(k) if &k.operator_id == operator => e.delete_auth_key(id),
                _ => Err(not_found("auth key", id)),
            }
        })?;
        let n = self.api_keys_mut().revoke_auth_key(id);
        tracing::info!(auth_key_id = id, api_keys_revoked = n, "auth key deleted");
        Ok(())
    }

    /// `POST /v1/auth`: an API key / token pair valid `timeout_secs` if
    /// `secret` is the secret of auth key `id`, else `None` (unknown id and
    /// wrong secret are not told apart). Records the key's last use (one
    /// durable write).
    pub fn authenticate(
        &self,
        id: &str,
        secret: &str,
        timeout_secs: u64,
    ) -> Result<Option<IssuedPair>, StoreError> {
        let record = if auth_key::plausible_id(id) {
            self.read().auth_keys.get(id).cloned()
        } else {
            None
        };
        let Some(record) = record else {
            auth_key::verify_nothing(secret);
            return Ok(None);
        };
        if !record.verify(secret) {
            return Ok(None);
        }
        match self.mutate(|e| e.touch_auth_key(id)) {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let now = now_ms();
        let pair = {
            let mut keys = self.api_keys_mut();
            keys.purge(now);
            keys.issue(
                id,
                record.operator_id,
                timeout_secs.saturating_mul(1000),
                now,
            )
        };
        // A deletion of the key that ran between the check and the issue
        // revoked the pairs it found before this one existed: undo it here.
        if !self.read().auth_keys.contains_key(id) {
            self.api_keys_mut().revoke(&pair.api_key);
            return Ok(None);
        }
        Ok(Some(pair))
    }

    /// Whether `X-Soracom-API-Key` and `X-Soracom-Token` are a live pair.
    pub fn verify_api_key(&self, api_key: &str, token: &str) -> Result<(), PairError> {
        self.api_keys().verify(api_key, token, now_ms())
    }

    /// Ends the pair whose API key is `api_key` (`POST /v1/auth/logout`);
    /// whether there was one.
    pub fn logout(&self, api_key: &str) -> bool {
        self.api_keys_mut().revoke(api_key)
    }
}
