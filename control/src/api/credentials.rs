//! `/v1/credentials`: credential sets. Secrets are write-only: no answer
//! ever contains one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{blocking, ApiError, ApiObject, ApiPath, ErrorBody};
use crate::model::{
    AwsCredentials, AzureCredentials, Credential, CredentialId, CredentialKind,
    GoogleServiceAccountJson, PskCredentials, Secret, X509Credentials,
};
use crate::plane::ControlPlane;
use crate::store::Stamped;

const AWS_CREDENTIALS: &str = "aws-credentials";

/// The non-secret part of a credential set: the AWS access key id, the
/// Azure policy name; nothing for `psk`, `x509` and Google (keys are
/// secret, certificates are not echoed).
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublicCredentials {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "AKIAIOSFODNN7EXAMPLE")]
    pub(crate) access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "RootManageSharedAccessKey")]
    pub(crate) policy_name: Option<String>,
}

/// The credential types simgate stores.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum CredentialType {
    AwsCredentials,
    Psk,
    X509,
    AzureCredentials,
    GoogleServiceAccountJson,
}

/// A credential set, as SORACOM's API shows it (secrets left out).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialView {
    #[schema(example = "kinesis-demo")]
    pub(crate) credentials_id: String,
    #[serde(rename = "type")]
    #[schema(value_type = CredentialType, example = "aws-credentials")]
    pub(crate) kind: String,
    pub(crate) description: Option<String>,
    pub(crate) credentials: PublicCredentials,
    /// Unix ms.
    pub(crate) create_date_time: u64,
    /// Unix ms.
    pub(crate) update_date_time: u64,
}

impl From<&Stamped<Credential>> for CredentialView {
    fn from(c: &Stamped<Credential>) -> Self {
        let credentials = match &c.value.kind {
            CredentialKind::Aws(aws) => PublicCredentials {
                access_key_id: Some(aws.access_key_id.clone()),
                ..PublicCredentials::default()
            },
            CredentialKind::Azure(a) => PublicCredentials {
                policy_name: Some(a.policy_name.clone()),
                ..PublicCredentials::default()
            },
            CredentialKind::Psk(_)
            | CredentialKind::X509(_)
            | CredentialKind::GoogleServiceAccount(_) => PublicCredentials::default(),
        };
        Self {
            credentials_id: c.value.id.to_string(),
            kind: c.value.kind.type_name().to_owned(),
            description: c.value.description.clone(),
            credentials,
            create_date_time: c.created_at,
            update_date_time: c.last_modified_at,
        }
    }
}

/// AWS keys as sent.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AwsCredentialsIn {
    #[schema(min_length = 1, max_length = 128)]
    pub(crate) access_key_id: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub(crate) secret_access_key: String,
    #[serde(default)]
    pub(crate) session_token: Option<String>,
}

/// A pre-shared key as sent (`type` `psk`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PskCredentialsIn {
    /// 1 to 1024 bytes.
    #[schema(min_length = 1, max_length = 256)]
    pub(crate) key: String,
}

/// A client certificate as sent (`type` `x509`): PEM texts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct X509CredentialsIn {
    /// CA bundle that verifies the upstream server; optional.
    #[serde(default)]
    #[schema(
        pattern = r"^(\s*|-----BEGIN CERTIFICATE-----[\s\S]*)$",
        max_length = 65536
    )]
    pub(crate) ca: Option<String>,
    #[schema(pattern = r"^-----BEGIN CERTIFICATE-----", max_length = 65536)]
    pub(crate) cert: String,
    #[schema(
        pattern = r"^-----BEGIN (RSA |EC )?PRIVATE KEY-----",
        max_length = 65536
    )]
    pub(crate) key: String,
}

/// An Azure shared access policy as sent (`type` `azure-credentials`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AzureCredentialsIn {
    #[schema(min_length = 1, max_length = 256)]
    pub(crate) policy_name: String,
    #[schema(min_length = 1, max_length = 1024)]
    pub(crate) key: String,
}

/// A Google service account key file as sent (`type`
/// `google-service-account-json`): the JSON text of the file.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GoogleCredentialsIn {
    /// A JSON object (the key file's text), at most 64 KiB.
    #[schema(min_length = 2, max_length = 65536)]
    pub(crate) credentials: String,
}

/// `POST` and `PUT /v1/credentials/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutCredential {
    #[serde(rename = "type")]
    #[schema(value_type = CredentialType, example = "aws-credentials")]
    pub kind: String,
    /// Free text, up to 1024 bytes.
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// `{accessKeyId, secretAccessKey, sessionToken?}` (aws),
    /// `{key}` (psk) or `{ca?, cert, key}` (x509).
    #[schema(value_type = Object)]
    pub credentials: serde_json::Value,
}

/// The request body as described: the shape of `credentials` follows
/// `type` (what [`PutCredential`] reads).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only
pub(crate) enum CredentialRequest {
    Aws(AwsRequest),
    Psk(PskRequest),
    X509(X509Request),
    Azure(AzureRequest),
    Google(GoogleRequest),
}

/// `type` `azure-credentials`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) enum AzureType {
    #[serde(rename = "azure-credentials")]
    Only,
}

