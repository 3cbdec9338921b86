//! SORACOM-compatible authentication, so that a client generated from
//! SORACOM's OpenAPI works unchanged:
//!
//! * `POST /v1/auth` (no credentials needed) exchanges an auth key
//!   (`authKeyId` + `authKey`) for an API key and a token
//!   (`{"apiKey","token","operatorId"}`), valid `tokenTimeoutSeconds`
//!   (default 86,400, at most 172,800);
//! * every protected route then accepts `X-Soracom-API-Key` +
//!   `X-Soracom-Token` as well as `Authorization: Bearer`;
//! * `POST /v1/auth/logout` ends the pair it is called with;
//! * `/v1/operators/{operator_id}/auth_keys` makes (secret shown once),
//!   lists (never the secret) and deletes auth keys.
//!
//! Email/password and SAM-user authentication are not offered. Failures are
//! SORACOM-shaped `{"code","message"}` with simgate's codes: `AUM0001` wrong
//! auth key id or secret, `AUM0002` an unknown, mismatched or incomplete API
//! key / token pair, `AUM0003` an expired one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{blocking, ApiError, ApiJson, ApiPath, ErrorBody};
use crate::model::OperatorId;
use crate::plane::ControlPlane;
use crate::store::auth_key::{
    plausible_id, PairError, DEFAULT_TOKEN_TIMEOUT_SECONDS, MAX_TOKEN_TIMEOUT_SECONDS,
    MIN_TOKEN_TIMEOUT_SECONDS,
};

/// The API key header of SORACOM's `api_key` security scheme.
pub(crate) const API_KEY_HEADER: &str = "x-soracom-api-key";
/// The token header of SORACOM's `api_token` security scheme.
pub(crate) const TOKEN_HEADER: &str = "x-soracom-token";

/// `POST /v1/auth`: wrong auth key id or secret.
pub(crate) const AUTH_FAILED: &str = "AUM0001";
/// An unknown, mismatched or incomplete API key / token pair.
pub(crate) const INVALID_API_KEY: &str = "AUM0002";
/// An API key / token pair past its `tokenTimeoutSeconds`.
pub(crate) const EXPIRED_API_KEY: &str = "AUM0003";

/// `POST /v1/auth` body (SORACOM's `AuthRequest`; simgate uses `authKeyId`,
/// `authKey` and `tokenTimeoutSeconds`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequest {
    #[schema(example = "keyId-0123456789abcdef0123456789abcdef")]
    pub auth_key_id: Option<String>,
    #[schema(example = "secret-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    pub auth_key: Option<String>,
    /// Lifetime of the API key and token, 1 to 172800 s; 86400 by default.
    #[schema(default = 86400, minimum = 1, maximum = 172800)]
    pub token_timeout_seconds: Option<i64>,
    /// Not supported by simgate (root-account login).
    pub email: Option<String>,
    /// Not supported by simgate.
    pub password: Option<String>,
    /// Not supported by simgate (SAM-user login).
    pub operator_id: Option<String>,
    /// Not supported by simgate (SAM-user login).
    pub user_name: Option<String>,
    /// Not supported by simgate.
    #[serde(rename = "mfaOTPCode")]
    pub mfa_otp_code: Option<String>,
}

/// SORACOM's `AuthResponse`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthResponse {
    /// Send as `X-Soracom-API-Key`.
    #[schema(example = "api-01234567-89ab-cdef-0123-456789abcdef")]
    pub(crate) api_key: String,
    #[schema(example = "OP0000000001")]
    pub(crate) operator_id: String,
    /// Send as `X-Soracom-Token`.
    #[schema(example = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    pub(crate) token: String,
}

/// SORACOM's `GenerateOperatorsAuthKeyResponse`: the only answer that
/// contains the secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeneratedAuthKey {
    #[schema(example = "keyId-0123456789abcdef0123456789abcdef")]
    pub(crate) auth_key_id: String,
    #[schema(example = "secret-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    pub(crate) auth_key: String,
}

/// SORACOM's `AuthKeyResponse`: an auth key as listed, never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthKeyResponse {
    #[schema(example = "keyId-0123456789abcdef0123456789abcdef")]
    pub(crate) auth_key_id: String,
    /// Unix time in seconds.
    #[schema(example = 1722480500)]
    pub(crate) create_date_time: u64,
    /// Unix time in seconds of the last `POST /v1/auth` with this key;
    /// absent if it was never used.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 1722480600)]
    pub(crate) last_used_date_time: Option<u64>,
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Authenticate with an auth key: an API key and token for
/// `X-Soracom-API-Key` and `X-Soracom-Token`.
#[utoipa::path(post, path = "/v1/auth", tag = "Auth", request_body = AuthRequest,
    security(()),
    responses((status = 200, body = AuthResponse),
        (status = 400, description = "No authKeyId/authKey, or tokenTimeoutSeconds out of range", body = ErrorBody),
        (status = 401, description = "Wrong authKeyId or authKey (AUM0001)", body = ErrorBody)))]
