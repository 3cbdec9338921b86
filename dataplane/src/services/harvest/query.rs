//! Query parameters of `GET /v1/subscribers/{imsi}/data`, and paging.
//!
//! Pure: no I/O, no clock (`now` is an argument). The store turns a [`Query`]
//! into one range scan with [`Query::bounds`] and cuts the result into a page
//! with [`split_page`].
//!
//! # Paging keys
//!
//! SORACOM's `last_evaluated_key` is `${ms}_${imsi}`: "continue after the
//! entries at this millisecond". simgate keeps several entries of one SIM in
//! one millisecond (they differ by a sequence number), so a page may end in the
//! middle of a millisecond. Then, and only then, the next key carries the
//! sequence too: `${ms}_${imsi}_${seq}`. Keys in the plain SORACOM form are
//! always accepted and mean "after every entry at `ms`".

use std::ops::RangeInclusive;

use serde::Deserialize;
use simgate_control::Imsi;

/// Entries per page when `limit` is not given (SORACOM's default).
pub const DEFAULT_LIMIT: usize = 10;
/// Largest `limit` accepted (SORACOM's maximum).
pub const MAX_LIMIT: usize = 1000;

/// Order of the returned entries by time (SORACOM default: newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Desc,
    Asc,
}

/// Where an entry sits in one SIM's timeline: its millisecond, then its
/// sequence within that millisecond. Ordered the way the store's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub time: u64,
    pub seq: u32,
}

impl Position {
    pub const MIN: Self = Self { time: 0, seq: 0 };
    pub const MAX: Self = Self {
        time: u64::MAX,
        seq: u32::MAX,
    };

    /// The first position of millisecond `time`.
    pub fn first_at(time: u64) -> Self {
        Self { time, seq: 0 }
    }

    /// The last position of millisecond `time`.
    pub fn last_at(time: u64) -> Self {
        Self {
            time,
            seq: u32::MAX,
        }
    }

    /// The position right after this one, if any.
    pub fn next(self) -> Option<Self> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(Self { seq, ..self }),
            None => self.time.checked_add(1).map(Self::first_at),
        }
    }

    /// The position right before this one, if any.
    pub fn prev(self) -> Option<Self> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(Self { seq, ..self }),
            None => self.time.checked_sub(1).map(Self::last_at),
        }
    }
}

/// A decoded `last_evaluated_key`: the last entry the client has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// SORACOM form `${ms}_${imsi}`: every entry at this millisecond was seen.
    Millisecond(u64),
    /// simgate form `${ms}_${imsi}_${seq}`: entries up to this one were seen.
    Entry(Position),
}

/// The query string as received; every field is text so that each bad value
/// gets its own typed error rather than a generic decoding failure.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<String>,
    pub last_evaluated_key: Option<String>,
}

/// A validated query over one SIM's entries. `from` and `to` are inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: u64,
    pub to: u64,
    pub sort: Sort,
    /// 1..=[`MAX_LIMIT`].
    pub limit: usize,
    pub after: Option<Cursor>,
}

/// A parameter the client got wrong (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("from must be a Unix time in milliseconds, got {0:?}")]
    InvalidFrom(String),
    #[error("to must be a Unix time in milliseconds, got {0:?}")]
    InvalidTo(String),
    #[error("from ({from}) is after to ({to})")]
    FromAfterTo { from: u64, to: u64 },
    #[error("sort must be asc or desc, got {0:?}")]
    InvalidSort(String),
    #[error("limit must be an integer from 1 to {MAX_LIMIT}, got {0:?}")]
    InvalidLimit(String),
    #[error("last_evaluated_key must be ${{ms}}_${{imsi}}, got {0:?}")]
    InvalidKey(String),
    #[error("last_evaluated_key belongs to another subscriber")]
    KeyForOtherImsi,
}

impl QueryError {
    /// Stable machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidFrom(_) => "INVALID_FROM",
            Self::InvalidTo(_) => "INVALID_TO",
            Self::FromAfterTo { .. } => "INVALID_RANGE",
            Self::InvalidSort(_) => "INVALID_SORT",
            Self::InvalidLimit(_) => "INVALID_LIMIT",
            Self::InvalidKey(_) | Self::KeyForOtherImsi => "INVALID_LAST_EVALUATED_KEY",
        }
    }
}

/// Echo at most this much of a bad value back in an error message.
const ECHO_CHARS: usize = 64;

fn echo(s: &str) -> String {
    s.chars().take(ECHO_CHARS).collect()
}

