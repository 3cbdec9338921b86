//! `/v1/credentials`: credential sets. Secrets are write-only: no answer
//! ever contains one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{blocking, ApiError, ApiJson, ApiPath, ErrorBody};
use crate::model::{
    AwsCredentials, Credential, CredentialId, CredentialKind, PskCredentials, Secret,
    X509Credentials,
};
use crate::plane::ControlPlane;
use crate::store::Stamped;

const AWS_CREDENTIALS: &str = "aws-credentials";

/// The non-secret part of a credential set: the AWS access key id; nothing
/// for `psk` and `x509` (keys are secret, certificates are not echoed).
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublicCredentials {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "AKIAIOSFODNN7EXAMPLE")]
    pub(crate) access_key_id: Option<String>,
}

/// A credential set as listed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialView {
    #[schema(example = "kinesis-demo")]
    pub(crate) credentials_id: String,
    /// `aws-credentials`, `psk` or `x509`.
    #[serde(rename = "type")]
    #[schema(example = "aws-credentials")]
    pub(crate) kind: String,
    pub(crate) credentials: PublicCredentials,
    /// Unix ms.
    pub(crate) created_at: u64,
    /// Unix ms.
    pub(crate) last_modified_at: u64,
}

impl From<&Stamped<Credential>> for CredentialView {
    fn from(c: &Stamped<Credential>) -> Self {
        let credentials = match &c.value.kind {
            CredentialKind::Aws(aws) => PublicCredentials {
                access_key_id: Some(aws.access_key_id.clone()),
            },
            CredentialKind::Psk(_) | CredentialKind::X509(_) => PublicCredentials::default(),
        };
        Self {
            credentials_id: c.value.id.to_string(),
            kind: c.value.kind.type_name().to_owned(),
            credentials,
            created_at: c.created_at,
            last_modified_at: c.last_modified_at,
        }
    }
}

/// AWS keys as sent.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AwsCredentialsIn {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    #[serde(default)]
    pub(crate) session_token: Option<String>,
}

/// A pre-shared key as sent (`type` `psk`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PskCredentialsIn {
    pub(crate) key: String,
}

/// A client certificate as sent (`type` `x509`): PEM texts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct X509CredentialsIn {
    /// CA bundle that verifies the upstream server; optional.
    #[serde(default)]
    pub(crate) ca: Option<String>,
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// `PUT /v1/credentials/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PutCredential {
    /// `aws-credentials`, `psk` or `x509`.
    #[serde(rename = "type")]
    #[schema(example = "aws-credentials")]
    pub(crate) kind: String,
    /// Accepted for SORACOM compatibility; not stored.
    #[serde(default, rename = "description")]
    pub(crate) _description: Option<String>,
    /// `{accessKeyId, secretAccessKey, sessionToken?}` (aws),
    /// `{key}` (psk) or `{ca?, cert, key}` (x509).
    #[schema(value_type = Object)]
    pub(crate) credentials: serde_json::Value,
}

/// Largest PEM text accepted in an `x509` credential.
const MAX_PEM: usize = 64 * 1024;

fn credentials_of<T: serde::de::DeserializeOwned>(
    kind: &str,
    v: serde_json::Value,
) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        // Serde quotes unexpected values ("invalid type: string \"…\""), which
        // may be a secret: only messages about field names are passed on.
        let msg = e.to_string();
        let shown = if msg.starts_with("unknown field") || msg.starts_with("missing field") {
            msg
        } else {
            "must be an object of strings".to_owned()
        };
        ApiError::bad_request(format!("credentials of type {kind}: {shown}"))
    })
}

fn check_pem(what: &str, pem: &str, label: &str) -> Result<(), ApiError> {
    if pem.len() > MAX_PEM || !pem.contains("-----BEGIN ") || !pem.contains(label) {
        return Err(ApiError::bad_request(format!(
            "x509 credentials: {what} must be PEM ({label}), at most {MAX_PEM} bytes"
        )));
    }
    Ok(())
}

