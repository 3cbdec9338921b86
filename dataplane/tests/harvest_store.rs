//! Harvest Data end to end through the public API: append from several SIMs
//! (sharing milliseconds), page through the HTTP router, delete, sweep,
//! reopen, refuse oversized entries.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use simgate::services::harvest::{
    error_status, router, Category, HarvestError, HarvestStore, NewEntry, Query, NEXT_KEY_HEADER,
};
use simgate_control::config::HarvestSettings;
use simgate_control::Imsi;
use tower::ServiceExt as _;

const DAY_MS: u64 = 86_400_000;

fn settings() -> HarvestSettings {
    HarvestSettings {
        max_entry_bytes: 32,
        retention_days: 2,
        ..HarvestSettings::default()
    }
}

fn imsi(n: u32) -> Imsi {
    Imsi::parse(&format!("44010{n:010}")).unwrap()
}

fn new_entry(imsi: &Imsi, time: u64, body: String) -> NewEntry {
    NewEntry {
        imsi: imsi.clone(),
        time,
        content_type: "application/json".into(),
        category: Category::Tcp,
        content: Bytes::from(body),
    }
}

/// GET a URI; returns status, next key and the JSON body.
async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Option<String>, serde_json::Value) {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let key = resp
        .headers()
        .get(NEXT_KEY_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    (status, key, json)
}

/// Pages through every entry of `imsi` in [from, to]; returns the `content`
/// strings in the order received.
async fn page_all(
    app: &axum::Router,
    imsi: &Imsi,
    sort: &str,
    limit: usize,
    from: u64,
    to: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut key: Option<String> = None;
    for _ in 0..10_000 {
        let mut uri =
            format!("/v1/subscribers/{imsi}/data?sort={sort}&limit={limit}&from={from}&to={to}");
        if let Some(k) = &key {
            uri.push_str("&last_evaluated_key=");
            uri.push_str(k);
        }
        let (status, next, json) = get(app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
        let page = json.as_array().unwrap();
        assert!(page.len() <= limit);
        for e in page {
            assert_eq!(e["resourceId"], imsi.as_str());
            assert_eq!(e["resourceType"], "Subscriber");
            assert_eq!(e["category"], "tcp");
            out.push(e["content"].as_str().unwrap().to_owned());
        }
        match next {
            Some(k) => key = Some(k),
            None => return out,
        }
    }
    panic!("paging did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvest_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("harvest.redb");
    let now = 10 * DAY_MS;
    let sims = [imsi(1), imsi(2), imsi(3)];

    // Expected contents per SIM, in ascending (time, arrival) order.
    let mut expected: Vec<Vec<(u64, String)>> = vec![Vec::new(); sims.len()];
    {
        let store = HarvestStore::open(&path, settings()).unwrap();
        // Times crowd into a few milliseconds; two are older than retention.
        let times = [
            now - 3 * DAY_MS,
            now - 3 * DAY_MS,
            now - 5,
            now - 5,
            now - 5,
            now - 4,
            now - 2,
            now - 2,
            now,
        ];
        for round in 0..4 {
            // All SIMs append concurrently: several group commits mix SIMs.
            let mut futs = Vec::new();
            for (s, sim) in sims.iter().enumerate() {
                for (i, &t) in times.iter().enumerate() {
                    let body = format!("{{\"s\":{s},\"r\":{round},\"i\":{i}}}");
                    expected[s].push((t, body.clone()));
                    futs.push(store.append(new_entry(sim, t, body)));
                }
            }
            // Arrival order within a millisecond is the commit order, which
            // join_all does not fix; compare per millisecond as sets below.
            for r in futures_util::future::join_all(futs).await {
                r.unwrap();
            }
        }

        // The size limit: 32 bytes pass, 33 do not, and nothing is stored.
        let at = now + 1;
        store
            .append(new_entry(&sims[0], at, "x".repeat(32)))
            .await
            .unwrap();
        expected[0].push((at, "x".repeat(32)));
        let err = store
            .append(new_entry(&sims[0], at, "x".repeat(33)))
            .await
            .unwrap_err();
        assert!(matches!(err, HarvestError::TooLarge { size: 33, max: 32 }));
        assert_eq!(error_status(&err), (413, false));
        assert_eq!(error_status(&HarvestError::Busy), (429, true));
        assert_eq!(store.get(&sims[0], at).unwrap().len(), 1);
    }

    // Reopen: everything is still there.
    let store: Arc<HarvestStore> = HarvestStore::open(&path, settings()).unwrap();
    let app = router(Arc::clone(&store));
    for (s, sim) in sims.iter().enumerate() {
        let mut want_asc: Vec<(u64, String)> = expected[s].clone();
        want_asc.sort_by_key(|(t, _)| *t);
        for limit in [1, 2, 3, 7, 1000] {
            for sort in ["asc", "desc"] {
                let got = page_all(&app, sim, sort, limit, 0, u64::MAX).await;
                assert_eq!(got.len(), want_asc.len(), "sim {s} {sort} limit {limit}");
                let unique: HashSet<&String> = got.iter().collect();
                assert_eq!(unique.len(), got.len(), "an entry came twice");
                // Same multiset of contents per millisecond, milliseconds in order.
                let mut want = want_asc.clone();
                if sort == "desc" {
                    want.reverse();
                }
                let time_of = |body: &String| want.iter().find(|(_, b)| b == body).unwrap().0;
                let got_times: Vec<u64> = got.iter().map(time_of).collect();
                let want_times: Vec<u64> = want.iter().map(|(t, _)| *t).collect();
                assert_eq!(got_times, want_times, "sim {s} {sort} limit {limit}");
            }
        }
    }

    // Within one millisecond the order is arrival order: asc and desc mirror.
    let asc = page_all(&app, &sims[1], "asc", 4, now - 5, now - 5).await;
    let mut desc = page_all(&app, &sims[1], "desc", 4, now - 5, now - 5).await;
    desc.reverse();
    assert_eq!(asc.len(), 12);
    assert_eq!(asc, desc);

    // The plain SORACOM key skips the whole millisecond.
    let uri = format!(
        "/v1/subscribers/{}/data?sort=asc&limit=100&last_evaluated_key={}_{}",
        sims[1],
        now - 5,
        sims[1]
    );
    let (_, _, json) = get(&app, &uri).await;
    let first = json.as_array().unwrap()[0]["time"].as_u64().unwrap();
    assert_eq!(first, now - 4);

    // GET and DELETE one millisecond.
    let at = format!("/v1/subscribers/{}/data/{}", sims[2], now - 2);
    let (status, _, json) = get(&app, &at).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json.as_array().unwrap().len(), 8);
    let del = |uri: String| {
        let app = app.clone();
        async move {
            app.oneshot(Request::delete(uri).body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(del(at.clone()).await, StatusCode::NO_CONTENT);
    assert_eq!(del(at.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &at).await.0, StatusCode::NOT_FOUND);
    // Other SIMs at that millisecond are untouched.
    let other = format!("/v1/subscribers/{}/data/{}", sims[0], now - 2);
    assert_eq!(get(&app, &other).await.0, StatusCode::OK);

    // Retention: the 3-day-old entries (2 per round per SIM) go, the rest stay.
    let swept = store.sweep_expired(now).unwrap();
    assert_eq!(swept, 2 * 4 * sims.len());
    let left = store.query(&sims[0], &Query::all_ascending(1000)).unwrap();
    assert!(left.entries.iter().all(|e| e.time >= now - 2 * DAY_MS));
    assert_eq!(left.entries.len(), expected[0].len() - 8);
    assert_eq!(store.sweep_expired(now).unwrap(), 0);
}
