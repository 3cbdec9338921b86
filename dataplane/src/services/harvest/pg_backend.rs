//! The fleet Harvest backend: every node keeps its entries in one PostgreSQL
//! table, so a query on any node sees what every node stored.
//!
//! # Table
//!
//! ```sql
//! harvest_entries(imsi text COLLATE "C", time_ms bigint, seq bigint,
//!                 content_type text, category text, content bytea,
//!                 PRIMARY KEY (imsi, time_ms, seq))
//! ```
//!
//! The primary key is the redb key: `seq` numbers one SIM's entries of one
//! millisecond 0, 1, 2, … in arrival order, whichever node they arrived at.
//! An insert takes `max(seq) + 1` and `ON CONFLICT DO NOTHING`; when two nodes
//! race for the same number, the loser sees no row back and tries again with
//! the winner's row visible. `COLLATE "C"` makes IMSI order byte order, as in
//! redb (`/v1/data/resources` pages by IMSI). An index on `time_ms` serves the
//! retention sweep.
//!
//! # Runtime
//!
//! The store's API is partly blocking (reads, deletes, the sweep — callers
//! run them on the blocking pool, as with redb), and the store must outlive
//! whatever runtime opened it. So the backend owns a small runtime of its
//! own: connections are driven there, every operation runs there as a task,
//! and callers wait on a channel (blocking calls) or the task's handle
//! (`append`). A dropped `append` future leaves its entry to be written,
//! as with redb's queue.
//!
//! Every operation is bounded by [`OP_TIMEOUT`], so an unreachable server
//! costs a device a `503` (retry), never a hang; pool connections that broke
//! are replaced on the next checkout.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use simgate_control::Imsi;
use tokio::sync::Semaphore;
use tokio_postgres::NoTls;

use super::entry::{Category, CorruptValue, Entry, NewEntry};
use super::query::{Position, Sort};
use super::store::{release, HarvestError, Resource, VALUE_OVERHEAD};

/// Connections per node. Appends are single statements, so this bounds the
/// node's concurrent commits; PostgreSQL groups their WAL flushes.
const POOL_SIZE: usize = 16;
/// Longest wait for one operation (checkout, statement, result).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a new connection or a free pooled one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Inserts retried after losing a sequence number to another writer.
const SEQ_RETRIES: usize = 16;

/// What an entry counts against `max_bytes`, in SQL: exactly
/// [`entry_cost`](super::store::entry_cost) of the redb layout, so the
/// budget means the same on both backends.
macro_rules! cost_sql {
    () => {
        "(2 * (octet_length(imsi) + 12) + 3 + octet_length(content_type) + octet_length(content))"
    };
}
const _: () = assert!(VALUE_OVERHEAD == 3);

/// The advisory lock serialises schema creation when several nodes start at
/// once (`CREATE TABLE IF NOT EXISTS` alone can race on the catalog).
const SCHEMA: &str = concat!(
    "BEGIN;",
    "SELECT pg_advisory_xact_lock(7426017);",
    "CREATE TABLE IF NOT EXISTS harvest_entries (",
    " imsi text COLLATE \"C\" NOT NULL,",
    " time_ms bigint NOT NULL,",
    " seq bigint NOT NULL CHECK (seq BETWEEN 0 AND 4294967295),",
    " content_type text NOT NULL,",
    " category text NOT NULL,",
    " content bytea NOT NULL,",
    " PRIMARY KEY (imsi, time_ms, seq));",
    "CREATE INDEX IF NOT EXISTS harvest_entries_time_ms ON harvest_entries (time_ms);",
    "COMMIT;"
);

const INSERT: &str = "WITH next AS (\
     SELECT coalesce(max(seq) + 1, 0) AS seq FROM harvest_entries \
     WHERE imsi = $1::text AND time_ms = $2::bigint) \
     INSERT INTO harvest_entries (imsi, time_ms, seq, content_type, category, content) \
     SELECT $1::text, $2::bigint, next.seq, $3::text, $4::text, $5::bytea FROM next \
     WHERE next.seq <= 4294967295 \
     ON CONFLICT (imsi, time_ms, seq) DO NOTHING RETURNING seq";
const LAST_SEQ: &str =
    "SELECT max(seq) FROM harvest_entries WHERE imsi = $1::text AND time_ms = $2::bigint";
