//! `/v1/subscribers`: SIMs, shaped like SORACOM's Subscriber API.
//!
//! `/v1/subscribers/{imsi}/data` (Harvest Data) is served by the data plane
//! and must not be defined here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{blocking, ApiError, ApiJson, ApiObject, ApiPath, ApiQuery, ErrorBody};
use crate::model::{GroupId, Imei, Imsi, Msisdn, SimId, Subscriber, SubscriberStatus};
use crate::plane::{ControlPlane, Page, SubscriberFilter, TagFilter};
use crate::snapshot::Session;
use crate::store::Stamped;

/// Response header carrying the key of the next page.
pub(crate) const NEXT_KEY: HeaderName = HeaderName::from_static("x-soracom-next-key");

/// Page size when `limit` is not given, and the largest allowed.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Lifecycle state of a SIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ready,
    Active,
    Inactive,
    Standby,
    Suspended,
    Terminated,
}

impl From<SubscriberStatus> for Status {
    fn from(s: SubscriberStatus) -> Self {
        match s {
            SubscriberStatus::Ready => Self::Ready,
            SubscriberStatus::Active => Self::Active,
            SubscriberStatus::Inactive => Self::Inactive,
            SubscriberStatus::Standby => Self::Standby,
            SubscriberStatus::Suspended => Self::Suspended,
            SubscriberStatus::Terminated => Self::Terminated,
        }
    }
}

impl From<Status> for SubscriberStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Ready => Self::Ready,
            Status::Active => Self::Active,
            Status::Inactive => Self::Inactive,
            Status::Standby => Self::Standby,
            Status::Suspended => Self::Suspended,
            Status::Terminated => Self::Terminated,
        }
    }
}

/// The device a SIM is locked to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ImeiLock {
    #[schema(example = "353000000000001")]
    pub(crate) imei: String,
}

/// The SIM's current session, as SORACOM's `sessionStatus`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionStatus {
    /// Whether the SIM has a session (from RADIUS or a static one).
    pub(crate) online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) imsi: Option<String>,
    /// The IMEI the session reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) imei: Option<String>,
    /// The device's IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.0.0.1")]
    pub(crate) ue_ip_address: Option<String>,
}

/// A SIM, as SORACOM's API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriberView {
    #[schema(example = "001010000000001")]
    pub(crate) imsi: String,
    /// A simgate extension: the IMEI registered for the SIM (SORACOM shows
    /// only the one its session reports, in `sessionStatus`).
    pub(crate) imei: Option<String>,
    pub(crate) msisdn: Option<String>,
    pub(crate) sim_id: Option<String>,
    pub(crate) operator_id: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) status: Status,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) imei_lock: Option<ImeiLock>,
    /// The device's IP address while the SIM has a session.
    pub(crate) ip_address: Option<String>,
    pub(crate) session_status: SessionStatus,
    /// Unix ms.
    pub(crate) created_time: u64,
    /// Unix ms.
    pub(crate) last_modified_time: u64,
    /// Unix ms (SORACOM's older name of `createdTime`).
    pub(crate) created_at: u64,
    /// Unix ms (SORACOM's older name of `lastModifiedTime`).
    pub(crate) last_modified_at: u64,
}

impl SubscriberView {
    fn new(s: &Stamped<Subscriber>, session: Option<&(IpAddr, Arc<Session>)>) -> Self {
        let v = &s.value;
        let session_status =
            session.map_or_else(SessionStatus::default, |(ip, se)| SessionStatus {
                online: true,
                imsi: Some(se.imsi.to_string()),
                imei: se.imei.as_ref().map(ToString::to_string),
                ue_ip_address: Some(ip.to_string()),
            });
        Self {
            imsi: v.imsi.to_string(),
            imei: v.imei.as_ref().map(ToString::to_string),
            msisdn: v.msisdn.as_ref().map(ToString::to_string),
            sim_id: v.sim_id.as_ref().map(ToString::to_string),
            operator_id: v.operator_id.as_ref().map(ToString::to_string),
            group_id: v.group_id.as_ref().map(ToString::to_string),
            status: v.status.into(),
            tags: v.tags.clone(),
            imei_lock: v.imei_lock.as_ref().map(|i| ImeiLock {
                imei: i.to_string(),
            }),
            ip_address: session.map(|(ip, _)| ip.to_string()),
            session_status,
            created_time: s.created_at,
            last_modified_time: s.last_modified_at,
            created_at: s.created_at,
            last_modified_at: s.last_modified_at,
        }
    }
}

