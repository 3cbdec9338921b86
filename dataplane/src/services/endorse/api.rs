//! Endorse on the control API (behind its bearer token): the published
//! keys, and their rotation (`simgate endorse rotate` calls it).
//!
//! * `GET /v1/endorse/keys` → `{"current":kid,"previous":kid|null}`
//! * `POST /v1/endorse/keys/rotate` → the same, after the rotation: a new
//!   signing key, the old one still published (tokens it signed verify
//!   until they expire), the one before that withdrawn.
//!
//! Rotation goes through the running server (not the files behind its
//! back) so that it takes effect at once and two rotations never race.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use simgate_control::api::ApiError;

use super::keys::KeySet;
use crate::services::Services;

/// The routes, ready to be wrapped in the bearer-token layer and merged.
pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route("/v1/endorse/keys", get(list))
        .route("/v1/endorse/keys/rotate", post(rotate))
        .with_state(services)
}

fn show(set: &KeySet) -> Value {
    json!({
        "current": set.current.kid,
        "previous": set.previous.as_ref().map(|k| k.kid.as_str()),
    })
}

async fn list(State(services): State<Arc<Services>>) -> Json<Value> {
    Json(show(&services.endorse.keys.keys()))
}

async fn rotate(State(services): State<Arc<Services>>) -> Result<Json<Value>, ApiError> {
    // RSA generation and two fsynced writes: off the async workers.
    let s = Arc::clone(&services);
    let rotated = tokio::task::spawn_blocking(move || s.endorse.keys.rotate()).await;
    match rotated {
        Ok(Ok(kid)) => {
            tracing::info!(kid = %kid, "Endorse signing key rotated");
            Ok(Json(show(&services.endorse.keys.keys())))
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Endorse key rotation failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the key rotation failed; see the server log",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "Endorse key rotation panicked");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the key rotation failed; see the server log",
            ))
        }
    }
}