const SCAN_ASC: &str = "SELECT time_ms, seq, content_type, category, content FROM harvest_entries \
     WHERE imsi = $1 AND (time_ms, seq) >= ($2, $3) AND (time_ms, seq) <= ($4, $5) \
     ORDER BY time_ms, seq LIMIT $6";
const SCAN_DESC: &str =
    "SELECT time_ms, seq, content_type, category, content FROM harvest_entries \
     WHERE imsi = $1 AND (time_ms, seq) >= ($2, $3) AND (time_ms, seq) <= ($4, $5) \
     ORDER BY time_ms DESC, seq DESC LIMIT $6";
const DELETE_AT: &str = concat!(
    "WITH d AS (DELETE FROM harvest_entries WHERE imsi = $1 AND time_ms = $2 RETURNING ",
    cost_sql!(),
    " AS c) SELECT count(*), coalesce(sum(c), 0)::bigint FROM d"
);
const SWEEP: &str = concat!(
    "WITH d AS (DELETE FROM harvest_entries WHERE (imsi, time_ms, seq) IN (",
    "SELECT imsi, time_ms, seq FROM harvest_entries WHERE time_ms < $1 LIMIT $2) RETURNING ",
    cost_sql!(),
    " AS c) SELECT count(*), coalesce(sum(c), 0)::bigint FROM d"
);
const MEASURE: &str = concat!(
    "SELECT coalesce(sum(",
    cost_sql!(),
    "), 0)::bigint FROM harvest_entries"
);
/// One index seek per SIM (a "loose index scan"), not a scan of every entry.
const RESOURCES: &str = "WITH RECURSIVE sims(imsi) AS (\
     (SELECT imsi FROM harvest_entries WHERE imsi > $1 ORDER BY imsi LIMIT 1) \
     UNION ALL \
     SELECT (SELECT e.imsi FROM harvest_entries e WHERE e.imsi > s.imsi ORDER BY e.imsi LIMIT 1) \
     FROM sims s WHERE s.imsi IS NOT NULL) \
     SELECT s.imsi, (SELECT max(e.time_ms) FROM harvest_entries e WHERE e.imsi = s.imsi) \
     FROM sims s WHERE s.imsi IS NOT NULL LIMIT $2";

/// Why PostgreSQL could not serve a request. All of them are worth a retry
/// (`503`): the server is down, restarting, overloaded or misconfigured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    #[error("invalid [cluster] postgres URL: {0}")]
    Config(#[source] tokio_postgres::Error),
    #[error("no PostgreSQL connection: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("PostgreSQL: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot start the PostgreSQL client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("PostgreSQL connection pool: {0}")]
    Build(String),
}

impl From<PgError> for HarvestError {
    fn from(e: PgError) -> Self {
        Self::Postgres(Arc::new(e))
    }
}

impl From<tokio_postgres::Error> for HarvestError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Query(e).into()
    }
}

pub(super) struct PgBackend {
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Appends in flight; none free means [`HarvestError::Busy`], as a full
    /// redb queue does.
    inflight: Arc<Semaphore>,
}