/// A `azure-credentials` credential set as sent.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub(crate) struct AzureRequest {
    #[serde(rename = "type")]
    kind: AzureType,
    #[schema(max_length = 1024)]
    description: Option<String>,
    credentials: AzureCredentialsIn,
}

/// `type` `google-service-account-json`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) enum GoogleType {
    #[serde(rename = "google-service-account-json")]
    Only,
}

/// A `google-service-account-json` credential set as sent.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub(crate) struct GoogleRequest {
    #[serde(rename = "type")]
    kind: GoogleType,
    #[schema(max_length = 1024)]
    description: Option<String>,
    credentials: GoogleCredentialsIn,
}

/// `type` `aws-credentials`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) enum AwsType {
    #[serde(rename = "aws-credentials")]
    Only,
}

/// A `aws-credentials` credential set as sent.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub(crate) struct AwsRequest {
    #[serde(rename = "type")]
    kind: AwsType,
    #[schema(max_length = 1024)]
    description: Option<String>,
    credentials: AwsCredentialsIn,
}

/// `type` `psk`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) enum PskType {
    #[serde(rename = "psk")]
    Only,
}

/// A `psk` credential set as sent.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub(crate) struct PskRequest {
    #[serde(rename = "type")]
    kind: PskType,
    #[schema(max_length = 1024)]
    description: Option<String>,
    credentials: PskCredentialsIn,
}

/// `type` `x509`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub(crate) enum X509Type {
    #[serde(rename = "x509")]
    Only,
}

/// A `x509` credential set as sent.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documentation only
pub(crate) struct X509Request {
    #[serde(rename = "type")]
    kind: X509Type,
    #[schema(max_length = 1024)]
    description: Option<String>,
    credentials: X509CredentialsIn,
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
        "azure-credentials" => {
            let c: AzureCredentialsIn = credentials_of(kind, v)?;
            if c.policy_name.is_empty() || c.key.is_empty() || c.key.len() > 1024 {
                return Err(ApiError::bad_request(
                    "azure-credentials need policyName and a key of 1 to 1024 bytes",
                ));
            }
            Ok(CredentialKind::Azure(AzureCredentials {
                policy_name: c.policy_name,
                key: Secret::new(c.key),
            }))
        }
        "google-service-account-json" => {
            let c: GoogleCredentialsIn = credentials_of(kind, v)?;
            let is_object = c.credentials.len() <= 65_536
                && serde_json::from_str::<serde_json::Value>(&c.credentials)
                    .is_ok_and(|v| v.is_object());
            if !is_object {
                // Never quote it: it holds a private key.
                return Err(ApiError::bad_request(
                    "google-service-account-json credentials: credentials must be the key file's JSON object, as text, at most 64 KiB",
                ));
            }
            Ok(CredentialKind::GoogleServiceAccount(GoogleServiceAccountJson {
                credentials: Secret::new(c.credentials),
            }))
        }
        other => Err(ApiError::bad_request(format!(
            "unsupported credentials type {:?}; supported: {AWS_CREDENTIALS}, psk, x509, azure-credentials, google-service-account-json",
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

/// Get a credential set (without secrets). A simgate extension: SORACOM
/// lists them only.
#[utoipa::path(get, path = "/v1/credentials/{credentials_id}", tag = "Credential",
    params(("credentials_id" = String, Path, description = "Credentials id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")),
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

/// Longest description accepted.
const MAX_DESCRIPTION: usize = 1024;

pub fn credential_of(id: CredentialId, req: PutCredential) -> Result<Credential, ApiError> {
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::bad_request(format!(
            "description may be at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(Credential {
        id,
        description: req.description.filter(|d| !d.is_empty()),
        kind: credential_kind(&req.kind, req.credentials)?,
    })
}

/// Create a credential set.
#[utoipa::path(post, path = "/v1/credentials/{credentials_id}", tag = "Credential",
    params(("credentials_id" = String, Path, description = "Credentials id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")), request_body = CredentialRequest,
    responses((status = 201, description = "Created", body = CredentialView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, description = "They exist already (PUT replaces)", body = ErrorBody)))]
pub(crate) async fn create_credential(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
    ApiObject(req): ApiObject<PutCredential>,
) -> Result<Response, ApiError> {
    let id = id_param(&id)?;
    if plane.credential(&id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("credentials {id} exist already; PUT replaces them"),
        ));
    }
    let cred = credential_of(id, req)?;
    let (stored, _) = blocking(&plane, move |p| p.put_credential(cred)).await?;
    Ok((StatusCode::CREATED, Json(CredentialView::from(&stored))).into_response())
}

/// Create or replace a credential set.
#[utoipa::path(put, path = "/v1/credentials/{credentials_id}", tag = "Credential",
    params(("credentials_id" = String, Path, description = "Credentials id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")), request_body = CredentialRequest,
    responses((status = 200, description = "Replaced", body = CredentialView), (status = 201, description = "Created", body = CredentialView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn put_credential(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
    ApiObject(req): ApiObject<PutCredential>,
) -> Result<Response, ApiError> {
    let id = id_param(&id)?;
    let cred = credential_of(id, req)?;
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
    params(("credentials_id" = String, Path, description = "Credentials id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")),
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
