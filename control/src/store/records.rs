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

use super::state::{Change, StaticSession, TokenRecord};
use super::token::TokenDigest;
use super::{Stamped, StoreError};
use crate::model::{
    AwsCredentials, AzureCredentials, Credential, CredentialId, CredentialKind,
    GoogleServiceAccountJson, Imei, Imsi, Msisdn, Operator, PskCredentials, Secret,
    X509Credentials,
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
///
/// `aws-credentials` records are written exactly as in schema version 1;
/// `psk` and `x509` arrived with version 2.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum CredentialRecord {
    #[serde(rename = "aws-credentials", rename_all = "camelCase")]
    Aws {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        session_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        created_at: u64,
        last_modified_at: u64,
    },
    #[serde(rename = "psk", rename_all = "camelCase")]
    Psk {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        created_at: u64,
        last_modified_at: u64,
    },
    #[serde(rename = "x509", rename_all = "camelCase")]
    X509 {
        #[serde(default)]
        ca: Option<String>,
        cert: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        created_at: u64,
        last_modified_at: u64,
    },
    #[serde(rename = "azure-credentials", rename_all = "camelCase")]
    Azure {
        policy_name: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        created_at: u64,
        last_modified_at: u64,
    },
    #[serde(rename = "google-service-account-json", rename_all = "camelCase")]
    GoogleServiceAccount {
        credentials: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        created_at: u64,
        last_modified_at: u64,
    },
}

pub(crate) fn encode_credential(c: &Stamped<Credential>) -> Result<Vec<u8>, StoreError> {
    let (created_at, last_modified_at) = (c.created_at, c.last_modified_at);
    let description = c.value.description.clone();
    let record = match &c.value.kind {
        CredentialKind::Aws(aws) => CredentialRecord::Aws {
            access_key_id: aws.access_key_id.clone(),
            secret_access_key: aws.secret_access_key.expose().to_owned(),
            session_token: aws.session_token.as_ref().map(|s| s.expose().to_owned()),
            description,
            created_at,
            last_modified_at,
        },
        CredentialKind::Psk(p) => CredentialRecord::Psk {
            key: p.key.expose().to_owned(),
            description,
            created_at,
            last_modified_at,
        },
        CredentialKind::X509(x) => CredentialRecord::X509 {
            ca: x.ca.clone(),
            cert: x.cert.clone(),
            key: x.key.expose().to_owned(),
            description,
            created_at,
            last_modified_at,
        },
        CredentialKind::Azure(a) => CredentialRecord::Azure {
            policy_name: a.policy_name.clone(),
            key: a.key.expose().to_owned(),
            description,
            created_at,
            last_modified_at,
        },
        CredentialKind::GoogleServiceAccount(g) => CredentialRecord::GoogleServiceAccount {
            credentials: g.credentials.expose().to_owned(),
            description,
            created_at,
            last_modified_at,
        },
    };
    Ok(serde_json::to_vec(&record)?)
}

