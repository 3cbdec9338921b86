//! The Harvest Data store: what the ingress, the query API and the retention
//! task talk to, whichever backend holds the entries.
//!
//! * [`HarvestStore::open`]: one redb file on this node (the default; see
//!   [`redb_backend`](super::redb_backend) for its layout and group commit);
//! * [`HarvestStore::open_postgres`]: one PostgreSQL table shared by a fleet
//!   (`[cluster] postgres`; see [`pg_backend`](super::pg_backend)), so a
//!   query on any node returns what every node stored.
//!
//! Limits, the byte budget, query paging ([`split_page`]) and errors → HTTP
//! statuses ([`error_status`]) live here, once, for both.
//!
//! # The byte budget
//!
//! `[harvest] max_bytes` counts keys and values the way the redb layout
//! stores them ([`entry_cost`]). With redb it is measured at open and kept up
//! to date by every write and delete. With PostgreSQL the budget is the whole
//! shared table's: each node measures the table at open and after each
//! retention sweep, and adds or subtracts its own writes and deletes in
//! between; so a fleet can pass the budget by what the other nodes wrote since
//! a node last measured.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use simgate_control::config::HarvestSettings;
use simgate_control::Imsi;
use tokio::sync::watch;

use super::entry::{CorruptValue, Entry, NewEntry, MAX_CONTENT_TYPE_BYTES};
use super::pg_backend::{PgBackend, PgError};
use super::query::{split_page, Position, Query};
use super::redb_backend::RedbBackend;

pub use super::redb_backend::MAX_BATCH;

/// Entries waiting for the writer (redb), or appends in flight
/// (PostgreSQL), before `append` answers `Busy`.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most entries the retention sweep deletes per transaction, so a sweep after
/// a long pause does not hold the write lock for one huge commit.
const SWEEP_CHUNK: usize = 10_000;

const MS_PER_DAY: u64 = 86_400_000;

/// What went wrong in the store. [`is_client_error`](Self::is_client_error)
/// and [`is_retryable`](Self::is_retryable) say who is to blame and whether
/// to try again.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HarvestError {
    /// The content is larger than `max_entry_bytes` (ingress: 413).
    #[error("entry of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The content type is longer than [`MAX_CONTENT_TYPE_BYTES`] (ingress: 400).
    #[error("content type of {size} bytes exceeds the limit of {max} bytes")]
    ContentTypeTooLong { size: usize, max: usize },
    /// The write queue is full; try again shortly (ingress: 503 + Retry-After).
    #[error("harvest write queue is full")]
    Busy,
    /// The store has reached `[harvest] max_bytes` (ingress: 507); room is
    /// made by the retention sweep or by deleting entries.
    #[error("Insufficient Storage: the Harvest store is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    /// The writer has stopped (the store is shutting down or crashed).
    #[error("harvest writer has stopped")]
    Closed,
    /// 2³² entries of one SIM in one millisecond.
    #[error("too many entries for one subscriber in one millisecond")]
    SequenceExhausted,
    /// A time PostgreSQL's `bigint` cannot hold (after year 292 million; the
    /// ingress never produces one).
    #[error("entry time {time} is out of range")]
    TimeOutOfRange { time: u64 },
    /// The database file or directory could not be opened.
    #[error("harvest store I/O: {0}")]
    Io(#[source] Arc<std::io::Error>),
    /// redb failed; nothing of the failed transaction was written.
    #[error("harvest storage: {0}")]
    Storage(#[source] Arc<redb::Error>),
    /// PostgreSQL is unreachable, timed out or refused the statement;
    /// nothing of the failed statement was written.
    #[error("harvest database: {0}")]
    Postgres(#[source] Arc<PgError>),
    /// A stored value could not be decoded.
    #[error(transparent)]
    Corrupt(#[from] CorruptValue),
}

impl HarvestError {
    /// The device or client sent something the store will never accept.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::ContentTypeTooLong { .. }
                | Self::SequenceExhausted
                | Self::TimeOutOfRange { .. }
        )
    }

    /// The same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Busy | Self::Storage(_) | Self::Io(_) | Self::Postgres(_)
        )
    }
}