/// The sessions of these SIMs (one scan of the session table), the
/// lowest address first when a SIM has several.
fn sessions_of(
    plane: &ControlPlane,
    subs: &[Stamped<Subscriber>],
) -> HashMap<Imsi, (IpAddr, Arc<Session>)> {
    let wanted: HashSet<&Imsi> = subs.iter().map(|s| &s.value.imsi).collect();
    let mut out: HashMap<Imsi, (IpAddr, Arc<Session>)> = HashMap::new();
    // One pass over the table without copying it; still O(sessions) per
    // request (an IMSI → addresses index would cost every binding memory).
    plane.sessions.for_each(|ip, se| {
        if !wanted.contains(&se.imsi) {
            return;
        }
        match out.get(&se.imsi) {
            Some((have, _)) if *have <= ip => {}
            _ => {
                out.insert(se.imsi.clone(), (ip, Arc::clone(se)));
            }
        }
    });
    out
}

/// Views of SIMs with their sessions.
pub(crate) fn views(plane: &ControlPlane, subs: &[Stamped<Subscriber>]) -> Vec<SubscriberView> {
    let sessions = sessions_of(plane, subs);
    subs.iter()
        .map(|s| SubscriberView::new(s, sessions.get(&s.value.imsi)))
        .collect()
}

fn view_with(plane: &ControlPlane, s: &Stamped<Subscriber>) -> Json<SubscriberView> {
    let mut v = views(plane, std::slice::from_ref(s));
    Json(v.pop().unwrap_or_else(|| SubscriberView::new(s, None)))
}

/// A SIM as `GET /v1/subscribers/{imsi}` renders it, with `session` (the
/// address it holds and what it reported) when the caller already knows
/// it. The data plane's Metadata service answers with this, so a SIM looks
/// the same to its device as to its operator (one renderer), and finding
/// the session costs no scan of the session table.
pub fn render_subscriber(
    s: &Stamped<Subscriber>,
    session: Option<(IpAddr, Arc<Session>)>,
) -> serde_json::Value {
    serde_json::to_value(SubscriberView::new(s, session.as_ref())).unwrap_or_default()
}

/// `PUT /v1/subscribers/{imsi}/tags` for a caller that is not the REST
/// API (the Metadata service): `body` is `[{"tagName","tagValue"}]`,
/// checked with the API's limits, then the same mutation (one durable
/// commit, then the snapshot swapped).
pub async fn put_tags_from_body(
    plane: &Arc<ControlPlane>,
    imsi: Imsi,
    body: &[u8],
) -> Result<Stamped<Subscriber>, ApiError> {
    let tags: Vec<TagUpdate> = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?;
    let tags = tag_map(tags)?;
    blocking(plane, move |p| p.put_tags(&imsi, tags)).await
}

/// `DELETE /v1/subscribers/{imsi}/tags/{tag_name}` for a caller that is
/// not the REST API (the Metadata service): the same mutation.
pub async fn delete_tag_of(
    plane: &Arc<ControlPlane>,
    imsi: Imsi,
    name: String,
) -> Result<Stamped<Subscriber>, ApiError> {
    blocking(plane, move |p| p.delete_tag(&imsi, &name)).await
}

/// `POST /v1/subscribers` body (a simgate extension: the SIM's IMSI in
/// the body, with what `register` takes).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterSubscriber {
    #[schema(example = "001010000000002", pattern = r"^[0-9]{14,15}$")]
    pub imsi: String,
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{14,16}$")]
    pub imei: Option<String>,
    #[serde(default)]
    #[schema(pattern = r"^\+?[0-9]{1,15}$")]
    pub msisdn: Option<String>,
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{18,22}$")]
    pub sim_id: Option<String>,
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub group_id: Option<String>,
    #[serde(default)]
    #[schema(schema_with = super::groups::tag_set)]
    pub tags: BTreeMap<String, String>,
    /// Defaults to `active`; `terminated` is refused.
    #[serde(default)]
    pub status: Option<Status>,
}

