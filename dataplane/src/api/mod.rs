//! The control listener (port 7070): Prometheus `/metrics` and `/health`
//! without a token; the control REST API (`simgate_control::api`), the
//! Harvest Data query API, the Endorse keys and their rotation, and the
//! Funnel dead-letter API behind the same bearer-token check; and the web
//! console's static files under `/console/` (no token: see `crate::console`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use simgate_control::api::ApiError;
use simgate_control::ControlPlane;

use crate::dead_letters::DeadLetterStore;
use crate::metrics::Metrics;
use crate::services::funnel::dead_letter_api;
use crate::services::Services;
use crate::services::{endorse, harvest};

/// What the unauthenticated routes serve from.
#[derive(Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub plane: Arc<ControlPlane>,
    pub dead_letters: Arc<DeadLetterStore>,
}

/// The whole control router.
pub fn router(state: ApiState, services: Arc<Services>) -> Router {
    let plane = Arc::clone(&state.plane);
    let protected = harvest::router(Arc::clone(&services.harvest))
        .merge(endorse::api::router(Arc::clone(&services)))
        .merge(crate::services::harvest_files::api::router(Arc::clone(
            &services.harvest_files,
        )))
        .merge(crate::services::krypton::api::router(Arc::clone(
            &services.krypton,
        )))
        .merge(dead_letter_api::router(services));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
        .merge(simgate_control::api::router(Arc::clone(&plane)))
        .merge(simgate_control::api::protect(protected, plane))
        // The console's static files: no token, they hold no data.
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
}

/// `ok` and, as JSON, the control store in use and (in a fleet) this node's
/// link to etcd and its session count. Always 200 while the node serves:
/// a node cut off from etcd still carries traffic from its own state.
async fn health(State(state): State<ApiState>) -> impl IntoResponse {
    let cluster = state.plane.cluster_status();
    axum::Json(serde_json::json!({
        "status": "ok",
        "store": cluster,
        "sessions": state.plane.sessions.len(),
    }))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    state
        .metrics
        .sessions
        .set(state.plane.sessions.len() as i64);
    match state.dead_letters.stored() {
        Ok(n) => {
            state
                .metrics
                .funnel_dead_letters_stored
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::warn!(error = %e, "cannot count dead letters"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