fn parse_ms(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Query {
    /// Everything of one SIM, oldest first, `limit` per page.
    pub fn all_ascending(limit: usize) -> Self {
        Self {
            from: 0,
            to: u64::MAX,
            sort: Sort::Asc,
            limit: limit.clamp(1, MAX_LIMIT),
            after: None,
        }
    }

    /// Validates the query string of a request for `imsi` at `now_ms`.
    /// Defaults: `to` = now, `from` = 0, `sort` = desc, `limit` = 10.
    pub fn parse(raw: &RawQuery, imsi: &Imsi, now_ms: u64) -> Result<Self, QueryError> {
        let to = match raw.to.as_deref() {
            None => now_ms,
            Some(s) => parse_ms(s).ok_or_else(|| QueryError::InvalidTo(echo(s)))?,
        };
        let from = match raw.from.as_deref() {
            None => 0,
            Some(s) => parse_ms(s).ok_or_else(|| QueryError::InvalidFrom(echo(s)))?,
        };
        if from > to {
            return Err(QueryError::FromAfterTo { from, to });
        }
        let sort = match raw.sort.as_deref() {
            None => Sort::Desc,
            Some("desc") => Sort::Desc,
            Some("asc") => Sort::Asc,
            Some(s) => return Err(QueryError::InvalidSort(echo(s))),
        };
        let limit = match raw.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n) && s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| QueryError::InvalidLimit(echo(s)))?,
        };
        let after = match raw.last_evaluated_key.as_deref() {
            None => None,
            Some(s) => Some(parse_key(s, imsi)?),
        };
        Ok(Self {
            from,
            to,
            sort,
            limit,
            after,
        })
    }

    /// The positions still to be returned, as one inclusive range, or `None`
    /// when nothing can match. The store scans it forward for `asc` and
    /// backward for `desc`.
    pub fn bounds(&self) -> Option<RangeInclusive<Position>> {
        let mut lo = Position::first_at(self.from);
        let mut hi = Position::last_at(self.to);
        match (self.sort, self.after) {
            (_, None) => {}
            (Sort::Asc, Some(Cursor::Millisecond(ms))) => {
                lo = lo.max(Position::last_at(ms).next()?);
            }
            (Sort::Asc, Some(Cursor::Entry(p))) => lo = lo.max(p.next()?),
            (Sort::Desc, Some(Cursor::Millisecond(ms))) => {
                hi = hi.min(Position::first_at(ms).prev()?);
            }
            (Sort::Desc, Some(Cursor::Entry(p))) => hi = hi.min(p.prev()?),
        }
        (lo <= hi).then_some(lo..=hi)
    }
}

/// Parses a `last_evaluated_key` for `imsi`: `${ms}_${imsi}` (SORACOM) or
/// `${ms}_${imsi}_${seq}` (simgate, a page ending inside a millisecond).
pub fn parse_key(key: &str, imsi: &Imsi) -> Result<Cursor, QueryError> {
    let bad = || QueryError::InvalidKey(echo(key));
    let mut parts = key.split('_');
    let ms = parts.next().and_then(parse_ms).ok_or_else(bad)?;
    let key_imsi = parts.next().ok_or_else(bad)?;
    let seq = parts.next();
    if parts.next().is_some() {
        return Err(bad());
    }
    if Imsi::parse(key_imsi).is_err() {
        return Err(bad());
    }
    if key_imsi != imsi.as_str() {
        return Err(QueryError::KeyForOtherImsi);
    }
    match seq {
        None => Ok(Cursor::Millisecond(ms)),
        Some(s) => {
            let seq = parse_ms(s)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)?;
            Ok(Cursor::Entry(Position { time: ms, seq }))
        }
    }
}

/// The `x-soracom-next-key` after a page whose last entry is `last`, when
/// `peek` is the entry the next page starts with. The plain SORACOM form is
/// used whenever the page ends on a millisecond boundary.
pub fn next_key(imsi: &Imsi, last: Position, peek: Position) -> String {
    if last.time == peek.time {
        format!("{}_{}_{}", last.time, imsi.as_str(), last.seq)
    } else {
        format!("{}_{}", last.time, imsi.as_str())
    }
}

