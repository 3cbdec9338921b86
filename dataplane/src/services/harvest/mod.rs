//! SORACOM Harvest Data: an embedded time-series store per SIM.
//!
//! A device sends anything (HTTP `POST` to `harvest.*`, or TCP/UDP to :8514)
//! and needs no credentials: simgate knows its IMSI from its source IP. The
//! ingress builds a [`NewEntry`] — IMSI, time ([`entry_time`]: the device's
//! `X-Soracom-Timestamp` or the arrival time), content type, [`Category`]
//! (the source protocol), bytes — and awaits [`HarvestStore::append`]; it
//! answers `201` only once that returned `Ok`, i.e. the entry is committed
//! (on disk, or in PostgreSQL).
//! Entries above `max_entry_bytes` are refused ([`HarvestError::TooLarge`]);
//! a full write queue is [`HarvestError::Busy`].
//!
//! Stored entries are read back through the SORACOM query API ([`router`]):
//! `GET /v1/subscribers/{imsi}/data` with `from`, `to`, `sort`, `limit` and
//! `last_evaluated_key` paging, and `GET`/`DELETE
//! /v1/subscribers/{imsi}/data/{time}`. Entries older than `retention_days`
//! are removed by [`HarvestStore::sweep_expired`], run periodically by
//! [`retention_task`] (until shutdown) or [`spawn_retention`].
//!
//! Modules: [`entry`] (the entry and its on-disk value), [`query`] (pure
//! parameter parsing and paging), [`store`] (limits, budget, retention, over
//! one of two backends: [`redb_backend`], a file per node with group commit,
//! the default; [`pg_backend`], one PostgreSQL table shared by a fleet, with
//! `[cluster] postgres`), [`api`] (the axum routes).
//!
//! Unlike SORACOM, two entries of one SIM in one millisecond are both kept;
//! they differ by a sequence number, which shows up only in a paging key
//! (`${ms}_${imsi}_${seq}`) when a page ends between them.

pub mod api;
pub mod entry;
pub mod pg_backend;
pub mod query;
pub mod redb_backend;
pub mod store;

/// The throwaway PostgreSQL server of the integration tests, for the
/// store's tests on that backend.
#[cfg(test)]
#[path = "../../../tests/support/postgres.rs"]
pub(crate) mod test_postgres;

pub use api::{router, NEXT_KEY_HEADER};
pub use entry::{
    entry_time, Category, Entry, InvalidTimestamp, NewEntry, DEFAULT_CONTENT_TYPE,
    MAX_CONTENT_TYPE_BYTES, MAX_FUTURE_SKEW_MS,
};
pub use query::{Cursor, Position, Query, QueryError, RawQuery, Sort, DEFAULT_LIMIT, MAX_LIMIT};
pub use store::{
    error_status, now_ms, retention_task, spawn_retention, HarvestError, HarvestStore, Page,
};