impl From<RegisterSubscriber> for RegisterSim {
    fn from(r: RegisterSubscriber) -> Self {
        Self {
            _registration_secret: None,
            group_id: r.group_id,
            tags: r.tags,
            imei: r.imei,
            msisdn: r.msisdn,
            sim_id: r.sim_id,
            status: r.status,
        }
    }
}

/// `POST /v1/subscribers/{imsi}/register` body (SORACOM's
/// `RegisterSubscribersRequest`, plus what simgate knows of a SIM).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterSim {
    /// The SIM's PUK or passcode: accepted, not checked (simgate's SIMs are
    /// its own).
    #[serde(default, rename = "registrationSecret")]
    pub _registration_secret: Option<String>,
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub group_id: Option<String>,
    #[serde(default)]
    #[schema(schema_with = super::groups::tag_set)]
    pub tags: BTreeMap<String, String>,
    /// A simgate extension: the device's IMEI (14 to 16 digits).
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{14,16}$")]
    pub imei: Option<String>,
    /// A simgate extension: the SIM's MSISDN.
    #[serde(default)]
    #[schema(pattern = r"^\+?[0-9]{1,15}$")]
    pub msisdn: Option<String>,
    /// A simgate extension: the SIM's id (ICCID).
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{18,22}$")]
    pub sim_id: Option<String>,
    /// A simgate extension: the first state, `active` unless given;
    /// `terminated` is refused.
    #[serde(default)]
    pub status: Option<Status>,
}

/// One tag to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagUpdate {
    /// 1 to 32 characters.
    #[schema(min_length = 1, max_length = 32)]
    pub tag_name: String,
    /// Up to 256 characters.
    #[schema(max_length = 256)]
    pub tag_value: String,
}

/// Longest tag name and value, in characters, as the API describes them
/// (within the store's 128 / 1024 bytes whatever the characters).
const MAX_TAG_NAME_CHARS: usize = 32;
const MAX_TAG_VALUE_CHARS: usize = 256;

/// Tags as sent (SIM or group), checked against the described limits.
pub fn tag_map(tags: Vec<TagUpdate>) -> Result<BTreeMap<String, String>, ApiError> {
    tags.into_iter()
        .map(|t| {
            let name_chars = t.tag_name.chars().count();
            if name_chars == 0 || name_chars > MAX_TAG_NAME_CHARS {
                return Err(ApiError::bad_request(format!(
                    "tagName must be 1 to {MAX_TAG_NAME_CHARS} characters"
                )));
            }
            if t.tag_value.chars().count() > MAX_TAG_VALUE_CHARS {
                return Err(ApiError::bad_request(format!(
                    "tagValue of {:?} must be at most {MAX_TAG_VALUE_CHARS} characters",
                    trunc(&t.tag_name)
                )));
            }
            Ok((t.tag_name, t.tag_value))
        })
        .collect()
}

/// `set_group` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetGroup {
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,64}$")]
    pub group_id: String,
}

/// `set_imei_lock` body: the IMEI to lock to. Without one (or without a
/// body), the SIM's registered IMEI, else the IMEI its session reported.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetImeiLock {
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{14,16}$")]
    pub imei: Option<String>,
}

/// Listing filters and paging.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListSubscribers {
    /// Older simgate name of `status_filter`, still accepted.
    #[param(ignore)]
    pub(crate) status: Option<String>,
    /// States to include, `|`-separated (e.g. `active|ready`).
    #[param(
        pattern = r"^(ready|active|inactive|standby|suspended|terminated)(\|(ready|active|inactive|standby|suspended|terminated))*$"
    )]
    pub(crate) status_filter: Option<String>,
    /// Older simgate filter, still accepted: `GET /v1/groups/{group_id}/subscribers`.
    #[param(ignore)]
    pub(crate) group_id: Option<String>,
    #[serde(rename = "groupId")]
    #[param(ignore)]
    pub(crate) group_id_camel: Option<String>,
    /// Only SIMs with this tag.
    pub(crate) tag_name: Option<String>,
    /// …whose value is this (needs `tag_name`).
    pub(crate) tag_value: Option<String>,
    /// `exact` (default) or `prefix`.
    #[param(value_type = Option<TagValueMatchMode>)]
    pub(crate) tag_value_match_mode: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<usize>,
    /// The IMSI after which to start: the previous page's `x-soracom-next-key`.
    #[param(pattern = r"^([0-9]{14,15})?$")]
    pub(crate) last_evaluated_key: Option<String>,
}