/// Cuts `items` — up to `limit + 1` entries in scan order — into a page of at
/// most `limit` and the key of the next page (present when more exist).
pub fn split_page<T>(
    mut items: Vec<T>,
    limit: usize,
    imsi: &Imsi,
    position: impl Fn(&T) -> Position,
) -> (Vec<T>, Option<String>) {
    if items.len() <= limit || limit == 0 {
        items.truncate(limit);
        return (items, None);
    }
    items.truncate(limit + 1);
    let peek = items.pop().map(|t| position(&t));
    let key = match (items.last(), peek) {
        (Some(last), Some(peek)) => Some(next_key(imsi, position(last), peek)),
        _ => None,
    };
    (items, key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn imsi() -> Imsi {
        Imsi::parse("001010000000001").unwrap()
    }

    fn raw(pairs: &[(&str, &str)]) -> RawQuery {
        let mut r = RawQuery::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "from" => r.from = v,
                "to" => r.to = v,
                "sort" => r.sort = v,
                "limit" => r.limit = v,
                "last_evaluated_key" => r.last_evaluated_key = v,
                _ => panic!("unknown parameter {k}"),
            }
        }
        r
    }

    #[test]
    fn defaults() {
        let q = Query::parse(&RawQuery::default(), &imsi(), 5_000).unwrap();
        assert_eq!(
            q,
            Query {
                from: 0,
                to: 5_000,
                sort: Sort::Desc,
                limit: DEFAULT_LIMIT,
                after: None
            }
        );
    }

    #[test]
    fn explicit_parameters() {
        let q = Query::parse(
            &raw(&[
                ("from", "10"),
                ("to", "20"),
                ("sort", "asc"),
                ("limit", "1000"),
                ("last_evaluated_key", "15_001010000000001"),
            ]),
            &imsi(),
            0,
        )
        .unwrap();
        assert_eq!(q.from, 10);
        assert_eq!(q.to, 20);
        assert_eq!(q.sort, Sort::Asc);
        assert_eq!(q.limit, 1000);
        assert_eq!(q.after, Some(Cursor::Millisecond(15)));
    }

    #[test]
    fn validation_errors() {
        let i = imsi();
        let err = |pairs: &[(&str, &str)]| Query::parse(&raw(pairs), &i, 100).unwrap_err();
        assert!(matches!(err(&[("from", "x")]), QueryError::InvalidFrom(_)));
        assert!(matches!(err(&[("from", "-1")]), QueryError::InvalidFrom(_)));
        assert!(matches!(err(&[("to", "1e3")]), QueryError::InvalidTo(_)));
        assert!(matches!(
            err(&[("from", "200")]),
            QueryError::FromAfterTo { .. }
        ));
        assert!(matches!(
            err(&[("sort", "ASC")]),
            QueryError::InvalidSort(_)
        ));
        for bad in ["0", "1001", "-1", "+5", "ten", ""] {
            assert!(
                matches!(err(&[("limit", bad)]), QueryError::InvalidLimit(_)),
                "{bad}"
            );
        }
        for bad in [
            "",
            "5",
            "x_001010000000001",
            "5_abc",
            "5_001010000000001_x",
            "5_001010000000001_1_2",
            "5_001010000000001_4294967296",
        ] {
            assert!(
                matches!(
                    err(&[("last_evaluated_key", bad)]),
                    QueryError::InvalidKey(_)
                ),
                "{bad}"
            );
        }
        assert_eq!(
            err(&[("last_evaluated_key", "5_001010000000002")]),
            QueryError::KeyForOtherImsi
        );
        assert_eq!(err(&[("limit", "0")]).code(), "INVALID_LIMIT");
    }

    #[test]
    fn keys() {
        let i = imsi();
        let a = Position { time: 7, seq: 0 };
        let b = Position { time: 7, seq: 1 };
        let c = Position { time: 9, seq: 0 };
        assert_eq!(next_key(&i, a, b), "7_001010000000001_0");
        assert_eq!(next_key(&i, b, c), "7_001010000000001");
        assert_eq!(
            parse_key("7_001010000000001", &i),
            Ok(Cursor::Millisecond(7))
        );
        assert_eq!(
            parse_key("7_001010000000001_3", &i),
            Ok(Cursor::Entry(Position { time: 7, seq: 3 }))
        );
    }

    #[test]
    fn bounds_at_the_edges() {
        let mut q = Query::all_ascending(10);
        assert_eq!(q.bounds(), Some(Position::MIN..=Position::MAX));
        q.after = Some(Cursor::Millisecond(u64::MAX));
        assert_eq!(q.bounds(), None);
        q.sort = Sort::Desc;
        q.after = Some(Cursor::Millisecond(0));
        assert_eq!(q.bounds(), None);
        q.after = Some(Cursor::Entry(Position { time: 5, seq: 0 }));
        assert_eq!(q.bounds(), Some(Position::MIN..=Position::last_at(4)));
        q.sort = Sort::Asc;
        q.after = Some(Cursor::Entry(Position {
            time: 5,
            seq: u32::MAX,
        }));
        assert_eq!(q.bounds(), Some(Position::first_at(6)..=Position::MAX));
        // The cursor lies past `to`: nothing left.
        q.to = 3;
        assert_eq!(q.bounds(), None);
    }

    #[test]
    fn split() {
        let i = imsi();
        let pos = |p: &Position| *p;
        let ps = [
            Position { time: 1, seq: 0 },
            Position { time: 2, seq: 0 },
            Position { time: 2, seq: 1 },
        ];
        assert_eq!(split_page(ps.to_vec(), 3, &i, pos), (ps.to_vec(), None));
        assert_eq!(split_page(ps.to_vec(), 5, &i, pos), (ps.to_vec(), None));
        assert_eq!(
            split_page(ps.to_vec(), 1, &i, pos),
            (ps[..1].to_vec(), Some("1_001010000000001".to_owned()))
        );
        assert_eq!(
            split_page(ps.to_vec(), 2, &i, pos),
            (ps[..2].to_vec(), Some("2_001010000000001_0".to_owned()))
        );
    }

    /// An in-memory stand-in for the store's range scan: what `bounds` selects,
    /// in `sort` order, `limit + 1` of it, cut by `split_page`.
    fn scan(all: &[Position], q: &Query, imsi: &Imsi) -> (Vec<Position>, Option<String>) {
        let Some(b) = q.bounds() else {
            return (Vec::new(), None);
        };
        let hits = all.iter().copied().filter(|p| b.contains(p));
        let items: Vec<_> = match q.sort {
            Sort::Asc => hits.take(q.limit + 1).collect(),
            Sort::Desc => hits.rev().take(q.limit + 1).collect(),
        };
        split_page(items, q.limit, imsi, |p| *p)
    }

    proptest! {
        /// Paging with any limit, in either order, over entries that share
        /// milliseconds, returns every entry in range exactly once, in order,
        /// and every next key survives a round trip through the query string.
        #[test]
        fn paging_is_exact(
            times in proptest::collection::vec(0u64..12, 0..60),
            limit in 1usize..8,
            asc in any::<bool>(),
            from in 0u64..12,
            span in 0u64..14,
        ) {
            let i = imsi();
            // Assign sequences the way the store does: 0, 1, … per millisecond.
            let mut all: Vec<Position> = Vec::new();
            let mut sorted = times.clone();
            sorted.sort_unstable();
            for t in sorted {
                let seq = all.iter().filter(|p| p.time == t).count() as u32;
                all.push(Position { time: t, seq });
            }
            let to = from + span;
            let mut expected: Vec<Position> =
                all.iter().copied().filter(|p| (from..=to).contains(&p.time)).collect();
            if !asc {
                expected.reverse();
            }
            let sort = if asc { "asc" } else { "desc" };
            let (from_s, to_s, limit_s) = (from.to_string(), to.to_string(), limit.to_string());
            let mut got = Vec::new();
            let mut key: Option<String> = None;
            for _ in 0..=all.len() + 1 {
                let mut pairs = vec![("from", from_s.as_str()), ("to", to_s.as_str()), ("sort", sort), ("limit", limit_s.as_str())];
                if let Some(k) = key.as_deref() {
                    pairs.push(("last_evaluated_key", k));
                }
                let q = Query::parse(&raw(&pairs), &i, 1_000).unwrap();
                let (page, next) = scan(&all, &q, &i);
                prop_assert!(page.len() <= limit);
                if next.is_some() {
                    prop_assert_eq!(page.len(), limit);
                }
                got.extend(page);
                key = next;
                if key.is_none() {
                    break;
                }
            }
            prop_assert!(key.is_none(), "paging did not terminate");
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn parse_never_panics(key in ".{0,40}", limit in ".{0,8}", from in ".{0,24}") {
            let r = RawQuery {
                from: Some(from),
                limit: Some(limit),
                last_evaluated_key: Some(key),
                ..RawQuery::default()
            };
            let _ = Query::parse(&r, &imsi(), u64::MAX);
        }

        #[test]
        fn next_and_prev_are_inverse(time in any::<u64>(), seq in any::<u32>()) {
            let p = Position { time, seq };
            if let Some(n) = p.next() {
                prop_assert!(n > p);
                prop_assert_eq!(n.prev(), Some(p));
            }
            if let Some(q) = p.prev() {
                prop_assert!(q < p);
                prop_assert_eq!(q.next(), Some(p));
            }
        }
    }
}
