//! Krypton on the control API (behind its bearer token):
//!
//! * `GET /v1/krypton/registrations` → every SIM's last registration;
//! * `GET /v1/krypton/registrations/{imsi}` → one SIM's, or 404;
//! * `GET /v1/krypton/ca` → the CA certificate (PEM) brokers should trust
//!   for device certificates (made now if it was not yet).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use simgate_control::api::ApiError;
use simgate_control::Imsi;

use super::registrations::Registration;
use super::Krypton;

/// The routes, ready to be wrapped in the bearer-token layer and merged.
pub fn router(krypton: Arc<Krypton>) -> Router {
    Router::new()
        .route("/v1/krypton/registrations", get(list))
        .route("/v1/krypton/registrations/{imsi}", get(one))
        .route("/v1/krypton/ca", get(ca))
        .with_state(krypton)
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("{what}; see the server log"),
    )
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    krypton: Arc<Krypton>,
    what: &'static str,
    f: impl FnOnce(&Krypton) -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(move || f(&krypton)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(internal(what, &e)),
        Err(e) => Err(internal(what, &e)),
    }
}

async fn list(State(k): State<Arc<Krypton>>) -> Result<Json<Vec<Registration>>, ApiError> {
    blocking(k, "cannot read the Krypton registrations", |k| {
        k.registrations.list().map_err(|e| e.to_string())
    })
    .await
    .map(Json)
}

async fn one(
    State(k): State<Arc<Krypton>>,
    Path(imsi): Path<String>,
) -> Result<Json<Registration>, ApiError> {
    let imsi = Imsi::parse(&imsi)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_imsi", e.to_string()))?;
    let shown = imsi.as_str().to_owned();
    let r = blocking(k, "cannot read the Krypton registration", move |k| {
        k.registrations.get(&imsi).map_err(|e| e.to_string())
    })
    .await?;
    r.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no Krypton registration for {shown}")))
}

async fn ca(State(k): State<Arc<Krypton>>) -> Result<impl IntoResponse, ApiError> {
    let pem = blocking(k, "cannot load the Krypton CA", |k| {
        k.ca.get(simgate_control::clock::now_ms(), rand::random())
            .map(|ca| ca.pem().to_owned())
            .map_err(|e| e.to_string())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}