/// How the ingress answers a failed [`HarvestStore::append`]: the HTTP status
/// and whether the device should retry later (send `Retry-After`).
///
/// * too large → 413; content type too long, time out of range → 400;
/// * queue full, or 2³² entries in one millisecond → 429, retry;
/// * `max_bytes` reached → 507;
/// * writer stopped, storage, I/O or PostgreSQL failure → 503, retry;
/// * a corrupt stored value (never from `append`) → 500.
pub fn error_status(e: &HarvestError) -> (u16, bool) {
    match e {
        HarvestError::TooLarge { .. } => (413, false),
        HarvestError::ContentTypeTooLong { .. } | HarvestError::TimeOutOfRange { .. } => {
            (400, false)
        }
        HarvestError::Busy | HarvestError::SequenceExhausted => (429, true),
        HarvestError::Full { .. } => (507, false),
        HarvestError::Closed
        | HarvestError::Storage(_)
        | HarvestError::Io(_)
        | HarvestError::Postgres(_) => (503, true),
        HarvestError::Corrupt(_) => (500, false),
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for HarvestError {
            fn from(e: $t) -> Self {
                Self::Storage(Arc::new(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<std::io::Error> for HarvestError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(Arc::new(e))
    }
}

/// One page of a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// `x-soracom-next-key`: present when more entries exist.
    pub next_key: Option<String>,
}

/// Where the entries are. Everything above the backends (limits, budget,
/// paging) is [`HarvestStore`]'s.
enum Backend {
    Redb(RedbBackend),
    Postgres(PgBackend),
}

/// The Harvest Data store. Cheap to share as `Arc<HarvestStore>`; dropping
/// the last `Arc` lets the redb writer finish what is queued and joins it.
pub struct HarvestStore {
    backend: Backend,
    settings: HarvestSettings,
    /// Bytes of keys and values stored, for `max_bytes` (see the module
    /// documentation for what each backend counts).
    used: Arc<AtomicU64>,
    /// Entries refused because the store was full.
    refused_full: AtomicU64,
}

impl std::fmt::Debug for HarvestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Redb(_) => "redb",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("HarvestStore")
            .field("backend", &backend)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HarvestStore {
    /// Opens (or creates) the store at `path`, normally
    /// `{data_dir}/harvest.redb`, and starts its writer thread.
    pub fn open(
        path: impl AsRef<Path>,
        settings: HarvestSettings,
    ) -> Result<Arc<Self>, HarvestError> {
        Self::open_with_capacity(path, settings, QUEUE_CAPACITY)
    }

    /// [`open`](Self::open) with a write queue of `capacity` entries.
    pub fn open_with_capacity(
        path: impl AsRef<Path>,
        settings: HarvestSettings,
        capacity: usize,
    ) -> Result<Arc<Self>, HarvestError> {
        let used = Arc::new(AtomicU64::new(0));
        let backend = RedbBackend::open(path.as_ref(), capacity, &used)?;
        Ok(Self::with_backend(Backend::Redb(backend), settings, used))
    }

    /// Opens the store in the PostgreSQL database at `url`
    /// (`[cluster] postgres`), creating its table if needed. Blocking:
    /// connects and measures the stored bytes. Fails when the server cannot
    /// be reached.
    pub fn open_postgres(url: &str, settings: HarvestSettings) -> Result<Arc<Self>, HarvestError> {
        let used = Arc::new(AtomicU64::new(0));
        let backend = PgBackend::open(url, QUEUE_CAPACITY, &used)?;
        Ok(Self::with_backend(
            Backend::Postgres(backend),
            settings,
            used,
        ))
    }

    fn with_backend(
        backend: Backend,
        settings: HarvestSettings,
        used: Arc<AtomicU64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            backend,
            settings,
            used,
            refused_full: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &HarvestSettings {
        &self.settings
    }

    /// Bytes of keys and values stored, as counted against `max_bytes`.
    pub fn stored_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Entries refused with [`HarvestError::Full`] since the store opened.
    pub fn refused_full(&self) -> u64 {
        self.refused_full.load(Ordering::Relaxed)
    }

    /// Checks an entry against the limits without storing it, so an ingress
    /// can refuse early.
    pub fn check(&self, entry: &NewEntry) -> Result<(), HarvestError> {
        if entry.content.len() > self.settings.max_entry_bytes {
            return Err(HarvestError::TooLarge {
                size: entry.content.len(),
                max: self.settings.max_entry_bytes,
            });
        }
        if entry.content_type.len() > MAX_CONTENT_TYPE_BYTES {
            return Err(HarvestError::ContentTypeTooLong {
                size: entry.content_type.len(),
                max: MAX_CONTENT_TYPE_BYTES,
            });
        }
        // Entries still in the write queue are not counted yet: the budget
        // can be passed by at most one queue's worth.
        let max = self.settings.max_bytes;
        let used = self.stored_bytes();
        let cost = entry_cost(
            entry.imsi.as_str().len(),
            VALUE_OVERHEAD + entry.content_type.len() + entry.content.len(),
        );
        if max > 0 && used.saturating_add(cost) > max {
            return Err(HarvestError::Full { used, max });
        }
        Ok(())
    }

    /// Stores `entry` durably. Returns once it is committed, or at once with
    /// [`HarvestError::Busy`] when the write queue is full.
    ///
    /// If the returned future is dropped after the entry was queued, the entry
    /// is still written.
    pub async fn append(&self, entry: NewEntry) -> Result<(), HarvestError> {
        if let Err(e) = self.check(&entry) {
            if matches!(e, HarvestError::Full { .. }) {
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "harvest entry refused");
            }
            return Err(e);
        }
        match &self.backend {
            Backend::Redb(b) => b.append(entry).await,
            Backend::Postgres(b) => b.append(entry, &self.used).await,
        }
    }

    /// One page of `imsi`'s entries. Blocking (disk reads or a database
    /// round trip): call it from `spawn_blocking` in async code.
    pub fn query(&self, imsi: &Imsi, query: &Query) -> Result<Page, HarvestError> {
        let Some(bounds) = query.bounds() else {
            return Ok(Page::default());
        };
        let (lo, hi) = bounds.into_inner();
        // One more than asked for tells whether there is a next page.
        let want = query.limit.saturating_add(1);
        let items = match &self.backend {
            Backend::Redb(b) => b.scan(imsi, lo, hi, query.sort, want)?,
            Backend::Postgres(b) => b.scan(imsi, lo, hi, query.sort, want)?,
        };
        let (entries, next_key) = split_page(items, query.limit, imsi, |e: &Entry| Position {
            time: e.time,
            seq: e.seq,
        });
        Ok(Page { entries, next_key })
    }

    /// Every entry of `imsi` at millisecond `time`, in arrival order.
    /// Blocking.
    pub fn get(&self, imsi: &Imsi, time: u64) -> Result<Vec<Entry>, HarvestError> {
        let (lo, hi) = (Position::first_at(time), Position::last_at(time));
        let sort = super::query::Sort::Asc;
        match &self.backend {
            Backend::Redb(b) => b.scan(imsi, lo, hi, sort, usize::MAX),
            Backend::Postgres(b) => b.scan(imsi, lo, hi, sort, usize::MAX),
        }
    }

    /// Deletes every entry of `imsi` at millisecond `time`; `false` if there
    /// was none. Blocking (waits for the write lock).
    pub fn delete(&self, imsi: &Imsi, time: u64) -> Result<bool, HarvestError> {
        match &self.backend {
            Backend::Redb(b) => b.delete(imsi, time, &self.used),
            Backend::Postgres(b) => b.delete(imsi, time, &self.used),
        }
    }

    /// Deletes every entry older than `retention_days` before `now_ms` and
    /// returns how many. `retention_days = 0` keeps everything (a typo must
    /// not wipe the store). Blocking.
    pub fn sweep_expired(&self, now_ms: u64) -> Result<usize, HarvestError> {
        let total = self.sweep(now_ms)?;
        if let Backend::Postgres(b) = &self.backend {
            // Other nodes' writes reach this node's budget count only here;
            // a failure leaves the estimate, it does not undo the sweep.
            if let Err(e) = b.remeasure(&self.used) {
                tracing::warn!(error = %e, "cannot measure the shared Harvest table");
            }
        }
        Ok(total)
    }

    fn sweep(&self, now_ms: u64) -> Result<usize, HarvestError> {
        if self.settings.retention_days == 0 {
            return Ok(0);
        }
        let cutoff = now_ms
            .saturating_sub(u64::from(self.settings.retention_days).saturating_mul(MS_PER_DAY));
        let mut total = 0;
        loop {
            let n = match &self.backend {
                Backend::Redb(b) => b.sweep_chunk(cutoff, SWEEP_CHUNK, &self.used)?,
                Backend::Postgres(b) => b.sweep_chunk(cutoff, SWEEP_CHUNK, &self.used)?,
            };
            total += n;
            if n < SWEEP_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Up to `limit` SIMs with entries, in IMSI order, starting after
    /// `after`. Blocking.
    pub fn resources(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Resource>, HarvestError> {
        match &self.backend {
            Backend::Redb(b) => b.resources(after, limit),
            Backend::Postgres(b) => b.resources(after, limit),
        }
    }
}

/// Takes `bytes` off the budget count. Never below zero: the count at open
/// is measured, the rest estimates.
pub(super) fn release(used: &AtomicU64, bytes: u64) {
    let _ = used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
        Some(u.saturating_sub(bytes))
    });
}

/// Bytes before the content type and content in a stored value.
pub(super) const VALUE_OVERHEAD: usize = 3;

/// What one entry counts against `max_bytes`: its value and both keys
/// (`(imsi, time, seq)` twice, once per redb table).
pub(super) fn entry_cost(imsi_len: usize, value_len: usize) -> u64 {
    let key = imsi_len + 8 + 4;
    u64::try_from(2 * key + value_len).unwrap_or(u64::MAX)
}

pub use simgate_control::clock::now_ms;

/// A SIM that has entries: its IMSI and the time of its newest one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub imsi: String,
    pub last_time: u64,
}

/// Runs [`HarvestStore::sweep_expired`] every `every` (first run at once)
/// until the task is aborted.
pub fn spawn_retention(store: Arc<HarvestStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(retention_loop(store, every, std::future::pending()))
}

/// Runs [`HarvestStore::sweep_expired`] every `every` (first run at once)
/// until `shutdown` becomes `true` or its sender is dropped. A sweep in
/// progress is finished first.
pub async fn retention_task(
    store: Arc<HarvestStore>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let stop = async move {
        // `wait_for` fails only when the sender is gone: stop then too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    retention_loop(store, every, stop).await;
}

async fn retention_loop(store: Arc<HarvestStore>, every: Duration, stop: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.sweep_expired(now_ms())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deleted = n, "harvest retention sweep"),
            Ok(Err(e)) => tracing::warn!(error = %e, "harvest retention sweep failed"),
            Err(e) => tracing::error!(error = %e, "harvest retention sweep panicked"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Every behavioural test runs on both backends (`redb::…` and
    //! `postgres::…`, see [`both_backends!`]); a [`Fixture`] opens the
    //! backend's store, again after a drop, or a fresh one.

    use super::*;
    use crate::services::harvest::entry::Category;
    use crate::services::harvest::query::{Cursor, RawQuery, Sort};
    use crate::services::harvest::test_postgres::PgServer;
    use bytes::Bytes;

    fn settings() -> HarvestSettings {
        HarvestSettings {
            max_entry_bytes: 16,
            retention_days: 1,
            max_bytes: 0,
        }
    }

    /// Where a test's store lives: a temporary directory (redb) or a
    /// throwaway PostgreSQL server (one database per store).
    struct Fixture {
        dir: tempfile::TempDir,
        pg: Option<PgServer>,
        /// The URL [`open`](Self::open) uses, for PostgreSQL.
        url: Option<String>,
        fresh: AtomicU64,
    }

    impl Fixture {
        fn redb() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
                pg: None,
                url: None,
                fresh: AtomicU64::new(0),
            }
        }

        fn postgres() -> Self {
            let pg = PgServer::start();
            let url = pg.create_database();
            Self {
                dir: tempfile::tempdir().unwrap(),
                pg: Some(pg),
                url: Some(url),
                fresh: AtomicU64::new(0),
            }
        }

        /// The test's store; after a drop, the same data again.
        fn open_with(&self, settings: HarvestSettings) -> Arc<HarvestStore> {
            match &self.url {
                Some(url) => HarvestStore::open_postgres(url, settings).unwrap(),
                None => {
                    HarvestStore::open(self.dir.path().join("sub/harvest.redb"), settings).unwrap()
                }
            }
        }

        fn open(&self) -> Arc<HarvestStore> {
            self.open_with(settings())
        }

        /// Another, empty store.
        fn open_fresh(&self, settings: HarvestSettings) -> Arc<HarvestStore> {
            match &self.pg {
                Some(pg) => HarvestStore::open_postgres(&pg.create_database(), settings).unwrap(),
                None => {
                    let n = self.fresh.fetch_add(1, Ordering::Relaxed);
                    HarvestStore::open(self.dir.path().join(format!("fresh{n}.redb")), settings)
                        .unwrap()
                }
            }
        }
    }

    /// Defines each named `async fn(Fixture)` as a test on each backend.
    macro_rules! both_backends {
        ($($name:ident),* $(,)?) => {
            mod redb {
                $(
                    #[tokio::test]
                    async fn $name() {
                        super::$name(super::Fixture::redb()).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test]
                    async fn $name() {
                        super::$name(super::Fixture::postgres()).await;
                    }
                )*
            }
        };
    }

    both_backends!(
        disk_budget_refuses_when_full_and_frees_on_delete,
        same_millisecond_entries_are_all_kept,
        paging_through_the_store_is_exact,
        soracom_key_skips_the_whole_millisecond,
        limits_are_enforced,
        delete_removes_the_millisecond,
        retention_sweep,
        retention_task_sweeps_and_stops,
        sweep_in_chunks,
        reopening_keeps_the_data,
        resources_list_sims_in_imsi_order,
    );

    fn imsi(n: u32) -> Imsi {
        Imsi::parse(&format!("00101{n:010}")).unwrap()
    }

    fn entry(imsi: &Imsi, time: u64, body: &str) -> NewEntry {
        NewEntry {
            imsi: imsi.clone(),
            time,
            content_type: "text/plain".into(),
            category: Category::Udp,
            content: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn bodies(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8(e.content.to_vec()).unwrap())
            .collect()
    }

    /// `max_bytes`: full → `Full` (507), counted; deleting makes room, and
    /// the count survives a reopen (measured by the backend).
    async fn disk_budget_refuses_when_full_and_frees_on_delete(f: Fixture) {
        let a = imsi(1);
        // 15-digit IMSI: 2 × 27 key bytes + 3 + 10 ("text/plain") + 4 = 71.
        let cost = entry_cost(15, VALUE_OVERHEAD + 10 + 4);
        assert_eq!(cost, 71);
        let settings = HarvestSettings {
            max_bytes: 3 * cost,
            ..settings()
        };
        let store = f.open_with(settings.clone());
        for t in 0..3 {
            store.append(entry(&a, 100 + t, "abcd")).await.unwrap();
        }
        assert_eq!(store.stored_bytes(), 3 * cost);
        let e = store.append(entry(&a, 200, "abcd")).await.unwrap_err();
        assert!(matches!(e, HarvestError::Full { .. }), "{e}");
        assert_eq!(error_status(&e), (507, false));
        assert_eq!(store.refused_full(), 1);
        assert!(store.delete(&a, 100).unwrap());
        assert_eq!(store.stored_bytes(), 2 * cost);
        store.append(entry(&a, 200, "abcd")).await.unwrap();
        drop(store);
        let store = f.open_with(settings);
        assert!(store.stored_bytes() > 0);
        assert!(store.append(entry(&a, 300, "abcd")).await.is_err());
    }

    async fn same_millisecond_entries_are_all_kept(f: Fixture) {
        let store = f.open();
        let (a, b) = (imsi(1), imsi(2));
        // Concurrent appends land in one or a few group commits (redb), or
        // race for sequence numbers (PostgreSQL).
        let futs: Vec<_> = (0..5)
            .map(|i| store.append(entry(&a, 100, &format!("a{i}"))))
            .chain([store.append(entry(&b, 100, "b0"))])
            .collect();
        for r in futures_util::future::join_all(futs).await {
            r.unwrap();
        }
        let got = store.get(&a, 100).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        let mut names = bodies(&got);
        names.sort();
        assert_eq!(names, ["a0", "a1", "a2", "a3", "a4"]);
        assert_eq!(bodies(&store.get(&b, 100).unwrap()), ["b0"]);
        assert!(store.get(&a, 101).unwrap().is_empty());
    }

    async fn paging_through_the_store_is_exact(f: Fixture) {
        let store = f.open();
        let (a, b) = (imsi(1), imsi(2));
        let times = [5u64, 5, 5, 7, 9, 9, 12, 12, 12, 12, 20];
        for (i, t) in times.iter().enumerate() {
            store.append(entry(&a, *t, &format!("a{i}"))).await.unwrap();
            store.append(entry(&b, *t, &format!("b{i}"))).await.unwrap();
        }
        for sort in ["asc", "desc"] {
            for limit in 1..=12 {
                let mut got = Vec::new();
                let mut keys = Vec::new();
                let mut key = None;
                loop {
                    let raw = RawQuery {
                        from: Some("5".into()),
                        to: Some("12".into()),
                        sort: Some(sort.into()),
                        limit: Some(limit.to_string()),
                        last_evaluated_key: key.take(),
                    };
                    let q = Query::parse(&raw, &a, 1_000).unwrap();
                    let page = store.query(&a, &q).unwrap();
                    assert!(page.entries.len() <= limit);
                    assert!(page.entries.iter().all(|e| e.imsi == a));
                    got.extend(bodies(&page.entries));
                    match page.next_key {
                        Some(k) => {
                            keys.push(k.clone());
                            key = Some(k);
                        }
                        None => break,
                    }
                }
                let mut want: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
                if sort == "desc" {
                    want.reverse();
                }
                assert_eq!(got, want, "sort={sort} limit={limit}");
                if (sort, limit) == ("asc", 2) {
                    // The SORACOM form on millisecond boundaries, the seq
                    // form inside one.
                    assert_eq!(
                        keys,
                        [
                            "5_001010000000001_1",
                            "7_001010000000001",
                            "9_001010000000001",
                            "12_001010000000001_1",
                        ]
                    );
                }
            }
        }
    }

    async fn soracom_key_skips_the_whole_millisecond(f: Fixture) {
        let store = f.open();
        let a = imsi(1);
        for (t, body) in [(1, "x"), (2, "y0"), (2, "y1"), (3, "z")] {
            store.append(entry(&a, t, body)).await.unwrap();
        }
        let mut q = Query::all_ascending(10);
        q.after = Some(Cursor::Millisecond(2));
        assert_eq!(bodies(&store.query(&a, &q).unwrap().entries), ["z"]);
        q.sort = Sort::Desc;
        assert_eq!(bodies(&store.query(&a, &q).unwrap().entries), ["x"]);
    }

    async fn limits_are_enforced(f: Fixture) {
        let store = f.open();
        let a = imsi(1);
        store.append(entry(&a, 1, &"x".repeat(16))).await.unwrap();
        let err = store
            .append(entry(&a, 1, &"x".repeat(17)))
            .await
            .unwrap_err();
        assert!(matches!(err, HarvestError::TooLarge { size: 17, max: 16 }));
        assert!(err.is_client_error() && !err.is_retryable());
        let mut e = entry(&a, 1, "x");
        e.content_type = "t".repeat(256);
        assert!(matches!(
            store.append(e).await.unwrap_err(),
            HarvestError::ContentTypeTooLong { .. }
        ));
        assert_eq!(store.get(&a, 1).unwrap().len(), 1);
    }

    async fn delete_removes_the_millisecond(f: Fixture) {
        let store = f.open();
        let (a, b) = (imsi(1), imsi(2));
        for e in [
            entry(&a, 1, "1"),
            entry(&a, 1, "2"),
            entry(&a, 2, "3"),
            entry(&b, 1, "4"),
        ] {
            store.append(e).await.unwrap();
        }
        assert!(store.delete(&a, 1).unwrap());
        assert!(!store.delete(&a, 1).unwrap());
        assert!(store.get(&a, 1).unwrap().is_empty());
        assert_eq!(store.get(&a, 2).unwrap().len(), 1);
        assert_eq!(store.get(&b, 1).unwrap().len(), 1);
        // The retention index was cleaned too: sweeping everything counts 2.
        assert_eq!(store.sweep_expired(10 * MS_PER_DAY).unwrap(), 2);
        // After a delete, the millisecond starts again from seq 0.
        store.append(entry(&a, 1, "5")).await.unwrap();
        assert_eq!(store.get(&a, 1).unwrap()[0].seq, 0);
    }

    async fn retention_sweep(f: Fixture) {
        let store = f.open();
        let (a, b) = (imsi(1), imsi(2));
        let now = 100 * MS_PER_DAY;
        let cutoff = now - MS_PER_DAY;
        for t in [0, cutoff - 1, cutoff, now] {
            store.append(entry(&a, t, "a")).await.unwrap();
            store.append(entry(&b, t, "b")).await.unwrap();
        }
        assert_eq!(store.sweep_expired(now).unwrap(), 4);
        assert_eq!(store.sweep_expired(now).unwrap(), 0);
        let page = store.query(&a, &Query::all_ascending(10)).unwrap();
        assert_eq!(
            page.entries.iter().map(|e| e.time).collect::<Vec<_>>(),
            [cutoff, now]
        );
        // What is left is what the budget counts.
        assert_eq!(
            store.stored_bytes(),
            4 * entry_cost(15, VALUE_OVERHEAD + 10 + 1)
        );

        let keep = f.open_fresh(HarvestSettings {
            max_entry_bytes: 16,
            retention_days: 0,
            max_bytes: 0,
        });
        keep.append(entry(&a, 0, "a")).await.unwrap();
        assert_eq!(keep.sweep_expired(now).unwrap(), 0);
    }

    async fn retention_task_sweeps_and_stops(f: Fixture) {
        let store = f.open();
        let a = imsi(1);
        store.append(entry(&a, 0, "old")).await.unwrap();
        store.append(entry(&a, now_ms(), "new")).await.unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(retention_task(
            Arc::clone(&store),
            Duration::from_secs(60),
            rx,
        ));
        // The first sweep runs at once.
        for _ in 0..400 {
            if store.get(&a, 0).unwrap().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(store.get(&a, 0).unwrap().is_empty());
        stop.send(true).unwrap();
        task.await.unwrap();

        let handle = spawn_retention(Arc::clone(&store), Duration::from_secs(60));
        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
    }

    async fn sweep_in_chunks(f: Fixture) {
        let store = f.open();
        let a = imsi(1);
        let n = SWEEP_CHUNK + 5;
        let futs: Vec<_> = (0..n)
            .map(|i| store.append(entry(&a, i as u64 % 7, "x")))
            .collect();
        // Append in slices small enough for the queue.
        let mut futs = futs.into_iter();
        loop {
            let slice: Vec<_> = futs.by_ref().take(QUEUE_CAPACITY / 2).collect();
            if slice.is_empty() {
                break;
            }
            for r in futures_util::future::join_all(slice).await {
                r.unwrap();
            }
        }
        assert_eq!(store.sweep_expired(10 * MS_PER_DAY).unwrap(), n);
        assert!(store
            .query(&a, &Query::all_ascending(10))
            .unwrap()
            .entries
            .is_empty());
    }

    async fn reopening_keeps_the_data(f: Fixture) {
        let a = imsi(1);
        {
            let store = f.open();
            store.append(entry(&a, 1, "one")).await.unwrap();
            store.append(entry(&a, 1, "two")).await.unwrap();
        }
        let store = f.open();
        assert_eq!(bodies(&store.get(&a, 1).unwrap()), ["one", "two"]);
        store.append(entry(&a, 1, "three")).await.unwrap();
        assert_eq!(store.get(&a, 1).unwrap()[2].seq, 2);
    }

    async fn resources_list_sims_in_imsi_order(f: Fixture) {
        let store = f.open();
        for (n, t) in [(3, 30), (1, 10), (2, 5), (2, 20), (1, 11)] {
            store.append(entry(&imsi(n), t, "x")).await.unwrap();
        }
        let all = store.resources(None, 10).unwrap();
        assert_eq!(
            all.iter()
                .map(|r| (r.imsi.as_str(), r.last_time))
                .collect::<Vec<_>>(),
            [
                (imsi(1).as_str(), 11),
                (imsi(2).as_str(), 20),
                (imsi(3).as_str(), 30)
            ]
        );
        let after = store.resources(Some(imsi(1).as_str()), 1).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].imsi, imsi(2).as_str());
        assert!(store
            .resources(Some(imsi(3).as_str()), 5)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn full_queue_is_busy_not_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            HarvestStore::open_with_capacity(dir.path().join("h.redb"), settings(), 2).unwrap();
        let Backend::Redb(backend) = &store.backend else {
            panic!("opened a redb store");
        };
        let a = imsi(1);
        // Hold the write lock so the writer cannot drain the queue.
        let blocker = backend.db.begin_write().unwrap();
        let mut waiting = Vec::new();
        let mut busy = false;
        for i in 0..10 {
            let s = Arc::clone(&store);
            let e = entry(&a, i, "x");
            let handle = tokio::spawn(async move { s.append(e).await });
            // Let the task reach `try_send`.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if handle.is_finished() {
                let r = handle.await.unwrap();
                assert!(matches!(r, Err(HarvestError::Busy)), "{r:?}");
                busy = true;
                break;
            }
            waiting.push(handle);
        }
        assert!(busy, "the queue never filled");
        // At most the writer's batch plus the queue are waiting.
        assert!(waiting.len() <= 3, "{}", waiting.len());
        drop(blocker);
        for h in waiting {
            h.await.unwrap().unwrap();
        }
    }

    /// Two nodes on one database: each sees the other's entries, sequences
    /// continue across them, and both hand out the same paging keys.
    #[tokio::test]
    async fn postgres_nodes_share_entries_and_sequences() {
        let f = Fixture::postgres();
        let (node_a, node_b) = (f.open(), f.open());
        let a = imsi(1);
        node_a.append(entry(&a, 7, "from-a")).await.unwrap();
        node_b.append(entry(&a, 7, "from-b")).await.unwrap();
        node_a.append(entry(&a, 9, "later")).await.unwrap();
        for node in [&node_a, &node_b] {
            let got = node.get(&a, 7).unwrap();
            assert_eq!(bodies(&got), ["from-a", "from-b"]);
            assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1]);
            let page = node.query(&a, &Query::all_ascending(1)).unwrap();
            assert_eq!(page.next_key.as_deref(), Some("7_001010000000001_0"));
        }
        // Concurrent appends from both nodes into one millisecond all land.
        let futs: Vec<_> = (0..20)
            .map(|i| {
                let node = if i % 2 == 0 { &node_a } else { &node_b };
                node.append(entry(&a, 8, &format!("c{i}")))
            })
            .collect();
        for r in futures_util::future::join_all(futs).await {
            r.unwrap();
        }
        let seqs: Vec<u32> = node_b.get(&a, 8).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
        // A delete on one node is seen by the other.
        assert!(node_b.delete(&a, 7).unwrap());
        assert!(node_a.get(&a, 7).unwrap().is_empty());
        // The budget is the shared table's: a sweep (here deleting nothing)
        // measures what every node wrote.
        let left: u64 = (0..20)
            .map(|i| format!("c{i}"))
            .chain(["later".to_owned()])
            .map(|c| entry_cost(15, VALUE_OVERHEAD + 10 + c.len()))
            .sum();
        assert_ne!(node_a.stored_bytes(), left);
        assert_eq!(node_a.sweep_expired(0).unwrap(), 0);
        assert_eq!(node_a.stored_bytes(), left);
    }

    /// PostgreSQL down: appends and reads fail with a retryable error (503),
    /// nothing panics; once it is back, the pool reconnects.
    #[tokio::test]
    async fn postgres_outage_is_retryable() {
        let mut f = Fixture::postgres();
        let store = f.open();
        let a = imsi(1);
        store.append(entry(&a, 1, "before")).await.unwrap();
        f.pg.as_mut().unwrap().stop();
        let e = store.append(entry(&a, 2, "during")).await.unwrap_err();
        assert!(matches!(e, HarvestError::Postgres(_)), "{e}");
        assert_eq!(error_status(&e), (503, true));
        let e = store.query(&a, &Query::all_ascending(10)).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(store.delete(&a, 1).unwrap_err().is_retryable());
        assert!(store.sweep_expired(now_ms()).unwrap_err().is_retryable());

        f.pg.as_mut().unwrap().restart();
        store.append(entry(&a, 3, "after")).await.unwrap();
        let page = store.query(&a, &Query::all_ascending(10)).unwrap();
        assert_eq!(bodies(&page.entries), ["before", "after"]);
    }

    #[test]
    fn postgres_unreachable_at_open_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e =
            HarvestStore::open_postgres(&format!("postgres://u@127.0.0.1:{port}/db"), settings())
                .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let e = HarvestStore::open_postgres("postgres://u@h:notaport/db", settings()).unwrap_err();
        assert!(matches!(e, HarvestError::Postgres(_)), "{e}");
    }
}
