//! The Harvest Data store: one redb file, one writer thread, group commit.
//!
//! # Layout
//!
//! * `harvest_entries`: `(imsi, time_ms, seq) → value` (see
//!   [`entry`](super::entry) for the value). One SIM's entries between two
//!   times, in either order, are one range scan; `seq` keeps entries of one
//!   SIM in one millisecond apart (0, 1, 2, … in arrival order).
//! * `harvest_by_time`: `(time_ms, imsi, seq) → ()`, an index so the retention
//!   sweep reads only what expires instead of every SIM's history.
//!
//! # Writes
//!
//! [`HarvestStore::append`] hands the entry to a bounded queue and waits. One
//! writer thread takes everything waiting (up to [`MAX_BATCH`]), writes it in
//! one durable redb transaction and only then answers each caller, so a
//! device's `201` means the entry is on disk, and a burst of devices costs one
//! fsync rather than one each. A full queue is reported as
//! [`HarvestError::Busy`] at once (the ingress answers 503/429), never waited
//! on. The queue is bounded in bytes too, since every entry is at most
//! `max_entry_bytes`.
//!
//! Deletes and the retention sweep open their own write transactions; redb
//! runs one at a time, so they simply queue behind the writer's commit.
//! Reads use redb's MVCC snapshots and never wait for a writer; they do disk
//! I/O, so async callers run them on the blocking pool (see
//! [`api`](super::api)).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableTable, ReadableTableMetadata as _, TableDefinition};
use simgate_control::config::HarvestSettings;
use simgate_control::Imsi;
use tokio::sync::{mpsc, oneshot, watch};

use super::entry::{
    decode_value, encode_value, CorruptValue, Entry, NewEntry, MAX_CONTENT_TYPE_BYTES,
};
use super::query::{split_page, Position, Query, Sort};

/// `(imsi, time_ms, seq) → value`.
const ENTRIES: TableDefinition<'_, (&str, u64, u32), &[u8]> =
    TableDefinition::new("harvest_entries");
/// `(time_ms, imsi, seq) → ()`, for retention.
const BY_TIME: TableDefinition<'_, (u64, &str, u32), ()> = TableDefinition::new("harvest_by_time");

/// Entries waiting for the writer before `append` answers `Busy`.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most entries written in one transaction; a longer queue takes several.
pub const MAX_BATCH: usize = 1024;
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
    /// The database file or directory could not be opened.
    #[error("harvest store I/O: {0}")]
    Io(#[source] Arc<std::io::Error>),
    /// redb failed; nothing of the failed transaction was written.
    #[error("harvest storage: {0}")]
    Storage(#[source] Arc<redb::Error>),
    /// A stored value could not be decoded.
    #[error(transparent)]
    Corrupt(#[from] CorruptValue),
}

impl HarvestError {
    /// The device or client sent something the store will never accept.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. } | Self::ContentTypeTooLong { .. } | Self::SequenceExhausted
        )
    }

    /// The same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Busy | Self::Storage(_) | Self::Io(_))
    }
}

