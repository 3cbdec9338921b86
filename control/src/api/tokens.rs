//! `/v1/tokens`: the API's own bearer tokens (simgate's addition; SORACOM
//! issues API keys elsewhere).
//!
//! A token is shown once, in the answer that creates it: the store keeps
//! only its SHA-256. Any current token may list, create and revoke tokens,
//! its own included (that is how a leaked token is rotated: make a new one,
//! revoke the old). Revoking the *last* token is refused with 409, so the API
//! cannot be locked by accident; should two concurrent revocations still
//! remove every token, the next start of simgate makes a fresh `default`
//! token and writes it to `{data_dir}/api.token`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{blocking, ApiError, ApiJson, ApiPath, ErrorBody};
use crate::plane::ControlPlane;

/// A token as listed: its name and age, never the token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenView {
    #[schema(example = "default")]
    pub(crate) name: String,
    /// Unix ms.
    pub(crate) created_at: u64,
}

/// `POST /v1/tokens` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    /// 1 to 64 letters, digits, `-`, `_` or `.`; unique.
    #[schema(example = "ci", pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
}

/// A new token: the only answer that ever contains one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatedToken {
    #[schema(example = "ci")]
    pub(crate) name: String,
    /// `sgt_` and 48 hex digits. Not retrievable later.
    #[schema(example = "sgt_0123456789abcdef0123456789abcdef0123456789abcdef")]
    pub(crate) token: String,
}

/// List API tokens (names only), by name. A simgate extension.
#[utoipa::path(get, path = "/v1/tokens", tag = "Token",
    responses((status = 200, body = [TokenView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_tokens(State(plane): State<Arc<ControlPlane>>) -> Json<Vec<TokenView>> {
    let mut tokens: Vec<TokenView> = plane
        .list_tokens()
        .into_iter()
        .map(|t| TokenView {
            name: t.name,
            created_at: t.created_at,
        })
        .collect();
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    Json(tokens)
}

/// Create an API token. The answer is the only time the token is shown.
/// A simgate extension.
#[utoipa::path(post, path = "/v1/tokens", tag = "Token", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, description = "A token has this name already", body = ErrorBody)))]
pub(crate) async fn create_token(
    State(plane): State<Arc<ControlPlane>>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<Response, ApiError> {
    let name = req.name;
    let n = name.clone();
    let token = blocking(&plane, move |p| p.create_token(&n)).await?;
    let mut r = (StatusCode::CREATED, Json(CreatedToken { name, token })).into_response();
    // A secret: no cache along the way may keep it.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Revoke an API token (it stops working at once). The last token cannot
/// be revoked: create another first. A simgate extension.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "Token",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "It is the last token", body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let tokens = plane.list_tokens();
    if !tokens.iter().any(|t| t.name == name) {
        return Err(ApiError::not_found(format!(
            "token {} does not exist",
            name.chars().take(64).collect::<String>()
        )));
    }
    if tokens.len() <= 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_token",
            format!("{name} is the last API token; create another before revoking it"),
        ));
    }
    blocking(&plane, move |p| p.revoke_token(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}