/// How `tag_value` is compared.
#[derive(Debug, Clone, Copy, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // documentation only
pub(crate) enum TagValueMatchMode {
    Exact,
    Prefix,
}

fn parse<T>(
    what: &str,
    v: Option<String>,
    f: impl Fn(&str) -> Result<T, crate::model::IdError>,
) -> Result<Option<T>, ApiError> {
    v.filter(|s| !s.is_empty())
        .map(|s| f(&s).map_err(|e| ApiError::bad_request(format!("{what}: {e}"))))
        .transpose()
}

pub(crate) fn imsi_param(s: &str) -> Result<Imsi, ApiError> {
    Imsi::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn filter_from(q: ListSubscribers) -> Result<SubscriberFilter, ApiError> {
    let mut statuses = Vec::new();
    for s in q
        .status
        .iter()
        .chain(q.status_filter.iter())
        .flat_map(|s| s.split('|'))
        .filter(|s| !s.is_empty())
    {
        let st: Status = serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| ApiError::bad_request(format!("unknown status {:?}", trunc(s))))?;
        statuses.push(st.into());
    }
    let group_id = parse("groupId", q.group_id.or(q.group_id_camel), GroupId::parse)?;
    let prefix = match q.tag_value_match_mode.as_deref() {
        None | Some("exact") => false,
        Some("prefix") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "tag_value_match_mode must be exact or prefix",
            ))
        }
    };
    let tag = match (q.tag_name, q.tag_value) {
        (Some(name), value) => Some(TagFilter {
            name,
            value,
            prefix,
        }),
        (None, Some(_)) => return Err(ApiError::bad_request("tag_value needs tag_name")),
        (None, None) => None,
    };
    Ok(SubscriberFilter {
        statuses,
        group_id,
        tag,
    })
}

fn trunc(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One page of SIMs, `limit` and `after` checked.
pub(crate) fn page_of(
    plane: &ControlPlane,
    filter: &SubscriberFilter,
    after: Option<String>,
    limit: Option<usize>,
) -> Result<Page<Stamped<Subscriber>, Imsi>, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let after = parse("last_evaluated_key", after, Imsi::parse)?;
    Ok(plane.list_subscribers(filter, after.as_ref(), limit))
}

/// `body` with `x-soracom-next-key` when another page follows.
pub(crate) fn paged(body: impl IntoResponse, next: Option<Imsi>) -> Response {
    let mut r = body.into_response();
    if let Some(next) = next {
        if let Ok(v) = HeaderValue::from_str(next.as_str()) {
            r.headers_mut().insert(NEXT_KEY, v);
        }
    }
    r
}

/// A SIM as SORACOM's `Sim` (what `GET /v1/groups/{group_id}/subscribers`
/// lists): its subscription is in `profiles`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SimView {
    /// The SIM id (ICCID) when known, else the IMSI.
    pub(crate) sim_id: String,
    pub(crate) operator_id: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) status: Status,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) imei_lock: Option<ImeiLock>,
    pub(crate) session_status: SessionStatus,
    /// `{simId: {iccid, primaryImsi, subscribers: {imsi: {imsi, msisdn, status}}}}`.
    #[schema(value_type = Object)]
    pub(crate) profiles: serde_json::Value,
    /// Unix ms.
    pub(crate) created_time: u64,
    /// Unix ms.
    pub(crate) last_modified_time: u64,
}

impl From<SubscriberView> for SimView {
    fn from(v: SubscriberView) -> Self {
        let sim_id = v.sim_id.clone().unwrap_or_else(|| v.imsi.clone());
        let profiles = serde_json::json!({ sim_id.clone(): {
            "iccid": v.sim_id,
            "primaryImsi": v.imsi,
            "subscribers": { v.imsi.clone(): {
                "imsi": v.imsi, "msisdn": v.msisdn, "status": v.status } },
        }});
        Self {
            sim_id,
            operator_id: v.operator_id,
            group_id: v.group_id,
            status: v.status,
            tags: v.tags,
            imei_lock: v.imei_lock,
            session_status: v.session_status,
            profiles,
            created_time: v.created_time,
            last_modified_time: v.last_modified_time,
        }
    }
}