/// How the ingress answers a failed [`HarvestStore::append`]: the HTTP status
/// and whether the device should retry later (send `Retry-After`).
///
/// * too large → 413; content type too long → 400;
/// * queue full, or 2³² entries in one millisecond → 429, retry;
/// * `max_bytes` reached → 507;
/// * writer stopped, storage or I/O failure → 503, retry;
/// * a corrupt stored value (never from `append`) → 500.
pub fn error_status(e: &HarvestError) -> (u16, bool) {
    match e {
        HarvestError::TooLarge { .. } => (413, false),
        HarvestError::ContentTypeTooLong { .. } => (400, false),
        HarvestError::Busy | HarvestError::SequenceExhausted => (429, true),
        HarvestError::Full { .. } => (507, false),
        HarvestError::Closed | HarvestError::Storage(_) | HarvestError::Io(_) => (503, true),
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

/// An entry waiting for the writer, with the channel its caller waits on.
struct Pending {
    entry: NewEntry,
    done: oneshot::Sender<Result<(), HarvestError>>,
}

/// The Harvest Data store. Cheap to share as `Arc<HarvestStore>`; dropping
/// the last `Arc` lets the writer finish what is queued and joins it.
pub struct HarvestStore {
    db: Arc<Database>,
    settings: HarvestSettings,
    /// Bytes of keys and values stored (both tables), for `max_bytes`:
    /// measured at open, then kept up to date by every write and delete.
    used: Arc<AtomicU64>,
    /// Entries refused because the store was full.
    refused_full: AtomicU64,
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Pending>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HarvestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarvestStore")
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
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                simgate_control::secret_file::create_private_dir(dir)?;
            }
        }
        // What devices sent: owner only (0600).
        simgate_control::secret_file::ensure_private_file(path)?;
        let db = Arc::new(Database::create(path)?);
        // Create the tables once so readers never meet a missing one.
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(BY_TIME)?;
        txn.commit()?;
        let used = {
            let txn = db.begin_read()?;
            let entries = txn.open_table(ENTRIES)?.stats()?.stored_bytes();
            let by_time = txn.open_table(BY_TIME)?.stats()?.stored_bytes();
            Arc::new(AtomicU64::new(entries + by_time))
        };

        let (tx, rx) = mpsc::channel(capacity.max(1));
        let writer_db = Arc::clone(&db);
        let writer_used = Arc::clone(&used);
        let writer = std::thread::Builder::new()
            .name("harvest-writer".into())
            .spawn(move || run_writer(&writer_db, rx, &writer_used))?;
        Ok(Arc::new(Self {
            db,
            settings,
            used,
            refused_full: AtomicU64::new(0),
            queue: Some(tx),
            writer: Some(writer),
        }))
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

    /// Stores `entry` durably. Returns once it is committed to disk, or at
    /// once with [`HarvestError::Busy`] when the write queue is full.
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
        let queue = self.queue.as_ref().ok_or(HarvestError::Closed)?;
        let (done, wait) = oneshot::channel();
        queue
            .try_send(Pending { entry, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => HarvestError::Busy,
                mpsc::error::TrySendError::Closed(_) => HarvestError::Closed,
            })?;
        wait.await.map_err(|_| HarvestError::Closed)?
    }

    /// One page of `imsi`'s entries. Blocking (disk reads): call it from
    /// `spawn_blocking` in async code.
    pub fn query(&self, imsi: &Imsi, query: &Query) -> Result<Page, HarvestError> {
        let Some(bounds) = query.bounds() else {
            return Ok(Page::default());
        };
        let (lo, hi) = bounds.into_inner();
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let range =
            table.range((imsi.as_str(), lo.time, lo.seq)..=(imsi.as_str(), hi.time, hi.seq))?;
        // One more than asked for tells whether there is a next page.
        let want = query.limit.saturating_add(1);
        let mut items = Vec::with_capacity(want.min(64));
        match query.sort {
            Sort::Asc => collect(range, want, imsi, &mut items)?,
            Sort::Desc => collect(range.rev(), want, imsi, &mut items)?,
        }
        let (entries, next_key) = split_page(items, query.limit, imsi, |e: &Entry| Position {
            time: e.time,
            seq: e.seq,
        });
        Ok(Page { entries, next_key })
    }

    /// Every entry of `imsi` at millisecond `time`, in arrival order.
    /// Blocking.
    pub fn get(&self, imsi: &Imsi, time: u64) -> Result<Vec<Entry>, HarvestError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let range = table.range((imsi.as_str(), time, 0)..=(imsi.as_str(), time, u32::MAX))?;
        let mut out = Vec::new();
        collect(range, usize::MAX, imsi, &mut out)?;
        Ok(out)
    }

    /// Deletes every entry of `imsi` at millisecond `time`; `false` if there
    /// was none. Blocking (waits for the write lock).
    pub fn delete(&self, imsi: &Imsi, time: u64) -> Result<bool, HarvestError> {
        let txn = self.db.begin_write()?;
        let mut freed = 0;
        let deleted = {
            let mut entries = txn.open_table(ENTRIES)?;
            let mut by_time = txn.open_table(BY_TIME)?;
            let mut seqs = Vec::new();
            for item in entries.range((imsi.as_str(), time, 0)..=(imsi.as_str(), time, u32::MAX))? {
                let (key, _) = item?;
                seqs.push(key.value().2);
            }
            for &seq in &seqs {
                if let Some(v) = entries.remove((imsi.as_str(), time, seq))? {
                    freed += entry_cost(imsi.as_str().len(), v.value().len());
                }
                by_time.remove((time, imsi.as_str(), seq))?;
            }
            !seqs.is_empty()
        };
        if deleted {
            txn.commit()?;
            self.release(freed);
        } else {
            txn.abort()?;
        }
        Ok(deleted)
    }

    /// Deletes every entry older than `retention_days` before `now_ms` and
    /// returns how many. `retention_days = 0` keeps everything (a typo must
    /// not wipe the store). Blocking.
    pub fn sweep_expired(&self, now_ms: u64) -> Result<usize, HarvestError> {
        if self.settings.retention_days == 0 {
            return Ok(0);
        }
        let cutoff = now_ms
            .saturating_sub(u64::from(self.settings.retention_days).saturating_mul(MS_PER_DAY));
        let mut total = 0;
        loop {
            let txn = self.db.begin_write()?;
            let mut freed = 0;
            let n = {
                let mut entries = txn.open_table(ENTRIES)?;
                let mut by_time = txn.open_table(BY_TIME)?;
                let mut expired: Vec<(u64, String, u32)> = Vec::new();
                for item in by_time.range(..(cutoff, "", 0))?.take(SWEEP_CHUNK) {
                    let (key, _) = item?;
                    let (time, imsi, seq) = key.value();
                    expired.push((time, imsi.to_owned(), seq));
                }
                for (time, imsi, seq) in &expired {
                    if let Some(v) = entries.remove((imsi.as_str(), *time, *seq))? {
                        freed += entry_cost(imsi.len(), v.value().len());
                    }
                    by_time.remove((*time, imsi.as_str(), *seq))?;
                }
                expired.len()
            };
            txn.commit()?;
            self.release(freed);
            total += n;
            if n < SWEEP_CHUNK {
                return Ok(total);
            }
        }
    }
}

