//! SORACOM Harvest Files: devices store and fetch files with no
//! credentials but their source address (HTTP Host `harvest-files.*`,
//! `PUT`/`POST`/`GET`/`HEAD`/`DELETE /{path}`); operators read, write,
//! delete and list them on the control API (`/v1/files/{scope}/{path}`,
//! a path ending in `/` lists a directory), as SORACOM's `FileEntry` API.
//!
//! A device's paths are under its group's `defaultPathPrefix` (simgate's
//! setting, `/:imsi/` unless set; `:imsi` is the caller's IMSI), so one
//! SIM cannot reach another's files; `PUT /` writes SORACOM's
//! `defaultPath` (`:imsi`, `:time` expanded) under it.
//!
//! [`path`] is the sans-IO part (paths, settings, the device's request);
//! [`store`] the files on disk (blocking); this module the async glue both
//! sides share (bodies streamed in and out, blocking calls on the blocking
//! pool, the metrics); [`handler`] the device side; [`api`] the operator
//! side.

pub mod api;
pub mod handler;
pub mod path;
pub mod store;

use std::io::{self, Read as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body_util::BodyExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use simgate_control::clock::now_ms;
use simgate_control::config::HarvestFilesSettings;

use path::{FilePath, PathError};
pub use store::{FileStore, Listed, Meta, PutOutcome, Scope, StoreError};

/// Metrics label of the device side.
pub const DEVICE: &str = "device";
/// Metrics label of the control API side.
pub const OPERATOR: &str = "operator";
/// Content type of a file uploaded without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Default and largest page of a listing (SORACOM's default is 10).
pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 1000;
/// Bytes gathered before one blocking write (fewer hops to the blocking
/// pool than one per frame).
const WRITE_CHUNK: usize = 256 << 10;
/// Bytes per blocking read when sending a file.
const READ_CHUNK: u64 = 64 << 10;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `device` or `operator`.
    pub side: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub side: &'static str,
    pub reason: &'static str,
}

/// `simgate_harvest_files_requests_total{side,method,status}`,
/// `simgate_harvest_files_refused_total{side,reason}`,
/// `simgate_harvest_files_stored_bytes`.
#[derive(Debug, Clone, Default)]
pub struct FilesMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub refused: Family<RefusedLabels, Counter>,
    pub stored_bytes: Gauge,
}

impl FilesMetrics {
    /// Adds the metrics to simgate's registry (the families are shared
    /// handles: this module keeps counting into the same ones).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "harvest_files_requests",
            "Harvest Files requests answered, by side (device, operator), method and status",
            self.requests.clone(),
        );
        registry.register(
            "harvest_files_refused",
            "Harvest Files requests refused, by side and reason",
            self.refused.clone(),
        );
        registry.register(
            "harvest_files_stored_bytes",
            "Bytes of stored Harvest Files (content and metadata)",
            self.stored_bytes.clone(),
        );
    }

    /// Counts one answer; a 4xx/5xx also counts its reason.
    pub fn answered(
        &self,
        side: &'static str,
        method: &'static str,
        status: u16,
        reason: &'static str,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                side,
                method,
                status,
            })
            .inc();
        if status >= 400 {
            self.refused
                .get_or_create(&RefusedLabels { side, reason })
                .inc();
            tracing::debug!(
                side,
                method,
                status,
                reason,
                "harvest files request refused"
            );
        }
    }
}

/// The method as a metrics label (a fixed set, so a client cannot grow the
/// label space).
/// The headers a file is served with, on both sides: its `Content-Type`,
/// `Content-Length` and `ETag` (quoted).
pub fn file_headers(meta: &Meta, h: &mut http::HeaderMap) {
    use http::{header, HeaderValue};
    if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(meta.content_length),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.etag)) {
        h.insert(header::ETAG, v);
    }
}

pub fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

/// Why a Harvest Files call failed, with the answer each maps to.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error("the body could not be read")]
    BodyRead,
    #[error("internal error")]
    Internal,
}

