//! How each entity is written in the store: JSON values under text keys.
//!
//! Records are separate types from the model where the model's serialized form
//! is not what must be kept: credentials (the model's [`Secret`] serializes as
//! a placeholder, but the gateway's own store must keep the secret to use it)
//! and tokens (a hex digest, never the token).

use std::net::IpAddr;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::state::{StaticSession, TokenRecord};
use super::token::TokenDigest;
use super::{Stamped, StoreError};
use crate::model::{
    AwsCredentials, Credential, CredentialId, CredentialKind, Imei, Imsi, Msisdn, Secret,
};

/// A stamped entity as written: `{"value":…,"createdAt":…,"lastModifiedAt":…}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StampedOut<'a, T> {
    value: &'a T,
    created_at: u64,
    last_modified_at: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StampedIn<T> {
    value: T,
    created_at: u64,
    last_modified_at: u64,
}

pub(crate) fn encode_stamped<T: Serialize>(s: &Stamped<T>) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(&StampedOut {
        value: &*s.value,
        created_at: s.created_at,
        last_modified_at: s.last_modified_at,
    })?)
}

pub(crate) fn decode_stamped<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<Stamped<T>, StoreError> {
    let s: StampedIn<T> = decode(table, key, bytes)?;
    Ok(Stamped {
        value: Arc::new(s.value),
        created_at: s.created_at,
        last_modified_at: s.last_modified_at,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// A credential set with its secrets in clear: this is the gateway's own
/// store, which must be able to use them. Never returned by the API or logged.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CredentialRecord {
    #[serde(rename = "type")]
    kind: String,
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
    created_at: u64,
    last_modified_at: u64,
}

const AWS_CREDENTIALS: &str = "aws-credentials";

pub(crate) fn encode_credential(c: &Stamped<Credential>) -> Result<Vec<u8>, StoreError> {
    let CredentialKind::Aws(aws) = &c.value.kind;
    Ok(serde_json::to_vec(&CredentialRecord {
        kind: AWS_CREDENTIALS.to_owned(),
        access_key_id: aws.access_key_id.clone(),
        secret_access_key: aws.secret_access_key.expose().to_owned(),
        session_token: aws.session_token.as_ref().map(|s| s.expose().to_owned()),
        created_at: c.created_at,
        last_modified_at: c.last_modified_at,
    })?)
}

pub(crate) fn decode_credential(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<Stamped<Credential>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason,
    };
    let r: CredentialRecord = decode(table, key, bytes)?;
    if r.kind != AWS_CREDENTIALS {
        return Err(corrupt(format!("unknown credential type {:?}", r.kind)));
    }
    let id = CredentialId::parse(key).map_err(|e| corrupt(e.to_string()))?;
    Ok(Stamped {
        value: Arc::new(Credential {
            id,
            kind: CredentialKind::Aws(AwsCredentials {
                access_key_id: r.access_key_id,
                secret_access_key: Secret::new(r.secret_access_key),
                session_token: r.session_token.map(Secret::new),
            }),
        }),
        created_at: r.created_at,
        last_modified_at: r.last_modified_at,
    })
}

/// A static session; the key is the IP address.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionRecord {
    imsi: Imsi,
    #[serde(default)]
    imei: Option<Imei>,
    #[serde(default)]
    msisdn: Option<Msisdn>,
    created_at: u64,
}

pub(crate) fn encode_session(s: &StaticSession) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(&SessionRecord {
        imsi: s.imsi.clone(),
        imei: s.imei.clone(),
        msisdn: s.msisdn.clone(),
        created_at: s.created_at,
    })?)
}

pub(crate) fn decode_session(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<(IpAddr, StaticSession), StoreError> {
    let ip: IpAddr = key.parse().map_err(|_| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason: "key is not an IP address".into(),
    })?;
    let r: SessionRecord = decode(table, key, bytes)?;
    Ok((
        ip,
        StaticSession {
            imsi: r.imsi,
            imei: r.imei,
            msisdn: r.msisdn,
            created_at: r.created_at,
        },
    ))
}

/// An API token: its name is the key; only the SHA-256 is kept.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenDisk {
    sha256: String,
    created_at: u64,
}

pub(crate) fn encode_token(t: &TokenRecord) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(&TokenDisk {
        sha256: hex::encode(t.digest),
        created_at: t.created_at,
    })?)
}

pub(crate) fn decode_token(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<TokenRecord, StoreError> {
    let r: TokenDisk = decode(table, key, bytes)?;
    let mut digest: TokenDigest = [0; 32];
    hex::decode_to_slice(&r.sha256, &mut digest).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason: format!("sha256: {e}"),
    })?;
    Ok(TokenRecord {
        name: key.to_owned(),
        digest,
        created_at: r.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_record_keeps_the_secret() {
        let c = Stamped {
            value: Arc::new(Credential {
                id: CredentialId::parse("kin").unwrap(),
                kind: CredentialKind::Aws(AwsCredentials {
                    access_key_id: "AKID".into(),
                    secret_access_key: Secret::new("s3cr3t"),
                    session_token: None,
                }),
            }),
            created_at: 1,
            last_modified_at: 2,
        };
        let bytes = encode_credential(&c).unwrap();
        let back = decode_credential("credentials", "kin", &bytes).unwrap();
        assert_eq!(back.value, c.value);
        assert_eq!(back.last_modified_at, 2);
    }

    #[test]
    fn corrupt_records_name_table_and_key() {
        let e = decode_token("tokens", "default", b"{").unwrap_err();
        assert!(e.to_string().contains("tokens/default"), "{e}");
        let e = decode_session("sessions", "not-an-ip", b"{}").unwrap_err();
        assert!(e.to_string().contains("not an IP"), "{e}");
    }
}