impl HarvestStore {
    fn release(&self, bytes: u64) {
        // Never below zero: the count at open is redb's, the rest estimates.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}

/// Bytes before the content type and content in a stored value.
const VALUE_OVERHEAD: usize = 3;

/// What one entry counts against `max_bytes`: its value and both keys
/// (`(imsi, time, seq)` twice, once per table).
fn entry_cost(imsi_len: usize, value_len: usize) -> u64 {
    let key = imsi_len + 8 + 4;
    u64::try_from(2 * key + value_len).unwrap_or(u64::MAX)
}

impl Drop for HarvestStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is left and exit;
        // joining it releases the database file for a later `open`.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("harvest writer thread panicked");
            }
        }
    }
}

/// Decodes up to `want` rows of `imsi` into `out`.
fn collect<'a>(
    rows: impl Iterator<
        Item = Result<
            (
                redb::AccessGuard<'a, (&'static str, u64, u32)>,
                redb::AccessGuard<'a, &'static [u8]>,
            ),
            redb::StorageError,
        >,
    >,
    want: usize,
    imsi: &Imsi,
    out: &mut Vec<Entry>,
) -> Result<(), HarvestError> {
    for row in rows.take(want) {
        let (key, value) = row?;
        let (_, time, seq) = key.value();
        let (content_type, category, content) = decode_value(value.value())?;
        out.push(Entry {
            imsi: imsi.clone(),
            time,
            seq,
            content_type,
            category,
            content,
        });
    }
    Ok(())
}

/// The writer thread: wait for an entry, take whatever else is queued, write
/// it all in one transaction, answer every caller, repeat until the queue
/// closes.
fn run_writer(db: &Database, mut queue: mpsc::Receiver<Pending>, used: &AtomicU64) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        match write_batch(db, &batch) {
            Ok((results, added)) => {
                used.fetch_add(added, Ordering::Relaxed);
                for (pending, result) in batch.drain(..).zip(results) {
                    // The caller may have gone away; its entry is stored anyway.
                    let _ = pending.done.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "harvest commit failed");
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes `batch` in one durable transaction. The outer error fails the whole
/// batch (nothing was written); the inner results are per entry.
#[allow(clippy::type_complexity)]
fn write_batch(
    db: &Database,
    batch: &[Pending],
) -> Result<(Vec<Result<(), HarvestError>>, u64), HarvestError> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(batch.len());
    let mut added = 0;
    {
        let mut entries = txn.open_table(ENTRIES)?;
        let mut by_time = txn.open_table(BY_TIME)?;
        for Pending { entry, .. } in batch {
            let imsi = entry.imsi.as_str();
            // Next sequence in this millisecond; the table already holds the
            // earlier entries of this batch.
            let last = entries
                .range((imsi, entry.time, 0)..=(imsi, entry.time, u32::MAX))?
                .next_back()
                .transpose()?
                .map(|(key, _)| key.value().2);
            let seq = match last {
                None => 0,
                Some(s) => match s.checked_add(1) {
                    Some(seq) => seq,
                    None => {
                        results.push(Err(HarvestError::SequenceExhausted));
                        continue;
                    }
                },
            };
            let value = encode_value(&entry.content_type, entry.category, &entry.content);
            entries.insert((imsi, entry.time, seq), value.as_slice())?;
            by_time.insert((entry.time, imsi, seq), ())?;
            added += entry_cost(imsi.len(), value.len());
            results.push(Ok(()));
        }
    }
    txn.commit()?;
    Ok((results, added))
}

pub use simgate_control::clock::now_ms;

/// A SIM that has entries: its IMSI and the time of its newest one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub imsi: String,
    pub last_time: u64,
}