pub(crate) fn decode_credential(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<Stamped<Credential>, StoreError> {
    let r: CredentialRecord = decode(table, key, bytes)?;
    let id = CredentialId::parse(key).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    let (kind, description, created_at, last_modified_at) = match r {
        CredentialRecord::Aws {
            access_key_id,
            secret_access_key,
            session_token,
            description,
            created_at,
            last_modified_at,
        } => (
            CredentialKind::Aws(AwsCredentials {
                access_key_id,
                secret_access_key: Secret::new(secret_access_key),
                session_token: session_token.map(Secret::new),
            }),
            description,
            created_at,
            last_modified_at,
        ),
        CredentialRecord::Psk {
            key,
            description,
            created_at,
            last_modified_at,
        } => (
            CredentialKind::Psk(PskCredentials {
                key: Secret::new(key),
            }),
            description,
            created_at,
            last_modified_at,
        ),
        CredentialRecord::X509 {
            ca,
            cert,
            key,
            description,
            created_at,
            last_modified_at,
        } => (
            CredentialKind::X509(X509Credentials {
                ca,
                cert,
                key: Secret::new(key),
            }),
            description,
            created_at,
            last_modified_at,
        ),
        CredentialRecord::Azure {
            policy_name,
            key,
            description,
            created_at,
            last_modified_at,
        } => (
            CredentialKind::Azure(AzureCredentials {
                policy_name,
                key: Secret::new(key),
            }),
            description,
            created_at,
            last_modified_at,
        ),
        CredentialRecord::GoogleServiceAccount {
            credentials,
            description,
            created_at,
            last_modified_at,
        } => (
            CredentialKind::GoogleServiceAccount(GoogleServiceAccountJson {
                credentials: Secret::new(credentials),
            }),
            description,
            created_at,
            last_modified_at,
        ),
    };
    Ok(Stamped {
        value: Arc::new(Credential {
            id,
            description,
            kind,
        }),
        created_at,
        last_modified_at,
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

/// The tables of the control state, by the names the stores use (redb
/// table names, etcd key segments).
pub(crate) const TABLES: [&str; 7] = [
    "operators",
    "groups",
    "subscribers",
    "credentials",
    "sessions",
    "tokens",
    "auth_keys",
];

/// A [`Change`] as it is written: its table, its key, and its bytes (`None`:
/// removed). Both stores (redb, etcd) write and read changes through these
/// two functions only.
pub(crate) struct Record {
    pub(crate) table: &'static str,
    pub(crate) key: String,
    pub(crate) value: Option<Vec<u8>>,
}

pub(crate) fn encode_change(change: &Change) -> Result<Record, StoreError> {
    fn rec(table: &'static str, key: String, value: Option<Vec<u8>>) -> Record {
        Record { table, key, value }
    }
    Ok(match change {
        Change::Operator(id, v) => rec(
            "operators",
            id.to_string(),
            v.as_deref().map(serde_json::to_vec).transpose()?,
        ),
        Change::Group(id, v) => rec(
            "groups",
            id.to_string(),
            v.as_ref().map(encode_stamped).transpose()?,
        ),
        Change::Subscriber(imsi, v) => rec(
            "subscribers",
            imsi.to_string(),
            v.as_ref().map(encode_stamped).transpose()?,
        ),
        Change::Credential(id, v) => rec(
            "credentials",
            id.to_string(),
            v.as_ref().map(encode_credential).transpose()?,
        ),
        Change::Session(ip, v) => rec(
            "sessions",
            ip.to_string(),
            v.as_ref().map(encode_session).transpose()?,
        ),
        Change::Token(name, v) => rec(
            "tokens",
            name.clone(),
            v.as_ref().map(encode_token).transpose()?,
        ),
        Change::AuthKey(id, v) => rec(
            "auth_keys",
            id.clone(),
            v.as_ref().map(super::auth_key::encode).transpose()?,
        ),
    })
}

/// The change that a record of `table` under `key` stands for; `value`
/// `None` is its removal.
pub(crate) fn decode_change(
    table: &str,
    key: &str,
    value: Option<&[u8]>,
) -> Result<Change, StoreError> {
    fn parse_key<T: std::str::FromStr>(table: &'static str, key: &str) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        key.parse().map_err(|e: T::Err| StoreError::Corrupt {
            table,
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
    Ok(match table {
        "operators" => {
            let t = "operators";
            Change::Operator(
                parse_key(t, key)?,
                value
                    .map(|b| decode::<Operator>(t, key, b).map(Arc::new))
                    .transpose()?,
            )
        }
        "groups" => {
            let t = "groups";
            Change::Group(
                parse_key(t, key)?,
                value.map(|b| decode_stamped(t, key, b)).transpose()?,
            )
        }
        "subscribers" => {
            let t = "subscribers";
            Change::Subscriber(
                parse_key(t, key)?,
                value.map(|b| decode_stamped(t, key, b)).transpose()?,
            )
        }
        "credentials" => {
            let t = "credentials";
            Change::Credential(
                parse_key(t, key)?,
                value.map(|b| decode_credential(t, key, b)).transpose()?,
            )
        }
        "sessions" => {
            let t = "sessions";
            let ip: IpAddr = key.parse().map_err(|_| StoreError::Corrupt {
                table: t,
                key: key.to_owned(),
                reason: "key is not an IP address".into(),
            })?;
            Change::Session(
                ip,
                value
                    .map(|b| decode_session(t, key, b).map(|(_, s)| s))
                    .transpose()?,
            )
        }
        "tokens" => Change::Token(
            key.to_owned(),
            value.map(|b| decode_token("tokens", key, b)).transpose()?,
        ),
        "auth_keys" => Change::AuthKey(
            key.to_owned(),
            value
                .map(|b| super::auth_key::decode("auth_keys", key, b))
                .transpose()?,
        ),
        other => {
            return Err(StoreError::Corrupt {
                table: "(unknown)",
                key: format!("{other}/{key}"),
                reason: "not a table of the control state".into(),
            })
        }
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
                description: None,
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
        // The version 1 shape, unchanged.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "aws-credentials", "accessKeyId": "AKID",
                "secretAccessKey": "s3cr3t", "sessionToken": null,
                "createdAt": 1, "lastModifiedAt": 2})
        );
        let back = decode_credential("credentials", "kin", &bytes).unwrap();
        assert_eq!(back.value, c.value);
        assert_eq!(back.last_modified_at, 2);
        for kind in [
            CredentialKind::Psk(PskCredentials {
                key: Secret::new("topsecret"),
            }),
            CredentialKind::X509(X509Credentials {
                ca: Some("CA PEM".into()),
                cert: "CERT PEM".into(),
                key: Secret::new("KEY PEM"),
            }),
        ] {
            let c = Stamped {
                value: Arc::new(Credential {
                    id: CredentialId::parse("k").unwrap(),
                    description: Some("d".into()),
                    kind,
                }),
                created_at: 3,
                last_modified_at: 4,
            };
            let bytes = encode_credential(&c).unwrap();
            let back = decode_credential("credentials", "k", &bytes).unwrap();
            assert_eq!(back.value, c.value);
            assert_eq!((back.created_at, back.last_modified_at), (3, 4));
        }
        let e =
            decode_credential("credentials", "k", br#"{"type":"gcp","createdAt":1}"#).unwrap_err();
        assert!(e.to_string().contains("credentials/k"), "{e}");
    }

    #[test]
    fn corrupt_records_name_table_and_key() {
        let e = decode_token("tokens", "default", b"{").unwrap_err();
        assert!(e.to_string().contains("tokens/default"), "{e}");
        let e = decode_session("sessions", "not-an-ip", b"{}").unwrap_err();
        assert!(e.to_string().contains("not an IP"), "{e}");
    }
}