/// A time as PostgreSQL's `bigint`. Stored times never exceed it (the
/// ingress bounds them by now + skew; [`PgBackend::append`] refuses more).
fn sql_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgBackend {
    /// Connects, creates the table if needed and measures what is stored
    /// into `used`. Blocking.
    pub(super) fn open(
        url: &str,
        capacity: usize,
        used: &Arc<AtomicU64>,
    ) -> Result<Self, HarvestError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(PgError::Config)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("simgate-harvest");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("harvest-pg")
            .enable_all()
            .build()
            .map_err(PgError::Runtime)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A broken connection fails one statement, is dropped, and
                // the next checkout opens a new one: no probe per checkout.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Build(e.to_string()))?;
        let backend = Self {
            rt: Some(rt),
            pool,
            inflight: Arc::new(Semaphore::new(capacity.max(1))),
        };
        let pool = backend.pool.clone();
        let measured = backend.block(async move {
            let client = pool.get().await.map_err(PgError::Pool)?;
            client.batch_execute(SCHEMA).await?;
            let row = client.query_one(MEASURE, &[]).await?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })?;
        used.store(measured, Ordering::Relaxed);
        Ok(backend)
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime, HarvestError> {
        self.rt.as_ref().ok_or(HarvestError::Closed)
    }

    /// Runs `op` on the backend's runtime, bounded by [`OP_TIMEOUT`], and
    /// waits for it on this thread (not a runtime's: callers are on the
    /// blocking pool, or tests).
    fn block<T: Send + 'static>(
        &self,
        op: impl Future<Output = Result<T, PgError>> + Send + 'static,
    ) -> Result<T, HarvestError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime()?.spawn(async move {
            let _ = tx.send(bounded(op).await);
        });
        // A closed channel: the runtime shut down under the task.
        Ok(rx.recv().map_err(|_| HarvestError::Closed)??)
    }

    pub(super) async fn append(
        &self,
        entry: NewEntry,
        used: &Arc<AtomicU64>,
    ) -> Result<(), HarvestError> {
        let permit = Arc::clone(&self.inflight)
            .try_acquire_owned()
            .map_err(|_| HarvestError::Busy)?;
        let time = i64::try_from(entry.time)
            .map_err(|_| HarvestError::TimeOutOfRange { time: entry.time })?;
        let pool = self.pool.clone();
        let used = Arc::clone(used);
        let task = self.runtime()?.spawn(async move {
            let _permit = permit;
            let r = bounded(insert(pool, entry, time)).await;
            match r {
                Ok(Ok(cost)) => {
                    used.fetch_add(cost, Ordering::Relaxed);
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "harvest append to PostgreSQL failed");
                    Err(HarvestError::from(e))
                }
            }
        });
        task.await.map_err(|_| HarvestError::Closed)?
    }

    pub(super) fn scan(
        &self,
        imsi: &Imsi,
        lo: Position,
        hi: Position,
        sort: Sort,
        want: usize,
    ) -> Result<Vec<Entry>, HarvestError> {
        // Nothing is stored past i64::MAX; a range starting there is empty.
        if i64::try_from(lo.time).is_err() {
            return Ok(Vec::new());
        }
        let hi = if i64::try_from(hi.time).is_err() {
            Position::last_at(i64::MAX as u64)
        } else {
            hi
        };
        let sql = match sort {
            Sort::Asc => SCAN_ASC,
            Sort::Desc => SCAN_DESC,
        };
        let pool = self.pool.clone();
        let key = imsi.as_str().to_owned();
        let rows = self.block(async move {
            let client = pool.get().await.map_err(PgError::Pool)?;
            let stmt = client.prepare_cached(sql).await?;
            Ok(client
                .query(
                    &stmt,
                    &[
                        &key,
                        &sql_time(lo.time),
                        &i64::from(lo.seq),
                        &sql_time(hi.time),
                        &i64::from(hi.seq),
                        &sql_limit(want),
                    ],
                )
                .await?)
        })?;
        rows.iter().map(|r| to_entry(imsi, r)).collect()
    }

    pub(super) fn delete(
        &self,
        imsi: &Imsi,
        time: u64,
        used: &AtomicU64,
    ) -> Result<bool, HarvestError> {
        let Ok(time) = i64::try_from(time) else {
            return Ok(false);
        };
        let pool = self.pool.clone();
        let key = imsi.as_str().to_owned();
        let (n, freed) = self.block(async move {
            let client = pool.get().await.map_err(PgError::Pool)?;
            let stmt = client.prepare_cached(DELETE_AT).await?;
            let row = client.query_one(&stmt, &[&key, &time]).await?;
            Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        })?;
        release(used, u64::try_from(freed).unwrap_or(0));
        Ok(n > 0)
    }

    /// Deletes up to `chunk` entries older than `cutoff` and returns how
    /// many. Nodes sweeping at once delete disjoint rows (a row deleted by
    /// one is skipped by the other), so the entries are counted once.
    pub(super) fn sweep_chunk(
        &self,
        cutoff: u64,
        chunk: usize,
        used: &AtomicU64,
    ) -> Result<usize, HarvestError> {
        let pool = self.pool.clone();
        let (n, freed) = self.block(async move {
            let client = pool.get().await.map_err(PgError::Pool)?;
            let stmt = client.prepare_cached(SWEEP).await?;
            let row = client
                .query_one(&stmt, &[&sql_time(cutoff), &sql_limit(chunk)])
                .await?;
            Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        })?;
        release(used, u64::try_from(freed).unwrap_or(0));
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Measures the whole table (every node's entries) into `used`: the
    /// budget is shared, and other nodes' writes are seen only this way.
    pub(super) fn remeasure(&self, used: &AtomicU64) -> Result<(), HarvestError> {
        let pool = self.pool.clone();
        let measured = self.block(async move {
            let client = pool.get().await.map_err(PgError::Pool)?;
            let row = client.query_one(MEASURE, &[]).await?;
            Ok(row.get::<_, i64>(0))
        })?;
        used.store(u64::try_from(measured).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn resources(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Resource>, HarvestError> {
        let pool = self.pool.clone();
        let after = after.unwrap_or("").to_owned();
        let rows = self.block(async move {
            let client = pool.get().await.map_err(PgError::Pool)?;
            let stmt = client.prepare_cached(RESOURCES).await?;
            Ok(client.query(&stmt, &[&after, &sql_limit(limit)]).await?)
        })?;
        rows.iter()
            .map(|r| {
                let last: Option<i64> = r.try_get(1)?;
                Ok(Resource {
                    imsi: r.try_get(0)?,
                    last_time: last.and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
                })
            })
            .collect()
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; shut it down on a plain
        // thread. Its tasks (appends whose callers left) end with it.
        if let Some(rt) = self.rt.take() {
            let stopper = std::thread::Builder::new()
                .name("harvest-pg-stop".into())
                .spawn(move || rt.shutdown_timeout(Duration::from_secs(5)));
            match stopper {
                Ok(t) => {
                    let _ = t.join();
                }
                Err(e) => tracing::error!(error = %e, "cannot stop the harvest PostgreSQL runtime"),
            }
        }
    }
}

async fn bounded<T>(op: impl Future<Output = Result<T, PgError>>) -> Result<T, PgError> {
    tokio::time::timeout(OP_TIMEOUT, op)
        .await
        .map_err(|_| PgError::Timeout(OP_TIMEOUT))?
}

/// Inserts `entry` under the next free sequence of its millisecond and
/// returns its cost. The outer error is PostgreSQL's; the inner one the
/// entry's own (2³² entries in one millisecond, or losing every race).
async fn insert(
    pool: Pool,
    entry: NewEntry,
    time: i64,
) -> Result<Result<u64, HarvestError>, PgError> {
    let client = pool.get().await.map_err(PgError::Pool)?;
    let stmt = client.prepare_cached(INSERT).await?;
    // PostgreSQL text cannot hold U+0000; no HTTP or MQTT content type
    // carries one, and dropping it beats refusing the entry.
    let content_type = entry.content_type.replace('\0', "");
    let imsi = entry.imsi.as_str();
    let category = entry.category.as_str();
    for _ in 0..SEQ_RETRIES {
        let rows = client
            .query(
                &stmt,
                &[&imsi, &time, &content_type, &category, &&entry.content[..]],
            )
            .await?;
        if !rows.is_empty() {
            let value_len = VALUE_OVERHEAD + content_type.len() + entry.content.len();
            return Ok(Ok(super::store::entry_cost(imsi.len(), value_len)));
        }
        let last: Option<i64> = client.query_one(LAST_SEQ, &[&imsi, &time]).await?.get(0);
        if last == Some(i64::from(u32::MAX)) {
            return Ok(Err(HarvestError::SequenceExhausted));
        }
        // Another writer took the number; its row is visible now.
    }
    tracing::warn!(imsi, time, "harvest append lost every sequence race");
    Ok(Err(HarvestError::Busy))
}

fn to_entry(imsi: &Imsi, row: &tokio_postgres::Row) -> Result<Entry, HarvestError> {
    let time: i64 = row.try_get(0)?;
    let seq: i64 = row.try_get(1)?;
    let category: &str = row.try_get(3)?;
    let content: Vec<u8> = row.try_get(4)?;
    Ok(Entry {
        imsi: imsi.clone(),
        time: u64::try_from(time).map_err(|_| CorruptValue("negative time"))?,
        seq: u32::try_from(seq).map_err(|_| CorruptValue("sequence out of range"))?,
        content_type: row.try_get(2)?,
        category: Category::from_name(category).ok_or(CorruptValue("unknown category"))?,
        content: Bytes::from(content),
    })
}
