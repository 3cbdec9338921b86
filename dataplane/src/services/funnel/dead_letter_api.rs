//! The dead-letter API: what Funnel could not deliver, listed, summed up,
//! sent again or purged.
//!
//! * `GET /v1/funnel/dead_letters?destination_id=&reason=&limit=&last_evaluated_key=`
//!   → `200` and a JSON array of dead letters, oldest first per destination,
//!   with `x-soracom-next-key` when more remain;
//! * `GET /v1/funnel/dead_letters/summary` → `200` and
//!   `[{"destinationId","destination","credentialsId","count"}]`;
//! * `POST /v1/funnel/dead_letters/replay` with an optional JSON body
//!   `{"destinationId","reason"}` → `200` and `{"replayed","failed"}`;
//! * `DELETE /v1/funnel/dead_letters?destination_id=&reason=` → `200` and
//!   `{"purged"}` (no filter: every dead letter).
//!
//! Errors are the control API's `{"code","message"}`. No authentication
//! here: the caller wraps this router in its bearer-token layer.
//!
//! The paging key is the position of the next dead letter in the filtered
//! listing (the store is a few append-only files, not an index). A replay or
//! purge between two pages shifts positions, so a listing taken while
//! letters are being removed may skip some; it never shows one twice.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use simgate_control::api::ApiError;
use simgate_control::Destination;

use crate::dead_letters::{DeadLetter, DeadLetterError, DeadLetterStore};
use crate::services::harvest::NEXT_KEY_HEADER;
use crate::services::Services;

/// Dead letters per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// The dead-letter routes, ready to be merged by the API server.
pub fn router(services: Arc<Services>) -> Router {
    Router::new()
        .route("/v1/funnel/dead_letters", get(list).delete(purge))
        .route("/v1/funnel/dead_letters/summary", get(summary))
        .route("/v1/funnel/dead_letters/replay", post(replay))
        .with_state(services)
}

/// Which dead letters a request is about; absent fields match all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    pub destination_id: Option<String>,
    pub reason: Option<String>,
}

impl Filter {
    pub fn matches(&self, destination_id: &str, letter: &DeadLetter) -> bool {
        self.destination_id
            .as_deref()
            .is_none_or(|d| d == destination_id)
            && self.reason.as_deref().is_none_or(|r| r == letter.reason)
    }
}

/// Query parameters, as text so that bad values get our own errors.
#[derive(Debug, Default, Deserialize)]
struct RawQuery {
    destination_id: Option<String>,
    reason: Option<String>,
    limit: Option<String>,
    last_evaluated_key: Option<String>,
}

impl RawQuery {
    fn filter(&self) -> Filter {
        // `?reason=` (empty) means "any", as an absent parameter does.
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Filter {
            destination_id: nonempty(&self.destination_id),
            reason: nonempty(&self.reason),
        }
    }
}

/// The body of `POST …/replay`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplayBody {
    destination_id: Option<String>,
    reason: Option<String>,
}

/// One dead letter as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    destination_id: &'a str,
    #[serde(flatten)]
    letter: &'a DeadLetter,
}

/// Dead letters held for one destination.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryRow {
    destination_id: String,
    destination: Destination,
    credentials_id: String,
    count: usize,
}

#[derive(Debug, Serialize)]
struct Purged {
    purged: usize,
}

fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn store_failed(e: &DeadLetterError) -> ApiError {
    // File paths and OS errors stay in the log.
    tracing::error!(error = %e, "dead-letter store failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the dead-letter store failed; see the server log",
    )
}

/// `limit`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
fn parse_limit(v: Option<&str>) -> Result<usize, ApiError> {
    let Some(v) = v else {
        return Ok(DEFAULT_LIMIT);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(bad_request(
            "invalid_limit",
            format!("limit must be 1 to {MAX_LIMIT}"),
        )),
    }
}

/// `last_evaluated_key`: a position in the listing, as the previous page's
/// `x-soracom-next-key` gave it.
fn parse_key(v: Option<&str>) -> Result<usize, ApiError> {
    let Some(v) = v.filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_request(
            "invalid_last_evaluated_key",
            "last_evaluated_key must be the x-soracom-next-key of a previous page",
        ));
    }
    v.parse().map_err(|_| {
        bad_request(
            "invalid_last_evaluated_key",
            "last_evaluated_key is out of range",
        )
    })
}

/// The page of `total` items starting at `start`: its index range and the
/// key of the next page, if any remain.
fn page(total: usize, start: usize, limit: usize) -> (std::ops::Range<usize>, Option<usize>) {
    let start = start.min(total);
    let end = start.saturating_add(limit).min(total);
    (start..end, (end < total).then_some(end))
}

/// Runs a blocking store call on the blocking pool (the store reads and
/// fsyncs files).
async fn blocking<T: Send + 'static>(
    services: &Arc<Services>,
    f: impl FnOnce(&DeadLetterStore) -> Result<T, DeadLetterError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = Arc::clone(&services.funnel.dead_letters);
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(|e| store_failed(&e)),
        Err(e) => {
            tracing::error!(error = %e, "dead-letter store task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the dead-letter store failed; see the server log",
            ))
        }
    }
}

fn query(raw: Result<Query<RawQuery>, QueryRejection>) -> Result<RawQuery, ApiError> {
    raw.map(|Query(q)| q)
        .map_err(|e| bad_request("invalid_request", e.body_text()))
}