impl FilesError {
    pub fn status(&self) -> u16 {
        match self {
            Self::Store(e) => match e {
                StoreError::NotFound | StoreError::NoSuchDirectory => 404,
                StoreError::TooLarge { .. } => 413,
                StoreError::BudgetExceeded { .. } => 507,
                StoreError::Conflict(_) => 409,
                // SORACOM's deleteDirectory: 400 "not empty".
                StoreError::NotEmpty => 400,
                StoreError::Corrupt | StoreError::Io(_) => 500,
            },
            Self::Path(_) | Self::BodyRead => 400,
            Self::BodyTimeout => 408,
            Self::Internal => 500,
        }
    }

    /// The `code` of the JSON error and the metrics' `reason`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(e) => match e {
                StoreError::NotFound => "not_found",
                StoreError::NoSuchDirectory => "no_such_directory",
                StoreError::TooLarge { .. } => "too_large",
                StoreError::BudgetExceeded { .. } => "budget_exceeded",
                StoreError::Conflict(_) => "conflict",
                StoreError::NotEmpty => "not_empty",
                StoreError::Corrupt => "corrupt",
                StoreError::Io(_) => "io",
            },
            Self::Path(e) => e.code(),
            Self::BodyTimeout => "body_timeout",
            Self::BodyRead => "body_read",
            Self::Internal => "internal",
        }
    }

    /// What the caller is told (storage details stay in the log).
    pub fn message(&self) -> String {
        match self {
            Self::Store(StoreError::Io(e)) => {
                tracing::warn!(error = %e, "harvest files storage failed");
                "storage failed; see the server log".to_owned()
            }
            Self::Store(StoreError::Corrupt) => {
                tracing::warn!("harvest files: a stored file is damaged");
                self.to_string()
            }
            _ => self.to_string(),
        }
    }
}

/// One entry of a listing, as SORACOM's `FileEntry`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// `/dir/name`, or `/dir/sub/` for a directory.
    pub file_path: String,
    pub filename: String,
    /// The parent directory, `/dir/`.
    pub directory: String,
    pub is_directory: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl FileEntry {
    /// `listed`, its path shown relative to `base` (a device sees paths
    /// under its own prefix; an operator's base is the root).
    pub fn of(listed: &Listed, base: &FilePath) -> Self {
        let shown = listed
            .path
            .parts()
            .strip_prefix(base.parts())
            .map(|rest| rest.join("/"))
            .unwrap_or_default();
        let shown = FilePath::from_decoded(&shown).unwrap_or_default();
        let filename = shown.name().unwrap_or("").to_owned();
        let directory = shown.parent().dir_string();
        match &listed.meta {
            None => Self {
                file_path: shown.dir_string(),
                filename,
                directory,
                is_directory: true,
                content_length: None,
                content_type: None,
                created_time: None,
                last_modified_time: None,
                etag: None,
            },
            Some(m) => Self {
                file_path: shown.to_string(),
                filename,
                directory,
                is_directory: false,
                content_length: Some(m.content_length),
                content_type: Some(m.content_type.clone()),
                created_time: Some(m.created_time),
                last_modified_time: Some(m.last_modified_time),
                etag: Some(m.etag.clone()),
            },
        }
    }
}

/// A listing's paging parameters (SORACOM's `limit`, `last_evaluated_key`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    pub limit: Option<usize>,
    pub last_evaluated_key: Option<String>,
}

impl ListQuery {
    /// The page size, refused outside `1..=MAX_LIMIT`.
    pub fn limit(&self) -> Result<usize, String> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(format!("limit must be 1 to {MAX_LIMIT}, not {n}")),
        }
    }
}

/// The Harvest Files service: the store and its metrics.
#[derive(Debug)]
pub struct HarvestFiles {
    store: Arc<FileStore>,
    pub metrics: FilesMetrics,
}

impl HarvestFiles {
    /// Opens `{data_dir}/harvest-files`. Blocking.
    pub fn open(data_dir: &Path, settings: &HarvestFilesSettings) -> io::Result<Self> {
        let store = FileStore::open(
            &data_dir.join("harvest-files"),
            settings.max_file_bytes,
            settings.budget_bytes,
        )?;
        let metrics = FilesMetrics::default();
        metrics
            .stored_bytes
            .set(i64::try_from(store.used_bytes()).unwrap_or(i64::MAX));
        Ok(Self {
            store: Arc::new(store),
            metrics,
        })
    }