/// The typed credential set a request describes; checks what it can.
fn credential_kind(kind: &str, v: serde_json::Value) -> Result<CredentialKind, ApiError> {
    match kind {
        AWS_CREDENTIALS | "aws" => {
            let c: AwsCredentialsIn = credentials_of(kind, v)?;
            if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
                return Err(ApiError::bad_request(
                    "credentials need accessKeyId and secretAccessKey",
                ));
            }
            Ok(CredentialKind::Aws(AwsCredentials {
                access_key_id: c.access_key_id,
                secret_access_key: Secret::new(c.secret_access_key),
                session_token: c.session_token.map(Secret::new),
            }))
        }
        "psk" => {
            let c: PskCredentialsIn = credentials_of(kind, v)?;
            if c.key.is_empty() || c.key.len() > 1024 {
                return Err(ApiError::bad_request(
                    "psk credentials need a key of 1 to 1024 bytes",
                ));
            }
            Ok(CredentialKind::Psk(PskCredentials {
                key: Secret::new(c.key),
            }))
        }
        "x509" => {
            let c: X509CredentialsIn = credentials_of(kind, v)?;
            check_pem("cert", &c.cert, "CERTIFICATE")?;
            check_pem("key", &c.key, "PRIVATE KEY")?;
            let ca = c.ca.filter(|ca| !ca.trim().is_empty());
            if let Some(ca) = &ca {
                check_pem("ca", ca, "CERTIFICATE")?;
            }
            Ok(CredentialKind::X509(X509Credentials {
                ca,
                cert: c.cert,
                key: Secret::new(c.key),
            }))
        }
        other => Err(ApiError::bad_request(format!(
            "unsupported credentials type {:?}; supported: {AWS_CREDENTIALS}, psk, x509",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

fn id_param(s: &str) -> Result<CredentialId, ApiError> {
    CredentialId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// List credential sets (without secrets).
#[utoipa::path(get, path = "/v1/credentials", tag = "Credential",
    responses((status = 200, body = [CredentialView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_credentials(
    State(plane): State<Arc<ControlPlane>>,
) -> Json<Vec<CredentialView>> {
    Json(
        plane
            .credentials()
            .iter()
            .map(CredentialView::from)
            .collect(),
    )
}

/// Get a credential set (without secrets).
#[utoipa::path(get, path = "/v1/credentials/{credentials_id}", tag = "Credential",
    params(("credentials_id" = String, Path, description = "Credentials id")),
    responses((status = 200, body = CredentialView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_credential(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CredentialView>, ApiError> {
    let id = id_param(&id)?;
    plane
        .credential(&id)
        .map(|c| Json(CredentialView::from(&c)))
        .ok_or_else(|| ApiError::not_found(format!("credentials {id} do not exist")))
}

/// Create or replace a credential set.
#[utoipa::path(put, path = "/v1/credentials/{credentials_id}", tag = "Credential",
    params(("credentials_id" = String, Path, description = "Credentials id")), request_body = PutCredential,
    responses((status = 200, description = "Replaced", body = CredentialView), (status = 201, description = "Created", body = CredentialView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn put_credential(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PutCredential>,
) -> Result<Response, ApiError> {
    let id = id_param(&id)?;
    let cred = Credential {
        id,
        kind: credential_kind(&req.kind, req.credentials)?,
    };
    let (stored, created) = blocking(&plane, move |p| p.put_credential(cred)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(CredentialView::from(&stored))).into_response())
}

/// Delete a credential set no group's Funnel or Beam uses.
#[utoipa::path(delete, path = "/v1/credentials/{credentials_id}", tag = "Credential",
    params(("credentials_id" = String, Path, description = "Credentials id")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "A group uses them", body = ErrorBody)))]
pub(crate) async fn delete_credential(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = id_param(&id)?;
    blocking(&plane, move |p| p.delete_credential(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
