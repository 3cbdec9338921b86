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

use super::error::{blocking, ApiError, ApiJson, ApiObject, ApiPath, ApiQuery, ErrorBody};
use super::subscribers::{self, tag_map, SimView, TagUpdate};
use crate::model::{CredentialId, Group, GroupId, HarvestConfig};
use crate::plane::{ControlPlane, SubscriberFilter};
use crate::store::{configuration, Stamped};

/// SORACOM's group configuration namespaces that simgate knows.
#[derive(Debug, Clone, Copy, ToSchema)]
#[allow(dead_code)] // documentation only: paths take the name as a string
pub(crate) enum Namespace {
    SoracomAir,
    SoracomBeam,
    SoracomEndorse,
    SoracomFunk,
    SoracomFunnel,
    SoracomHarvest,
    SoracomHarvestFiles,
    SoracomKrypton,
    UnifiedEndpoint,
}

/// A group, as SORACOM's API shows it. Its name is the tag `name`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupView {
    #[schema(example = "demo")]
    pub(crate) group_id: String,
    pub(crate) operator_id: Option<String>,
    #[schema(example = json!({"name": "field sensors"}))]
    pub(crate) tags: BTreeMap<String, String>,
    /// Namespace (`SoracomAir`, `SoracomFunnel`, `SoracomHarvest`, …) →
    /// key → value.
    #[schema(example = json!({"SoracomHarvest": {"enabled": true}}))]
    pub(crate) configuration: BTreeMap<String, BTreeMap<String, Value>>,
    /// Unix ms.
    pub(crate) created_time: u64,
    /// Unix ms.
    pub(crate) last_modified_time: u64,
}

impl From<&Stamped<Group>> for GroupView {
    fn from(g: &Stamped<Group>) -> Self {
        let v = &g.value;
        let mut tags = v.tags.clone();
        if !v.name.is_empty() {
            tags.entry("name".to_owned())
                .or_insert_with(|| v.name.clone());
        }
        Self {
            group_id: v.id.to_string(),
            operator_id: v.operator_id.as_ref().map(ToString::to_string),
            tags,
            configuration: configuration::render(v),
            created_time: g.created_at,
            last_modified_time: g.last_modified_at,
        }
    }
}

/// `POST /v1/groups` body (SORACOM's `CreateGroupRequest`). The group's
/// name is the tag `name`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGroup {
    /// A simgate extension: the id to give the group (letters, digits,
    /// `-_.`, up to 64). SORACOM always generates one (UUID form), as simgate
    /// does when it is left out.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub group_id: Option<String>,
    #[serde(default)]
    #[schema(schema_with = tag_set)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(schema_with = create_configuration)]
    pub configuration: BTreeMap<String, BTreeMap<String, Value>>,
}

/// One configuration key to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationEntry {
    #[schema(example = "enabled")]
    pub key: String,
    #[schema(example = json!(true))]
    pub value: Value,
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

/// Create a group, with tags and configuration (SORACOM's
/// `CreateGroupRequest`).
#[utoipa::path(post, path = "/v1/groups", tag = "Group", request_body = CreateGroup,
    responses((status = 201, body = GroupView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_group(
    State(plane): State<Arc<ControlPlane>>,
    ApiObject(req): ApiObject<CreateGroup>,
) -> Result<Response, ApiError> {
    let id = group_param(&req.group_id.unwrap_or_else(new_group_id))?;
    let mut g = Group {
        id,
        operator_id: None,
        name: req.tags.get("name").cloned().unwrap_or_default(),
        funnel: None,
        harvest: HarvestConfig::default(),
        beam: Default::default(),
        tags: req.tags,
        configuration: BTreeMap::new(),
    };
    for (namespace, entries) in req.configuration {
        let ns = configuration::namespace(&namespace)?;
        let known = |c: &CredentialId| plane.credential(c).is_some();
        configuration::put(&mut g, ns, entries.into_iter().collect(), &known)?;
    }
    let created = blocking(&plane, move |p| p.create_group(g)).await?;
    Ok((StatusCode::CREATED, Json(GroupView::from(&created))).into_response())
}

/// Get a group.
#[utoipa::path(get, path = "/v1/groups/{group_id}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")),
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
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")),
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
/// exist. `SoracomAir`, `SoracomEndorse`, `SoracomFunk`, `SoracomHarvestFiles`,
/// `SoracomKrypton`, `UnifiedEndpoint`:
/// stored as given.
#[utoipa::path(put, path = "/v1/groups/{group_id}/configuration/{namespace}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$"),
        ("namespace" = Namespace, Path, description = "Namespace")),
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
#[utoipa::path(delete, path = "/v1/groups/{group_id}/configuration/{namespace}/{name}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$"),
        ("namespace" = Namespace, Path, description = "Namespace"),
        ("name" = String, Path, description = "Key")),
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

