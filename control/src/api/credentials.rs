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
use crate::model::{AwsCredentials, Credential, CredentialId, CredentialKind, Secret};
use crate::plane::ControlPlane;
use crate::store::Stamped;

const AWS_CREDENTIALS: &str = "aws-credentials";

/// The non-secret part of a credential set.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublicCredentials {
    #[schema(example = "AKIAIOSFODNN7EXAMPLE")]
    pub(crate) access_key_id: String,
}

/// A credential set as listed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialView {
    #[schema(example = "kinesis-demo")]
    pub(crate) credentials_id: String,
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
        let CredentialKind::Aws(aws) = &c.value.kind;
        Self {
            credentials_id: c.value.id.to_string(),
            kind: AWS_CREDENTIALS.to_owned(),
            credentials: PublicCredentials {
                access_key_id: aws.access_key_id.clone(),
            },
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

/// `PUT /v1/credentials/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PutCredential {
    /// `aws-credentials` (the only type so far).
    #[serde(rename = "type")]
    #[schema(example = "aws-credentials")]
    pub(crate) kind: String,
    /// Accepted for SORACOM compatibility; not stored.
    #[serde(default, rename = "description")]
    pub(crate) _description: Option<String>,
    pub(crate) credentials: AwsCredentialsIn,
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
    if req.kind != AWS_CREDENTIALS && req.kind != "aws" {
        return Err(ApiError::bad_request(format!(
            "unsupported credentials type {:?}; supported: {AWS_CREDENTIALS}",
            req.kind.chars().take(64).collect::<String>()
        )));
    }
    let c = req.credentials;
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
        return Err(ApiError::bad_request(
            "credentials need accessKeyId and secretAccessKey",
        ));
    }
    let cred = Credential {
        id,
        kind: CredentialKind::Aws(AwsCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: Secret::new(c.secret_access_key),
            session_token: c.session_token.map(Secret::new),
        }),
    };
    let (stored, created) = blocking(&plane, move |p| p.put_credential(cred)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(CredentialView::from(&stored))).into_response())
}

/// Delete a credential set no group's Funnel uses.
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
