//! Credentials simgate uses towards clouds. Secrets never appear in `Debug`
//! output, logs or serialized forms.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CredentialId;

/// A secret string. `Debug`, `Display` and `Serialize` print a placeholder;
/// only [`Secret::expose`] gives the value, so every use is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A named set of credentials (SORACOM "credentials set").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    pub id: CredentialId,
    /// Free text for people (SORACOM's `description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub kind: CredentialKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CredentialKind {
    /// AWS access key (SORACOM type `aws-credentials`).
    #[serde(alias = "aws-credentials")]
    Aws(AwsCredentials),
    /// Pre-shared key (SORACOM type `psk`): signs Beam requests.
    Psk(PskCredentials),
    /// Client certificate (SORACOM type `x509`): Beam's upstream mTLS.
    X509(X509Credentials),
    /// Azure shared access policy (SORACOM type `azure-credentials`): Funnel
    /// to Event Hubs signs SAS tokens with it.
    #[serde(rename = "azure-credentials")]
    Azure(AzureCredentials),
    /// A Google service account key file (SORACOM type
    /// `google-service-account-json`): Funnel to Pub/Sub.
    #[serde(rename = "google-service-account-json")]
    GoogleServiceAccount(GoogleServiceAccountJson),
}

impl CredentialKind {
    /// The SORACOM `type` of the credential set.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Aws(_) => "aws-credentials",
            Self::Psk(_) => "psk",
            Self::X509(_) => "x509",
            Self::Azure(_) => "azure-credentials",
            Self::GoogleServiceAccount(_) => "google-service-account-json",
        }
    }
}

/// A pre-shared key, as `{"type":"psk","credentials":{"key":"…"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PskCredentials {
    pub key: Secret,
}

/// A client certificate, as
/// `{"type":"x509","credentials":{"ca":"PEM","cert":"PEM","key":"PEM"}}`.
/// Only the private key is secret; the certificates are kept as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509Credentials {
    /// CA bundle (PEM) that verifies the upstream server, when not a public one.
    #[serde(default)]
    pub ca: Option<String>,
    /// Client certificate chain (PEM).
    pub cert: String,
    /// Private key (PEM).
    pub key: Secret,
}

/// `{"type":"azure-credentials","credentials":{"policyName","key"}}`: a
/// shared access policy's name and its key (secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureCredentials {
    #[serde(alias = "policyName")]
    pub policy_name: String,
    pub key: Secret,
}

/// `{"type":"google-service-account-json","credentials":{"credentials":"<JSON
/// key file>"}}`: the whole key file is secret (it holds the private key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleServiceAccountJson {
    pub credentials: Secret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    #[serde(default)]
    pub session_token: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_serialize_hide_the_secret() {
        let c = Credential {
            id: CredentialId::parse("k").unwrap(),
            description: None,
            kind: CredentialKind::Aws(AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI"),
                session_token: Some(Secret::new("tok-123")),
            }),
        };
        let dbg = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for out in [dbg, json] {
            assert!(!out.contains("wJalrXUtnFEMI"), "{out}");
            assert!(!out.contains("tok-123"), "{out}");
            assert!(out.contains("AKIDEXAMPLE"));
        }
        for kind in [
            CredentialKind::Psk(PskCredentials {
                key: Secret::new("wJalrXUtnFEMI"),
            }),
            CredentialKind::X509(X509Credentials {
                ca: None,
                cert: "-----BEGIN CERTIFICATE-----".into(),
                key: Secret::new("wJalrXUtnFEMI"),
            }),
        ] {
            let c = Credential {
                id: CredentialId::parse("k").unwrap(),
                description: None,
                kind,
            };
            let dbg = format!("{c:?}");
            let json = serde_json::to_string(&c).unwrap();
            for out in [dbg, json] {
                assert!(!out.contains("wJalrXUtnFEMI"), "{out}");
            }
        }
    }

    #[test]
    fn config_file_types_parse() {
        let c: Credential =
            serde_json::from_str(r#"{"id":"p","type":"psk","key":"topsecret"}"#).unwrap();
        let CredentialKind::Psk(p) = &c.kind else {
            panic!("{c:?}")
        };
        assert_eq!(p.key.expose(), "topsecret");
        assert_eq!(c.kind.type_name(), "psk");
        let c: Credential =
            serde_json::from_str(r#"{"id":"p","type":"psk","key":"k","description":"for beam"}"#)
                .unwrap();
        assert_eq!(c.description.as_deref(), Some("for beam"));
    }
}
