//! The OpenAPI description of the Harvest Data query routes. The data plane
//! serves them (`dataplane/src/services/harvest/api.rs`) on the same
//! listener and behind the same token; they are described here so that
//! `/openapi.json` tells the whole API. These functions are never routed.
#![allow(dead_code)] // documentation only
#![allow(unused_qualifications)] // from utoipa's expansion of `params(…)` here

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;

/// The resource types simgate keeps data for.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub(crate) enum ResourceType {
    Subscriber,
}

/// One Harvest Data entry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DataEntry {
    /// Unix ms.
    pub(crate) time: u64,
    #[schema(example = "application/json")]
    pub(crate) content_type: String,
    /// The bytes as text when they are UTF-8, else base64.
    pub(crate) content: String,
    /// A simgate extension: `base64` when `content` is base64.
    pub(crate) content_encoding: Option<String>,
    /// The IMSI.
    pub(crate) resource_id: String,
    pub(crate) resource_type: ResourceType,
    /// `http`, `tcp`, `udp` or `mqtt`.
    pub(crate) category: String,
}

/// A SIM that has data.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DataResource {
    pub(crate) resource_type: ResourceType,
    /// The IMSI.
    pub(crate) resource_id: String,
    /// Unix ms of the newest entry.
    pub(crate) last_modified_time: u64,
}

/// Which entries, in which order.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DataQuery {
    /// Unix ms, inclusive (default: the retention period ago).
    #[param(minimum = 0)]
    pub(crate) from: Option<u64>,
    /// Unix ms, inclusive (default: now).
    #[param(minimum = 0)]
    pub(crate) to: Option<u64>,
    /// `desc` (newest first, the default) or `asc`.
    #[param(value_type = Option<Sort>)]
    pub(crate) sort: Option<String>,
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<u32>,
    /// The previous page's `x-soracom-next-key`.
    #[param(pattern = r"^[0-9]{1,19}_[0-9]{14,15}(_[0-9]{1,10})?$")]
    pub(crate) last_evaluated_key: Option<String>,
}

/// Entry order.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Sort {
    Desc,
    Asc,
}

/// Which SIMs with data.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResourcesQuery {
    #[param(value_type = Option<ResourceType>)]
    pub(crate) resource_type: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<u32>,
    /// The IMSI after which to start: the previous page's `x-soracom-next-key`.
    #[param(pattern = r"^([0-9]{14,15})?$")]
    pub(crate) last_evaluated_key: Option<String>,
}

/// A resource's Harvest Data entries.
#[utoipa::path(get, path = "/v1/data/{resource_type}/{resource_id}", tag = "DataEntry",
    params(("resource_type" = ResourceType, Path), ("resource_id" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$"), DataQuery),
    responses(
        (status = 200, body = [DataEntry],
            headers(("x-soracom-next-key" = String, description = "Present when more pages follow: pass as last_evaluated_key"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) fn get_data_entries() {}

/// The entry at one time (the first one, when several arrived in that
/// millisecond).
#[utoipa::path(get, path = "/v1/data/{resource_type}/{resource_id}/{time}", tag = "DataEntry",
    params(("resource_type" = ResourceType, Path), ("resource_id" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$"),
        ("time" = u64, Path, description = "Unix ms", minimum = 0)),
    responses((status = 200, body = DataEntry), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn get_data_entry() {}

/// Delete the entries at one time.
#[utoipa::path(delete, path = "/v1/data/{resource_type}/{resource_id}/{time}", tag = "DataEntry",
    params(("resource_type" = ResourceType, Path), ("resource_id" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$"),
        ("time" = u64, Path, description = "Unix ms", minimum = 0)),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn delete_data_entry() {}

/// The resources (SIMs) that have data.
#[utoipa::path(get, path = "/v1/data/resources", tag = "DataEntry", params(ResourcesQuery),
    responses(
        (status = 200, body = [DataResource],
            headers(("x-soracom-next-key" = String, description = "Present when more pages follow: pass as last_evaluated_key"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) fn list_data_resources() {}

/// A SIM's Harvest Data entries.
#[utoipa::path(get, path = "/v1/subscribers/{imsi}/data", tag = "DataEntry",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$"), DataQuery),
    responses(
        (status = 200, body = [DataEntry],
            headers(("x-soracom-next-key" = String, description = "Present when more pages follow: pass as last_evaluated_key"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) fn get_data_from_subscriber() {}

/// Every entry of a SIM at one time (a simgate extension; SORACOM's is
/// `GET /v1/data/Subscriber/{imsi}/{time}`).
#[utoipa::path(get, path = "/v1/subscribers/{imsi}/data/{time}", tag = "DataEntry",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$"),
        ("time" = u64, Path, description = "Unix ms", minimum = 0)),
    responses((status = 200, body = [DataEntry]), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn get_subscriber_data_at() {}

/// Delete a SIM's entries at one time (a simgate extension; SORACOM's is
/// `DELETE /v1/data/Subscriber/{imsi}/{time}`).
#[utoipa::path(delete, path = "/v1/subscribers/{imsi}/data/{time}", tag = "DataEntry",
    params(("imsi" = String, Path, description = "IMSI", pattern = r"^[0-9]{14,15}$"),
        ("time" = u64, Path, description = "Unix ms", minimum = 0)),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn delete_subscriber_data_at() {}
