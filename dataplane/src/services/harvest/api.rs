//! The Harvest Data query API, as SORACOM serves it:
//!
//! * `GET /v1/data/Subscriber/{imsi}?from=&to=&sort=&limit=&last_evaluated_key=`
//!   (and SORACOM's older `GET /v1/subscribers/{imsi}/data`) → `200` and a
//!   JSON array of entries, with `x-soracom-next-key` when more exist;
//! * `GET /v1/data/Subscriber/{imsi}/{time}` → `200` and the entry at that
//!   millisecond (the first, when several arrived in it), or `404`;
//! * `DELETE /v1/data/Subscriber/{imsi}/{time}` → `204`, or `404`;
//! * `GET /v1/data/resources?resource_type=&limit=&last_evaluated_key=` → the
//!   SIMs that have data, with the time of their newest entry;
//! * simgate's `GET /v1/subscribers/{imsi}/data/{time}` (every entry at that
//!   millisecond, as an array) and `DELETE` of the same.
//!
//! The OpenAPI description of these routes is in the control API's
//! (`simgate_control::api::openapi`), since both are served together.
//!
//! Bad input → `400` with `{"code":"…","message":"…"}`. No authentication
//! here: the caller wraps this router in its bearer-token layer.
//!
//! Store calls read or write the disk, so they run on the blocking pool.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use simgate_control::api::ApiError;
use simgate_control::Imsi;

use super::entry::Entry;
use super::query::{Query, QueryError, RawQuery};
use super::store::{now_ms, HarvestError, HarvestStore};

/// The paging header, as SORACOM names it.
pub const NEXT_KEY_HEADER: HeaderName = HeaderName::from_static("x-soracom-next-key");

/// The Harvest Data routes, ready to be nested or merged by the API server.
pub fn router(store: Arc<HarvestStore>) -> Router {
    Router::new()
        .route("/v1/subscribers/{imsi}/data", get(list))
        .route(
            "/v1/subscribers/{imsi}/data/{time}",
            get(get_at).delete(delete_at),
        )
        .route("/v1/data/resources", get(resources))
        .route("/v1/data/{resource_type}/{resource_id}", get(list_resource))
        .route(
            "/v1/data/{resource_type}/{resource_id}/{time}",
            get(get_one).delete(delete_resource_at),
        )
        .with_state(store)
}

/// One entry as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryJson<'a> {
    time: u64,
    content_type: &'a str,
    /// The bytes as text when they are UTF-8, else base64.
    content: Cow<'a, str>,
    /// `"base64"` when `content` is base64 (simgate's addition; SORACOM
    /// stores text only).
    #[serde(skip_serializing_if = "Option::is_none")]
    content_encoding: Option<&'static str>,
    resource_id: &'a str,
    resource_type: &'static str,
    category: &'static str,
}

impl<'a> From<&'a Entry> for EntryJson<'a> {
    fn from(e: &'a Entry) -> Self {
        let (content, content_encoding) = match std::str::from_utf8(&e.content) {
            Ok(s) => (Cow::Borrowed(s), None),
            Err(_) => (
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&e.content)),
                Some("base64"),
            ),
        };
        Self {
            time: e.time,
            content_type: &e.content_type,
            content,
            content_encoding,
            resource_id: e.imsi.as_str(),
            resource_type: "Subscriber",
            category: e.category.as_str(),
        }
    }
}

fn entries_json(entries: &[Entry]) -> Json<Vec<EntryJson<'_>>> {
    Json(entries.iter().map(EntryJson::from).collect())
}

// Errors are the control API's `{"code","message"}` answers; these are the
// Harvest-specific ones.
fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no data at this time")
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "harvest store failed",
    )
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        bad_request(e.code(), e.to_string())
    }
}

impl From<HarvestError> for ApiError {
    fn from(e: HarvestError) -> Self {
        // Storage details stay in the log, not in the answer.
        tracing::warn!(error = %e, "harvest query failed");
        if e.is_retryable() {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "harvest store unavailable, retry later",
            )
        } else {
            internal()
        }
    }
}

