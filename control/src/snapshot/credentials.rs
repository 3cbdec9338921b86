//! Resolving `{"$credentialsId": …}` references (Beam's `psk` and
//! `clientCerts`) against a snapshot, for the sending SIM.

use std::sync::Arc;

use super::Snapshot;
use crate::model::{
    Credential, CredentialKind, CredentialsRef, IdError, Imsi, Secret, X509Credentials,
};

/// Why a reference gives no usable credential set. Each is the
/// configuration's fault (not the device's): the proxy answers with an error
/// naming the entry, and counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialRefError {
    #[error("credentials id {0}")]
    InvalidId(#[from] IdError),
    #[error("credentials {0} do not exist")]
    NotFound(String),
    #[error("credentials {id} are of type {found}, {expected} is needed")]
    WrongType {
        id: String,
        found: &'static str,
        expected: &'static str,
    },
}

impl CredentialRefError {
    /// Label value for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidId(_) => "invalid_credentials_id",
            Self::NotFound(_) => "credentials_not_found",
            Self::WrongType { .. } => "credentials_wrong_type",
        }
    }
}

/// The credential set a `$credentialsId` value names for `imsi`: every
/// `#{imsi}` in it is replaced by the IMSI first.
pub fn resolve_credentials_ref(
    snapshot: &Snapshot,
    credentials_id: &str,
    imsi: &Imsi,
) -> Result<Arc<Credential>, CredentialRefError> {
    let id = CredentialsRef::parse(credentials_id)?.resolve(imsi)?;
    snapshot
        .credentials
        .get(&id)
        .cloned()
        .ok_or_else(|| CredentialRefError::NotFound(id.to_string()))
}

/// The key of a `psk` credential (Beam's `psk`).
pub fn resolve_psk(
    snapshot: &Snapshot,
    r: &CredentialsRef,
    imsi: &Imsi,
) -> Result<Secret, CredentialRefError> {
    let c = resolve_credentials_ref(snapshot, r.as_str(), imsi)?;
    match &c.kind {
        CredentialKind::Psk(p) => Ok(p.key.clone()),
        other => Err(CredentialRefError::WrongType {
            id: c.id.to_string(),
            found: other.type_name(),
            expected: "psk",
        }),
    }
}

/// The `x509` credential set (Beam's `clientCerts`), shared.
pub fn resolve_x509(
    snapshot: &Snapshot,
    r: &CredentialsRef,
    imsi: &Imsi,
) -> Result<(Arc<Credential>, X509Credentials), CredentialRefError> {
    let c = resolve_credentials_ref(snapshot, r.as_str(), imsi)?;
    match &c.kind {
        CredentialKind::X509(x) => {
            let x = x.clone();
            Ok((c, x))
        }
        other => Err(CredentialRefError::WrongType {
            id: c.id.to_string(),
            found: other.type_name(),
            expected: "x509",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CredentialId, PskCredentials};

    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        for (id, kind) in [
            (
                "psk-001010000000001",
                CredentialKind::Psk(PskCredentials {
                    key: Secret::new("k1"),
                }),
            ),
            (
                "cert",
                CredentialKind::X509(X509Credentials {
                    ca: None,
                    cert: "C".into(),
                    key: Secret::new("K"),
                }),
            ),
        ] {
            let id = CredentialId::parse(id).unwrap();
            let credential = Credential {
                id: id.clone(),
                description: None,
                kind,
            };
            s.credentials.insert(id, Arc::new(credential));
        }
        s
    }

    #[test]
    fn imsi_placeholder_is_replaced() {
        let s = snap();
        let imsi = Imsi::parse("001010000000001").unwrap();
        let c = resolve_credentials_ref(&s, "psk-#{imsi}", &imsi).unwrap();
        assert_eq!(c.id.as_str(), "psk-001010000000001");
        let r = CredentialsRef::parse("psk-#{imsi}").unwrap();
        assert_eq!(resolve_psk(&s, &r, &imsi).unwrap().expose(), "k1");
        let other = Imsi::parse("001010000000002").unwrap();
        assert_eq!(
            resolve_psk(&s, &r, &other).unwrap_err().reason(),
            "credentials_not_found"
        );
    }

    #[test]
    fn types_and_ids_are_checked() {
        let s = snap();
        let imsi = Imsi::parse("001010000000001").unwrap();
        let cert = CredentialsRef::parse("cert").unwrap();
        assert_eq!(resolve_x509(&s, &cert, &imsi).unwrap().1.cert, "C");
        let e = resolve_psk(&s, &cert, &imsi).unwrap_err();
        assert_eq!(e.reason(), "credentials_wrong_type");
        assert!(!e.to_string().contains('K'), "{e}");
        assert_eq!(
            resolve_credentials_ref(&s, "a b", &imsi)
                .unwrap_err()
                .reason(),
            "invalid_credentials_id"
        );
    }
}
