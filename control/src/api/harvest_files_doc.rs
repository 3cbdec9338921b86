//! The OpenAPI description of the Harvest Files routes (SORACOM's
//! `FileEntry` API). The data plane serves them
//! (`dataplane/src/services/harvest_files/api.rs`) on the same listener and
//! behind the same token; they are described here so that `/openapi.json`
//! tells the whole API. These functions are never routed.
#![allow(dead_code)] // documentation only
#![allow(unused_qualifications)] // from utoipa's expansion of `params(…)` here

use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;

/// SORACOM's scopes: `private` (uploads of devices and operators) and
/// `public` (read-only).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scope {
    Private,
    Public,
}

/// The only scope that can be written.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WritableScope {
    Private,
}

/// One file or directory of a listing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileEntry {
    /// Absolute path: `/dir/name`, or `/dir/sub/` for a directory.
    pub(crate) file_path: String,
    pub(crate) filename: String,
    /// The parent directory, `/dir/`.
    pub(crate) directory: String,
    pub(crate) is_directory: bool,
    /// Bytes (files only).
    pub(crate) content_length: Option<u64>,
    /// Files only.
    pub(crate) content_type: Option<String>,
    /// Unix ms of the first upload to this path (files only).
    pub(crate) created_time: Option<u64>,
    /// Unix ms of the latest upload (files only).
    pub(crate) last_modified_time: Option<u64>,
    /// Lowercase hex SHA-256 of the content (files only).
    pub(crate) etag: Option<String>,
}

/// Paging of a listing.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Page size, 1 to 1000 (default 10).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<u32>,
    /// The filename of the previous page's last entry (its `x-soracom-next-key`).
    pub(crate) last_evaluated_key: Option<String>,
}

/// Download a file. SORACOM answers `302` to a download URL; simgate
/// answers `200` with the bytes, `Content-Type`, `Content-Length` and
/// `ETag` (`HEAD` gives the headers alone).
#[utoipa::path(get, path = "/v1/files/{scope}/{path}", tag = "FileEntry",
    params(("scope" = Scope, Path), ("path" = String, Path, description = "Target path (may contain `/`; no control characters or backslashes)", pattern = r"^[^\u0000-\u001F\u007F-\u009F\\]{1,60}$")),
    responses(
        (status = 200, description = "The file's content", content_type = "application/octet-stream",
            headers(("ETag" = String), ("Content-Length" = u64))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn get_file() {}

/// Upload a file (`201` created, `200` replaced). Its `Content-Type` is
/// kept; the size limit is `[harvest_files] max_file_bytes` (`413`), the
/// store's budget `budget_bytes` (`507`).
#[utoipa::path(put, path = "/v1/files/{scope}/{path}", tag = "FileEntry",
    params(("scope" = WritableScope, Path), ("path" = String, Path, description = "Target path (may contain `/`; no control characters or backslashes)", pattern = r"^[^\u0000-\u001F\u007F-\u009F\\]{1,60}$")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's content"),
    responses(
        (status = 200, description = "Replaced"), (status = 201, description = "Created"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub(crate) fn put_file() {}

/// Delete a file.
#[utoipa::path(delete, path = "/v1/files/{scope}/{path}", tag = "FileEntry",
    params(("scope" = WritableScope, Path), ("path" = String, Path, description = "Target path (may contain `/`; no control characters or backslashes)", pattern = r"^[^\u0000-\u001F\u007F-\u009F\\]{1,60}$")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn delete_file() {}

/// The files and directories of a directory, by filename.
#[utoipa::path(get, path = "/v1/files/{scope}/{path}/", tag = "FileEntry",
    params(("scope" = Scope, Path), ("path" = String, Path, description = "Directory path (may contain `/`; no control characters or backslashes)", pattern = r"^[^\u0000-\u001F\u007F-\u009F\\]{1,60}$"), ListQuery),
    responses(
        (status = 200, body = [FileEntry],
            headers(("x-soracom-next-key" = String, description = "Present when more pages follow: pass as last_evaluated_key"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn list_files() {}

/// Delete an empty directory (`400` when it is not empty).
#[utoipa::path(delete, path = "/v1/files/{scope}/{path}/", tag = "FileEntry",
    params(("scope" = WritableScope, Path), ("path" = String, Path, description = "Directory path (may contain `/`; no control characters or backslashes)", pattern = r"^[^\u0000-\u001F\u007F-\u009F\\]{1,60}$")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn delete_directory() {}

/// A directory path cannot be written (a simgate extension, described
/// because the path takes PUT for files): always `409` `put_to_directory`.
#[utoipa::path(put, path = "/v1/files/{scope}/{path}/", tag = "FileEntry",
    params(("scope" = WritableScope, Path), ("path" = String, Path, description = "Directory path", pattern = r"^[^\u0000-\u001F\u007F-\u009F\\]{1,60}$")),
    responses((status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) fn put_directory() {}

/// The files and directories of the scope's root (a simgate extension:
/// SORACOM lists the root as `/files/{scope}/{path}/` with `path` `/`).
#[utoipa::path(get, path = "/v1/files/{scope}/", tag = "FileEntry",
    params(("scope" = Scope, Path), ListQuery),
    responses(
        (status = 200, body = [FileEntry],
            headers(("x-soracom-next-key" = String, description = "Present when more pages follow: pass as last_evaluated_key"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) fn list_root() {}
