//! `/v1/groups`: groups and their configuration namespaces.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{blocking, ApiError, ApiJson, ApiPath, ErrorBody};
use crate::model::{Group, GroupId, HarvestConfig};
use crate::plane::ControlPlane;
use crate::store::{configuration, Stamped};

/// A group, as SORACOM's API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupView {
    #[schema(example = "demo")]
    pub(crate) group_id: String,
    pub(crate) operator_id: Option<String>,
    pub(crate) name: String,
    pub(crate) tags: BTreeMap<String, String>,
    /// Namespace (`SoracomAir`, `SoracomFunnel`, `SoracomHarvest`, …) →
    /// key → value.
    #[schema(example = json!({"SoracomHarvest": {"enabled": true}}))]
    pub(crate) configuration: BTreeMap<String, BTreeMap<String, Value>>,
    /// Unix ms.
    pub(crate) created_at: u64,
    /// Unix ms.
    pub(crate) last_modified_at: u64,
}

impl From<&Stamped<Group>> for GroupView {
    fn from(g: &Stamped<Group>) -> Self {
        let v = &g.value;
        Self {
            group_id: v.id.to_string(),
            operator_id: v.operator_id.as_ref().map(ToString::to_string),
            name: v.name.clone(),
            tags: v.tags.clone(),
            configuration: configuration::render(v),
            created_at: g.created_at,
            last_modified_at: g.last_modified_at,
        }
    }
}

/// `POST /v1/groups` body. SORACOM names a group with the tag `name`;
/// `name` is taken from there when not given.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateGroup {
    /// Letters, digits, `-_.`, up to 64; generated (UUID form) when left out.
    #[serde(default)]
    pub(crate) group_id: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
}

/// One configuration key to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigurationEntry {
    #[schema(example = "enabled")]
    pub(crate) key: String,
    #[schema(example = json!(true))]
    pub(crate) value: Value,
}

fn group_param(s: &str) -> Result<GroupId, ApiError> {
    GroupId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A random id in UUID v4 form, as SORACOM's group ids are.
fn new_group_id() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// List groups.
#[utoipa::path(get, path = "/v1/groups", tag = "Group",
    responses((status = 200, body = [GroupView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_groups(State(plane): State<Arc<ControlPlane>>) -> Json<Vec<GroupView>> {
    Json(plane.groups().iter().map(GroupView::from).collect())
}

/// Create a group.
#[utoipa::path(post, path = "/v1/groups", tag = "Group", request_body = CreateGroup,
    responses((status = 201, body = GroupView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_group(
    State(plane): State<Arc<ControlPlane>>,
    ApiJson(req): ApiJson<CreateGroup>,
) -> Result<Response, ApiError> {
    let id = group_param(&req.group_id.unwrap_or_else(new_group_id))?;
    let name = req
        .name
        .or_else(|| req.tags.get("name").cloned())
        .unwrap_or_default();
    let g = Group {
        id,
        operator_id: None,
        name,
        funnel: None,
        harvest: HarvestConfig::default(),
        beam: Default::default(),
        tags: req.tags,
        configuration: BTreeMap::new(),
    };
    let created = blocking(&plane, move |p| p.create_group(g)).await?;
    Ok((StatusCode::CREATED, Json(GroupView::from(&created))).into_response())
}

/// Get a group.
#[utoipa::path(get, path = "/v1/groups/{group_id}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id")),
    responses((status = 200, body = GroupView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_group(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<GroupView>, ApiError> {
    let id = group_param(&id)?;
    plane
        .group(&id)
        .map(|g| Json(GroupView::from(&g)))
        .ok_or_else(|| ApiError::not_found(format!("group {id} does not exist")))
}

/// Delete a group no SIM belongs to.
#[utoipa::path(delete, path = "/v1/groups/{group_id}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "SIMs still belong to the group", body = ErrorBody)))]
pub(crate) async fn delete_group(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = group_param(&id)?;
    blocking(&plane, move |p| p.delete_group(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set keys of a configuration namespace.
///
/// `SoracomHarvest`: `enabled` (bool). `SoracomFunnel`: `enabled`,
/// `destination` (`{provider, service, resourceUrl, endpoint?}`),
/// `credentialsId` (must exist), `payloadsOnly`, `contentType`
/// (`auto`/`json`/`binary`); destination and credentialsId are required
/// (send them together). `SoracomBeam`: one key per entry point
/// (`http://beam.soracom.io:8888/<path>`, `http://beam.soracom.io:18080`,
/// `tcp://beam.soracom.io:8023`, `udp://beam.soracom.io:23080`,
/// `tcp://beam.soracom.io:23080`, `mqtt://beam.soracom.io:1883`), each value
/// an entry (`name`, `destination`, `enabled`, `addSubscriberHeader`,
/// `addEquipmentHeader`, `addMsisdnHeader`, `addSimIdHeader`, `addSignature`,
/// `psk`, `customHeaders`, `skipStatusCode`, `username`, `password`
/// (write-only), `useClientCert`, `clientCerts`) replacing the one there;
/// destinations are checked by entry type and fixed `$credentialsId`s must
/// exist. `SoracomAir`, `SoracomEndorse`, `SoracomFunk`, `UnifiedEndpoint`:
/// stored as given.
#[utoipa::path(put, path = "/v1/groups/{group_id}/configuration/{namespace}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id"),
        ("namespace" = String, Path, description = "SoracomAir, SoracomBeam, SoracomFunnel, SoracomHarvest, SoracomEndorse, SoracomFunk or UnifiedEndpoint")),
    request_body = [ConfigurationEntry],
    responses((status = 200, body = GroupView), (status = 400, description = "Unknown namespace or key, bad value, unknown credentials", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn put_configuration(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath((id, namespace)): ApiPath<(String, String)>,
    ApiJson(entries): ApiJson<Vec<ConfigurationEntry>>,
) -> Result<Json<GroupView>, ApiError> {
    let id = group_param(&id)?;
    configuration::namespace(&namespace)?;
    let entries = entries.into_iter().map(|e| (e.key, e.value)).collect();
    let g = blocking(&plane, move |p| {
        p.put_group_configuration(&id, &namespace, entries)
    })
    .await?;
    Ok(Json(GroupView::from(&g)))
}

/// Remove one configuration key.
#[utoipa::path(delete, path = "/v1/groups/{group_id}/configuration/{namespace}/{key}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id"), ("namespace" = String, Path, description = "Namespace"),
        ("key" = String, Path, description = "Key")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "No such group or key", body = ErrorBody)))]
pub(crate) async fn delete_configuration(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath((id, namespace, key)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = group_param(&id)?;
    configuration::namespace(&namespace)?;
    blocking(&plane, move |p| {
        p.delete_group_configuration(&id, &namespace, &key)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
