//! Harvest Files on the control API (behind its bearer token), as
//! SORACOM's `FileEntry` API:
//!
//! * `GET /v1/files/{scope}/{path}` → the file (SORACOM answers `302` to a
//!   download URL; simgate serves the bytes itself, with `Content-Type`,
//!   `Content-Length` and `ETag`); `HEAD` → the same headers;
//! * `GET /v1/files/{scope}/{path}/` (and `/v1/files/{scope}/`) → the
//!   directory's `FileEntry`s, `limit` (default 10) and
//!   `last_evaluated_key` (a filename) paging, `x-soracom-next-key` when
//!   more follow;
//! * `PUT /v1/files/private/{path}` → `201` created or `200` replaced;
//! * `DELETE /v1/files/private/{path}` → `204`; of `{path}/` → `204`, or
//!   `400` when the directory is not empty.
//!
//! Scopes: `private` (what devices and operators upload) and `public`
//! (read-only); any other → `404`. The path is taken from the raw URI and
//! percent-decoded once ([`super::path::parse_request`]), not by the
//! router.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use simgate_control::api::ApiError;

use super::handler::NEXT_KEY;
use super::path::{parse_request, FilePath};
use super::{
    method_label, FilesError, HarvestFiles, ListQuery, PutOutcome, Scope, DEFAULT_CONTENT_TYPE,
    OPERATOR,
};

/// An upload on the API must finish in this long (the API listener's own
/// body timeout applies too; whichever is shorter wins).
const PUT_TIMEOUT: Duration = Duration::from_secs(600);

/// The routes, ready to be wrapped in the bearer-token layer and merged.
pub fn router(files: Arc<HarvestFiles>) -> Router {
    Router::new()
        .route("/v1/files/{scope}/", get(serve))
        .route(
            "/v1/files/{scope}/{*path}",
            get(serve).put(serve).delete(serve),
        )
        .with_state(files)
}

fn api_error(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        code,
        message,
    )
}

fn files_error(e: &FilesError) -> ApiError {
    api_error(e.status(), e.code(), e.message())
}

async fn serve(
    State(files): State<Arc<HarvestFiles>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let method = method_label(req.method());
    let (r, reason) = match route(&files, query, req).await {
        Ok(r) => (r, "ok"),
        Err((e, reason)) => (e.into_response(), reason),
    };
    files
        .metrics
        .answered(OPERATOR, method, r.status().as_u16(), reason);
    r
}

type Refused = (ApiError, &'static str);

fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
    (api_error(status, code, message), code)
}

fn failed(e: &FilesError) -> Refused {
    (files_error(e), e.code())
}

async fn route(
    files: &HarvestFiles,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, Refused> {
    let raw = req.uri().path().to_owned();
    let rest = raw.strip_prefix("/v1/files/").unwrap_or("");
    let (scope_name, raw_path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(scope) = Scope::parse(scope_name) else {
        return Err(refused(
            404,
            "no_such_scope",
            "the scope does not exist (private or public)",
        ));
    };
    let requested = parse_request(raw_path).map_err(|e| failed(&e.into()))?;
    let path = requested.path;
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD && scope != Scope::Private {
        return Err(refused(
            400,
            "read_only_scope",
            "only the private scope can be written",
        ));
    }
    match method {
        Method::GET | Method::HEAD if requested.dir => {
            let Ok(Query(q)) = query else {
                return Err(refused(400, "invalid_query", "invalid query parameters"));
            };
            let limit = q.limit().map_err(|m| refused(400, "invalid_query", m))?;
            let (entries, next) = files
                .list(scope, path, FilePath::root(), q.last_evaluated_key, limit)
                .await
                .map_err(|e| failed(&e))?;
            let mut r = Json(entries).into_response();
            if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
                r.headers_mut().insert(NEXT_KEY, v);
            }
            Ok(r)
        }
        Method::GET | Method::HEAD => {
            let (meta, content) = files.get(scope, path).await.map_err(|e| failed(&e))?;
            let mut r = Response::new(Body::from_stream(content));
            let h = r.headers_mut();
            super::file_headers(&meta, h);
            Ok(r)
        }
        Method::PUT if requested.dir => Err(refused(
            409,
            "put_to_directory",
            "a file cannot be written to a directory path (ending in /)",
        )),
        Method::PUT => {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_owned();
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let outcome = files
                .put(
                    scope,
                    path,
                    content_type,
                    declared,
                    req.into_body(),
                    PUT_TIMEOUT,
                )
                .await
                .map_err(|e| failed(&e))?;
            Ok(match outcome {
                PutOutcome::Created => StatusCode::CREATED.into_response(),
                PutOutcome::Replaced => StatusCode::OK.into_response(),
            })
        }
        Method::DELETE if path.is_root() => Err(refused(
            400,
            "delete_root",
            "the root directory cannot be deleted",
        )),
        Method::DELETE if requested.dir => {
            files
                .delete_dir(scope, path)
                .await
                .map_err(|e| failed(&e))?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::DELETE => {
            files.delete(scope, path).await.map_err(|e| failed(&e))?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(refused(
            405,
            "method_not_allowed",
            "GET, HEAD, PUT or DELETE",
        )),
    }
}
