//! SORACOM-style JSON errors (`{"code","message"}`) and extractors that
//! answer with them instead of axum's plain-text rejections.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::plane::ControlPlane;
use crate::store::StoreError;

/// The body of every error the API returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable reason, e.g. `invalid_request`, `not_found`.
    #[schema(example = "not_found")]
    pub code: String,
    /// What went wrong, for a person.
    #[schema(example = "subscriber 001010000000009 does not exist")]
    pub message: String,
}

/// An error answer: status, code and message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the control plane failed; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(e.to_string()),
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Invalid(m) => Self::bad_request(m),
            StoreError::InvalidState(m) => Self::new(StatusCode::CONFLICT, "invalid_state", m),
            StoreError::Io(_) | StoreError::Storage(_) | StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "control store write failed");
                let mut r = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the control store could not write; nothing was changed, retry later",
                );
                r.retry_after = Some(1);
                r
            }
            other => {
                tracing::error!(error = %other, "control plane failed");
                Self::internal()
            }
        }
    }
}

fn from_body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "request bodies may be at most {} bytes",
                super::MAX_BODY_BYTES
            ),
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", text)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
            }
            JsonRejection::JsonSyntaxError(e) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_content_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) => from_body_rejection(e.status(), e.body_text()),
            other => from_body_rejection(other.status(), other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        from_body_rejection(r.status(), r.body_text())
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: malformed or mistyped JSON
/// and a missing `Content-Type` are 400, an oversized body 413.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Self(v))
            .map_err(ApiError::from)
    }
}

/// [`ApiJson`] for bodies that must be one JSON object: anything else
/// (an array, `null`, a number) is 400 even where serde would have read a
/// struct from an array.
#[derive(Debug)]
pub(crate) struct ApiObject<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiObject<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(v) = ApiJson::<serde_json::Value>::from_request(req, state).await?;
        if !v.is_object() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(v)
            .map(Self)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
    }
}

/// `Path<T>` with a JSON 400 rejection.
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))
    }
}

/// `Query<T>` with a JSON 400 rejection.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// Runs a mutation (which waits for an fsync) off the async workers.
pub(crate) async fn blocking<T, F>(plane: &Arc<ControlPlane>, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&ControlPlane) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let plane = Arc::clone(plane);
    match tokio::task::spawn_blocking(move || f(&plane)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "control API task failed");
            Err(ApiError::internal())
        }
    }
}