/// List SIMs.
#[utoipa::path(get, path = "/v1/subscribers", tag = "Subscriber", params(ListSubscribers),
    responses(
        (status = 200, description = "One page of SIMs in IMSI order", body = [SubscriberView],
            headers(("x-soracom-next-key" = String, description = "Present when more pages follow: pass as last_evaluated_key"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_subscribers(
    State(plane): State<Arc<ControlPlane>>,
    ApiQuery(q): ApiQuery<ListSubscribers>,
) -> Result<Response, ApiError> {
    let (after, limit) = (q.last_evaluated_key.clone(), q.limit);
    let filter = filter_from(q)?;
    let page = page_of(&plane, &filter, after, limit)?;
    Ok(paged(Json(views(&plane, &page.items)), page.next_key))
}

async fn register(
    plane: Arc<ControlPlane>,
    imsi: &str,
    req: RegisterSim,
) -> Result<Response, ApiError> {
    let s = Subscriber {
        imsi: imsi_param(imsi)?,
        imei: parse("imei", req.imei, Imei::parse)?,
        msisdn: parse("msisdn", req.msisdn, Msisdn::parse)?,
        sim_id: parse("simId", req.sim_id, SimId::parse)?,
        operator_id: None,
        group_id: parse("groupId", req.group_id, GroupId::parse)?,
        tags: req.tags,
        status: req.status.map_or(SubscriberStatus::Active, Into::into),
        imei_lock: None,
    };
    let created = blocking(&plane, move |p| p.create_subscriber(s)).await?;
    Ok((StatusCode::CREATED, view_with(&plane, &created)).into_response())
}

/// Register a SIM, its IMSI in the body (a simgate extension; SORACOM's is
/// `POST /v1/subscribers/{imsi}/register`).
#[utoipa::path(post, path = "/v1/subscribers", tag = "Subscriber", request_body = RegisterSubscriber,
    responses((status = 201, body = SubscriberView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, description = "The IMSI is registered already", body = ErrorBody)))]
pub(crate) async fn register_subscriber(
    State(plane): State<Arc<ControlPlane>>,
    ApiObject(req): ApiObject<RegisterSubscriber>,
) -> Result<Response, ApiError> {
    let imsi = req.imsi.clone();
    register(plane, &imsi, req.into()).await
}

/// Register a SIM.
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/register", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")), request_body = RegisterSim,
    responses((status = 201, body = SubscriberView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, description = "The IMSI is registered already", body = ErrorBody)))]
pub(crate) async fn register_sim(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
    ApiObject(req): ApiObject<RegisterSim>,
) -> Result<Response, ApiError> {
    register(plane, &imsi, req).await
}

/// Get a SIM.
#[utoipa::path(get, path = "/v1/subscribers/{imsi}", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_subscriber(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    let imsi = imsi_param(&imsi)?;
    plane
        .subscriber(&imsi)
        .map(|s| view_with(&plane, &s))
        .ok_or_else(|| ApiError::not_found(format!("subscriber {imsi} does not exist")))
}