fn parse_imsi(s: &str) -> Result<Imsi, ApiError> {
    Imsi::parse(s).map_err(|e| bad_request("INVALID_IMSI", e.to_string()))
}

fn parse_time(s: &str) -> Result<u64, ApiError> {
    let bad = || {
        bad_request(
            "INVALID_TIME",
            format!(
                "time must be a Unix time in milliseconds, got {:?}",
                s.chars().take(32).collect::<String>()
            ),
        )
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Arc<HarvestStore>,
    f: impl FnOnce(&HarvestStore) -> Result<T, HarvestError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "harvest store task failed");
            Err(internal())
        }
    }
}

/// The only resource type simgate stores data for.
const SUBSCRIBER: &str = "Subscriber";

fn check_resource_type(t: &str) -> Result<(), ApiError> {
    if t == SUBSCRIBER {
        Ok(())
    } else {
        Err(bad_request(
            "INVALID_RESOURCE_TYPE",
            format!(
                "resource type must be {SUBSCRIBER}, got {:?}",
                t.chars().take(32).collect::<String>()
            ),
        ))
    }
}

async fn list_resource(
    State(store): State<Arc<HarvestStore>>,
    Path((resource_type, id)): Path<(String, String)>,
    raw: Result<axum::extract::Query<RawQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    check_resource_type(&resource_type)?;
    list(State(store), Path(id), raw).await
}

async fn get_one(
    State(store): State<Arc<HarvestStore>>,
    Path((resource_type, imsi, time)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    check_resource_type(&resource_type)?;
    let imsi = parse_imsi(&imsi)?;
    let time = parse_time(&time)?;
    let entries = blocking(&store, move |s| s.get(&imsi, time)).await?;
    let first = entries.first().ok_or_else(not_found)?;
    Ok(Json(EntryJson::from(first)).into_response())
}

async fn delete_resource_at(
    State(store): State<Arc<HarvestStore>>,
    Path((resource_type, imsi, time)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    check_resource_type(&resource_type)?;
    delete_at(State(store), Path((imsi, time))).await
}

/// `GET /v1/data/resources` query.
#[derive(Debug, Default, serde::Deserialize)]
struct ResourcesQuery {
    resource_type: Option<String>,
    limit: Option<String>,
    last_evaluated_key: Option<String>,
}

/// One SIM that has data, as SORACOM's `DataResourceMetadata`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceJson {
    resource_type: &'static str,
    resource_id: String,
    last_modified_time: u64,
}

async fn resources(
    State(store): State<Arc<HarvestStore>>,
    q: Result<axum::extract::Query<ResourcesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) = q.map_err(|e| bad_request("INVALID_QUERY", e.body_text()))?;
    if let Some(t) = &q.resource_type {
        check_resource_type(t)?;
    }
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| bad_request("INVALID_LIMIT", "limit must be 1 to 1000"))?,
    };
    let after = match q.last_evaluated_key.filter(|k| !k.is_empty()) {
        Some(k) => Some(parse_imsi(&k)?.as_str().to_owned()),
        None => None,
    };
    let mut found = blocking(&store, move |s| s.resources(after.as_deref(), limit + 1)).await?;
    let more = found.len() > limit;
    found.truncate(limit);
    let next = more.then(|| found.last().map(|r| r.imsi.clone())).flatten();
    let body: Vec<ResourceJson> = found
        .into_iter()
        .map(|r| ResourceJson {
            resource_type: SUBSCRIBER,
            resource_id: r.imsi,
            last_modified_time: r.last_time,
        })
        .collect();
    let mut response = Json(body).into_response();
    if let Some(key) = next {
        let value = HeaderValue::try_from(key).map_err(|_| internal())?;
        response.headers_mut().insert(NEXT_KEY_HEADER, value);
    }
    Ok(response)
}