pub(crate) async fn authenticate(
    State(plane): State<Arc<ControlPlane>>,
    ApiJson(req): ApiJson<AuthRequest>,
) -> Result<Response, ApiError> {
    let (Some(id), Some(secret)) = (req.auth_key_id, req.auth_key) else {
        let other = req.email.is_some()
            || req.password.is_some()
            || req.user_name.is_some()
            || req.operator_id.is_some()
            || req.mfa_otp_code.is_some();
        return Err(ApiError::bad_request(if other {
            "simgate authenticates with authKeyId and authKey only \
             (no email/password or SAM-user login)"
        } else {
            "send authKeyId and authKey"
        }));
    };
    let timeout = match req.token_timeout_seconds {
        None => DEFAULT_TOKEN_TIMEOUT_SECONDS,
        Some(t) => u64::try_from(t)
            .ok()
            .filter(|t| (MIN_TOKEN_TIMEOUT_SECONDS..=MAX_TOKEN_TIMEOUT_SECONDS).contains(t))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "tokenTimeoutSeconds must be {MIN_TOKEN_TIMEOUT_SECONDS} to \
                     {MAX_TOKEN_TIMEOUT_SECONDS}"
                ))
            })?,
    };
    let shown_id: String = id.chars().take(64).collect();
    let pair = blocking(&plane, move |p| p.authenticate(&id, &secret, timeout)).await?;
    let Some(pair) = pair else {
        tracing::info!(auth_key_id = ?shown_id, "POST /v1/auth refused: wrong auth key id or secret");
        return Err(unauthorized(AUTH_FAILED, "invalid authKeyId or authKey"));
    };
    Ok(no_store(
        Json(AuthResponse {
            api_key: pair.api_key,
            operator_id: pair.operator_id.to_string(),
            token: pair.token,
        })
        .into_response(),
    ))
}

/// End the API key and token this request carries (with a bearer token,
/// nothing to end).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "Auth",
    responses((status = 204, description = "The API key and token no longer work"),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn logout(
    State(plane): State<Arc<ControlPlane>>,
    headers: HeaderMap,
) -> StatusCode {
    if let Some(k) = headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()) {
        plane.logout(k.trim());
    }
    StatusCode::NO_CONTENT
}

/// For the API's middleware: `None` if the request carries neither SORACOM
/// header (look for a bearer token); else whether both are there and are a
/// live pair, as the 401 to answer if not.
pub(crate) fn check_headers(
    plane: &ControlPlane,
    headers: &HeaderMap,
) -> Option<Result<(), Response>> {
    let key = headers.get(API_KEY_HEADER);
    let token = headers.get(TOKEN_HEADER);
    if key.is_none() && token.is_none() {
        return None;
    }
    let result = match (header_text(key), header_text(token)) {
        (Some(k), Some(t)) => match plane.verify_api_key(k, t) {
            Ok(()) => Ok(()),
            Err(PairError::Expired) => Err(unauthorized(
                EXPIRED_API_KEY,
                "the API key and token have expired; POST /v1/auth for new ones",
            )),
            Err(PairError::Invalid) => {
                Err(unauthorized(INVALID_API_KEY, "invalid API key or token"))
            }
        },
        _ => Err(unauthorized(
            INVALID_API_KEY,
            "send both X-Soracom-API-Key and X-Soracom-Token (from POST /v1/auth)",
        )),
    };
    Some(result.map_err(IntoResponse::into_response))
}

fn header_text(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn operator(id: &str) -> Result<OperatorId, ApiError> {
    OperatorId::parse(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Generate an auth key for the operator. The answer is the only time
/// its secret is shown.
#[utoipa::path(post, path = "/v1/operators/{operator_id}/auth_keys", tag = "Operator",
    params(("operator_id" = String, Path, description = "Operator ID, e.g. OP0000000001")),
    responses((status = 201, body = GeneratedAuthKey), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "No such operator", body = ErrorBody),
        (status = 409, description = "Too many auth keys", body = ErrorBody)))]
pub(crate) async fn generate_auth_key(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(operator_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let op = operator(&operator_id)?;
    let created = blocking(&plane, move |p| p.create_auth_key(&op)).await?;
    Ok(no_store(
        (
            StatusCode::CREATED,
            Json(GeneratedAuthKey {
                auth_key_id: created.auth_key_id,
                auth_key: created.auth_key,
            }),
        )
            .into_response(),
    ))
}

/// List the operator's auth keys (never their secrets), oldest first.
#[utoipa::path(get, path = "/v1/operators/{operator_id}/auth_keys", tag = "Operator",
    params(("operator_id" = String, Path, description = "Operator ID")),
    responses((status = 200, body = [AuthKeyResponse]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "No such operator", body = ErrorBody)))]
pub(crate) async fn list_auth_keys(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(operator_id): ApiPath<String>,
) -> Result<Json<Vec<AuthKeyResponse>>, ApiError> {
    let op = operator(&operator_id)?;
    let keys = plane.list_auth_keys(&op)?;
    Ok(Json(
        keys.into_iter()
            .map(|k| AuthKeyResponse {
                auth_key_id: k.auth_key_id,
                create_date_time: k.created_at / 1000,
                last_used_date_time: k.last_used_at.map(|t| t / 1000),
            })
            .collect(),
    ))
}

/// Delete an auth key; the API keys and tokens made with it stop working
/// at once.
#[utoipa::path(delete, path = "/v1/operators/{operator_id}/auth_keys/{auth_key_id}", tag = "Operator",
    params(("operator_id" = String, Path, description = "Operator ID"),
        ("auth_key_id" = String, Path, description = "AuthKey ID")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_auth_key(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath((operator_id, auth_key_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let op = operator(&operator_id)?;
    if !plausible_id(&auth_key_id) {
        return Err(ApiError::not_found(format!(
            "auth key {} does not exist",
            auth_key_id.chars().take(64).collect::<String>()
        )));
    }
    blocking(&plane, move |p| p.delete_auth_key(&op, &auth_key_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
