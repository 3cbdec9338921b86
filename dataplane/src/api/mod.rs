//! The control listener (port 7070): Prometheus `/metrics`, `/health`, and
//! the bearer-token protected API (for now the Harvest Data query API).

pub mod token;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use simgate_control::SessionTable;

use crate::metrics::Metrics;
use crate::services::harvest::{self, HarvestStore};
use token::ApiToken;

/// What the control listener serves from.
#[derive(Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<SessionTable>,
    pub token: Arc<ApiToken>,
}

/// The whole control router.
pub fn router(state: ApiState, harvest: Arc<HarvestStore>) -> Router {
    let protected = harvest::router(harvest).layer(middleware::from_fn_with_state(
        Arc::clone(&state.token),
        require_token,
    ));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(state)
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    state.metrics.sessions.set(state.sessions.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn require_token(State(token): State<Arc<ApiToken>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if token.verify(t.trim()) => next.run(req).await,
        Some(_) => error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the bearer token is not valid",
        ),
        None => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send Authorization: Bearer <token> (see simgate-data/api.token)",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

/// SORACOM-style JSON error `{"code","message"}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}