impl HarvestStore {
    /// Up to `limit` SIMs with entries, in IMSI order, starting after
    /// `after`; one seek per SIM, not a scan of its entries. Blocking.
    pub fn resources(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Resource>, HarvestError> {
        use std::ops::Bound;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let mut out = Vec::new();
        let mut cursor: Option<String> = after.map(str::to_owned);
        while out.len() < limit {
            let first = match &cursor {
                Some(c) => table
                    .range::<(&str, u64, u32)>((
                        Bound::Excluded((c.as_str(), u64::MAX, u32::MAX)),
                        Bound::Unbounded,
                    ))?
                    .next(),
                None => table.iter()?.next(),
            };
            let Some(item) = first else { break };
            let imsi = item?.0.value().0.to_owned();
            let last = table
                .range((imsi.as_str(), 0, 0)..=(imsi.as_str(), u64::MAX, u32::MAX))?
                .next_back();
            let last_time = match last {
                Some(item) => item?.0.value().1,
                None => 0,
            };
            out.push(Resource {
                imsi: imsi.clone(),
                last_time,
            });
            cursor = Some(imsi);
        }
        Ok(out)
    }
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
    use super::*;
    use crate::services::harvest::entry::Category;
    use crate::services::harvest::query::{Cursor, RawQuery};
    use bytes::Bytes;

    fn settings() -> HarvestSettings {
        HarvestSettings {
            max_entry_bytes: 16,
            retention_days: 1,
            max_bytes: 0,
        }
    }

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

    fn open(dir: &tempfile::TempDir) -> Arc<HarvestStore> {
        HarvestStore::open(dir.path().join("sub/harvest.redb"), settings()).unwrap()
    }

    fn bodies(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8(e.content.to_vec()).unwrap())
            .collect()
    }

    /// `max_bytes`: full → `Full` (507), counted; deleting makes room, and
    /// the count survives a reopen (measured from redb).
    #[tokio::test]
    async fn disk_budget_refuses_when_full_and_frees_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budget.redb");
        let a = imsi(1);
        // 15-digit IMSI: 2 × 27 key bytes + 3 + 10 ("text/plain") + 4 = 71.
        let cost = entry_cost(15, VALUE_OVERHEAD + 10 + 4);
        assert_eq!(cost, 71);
        let settings = HarvestSettings {
            max_bytes: 3 * cost,
            ..settings()
        };
        let store = HarvestStore::open(&path, settings.clone()).unwrap();
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
        let store = HarvestStore::open(&path, settings).unwrap();
        assert!(store.stored_bytes() > 0);
        assert!(store.append(entry(&a, 300, "abcd")).await.is_err());
    }

    #[tokio::test]
    async fn same_millisecond_entries_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (a, b) = (imsi(1), imsi(2));
        // Concurrent appends land in one or a few group commits.
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

    #[tokio::test]
    async fn paging_through_the_store_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (a, b) = (imsi(1), imsi(2));
        let times = [5u64, 5, 5, 7, 9, 9, 12, 12, 12, 12, 20];
        for (i, t) in times.iter().enumerate() {
            store.append(entry(&a, *t, &format!("a{i}"))).await.unwrap();
            store.append(entry(&b, *t, &format!("b{i}"))).await.unwrap();
        }
        for sort in ["asc", "desc"] {
            for limit in 1..=12 {
                let mut got = Vec::new();
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
                        Some(k) => key = Some(k),
                        None => break,
                    }
                }
                let mut want: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
                if sort == "desc" {
                    want.reverse();
                }
                assert_eq!(got, want, "sort={sort} limit={limit}");
            }
        }
    }

    #[tokio::test]
    async fn soracom_key_skips_the_whole_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
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

    #[tokio::test]
    async fn limits_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
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

    #[tokio::test]
    async fn delete_removes_the_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
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

    #[tokio::test]
    async fn retention_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
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

        let keep = HarvestStore::open(
            dir.path().join("keep.redb"),
            HarvestSettings {
                max_entry_bytes: 16,
                retention_days: 0,
                max_bytes: 0,
            },
        )
        .unwrap();
        keep.append(entry(&a, 0, "a")).await.unwrap();
        assert_eq!(keep.sweep_expired(now).unwrap(), 0);
    }

    #[tokio::test]
    async fn retention_task_sweeps_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
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
        for _ in 0..100 {
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

    #[tokio::test]
    async fn sweep_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
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

    #[tokio::test]
    async fn reopening_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let a = imsi(1);
        {
            let store = open(&dir);
            store.append(entry(&a, 1, "one")).await.unwrap();
            store.append(entry(&a, 1, "two")).await.unwrap();
        }
        let store = open(&dir);
        assert_eq!(bodies(&store.get(&a, 1).unwrap()), ["one", "two"]);
        store.append(entry(&a, 1, "three")).await.unwrap();
        assert_eq!(store.get(&a, 1).unwrap()[2].seq, 2);
    }

    #[tokio::test]
    async fn full_queue_is_busy_not_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            HarvestStore::open_with_capacity(dir.path().join("h.redb"), settings(), 2).unwrap();
        let a = imsi(1);
        // Hold the write lock so the writer cannot drain the queue.
        let blocker = store.db.begin_write().unwrap();
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
}
