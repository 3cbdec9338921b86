//! The control REST API, shaped like SORACOM's: subscribers, groups with
//! configuration namespaces, credentials, sessions and the API's own
//! tokens, behind a bearer token, with an OpenAPI description at
//! `/openapi.json`.
//!
//! Handlers validate and translate; every rule lives in the
//! [`ControlPlane`] and is applied in one durable
//! transaction before the answer is sent. Errors are JSON
//! `{"code","message"}`: 400 invalid input (bad id, bad or mistyped JSON,
//! unknown namespace or reference), 401 no or bad token, 404 unknown entity,
//! 409 exists already / still in use / terminated / last token, 413 body over
//! [`MAX_BODY_BYTES`], 503 the store could not write (retry).

mod credentials;
mod error;
mod groups;
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
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::plane::ControlPlane;
pub use error::{ApiError, ErrorBody};

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
            "/v1/groups",
            get(groups::list_groups).post(groups::create_group),
        )
        .route(
            "/v1/groups/{group_id}",
            get(groups::get_group).delete(groups::delete_group),
        )
        .route(
            "/v1/groups/{group_id}/configuration/{namespace}",
            put(groups::put_configuration),
        )
        .route(
            "/v1/groups/{group_id}/configuration/{namespace}/{key}",
            delete(groups::delete_configuration),
        )
        .route("/v1/credentials", get(credentials::list_credentials))
        .route(
            "/v1/credentials/{credentials_id}",
            get(credentials::get_credential)
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
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::clone(&plane));
    protect(api, plane).route("/openapi.json", get(openapi_json))
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
/// <token>` naming a current token; else 401 with a JSON error. Use with
/// `axum::middleware::from_fn_with_state(plane, require_token)`, or
/// [`protect`].
pub async fn require_token(
    State(plane): State<Arc<ControlPlane>>,
    req: Request,
    next: Next,
) -> Response {
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
                       shaped like the SORACOM API. Every operation needs \
                       `Authorization: Bearer <token>`.",
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
        groups::list_groups,
        groups::create_group,
        groups::get_group,
        groups::delete_group,
        groups::put_configuration,
        groups::delete_configuration,
        credentials::list_credentials,
        credentials::get_credential,
        credentials::put_credential,
        credentials::delete_credential,
        sessions::list_sessions,
        sessions::put_session,
        sessions::delete_session,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "Subscriber", description = "SIMs"),
        (name = "Group", description = "Groups and their service configuration"),
        (name = "Credential", description = "Credential sets (secrets are write-only)"),
        (name = "Session", description = "IP address → SIM bindings"),
        (name = "Token", description = "API bearer tokens (shown once, when made)"),
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