    pub fn store(&self) -> &FileStore {
        &self.store
    }

    fn note_usage(&self) {
        self.metrics
            .stored_bytes
            .set(i64::try_from(self.store.used_bytes()).unwrap_or(i64::MAX));
    }

    /// Receives `body` (at most the size limit, within `timeout`) and
    /// stores it at `path`.
    pub async fn put<B>(
        &self,
        scope: Scope,
        path: FilePath,
        content_type: String,
        declared_len: Option<u64>,
        body: B,
        timeout: Duration,
    ) -> Result<PutOutcome, FilesError>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
    {
        let limit = self.store.max_file_bytes();
        // Refused before a byte is read when the client says it is too big.
        if declared_len.is_some_and(|n| n > limit) {
            return Err(StoreError::TooLarge { limit }.into());
        }
        let store = Arc::clone(&self.store);
        let receive = async {
            let s = Arc::clone(&store);
            let mut upload = blocking(move || Ok(s.begin()?)).await?;
            let mut buf = BytesMut::new();
            let mut body = std::pin::pin!(body);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| FilesError::BodyRead)?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if upload.len() + (buf.len() + data.len()) as u64 > limit {
                    return Err(StoreError::TooLarge { limit }.into());
                }
                buf.extend_from_slice(&data);
                if buf.len() >= WRITE_CHUNK {
                    let chunk = buf.split().freeze();
                    upload = blocking(move || upload.write(&chunk).map(|()| upload)).await?;
                }
            }
            if !buf.is_empty() {
                let chunk = buf.freeze();
                upload = blocking(move || upload.write(&chunk).map(|()| upload)).await?;
            }
            Ok::<_, FilesError>(upload)
        };
        let upload = tokio::time::timeout(timeout, receive)
            .await
            .map_err(|_| FilesError::BodyTimeout)??;
        let outcome =
            blocking(move || store.commit(upload, scope, &path, &content_type, now_ms())).await;
        self.note_usage();
        outcome
    }

    /// A file's metadata and its content, streamed.
    pub async fn get(
        &self,
        scope: Scope,
        path: FilePath,
    ) -> Result<(Meta, impl Stream<Item = io::Result<Bytes>> + Send + 'static), FilesError> {
        let store = Arc::clone(&self.store);
        let (meta, file) = blocking(move || store.open_file(scope, &path)).await?;
        let len = meta.content_length;
        Ok((meta, content_stream(file, len)))
    }

    pub async fn delete(&self, scope: Scope, path: FilePath) -> Result<(), FilesError> {
        let store = Arc::clone(&self.store);
        let r = blocking(move || store.delete(scope, &path)).await;
        self.note_usage();
        r
    }

    pub async fn delete_dir(&self, scope: Scope, path: FilePath) -> Result<(), FilesError> {
        let store = Arc::clone(&self.store);
        blocking(move || store.delete_dir(scope, &path)).await
    }

    /// A page of `dir`, its entries shown relative to `base`, and the next
    /// page's key.
    pub async fn list(
        &self,
        scope: Scope,
        dir: FilePath,
        base: FilePath,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<FileEntry>, Option<String>), FilesError> {
        let store = Arc::clone(&self.store);
        let (listed, next) =
            blocking(move || store.list(scope, &dir, after.as_deref(), limit)).await?;
        Ok((
            listed.iter().map(|l| FileEntry::of(l, &base)).collect(),
            next,
        ))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, FilesError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(FilesError::from),
        Err(e) => {
            tracing::error!(error = %e, "harvest files: a blocking task failed");
            Err(FilesError::Internal)
        }
    }
}

/// The first `len` bytes of `file`, read on the blocking pool a chunk at a
/// time (a large file never sits in memory whole).
fn content_stream(
    file: std::fs::File,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some((file, len)), |state| async move {
        let (mut file, left) = state?;
        if left == 0 {
            return None;
        }
        let n = left.min(READ_CHUNK);
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
            file.read_exact(&mut buf).map(|()| (file, buf))
        })
        .await;
        match read {
            Ok(Ok((file, buf))) => Some((Ok(Bytes::from(buf)), Some((file, left - n)))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    })
}
