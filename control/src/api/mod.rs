//! The control REST API, shaped like SORACOM's: subscribers, groups with
//! configuration namespaces, credentials, sessions and the API's own
//! tokens, behind a bearer token (or SORACOM's `X-Soracom-API-Key` +
//! `X-Soracom-Token` from `POST /v1/auth`, see `auth.rs`), with an OpenAPI
//! description at `/openapi.json`.
//!
//! Handlers validate and translate; every rule lives in the
//! [`ControlPlane`] and is applied in one durable
//! transaction before the answer is sent. Errors are JSON
//! `{"code","message"}`: 400 invalid input (bad id, bad or mistyped JSON,
//! unknown namespace or reference), 401 no or bad token, 404 unknown entity,
//! 409 exists already / still in use / terminated / last token, 413 body over
//! [`MAX_BODY_BYTES`], 503 the store could not write (retry).

mod auth;
pub mod bodies;
mod credentials;
mod error;
mod groups;
mod harvest_doc;
mod harvest_files_doc;
mod sessions;
mod subscribers;
mod tokens;

use std::sync::{Arc, LazyLock};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::plane::ControlPlane;
pub use error::{ApiError, ErrorBody};
pub use subscribers::{delete_tag_of, put_tags_from_body, render_subscriber};

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The whole control API (all routes need the bearer token) plus the
/// unauthenticated `GET /openapi.json`. It sets no fallback, so it merges
/// into a router that has one.
pub fn router(plane: Arc<ControlPlane>) -> Router {
    let api = Router::new()
        .route(
            "/v1/subscribers",
            get(subscribers::list_subscribers).post(subscribers::register_subscriber),
        )
        .route(
            "/v1/subscribers/{imsi}",
            get(subscribers::get_subscriber).delete(subscribers::delete_subscriber),
        )
        .route("/v1/subscribers/{imsi}/tags", put(subscribers::put_tags))
        .route(
            "/v1/subscribers/{imsi}/tags/{tag_name}",
            delete(subscribers::delete_tag),
        )
        .route(
            "/v1/subscribers/{imsi}/set_group",
            post(subscribers::set_group),
        )
        .route(
            "/v1/subscribers/{imsi}/unset_group",
            post(subscribers::unset_group),
        )
        .route(
            "/v1/subscribers/{imsi}/activate",
            post(subscribers::activate),
        )
        .route(
            "/v1/subscribers/{imsi}/deactivate",
            post(subscribers::deactivate),
        )
        .route("/v1/subscribers/{imsi}/suspend", post(subscribers::suspend))
        .route(
            "/v1/subscribers/{imsi}/terminate",
            post(subscribers::terminate),
        )
        .route(
            "/v1/subscribers/{imsi}/set_imei_lock",
            post(subscribers::set_imei_lock),
        )
        .route(
            "/v1/subscribers/{imsi}/unset_imei_lock",
            post(subscribers::unset_imei_lock),
        )
        .route(
            "/v1/subscribers/{imsi}/register",
            post(subscribers::register_sim),
        )
        .route(
            "/v1/groups",
            get(groups::list_groups).post(groups::create_group),
        )
        .route(
            "/v1/groups/{group_id}",
            get(groups::get_group).delete(groups::delete_group),
        )
        .route(
            "/v1/groups/{group_id}/configuration/{namespace}",
            put(groups::put_configuration).delete(groups::delete_namespace),
        )
        .route(
            "/v1/groups/{group_id}/configuration/{namespace}/{name}",
            delete(groups::delete_configuration),
        )
        .route(
            "/v1/groups/{group_id}/subscribers",
            get(groups::list_group_subscribers),
        )
        .route("/v1/groups/{group_id}/tags", put(groups::put_group_tags))
        .route(
            "/v1/groups/{group_id}/tags/{tag_name}",
            delete(groups::delete_group_tag),
        )
        .route("/v1/credentials", get(credentials::list_credentials))
        .route(
            "/v1/credentials/{credentials_id}",
            get(credentials::get_credential)
                .post(credentials::create_credential)
                .put(credentials::put_credential)
                .delete(credentials::delete_credential),
        )
        .route("/v1/sessions", get(sessions::list_sessions))
        .route(
            "/v1/sessions/{ip}",
            put(sessions::put_session).delete(sessions::delete_session),
        )
        .route(
            "/v1/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/v1/tokens/{name}", delete(tokens::revoke_token))
        .route("/v1/auth/logout", post(auth::logout))
        .route(
            "/v1/operators/{operator_id}/auth_keys",
            get(auth::list_auth_keys).post(auth::generate_auth_key),
        )
        .route(
            "/v1/operators/{operator_id}/auth_keys/{auth_key_id}",
            delete(auth::delete_auth_key),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::clone(&plane));
    // `POST /v1/auth` is how a SORACOM client gets its credentials: open.
    let open = Router::new()
        .route("/v1/auth", post(auth::authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::clone(&plane));
    protect(api, plane)
        .merge(open)
        .route("/openapi.json", get(openapi_json))
}

/// Puts `router`'s routes behind the API token (for routes served
/// elsewhere, e.g. the Harvest query API). `router` must have its routes
/// already: the check applies to the routes present when this is called.
pub fn protect<S>(router: Router<S>, plane: Arc<ControlPlane>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(middleware::from_fn_with_state(plane, require_token))
}

/// Middleware: lets a request through only with `Authorization: Bearer
/// <token>` naming a current token, or with `X-Soracom-API-Key` and
/// `X-Soracom-Token` naming a live pair from `POST /v1/auth` (when either
/// of those is sent, both must be, and they decide); else 401 with a JSON
/// error. Use with
/// `axum::middleware::from_fn_with_state(plane, require_token)`, or
/// [`protect`].
pub async fn require_token(
    State(plane): State<Arc<ControlPlane>>,
    req: Request,
    next: Next,
) -> Response {
    match auth::check_headers(&plane, req.headers()) {
        Some(Ok(())) => return next.run(req).await,
        Some(Err(refused)) => return refused,
        None => {}
    }
    match bearer(req.headers()) {
        Some(t) if plane.verify_token(t) => next.run(req).await,
        Some(_) => unauthorized(
            "invalid_token",
            "the bearer token is not valid",
            "Bearer error=\"invalid_token\"",
        ),
        None => unauthorized(
            "missing_token",
            "send Authorization: Bearer <token> (the first token is in {data_dir}/api.token)",
            "Bearer",
        ),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(code: &'static str, message: &str, challenge: &'static str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "simgate control API",
        description = "Subscribers, groups, credentials and sessions of a simgate gateway, \
                       shaped like the SORACOM API. Every operation but `POST /v1/auth` needs \
                       `Authorization: Bearer <token>`, or `X-Soracom-API-Key` and \
                       `X-Soracom-Token` from `POST /v1/auth`.",
    ),
    paths(
        subscribers::list_subscribers,
        subscribers::register_subscriber,
        subscribers::get_subscriber,
        subscribers::delete_subscriber,
        subscribers::put_tags,
        subscribers::delete_tag,
        subscribers::set_group,
        subscribers::unset_group,
        subscribers::activate,
        subscribers::deactivate,
        subscribers::suspend,
        subscribers::terminate,
        subscribers::set_imei_lock,
        subscribers::unset_imei_lock,
        subscribers::register_sim,
        groups::list_groups,
        groups::create_group,
        groups::get_group,
        groups::delete_group,
        groups::put_configuration,
        groups::delete_configuration,
        groups::delete_namespace,
        groups::list_group_subscribers,
        groups::put_group_tags,
        groups::delete_group_tag,
        harvest_doc::get_data_entries,
        harvest_doc::get_data_entry,
        harvest_doc::delete_data_entry,
        harvest_doc::list_data_resources,
        harvest_doc::get_data_from_subscriber,
        harvest_doc::get_subscriber_data_at,
        harvest_doc::delete_subscriber_data_at,
        harvest_files_doc::get_file,
        harvest_files_doc::put_file,
        harvest_files_doc::delete_file,
        harvest_files_doc::list_files,
        harvest_files_doc::delete_directory,
        harvest_files_doc::put_directory,
        harvest_files_doc::list_root,
        credentials::list_credentials,
        credentials::get_credential,
        credentials::create_credential,
        credentials::put_credential,
        credentials::delete_credential,
        sessions::list_sessions,
        sessions::put_session,
        sessions::delete_session,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
        auth::authenticate,
        auth::logout,
        auth::generate_auth_key,
        auth::list_auth_keys,
        auth::delete_auth_key,
    ),
    components(schemas(
        ErrorBody,
        groups::Namespace,
        subscribers::TagValueMatchMode,
        harvest_doc::Sort,
        harvest_doc::ResourceType,
        harvest_files_doc::Scope,
        harvest_files_doc::WritableScope,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("api_key" = [], "api_token" = [])),
    tags(
        (name = "Subscriber", description = "SIMs"),
        (name = "Group", description = "Groups and their service configuration"),
        (name = "Credential", description = "Credential sets (secrets are write-only)"),
        (name = "DataEntry", description = "Harvest Data (served by the data plane)"),
        (name = "FileEntry", description = "Harvest Files (served by the data plane)"),
        (name = "Session", description = "IP address → SIM bindings"),
        (name = "Token", description = "API bearer tokens (shown once, when made)"),
        (name = "Auth", description = "SORACOM-style API key and token from an auth key"),
        (name = "Operator", description = "Auth keys (secrets shown once, when made)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sgt_…")
                    .build(),
            ),
        );
        // SORACOM's schemes: both headers together, from `POST /v1/auth`.
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Soracom-API-Key",
                "API key from POST /v1/auth; send with X-Soracom-Token",
            ))),
        );
        components.add_security_scheme(
            "api_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Soracom-Token",
                "API token from POST /v1/auth; send with X-Soracom-API-Key",
            ))),
        );
    }
}

/// The OpenAPI description of this API (to merge with others' if wanted).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
});

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON.as_str(),
    )
        .into_response()
}