/// Delete a SIM and its static sessions (simgate extension; SORACOM SIMs
/// are terminated instead).
#[utoipa::path(delete, path = "/v1/subscribers/{imsi}", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_subscriber(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let imsi = imsi_param(&imsi)?;
    blocking(&plane, move |p| p.delete_subscriber(&imsi)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add or replace tags of a SIM (others are kept).
#[utoipa::path(put, path = "/v1/subscribers/{imsi}/tags", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")), request_body = [TagUpdate],
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn put_tags(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
    ApiJson(tags): ApiJson<Vec<TagUpdate>>,
) -> Result<Json<SubscriberView>, ApiError> {
    let imsi = imsi_param(&imsi)?;
    let tags = tag_map(tags)?;
    let s = blocking(&plane, move |p| p.put_tags(&imsi, tags)).await?;
    Ok(view_with(&plane, &s))
}

/// Remove one tag of a SIM.
#[utoipa::path(delete, path = "/v1/subscribers/{imsi}/tags/{tag_name}", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$"), ("tag_name" = String, Path, description = "Tag name")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, description = "No such SIM or tag", body = ErrorBody)))]
pub(crate) async fn delete_tag(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath((imsi, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let imsi = imsi_param(&imsi)?;
    blocking(&plane, move |p| p.delete_tag(&imsi, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Put a SIM in a group.
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/set_group", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")), request_body = SetGroup,
    responses((status = 200, body = SubscriberView), (status = 400, description = "Bad id or no such group", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_group(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
    ApiObject(req): ApiObject<SetGroup>,
) -> Result<Json<SubscriberView>, ApiError> {
    let imsi = imsi_param(&imsi)?;
    let group = GroupId::parse(&req.group_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let s = blocking(&plane, move |p| p.set_group(&imsi, Some(group))).await?;
    Ok(view_with(&plane, &s))
}

/// Take a SIM out of its group.
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/unset_group", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn unset_group(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    let imsi = imsi_param(&imsi)?;
    let s = blocking(&plane, move |p| p.set_group(&imsi, None)).await?;
    Ok(view_with(&plane, &s))
}

async fn transition(
    plane: Arc<ControlPlane>,
    imsi: String,
    status: SubscriberStatus,
) -> Result<Json<SubscriberView>, ApiError> {
    let imsi = imsi_param(&imsi)?;
    let s = blocking(&plane, move |p| p.set_status(&imsi, status)).await?;
    Ok(view_with(&plane, &s))
}

/// Activate a SIM (status `active`).
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/activate", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The SIM is terminated", body = ErrorBody)))]
pub(crate) async fn activate(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    transition(plane, imsi, SubscriberStatus::Active).await
}

/// Deactivate a SIM (status `inactive`).
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/deactivate", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The SIM is terminated", body = ErrorBody)))]
pub(crate) async fn deactivate(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    transition(plane, imsi, SubscriberStatus::Inactive).await
}

/// Suspend a SIM (status `suspended`).
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/suspend", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The SIM is terminated", body = ErrorBody)))]
pub(crate) async fn suspend(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    transition(plane, imsi, SubscriberStatus::Suspended).await
}

/// Terminate a SIM. Final: no state can follow.
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/terminate", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The SIM is terminated already", body = ErrorBody)))]
pub(crate) async fn terminate(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    transition(plane, imsi, SubscriberStatus::Terminated).await
}

/// Lock a SIM to one device: sessions reporting another IMEI are refused.
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/set_imei_lock", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")), request_body(content = Option<SetImeiLock>, description = "Optional"),
    responses((status = 200, body = SubscriberView), (status = 400, description = "Bad IMEI, or none given and none known", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_imei_lock(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SubscriberView>, ApiError> {
    let imsi = imsi_param(&imsi)?;
    let body = body?;
    let req: SetImeiLock = if body.iter().all(u8::is_ascii_whitespace)
        || body.trim_ascii() == b"null"
    {
        SetImeiLock::default()
    } else {
        let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e);
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        if !v.is_object() {
            return Err(bad("the body must be a JSON object".to_owned()));
        }
        serde_json::from_value(v).map_err(|e| bad(e.to_string()))?
    };
    let imei = match parse("imei", req.imei, Imei::parse)? {
        Some(i) => i,
        None => {
            let sub = plane
                .subscriber(&imsi)
                .ok_or_else(|| ApiError::not_found(format!("subscriber {imsi} does not exist")))?;
            sub.value
                .imei
                .clone()
                .or_else(|| {
                    plane
                        .sessions
                        .entries()
                        .into_iter()
                        .find(|(_, s)| s.imsi == imsi && s.imei.is_some())
                        .and_then(|(_, s)| s.imei.clone())
                })
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "no IMEI given and none known for this SIM; send {\"imei\":\"…\"}",
                    )
                })?
        }
    };
    let s = blocking(&plane, move |p| p.set_imei_lock(&imsi, Some(imei))).await?;
    Ok(view_with(&plane, &s))
}

/// Remove a SIM's IMEI lock.
#[utoipa::path(post, path = "/v1/subscribers/{imsi}/unset_imei_lock", tag = "Subscriber",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$")),
    responses((status = 200, body = SubscriberView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn unset_imei_lock(
    State(plane): State<Arc<ControlPlane>>,
    ApiPath(imsi): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    let imsi = imsi_param(&imsi)?;
    let s = blocking(&plane, move |p| p.set_imei_lock(&imsi, None)).await?;
    Ok(view_with(&plane, &s))
}
