//! Properties of the Harvest Data query parser and paging keys
//! (`simgate::services::harvest::query`).
//!
//! Input: a query string, `from=10&to=20&sort=asc&limit=5&last_evaluated_key=…`
//! (invalid UTF-8 replaced; no percent-decoding, so a value may hold any
//! character but `&`). Two extra parameters set the context: `now` (Unix ms,
//! default 1653891795421) and `imsi` (default 001010000000001); invalid
//! values of these are ignored. Unknown parameters are ignored, as the API
//! does.
//!
//! Properties:
//! * `Query::parse` never panics; an accepted query has `from <= to`,
//!   `1 <= limit <= MAX_LIMIT`, the documented defaults, and `bounds()` lies
//!   within `from..=to` and strictly after (asc) or before (desc) the cursor.
//! * A key produced by `next_key` parses back, with `parse_key` and through
//!   `Query::parse`, to the same cursor, and is refused for another IMSI.
//!   Positions for it are taken from the input (`from`, `to`, `limit`), and
//!   every accepted `last_evaluated_key` is re-encoded this way.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use simgate::services::harvest::query::{
    next_key, parse_key, Cursor, Position, Query, QueryError, RawQuery, Sort, DEFAULT_LIMIT,
    MAX_LIMIT,
};
use simgate_control::Imsi;

const DEFAULT_NOW_MS: u64 = 1_653_891_795_421;

pub(crate) fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut raw = RawQuery::default();
    let mut now_ms = DEFAULT_NOW_MS;
    let mut imsi = Imsi::parse("001010000000001").expect("valid literal");
    for pair in text.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "from" => &mut raw.from,
            "to" => &mut raw.to,
            "sort" => &mut raw.sort,
            "limit" => &mut raw.limit,
            "last_evaluated_key" => &mut raw.last_evaluated_key,
            "now" => {
                now_ms = value.parse().unwrap_or(now_ms);
                continue;
            }
            "imsi" => {
                imsi = Imsi::parse(value).unwrap_or(imsi);
                continue;
            }
            _ => continue,
        };
        *slot = Some(value.to_owned());
    }

    if let Ok(q) = Query::parse(&raw, &imsi, now_ms) {
        check_query(&raw, &q, now_ms);
        if let Some(cursor) = q.after {
            round_trip(&imsi, cursor);
        }
    }
    if let Some(key) = raw.last_evaluated_key.as_deref() {
        if let Ok(cursor) = parse_key(key, &imsi) {
            round_trip(&imsi, cursor);
        }
    }

    // Keys for positions taken from the input.
    let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u64>().ok());
    let last = Position {
        time: number(&raw.from).unwrap_or(0),
        seq: number(&raw.limit).map_or(0, |n| n as u32),
    };
    let peek_time = number(&raw.to).unwrap_or(now_ms);
    let key = next_key(&imsi, last, Position::first_at(peek_time));
    let expected = if peek_time == last.time {
        Cursor::Entry(last)
    } else {
        Cursor::Millisecond(last.time)
    };
    assert_eq!(parse_key(&key, &imsi), Ok(expected), "key {key:?}");
    round_trip(&imsi, expected);
}

fn check_query(raw: &RawQuery, q: &Query, now_ms: u64) {
    assert!(q.from <= q.to, "{q:?}");
    assert!((1..=MAX_LIMIT).contains(&q.limit), "{q:?}");
    if raw.from.is_none() {
        assert_eq!(q.from, 0);
    }
    if raw.to.is_none() {
        assert_eq!(q.to, now_ms);
    }
    if raw.sort.is_none() {
        assert_eq!(q.sort, Sort::Desc);
    }
    if raw.limit.is_none() {
        assert_eq!(q.limit, DEFAULT_LIMIT);
    }
    let Some(bounds) = q.bounds() else {
        return;
    };
    let (lo, hi) = (*bounds.start(), *bounds.end());
    assert!(lo <= hi, "{q:?}: empty bounds {bounds:?} returned");
    assert!(
        lo >= Position::first_at(q.from) && hi <= Position::last_at(q.to),
        "{q:?}: bounds {bounds:?} outside from..=to"
    );
    let after_cursor = match (q.sort, q.after) {
        (_, None) => true,
        (Sort::Asc, Some(Cursor::Entry(p))) => lo > p,
        (Sort::Asc, Some(Cursor::Millisecond(ms))) => lo.time > ms,
        (Sort::Desc, Some(Cursor::Entry(p))) => hi < p,
        (Sort::Desc, Some(Cursor::Millisecond(ms))) => hi.time < ms,
    };
    assert!(after_cursor, "{q:?}: bounds {bounds:?} include the cursor");
}

/// Encodes `cursor` as the API would and parses it back.
fn round_trip(imsi: &Imsi, cursor: Cursor) {
    let key = match cursor {
        // A page that ends inside a millisecond.
        Cursor::Entry(p) => next_key(imsi, p, p),
        // A page that ends on a millisecond boundary.
        Cursor::Millisecond(ms) => next_key(
            imsi,
            Position::last_at(ms),
            Position::first_at(ms.wrapping_add(1)),
        ),
    };
    assert_eq!(parse_key(&key, imsi), Ok(cursor), "key {key:?}");
    let raw = RawQuery {
        last_evaluated_key: Some(key.clone()),
        ..RawQuery::default()
    };
    let q = Query::parse(&raw, imsi, u64::MAX).unwrap_or_else(|e| panic!("key {key:?}: {e}"));
    assert_eq!(q.after, Some(cursor), "key {key:?} through Query::parse");

    let other = if imsi.as_str() == "001010000000002" {
        "001010000000003"
    } else {
        "001010000000002"
    };
    let other = Imsi::parse(other).expect("valid literal");
    assert_eq!(
        parse_key(&key, &other),
        Err(QueryError::KeyForOtherImsi),
        "key {key:?} for another IMSI"
    );
}