/// Remove a whole configuration namespace.
#[utoipa::path(delete, path = "/v1/groups/{group_id}/configuration/{namespace}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$"),
        ("namespace" = Namespace, Path, description = "Namespace")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_namespace(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath((id, namespace)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = group_param(&id)?;
    let ns = configuration::namespace(&namespace)?;
    let current = plane
        .group(&id)
        .ok_or_else(|| ApiError::not_found(format!("group {id} does not exist")))?;
    let mut g = Group::clone(&current.value);
    let keys: Vec<String> = configuration::render(&g)
        .remove(ns.as_str())
        .map(|m| m.into_keys().collect())
        .unwrap_or_default();
    for key in keys {
        // Removing one key may take others with it (Funnel without its
        // destination is no Funnel): remove only what is still there.
        let present = configuration::render(&g)
            .get(ns.as_str())
            .is_some_and(|m| m.contains_key(&key));
        if present {
            configuration::delete(&mut g, ns, &key)?;
        }
    }
    if g != *current.value {
        blocking(&plane, move |p| p.update_group(g)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Listing paging (SORACOM's `limit` and `last_evaluated_key`).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<usize>,
    /// The IMSI after which to start: the previous page's `x-soracom-next-key`.
    #[param(pattern = r"^([0-9]{14,15})?$")]
    pub(crate) last_evaluated_key: Option<String>,
}

/// List the SIMs of a group.
#[utoipa::path(get, path = "/v1/groups/{group_id}/subscribers", tag = "Group",
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$"), Paging),
    responses(
        (status = 200, description = "One page of the group's SIMs in IMSI order", body = [SimView],
            headers(("x-soracom-next-key" = String, description = "Present when more pages follow: pass as last_evaluated_key"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_group_subscribers(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Paging>,
) -> Result<Response, ApiError> {
    let id = group_param(&id)?;
    if plane.group(&id).is_none() {
        return Err(ApiError::not_found(format!("group {id} does not exist")));
    }
    let filter = SubscriberFilter {
        statuses: Vec::new(),
        group_id: Some(id),
        tag: None,
    };
    let page = subscribers::page_of(&plane, &filter, q.last_evaluated_key, q.limit)?;
    let sims: Vec<SimView> = subscribers::views(&plane, &page.items)
        .into_iter()
        .map(SimView::from)
        .collect();
    Ok(subscribers::paged(Json(sims), page.next_key))
}

/// A schema written as JSON (for what utoipa's attributes cannot say).
fn schema(v: Value) -> utoipa::openapi::Schema {
    serde_json::from_value(v).unwrap_or_default()
}

/// SORACOM's `TagSet`. The store takes names of 1 to 128 bytes and values
/// up to 1024 bytes; the schema says it in characters of up to 4 bytes.
pub(crate) fn tag_set() -> utoipa::openapi::Schema {
    schema(serde_json::json!({
        "type": "object",
        "description": "Tag name → value: names 1 to 128 bytes, values up to 1024 bytes (UTF-8).",
        "propertyNames": {"minLength": 1, "maxLength": 32},
        "additionalProperties": {"type": "string", "maxLength": 256},
        "example": {"name": "field sensors"},
    }))
}

/// The configuration a group can be created with. `SoracomFunnel` and
/// `SoracomBeam` are accepted too, checked as `PUT …/configuration/{namespace}`
/// checks them.
fn create_configuration() -> utoipa::openapi::Schema {
    let verbatim = serde_json::json!({
        "type": "object",
        "propertyNames": {"minLength": 1, "maxLength": 32},
    });
    schema(serde_json::json!({
        "type": "object",
        "description": "Namespace → key → value. SoracomFunnel and SoracomBeam are accepted too, \
                        checked as PUT /v1/groups/{group_id}/configuration/{namespace} checks them.",
        "additionalProperties": false,
        "properties": {
            "SoracomHarvest": {"type": "object", "additionalProperties": false,
                "properties": {"enabled": {"type": "boolean"}}},
            "SoracomAir": verbatim,
            "SoracomEndorse": verbatim,
            "SoracomFunk": verbatim,
            "SoracomHarvestFiles": verbatim,
            "SoracomKrypton": verbatim,
            "UnifiedEndpoint": verbatim,
        },
        "example": {"SoracomHarvest": {"enabled": true}},
    }))
}

/// Add or replace tags of a group (others are kept).
#[utoipa::path(put, path = "/v1/groups/{group_id}/tags", tag = "Group",
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$")), request_body = [TagUpdate],
    responses((status = 200, body = GroupView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn put_group_tags(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(tags): ApiJson<Vec<TagUpdate>>,
) -> Result<Json<GroupView>, ApiError> {
    let id = group_param(&id)?;
    let tags = tag_map(tags)?;
    let current = plane
        .group(&id)
        .ok_or_else(|| ApiError::not_found(format!("group {id} does not exist")))?;
    let mut g = Group::clone(&current.value);
    if let Some(name) = tags.get("name") {
        g.name.clone_from(name);
    }
    g.tags.extend(tags);
    let g = blocking(&plane, move |p| p.update_group(g)).await?;
    Ok(Json(GroupView::from(&g)))
}

/// Remove one tag of a group.
#[utoipa::path(delete, path = "/v1/groups/{group_id}/tags/{tag_name}", tag = "Group",
    params(("group_id" = String, Path, description = "Group id", pattern = r"^[A-Za-z0-9_.-]{1,64}$"), ("tag_name" = String, Path, description = "Tag name")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "No such group or tag", body = ErrorBody)))]
pub(crate) async fn delete_group_tag(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = group_param(&id)?;
    let current = plane
        .group(&id)
        .ok_or_else(|| ApiError::not_found(format!("group {id} does not exist")))?;
    let mut g = Group::clone(&current.value);
    let had_name = name == "name" && !g.name.is_empty();
    if g.tags.remove(&name).is_none() && !had_name {
        return Err(ApiError::not_found(format!(
            "group {id} has no tag {:?}",
            name.chars().take(64).collect::<String>()
        )));
    }
    if name == "name" {
        g.name.clear();
    }
    blocking(&plane, move |p| p.update_group(g)).await?;
    Ok(StatusCode::NO_CONTENT)
}