async fn list(
    State(services): State<Arc<Services>>,
    raw: Result<Query<RawQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let raw = query(raw)?;
    let limit = parse_limit(raw.limit.as_deref())?;
    let start = parse_key(raw.last_evaluated_key.as_deref())?;
    let filter = raw.filter();
    let letters = blocking(&services, DeadLetterStore::list).await?;
    let matching: Vec<&(String, DeadLetter)> = letters
        .iter()
        .filter(|(id, l)| filter.matches(id, l))
        .collect();
    let (range, next) = page(matching.len(), start, limit);
    let items: Vec<Item<'_>> = matching[range]
        .iter()
        .map(|(id, letter)| Item {
            destination_id: id,
            letter,
        })
        .collect();
    let mut response = Json(items).into_response();
    if let Some(next) = next {
        response
            .headers_mut()
            .insert(NEXT_KEY_HEADER, HeaderValue::from(next));
    }
    Ok(response)
}

async fn summary(State(services): State<Arc<Services>>) -> Result<Json<Vec<SummaryRow>>, ApiError> {
    let letters = blocking(&services, DeadLetterStore::list).await?;
    // `list` returns the letters grouped by destination id, in id order.
    let mut rows: Vec<SummaryRow> = Vec::new();
    for (id, letter) in letters {
        match rows.last_mut() {
            Some(row) if row.destination_id == id => row.count += 1,
            _ => rows.push(SummaryRow {
                destination_id: id,
                destination: letter.destination,
                credentials_id: letter.credentials_id,
                count: 1,
            }),
        }
    }
    Ok(Json(rows))
}

async fn replay(
    State(services): State<Arc<Services>>,
    body: Result<Option<Json<ReplayBody>>, JsonRejection>,
) -> Result<Json<crate::services::funnel::ReplayReport>, ApiError> {
    let body = body.map_err(ApiError::from)?.map(|Json(b)| b);
    let body = body.unwrap_or_default();
    let filter = Filter {
        destination_id: body.destination_id.filter(|s| !s.is_empty()),
        reason: body.reason.filter(|s| !s.is_empty()),
    };
    // An owned snapshot: the replay awaits room in the queues, and a guard
    // must not be held across that.
    let snapshot = services.snapshot.load_full();
    // On its own task: a client that hangs up mid-replay must not cancel it
    // between re-queueing records and removing them from the store (they
    // would be sent again by the next replay).
    let task = tokio::spawn(async move {
        services
            .funnel
            .replay_dead_letters(&snapshot, |id, l| filter.matches(id, l))
            .await
    });
    match task.await {
        Ok(Ok(report)) => Ok(Json(report)),
        Ok(Err(e)) => Err(store_failed(&e)),
        Err(e) => {
            tracing::error!(error = %e, "dead-letter replay task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the dead-letter replay failed; see the server log",
            ))
        }
    }
}

async fn purge(
    State(services): State<Arc<Services>>,
    raw: Result<Query<RawQuery>, QueryRejection>,
) -> Result<Json<Purged>, ApiError> {
    let filter = query(raw)?.filter();
    let purged = blocking(&services, move |s| s.retain(|id, l| !filter.matches(id, l))).await?;
    if purged > 0 {
        tracing::info!(purged, "dead letters purged over the API");
    }
    Ok(Json(Purged { purged }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_at_limit_and_say_where_to_go_on() {
        assert_eq!(page(0, 0, 100), (0..0, None));
        assert_eq!(page(5, 0, 2), (0..2, Some(2)));
        assert_eq!(page(5, 2, 2), (2..4, Some(4)));
        assert_eq!(page(5, 4, 2), (4..5, None));
        assert_eq!(page(5, 5, 2), (5..5, None));
        // A key past the end (letters removed meanwhile) is an empty page.
        assert_eq!(page(5, 9, 2), (5..5, None));
        assert_eq!(page(5, 0, usize::MAX), (0..5, None));
    }

    #[test]
    fn limits_and_keys_are_checked() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "x", ""] {
            let e = parse_limit(Some(bad)).unwrap_err();
            assert_eq!(e.code, "invalid_limit", "{bad}");
        }
        assert_eq!(parse_key(None).unwrap(), 0);
        assert_eq!(parse_key(Some("")).unwrap(), 0);
        assert_eq!(parse_key(Some("42")).unwrap(), 42);
        for bad in ["-1", "1_001010000000001", "99999999999999999999999"] {
            let e = parse_key(Some(bad)).unwrap_err();
            assert_eq!(e.code, "invalid_last_evaluated_key", "{bad}");
        }
    }

    #[test]
    fn filters_match_destination_and_reason() {
        let letter: DeadLetter = serde_json::from_value(serde_json::json!({
            "time": 1, "acceptedAt": 0,
            "destination": {"service": "kinesis", "resource_url": "https://k/s"},
            "credentialsId": "c", "partitionKey": "p", "data": "",
            "reason": "expired", "detail": "", "attempts": 0
        }))
        .unwrap();
        assert!(Filter::default().matches("a", &letter));
        let by_id = Filter {
            destination_id: Some("a".into()),
            reason: None,
        };
        assert!(by_id.matches("a", &letter));
        assert!(!by_id.matches("b", &letter));
        let by_reason = Filter {
            destination_id: None,
            reason: Some("rejected".into()),
        };
        assert!(!by_reason.matches("a", &letter));
        let q = RawQuery {
            destination_id: Some(String::new()),
            reason: Some("expired".into()),
            ..RawQuery::default()
        };
        assert_eq!(
            q.filter(),
            Filter {
                destination_id: None,
                reason: Some("expired".into())
            }
        );
    }
}
