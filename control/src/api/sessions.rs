//! `/v1/sessions`: which SIM holds which IP address.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{blocking, ApiError, ApiJson, ApiPath, ErrorBody};
use super::subscribers::imsi_param;
use crate::model::{Imei, Msisdn};
use crate::plane::{ControlPlane, SessionInfo, SessionSource};
use crate::snapshot::Session;

/// Where a session came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    /// Kept in the store (configuration file or this API).
    Static,
    /// Learned from RADIUS accounting; gone on restart.
    Radius,
}

impl From<SessionSource> for Source {
    fn from(s: SessionSource) -> Self {
        match s {
            SessionSource::Static => Self::Static,
            SessionSource::Radius => Self::Radius,
        }
    }
}

/// One session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionView {
    #[schema(example = "10.0.0.1")]
    pub(crate) ip: String,
    pub(crate) imsi: String,
    pub(crate) imei: Option<String>,
    pub(crate) msisdn: Option<String>,
    pub(crate) source: Source,
}

impl From<&SessionInfo> for SessionView {
    fn from(s: &SessionInfo) -> Self {
        Self {
            ip: s.ip.to_string(),
            imsi: s.session.imsi.to_string(),
            imei: s.session.imei.as_ref().map(ToString::to_string),
            msisdn: s.session.msisdn.as_ref().map(ToString::to_string),
            source: s.source.into(),
        }
    }
}

/// `PUT /v1/sessions/{ip}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutSession {
    /// A registered subscriber.
    #[schema(pattern = r"^[0-9]{14,15}$")]
    pub imsi: String,
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{14,16}$")]
    pub imei: Option<String>,
    #[serde(default)]
    #[schema(pattern = r"^\+?[0-9]{1,15}$")]
    pub msisdn: Option<String>,
}

fn ip_param(s: &str) -> Result<IpAddr, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request("the path must end in an IPv4 or IPv6 address"))
}

/// List sessions (a simgate extension: SORACOM shows a SIM's session in
/// its `sessionStatus`).
#[utoipa::path(get, path = "/v1/sessions", tag = "Session",
    responses((status = 200, body = [SessionView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_sessions(
    State(plane): State<Arc<ControlPlane>>,
) -> Json<Vec<SessionView>> {
    Json(
        plane
            .list_sessions()
            .iter()
            .map(SessionView::from)
            .collect(),
    )
}

/// Bind an IP address to a SIM (a static session, kept across restarts; a
/// simgate extension, for labs without a packet gateway).
#[utoipa::path(put, path = "/v1/sessions/{ip}", tag = "Session",
    params(("ip" = String, Path, description = "IPv4 address (IPv6 is accepted too)", pattern = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$")), request_body = PutSession,
    responses((status = 200, body = SessionView), (status = 400, description = "Bad address or IMSI, or the SIM is not registered", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn put_session(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(ip): ApiPath<String>,
    ApiJson(req): ApiJson<PutSession>,
) -> Result<Json<SessionView>, ApiError> {
    let ip = ip_param(&ip)?;
    let bad = |e: crate::model::IdError| ApiError::bad_request(e.to_string());
    let session = Session::new(
        imsi_param(&req.imsi)?,
        req.imei
            .as_deref()
            .map(Imei::parse)
            .transpose()
            .map_err(bad)?,
        req.msisdn
            .as_deref()
            .map(Msisdn::parse)
            .transpose()
            .map_err(bad)?,
    );
    let stored = blocking(&plane, move |p| p.put_session(ip, session)).await?;
    let s = stored.session();
    Ok(Json(SessionView {
        ip: crate::store::state::canonical_ip(ip).to_string(),
        imsi: s.imsi.to_string(),
        imei: s.imei.as_ref().map(ToString::to_string),
        msisdn: s.msisdn.as_ref().map(ToString::to_string),
        source: Source::Static,
    }))
}

/// Remove a session (static or learned from RADIUS; a simgate extension).
#[utoipa::path(delete, path = "/v1/sessions/{ip}", tag = "Session",
    params(("ip" = String, Path, description = "IPv4 address (IPv6 is accepted too)", pattern = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_session(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(ip): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let ip = ip_param(&ip)?;
    blocking(&plane, move |p| p.delete_session(ip)).await?;
    Ok(StatusCode::NO_CONTENT)
}