async fn list(
    State(store): State<Arc<HarvestStore>>,
    Path(imsi): Path<String>,
    raw: Result<axum::extract::Query<RawQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let imsi = parse_imsi(&imsi)?;
    let axum::extract::Query(raw) = raw.map_err(|e| bad_request("INVALID_QUERY", e.body_text()))?;
    let query = Query::parse(&raw, &imsi, now_ms())?;
    let page = blocking(&store, move |s| s.query(&imsi, &query)).await?;
    let mut response = entries_json(&page.entries).into_response();
    if let Some(key) = page.next_key {
        let value = HeaderValue::try_from(key).map_err(|_| internal())?;
        response.headers_mut().insert(NEXT_KEY_HEADER, value);
    }
    Ok(response)
}

async fn get_at(
    State(store): State<Arc<HarvestStore>>,
    Path((imsi, time)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let imsi = parse_imsi(&imsi)?;
    let time = parse_time(&time)?;
    let entries = blocking(&store, move |s| s.get(&imsi, time)).await?;
    if entries.is_empty() {
        return Err(not_found());
    }
    Ok(entries_json(&entries).into_response())
}

async fn delete_at(
    State(store): State<Arc<HarvestStore>>,
    Path((imsi, time)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let imsi = parse_imsi(&imsi)?;
    let time = parse_time(&time)?;
    if blocking(&store, move |s| s.delete(&imsi, time)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::services::harvest::entry::{Category, NewEntry};
    use axum::body::Body;
    use axum::http::Request;
    use bytes::Bytes;
    use simgate_control::config::HarvestSettings;
    use tower::ServiceExt as _;

    const A: &str = "001010000000001";

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let key = resp
            .headers()
            .get(NEXT_KEY_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (status, key, json)
    }

    async fn store_with_data(dir: &tempfile::TempDir) -> Arc<HarvestStore> {
        let store = HarvestStore::open(
            dir.path().join("harvest.redb"),
            HarvestSettings {
                max_entry_bytes: 64,
                retention_days: 40,
                ..HarvestSettings::default()
            },
        )
        .unwrap();
        let imsi = Imsi::parse(A).unwrap();
        for (time, ct, body) in [
            (
                1_653_891_795_421u64,
                "application/json",
                &b"{\"temp\":21}"[..],
            ),
            (
                1_653_891_795_421,
                "application/octet-stream",
                &[0xff, 0x00][..],
            ),
            (1_653_891_795_500, "text/plain", b"hi"),
        ] {
            store
                .append(NewEntry {
                    imsi: imsi.clone(),
                    time,
                    content_type: ct.into(),
                    category: Category::Http,
                    content: Bytes::copy_from_slice(body),
                })
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn entry_json_matches_soracom() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(store_with_data(&dir).await);
        let (status, key, json) = call(
            &app,
            "GET",
            &format!("/v1/subscribers/{A}/data?sort=asc&limit=1"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(key.as_deref(), Some("1653891795421_001010000000001_0"));
        assert_eq!(
            json,
            serde_json::json!([{
                "time": 1_653_891_795_421u64,
                "contentType": "application/json",
                "content": "{\"temp\":21}",
                "resourceId": A,
                "resourceType": "Subscriber",
                "category": "http"
            }])
        );
        let uri = format!(
            "/v1/subscribers/{A}/data?sort=asc&limit=1&last_evaluated_key={}",
            key.unwrap()
        );
        let (_, key, json) = call(&app, "GET", &uri).await;
        assert_eq!(json[0]["content"], "/wA=");
        assert_eq!(json[0]["contentEncoding"], "base64");
        assert_eq!(key.as_deref(), Some("1653891795421_001010000000001"));
        let uri = format!(
            "/v1/subscribers/{A}/data?sort=asc&limit=1&last_evaluated_key={}",
            key.unwrap()
        );
        let (_, key, json) = call(&app, "GET", &uri).await;
        assert_eq!(json[0]["content"], "hi");
        assert_eq!(key, None);
    }

    #[tokio::test]
    async fn default_is_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(store_with_data(&dir).await);
        let (status, key, json) = call(&app, "GET", &format!("/v1/subscribers/{A}/data")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(key, None);
        let times: Vec<u64> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["time"].as_u64().unwrap())
            .collect();
        assert_eq!(
            times,
            [1_653_891_795_500, 1_653_891_795_421, 1_653_891_795_421]
        );
        assert_eq!(json[1]["contentEncoding"], "base64");
    }

    #[tokio::test]
    async fn get_and_delete_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(store_with_data(&dir).await);
        let at = format!("/v1/subscribers/{A}/data/1653891795421");
        let (status, _, json) = call(&app, "GET", &at).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json.as_array().unwrap().len(), 2);
        let (status, _, _) = call(&app, "DELETE", &at).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, json) = call(&app, "GET", &at).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["code"], "NOT_FOUND");
        let (status, _, _) = call(&app, "DELETE", &at).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, _, json) = call(&app, "GET", &format!("/v1/subscribers/{A}/data")).await;
        assert_eq!(json.as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn data_routes_by_resource() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_data(&dir).await;
        let b = Imsi::parse("001010000000002").unwrap();
        store
            .append(NewEntry {
                imsi: b,
                time: 7,
                content_type: "text/plain".into(),
                category: Category::Udp,
                content: Bytes::from_static(b"b"),
            })
            .await
            .unwrap();
        let app = router(store);
        let (status, _, json) = call(
            &app,
            "GET",
            &format!("/v1/data/Subscriber/{A}?sort=asc&limit=2"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json.as_array().unwrap().len(), 2);
        assert_eq!(json[0]["resourceId"], A);
        // One object per time: the first entry of that millisecond.
        let at = format!("/v1/data/Subscriber/{A}/1653891795421");
        let (status, _, json) = call(&app, "GET", &at).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["content"], "{\"temp\":21}");
        let (status, _, json) = call(&app, "GET", "/v1/data/Sim/x/1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["code"], "INVALID_RESOURCE_TYPE");
        // The SIMs with data, paged by IMSI.
        let (status, key, json) = call(&app, "GET", "/v1/data/resources?limit=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json,
            serde_json::json!([{"resourceType": "Subscriber", "resourceId": A,
                "lastModifiedTime": 1_653_891_795_500u64}])
        );
        assert_eq!(key.as_deref(), Some(A));
        let (_, key, json) = call(
            &app,
            "GET",
            &format!("/v1/data/resources?resource_type=Subscriber&last_evaluated_key={A}"),
        )
        .await;
        assert_eq!(json[0]["resourceId"], "001010000000002");
        assert_eq!(json[0]["lastModifiedTime"], 7);
        assert_eq!(json.as_array().unwrap().len(), 1);
        assert_eq!(key, None);
        let (status, _, _) = call(&app, "DELETE", &at).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _, _) = call(&app, "GET", &at).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = call(&app, "GET", "/v1/data/resources?limit=0").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(store_with_data(&dir).await);
        for (uri, code) in [
            ("/v1/subscribers/12ab/data".to_owned(), "INVALID_IMSI"),
            (format!("/v1/subscribers/{A}/data?limit=0"), "INVALID_LIMIT"),
            (
                format!("/v1/subscribers/{A}/data?limit=1001"),
                "INVALID_LIMIT",
            ),
            (format!("/v1/subscribers/{A}/data?sort=up"), "INVALID_SORT"),
            (format!("/v1/subscribers/{A}/data?from=x"), "INVALID_FROM"),
            (
                format!("/v1/subscribers/{A}/data?from=9&to=8"),
                "INVALID_RANGE",
            ),
            (
                format!("/v1/subscribers/{A}/data?last_evaluated_key=1_001010000000002"),
                "INVALID_LAST_EVALUATED_KEY",
            ),
            (format!("/v1/subscribers/{A}/data/soon"), "INVALID_TIME"),
            ("/v1/subscribers/1/data/1".to_owned(), "INVALID_IMSI"),
        ] {
            let (status, _, json) = call(&app, "GET", &uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(json["code"], code, "{uri}");
            assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let (status, _, json) = call(&app, "DELETE", &format!("/v1/subscribers/{A}/data/-1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["code"], "INVALID_TIME");
    }
}
