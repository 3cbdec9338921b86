//! The single-node Harvest backend: one redb file, one writer thread, group
//! commit.
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
//! `append` hands the entry to a bounded queue and waits. One writer thread
//! takes everything waiting (up to [`MAX_BATCH`]), writes it in one durable
//! redb transaction and only then answers each caller, so a device's `201`
//! means the entry is on disk, and a burst of devices costs one fsync rather
//! than one each. A full queue is reported as [`HarvestError::Busy`] at once
//! (the ingress answers 503/429), never waited on. The queue is bounded in
//! bytes too, since every entry is at most `max_entry_bytes`.
//!
//! Deletes and the retention sweep open their own write transactions; redb
//! runs one at a time, so they simply queue behind the writer's commit.
//! Reads use redb's MVCC snapshots and never wait for a writer; they do disk
//! I/O, so async callers run them on the blocking pool (see
//! [`api`](super::api)).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, ReadableTable, ReadableTableMetadata as _, TableDefinition};
use simgate_control::Imsi;
use tokio::sync::{mpsc, oneshot};

use super::entry::{decode_value, encode_value, Entry, NewEntry};
use super::query::{Position, Sort};
use super::store::{entry_cost, release, HarvestError, Resource};

/// `(imsi, time_ms, seq) → value`.
const ENTRIES: TableDefinition<'_, (&str, u64, u32), &[u8]> =
    TableDefinition::new("harvest_entries");
/// `(time_ms, imsi, seq) → ()`, for retention.
const BY_TIME: TableDefinition<'_, (u64, &str, u32), ()> = TableDefinition::new("harvest_by_time");

/// Most entries written in one transaction; a longer queue takes several.
pub const MAX_BATCH: usize = 1024;

/// An entry waiting for the writer, with the channel its caller waits on.
struct Pending {
    entry: NewEntry,
    done: oneshot::Sender<Result<(), HarvestError>>,
}

pub(super) struct RedbBackend {
    pub(super) db: Arc<Database>,
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Pending>>,
    writer: Option<JoinHandle<()>>,
}

impl RedbBackend {
    /// Opens (or creates) the file, starts the writer, and returns the
    /// backend with the bytes already stored.
    pub(super) fn open(
        path: &Path,
        capacity: usize,
        used: &Arc<AtomicU64>,
    ) -> Result<Self, HarvestError> {
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
        {
            let txn = db.begin_read()?;
            let entries = txn.open_table(ENTRIES)?.stats()?.stored_bytes();
            let by_time = txn.open_table(BY_TIME)?.stats()?.stored_bytes();
            used.store(entries + by_time, Ordering::Relaxed);
        }

        let (tx, rx) = mpsc::channel(capacity.max(1));
        let writer_db = Arc::clone(&db);
        let writer_used = Arc::clone(used);
        let writer = std::thread::Builder::new()
            .name("harvest-writer".into())
            .spawn(move || run_writer(&writer_db, rx, &writer_used))?;
        Ok(Self {
            db,
            queue: Some(tx),
            writer: Some(writer),
        })
    }

    pub(super) async fn append(&self, entry: NewEntry) -> Result<(), HarvestError> {
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

    /// Up to `want` entries of `imsi` in `[lo, hi]`, in `sort` order.
    pub(super) fn scan(
        &self,
        imsi: &Imsi,
        lo: Position,
        hi: Position,
        sort: Sort,
        want: usize,
    ) -> Result<Vec<Entry>, HarvestError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let range =
            table.range((imsi.as_str(), lo.time, lo.seq)..=(imsi.as_str(), hi.time, hi.seq))?;
        let mut items = Vec::with_capacity(want.min(64));
        match sort {
            Sort::Asc => collect(range, want, imsi, &mut items)?,
            Sort::Desc => collect(range.rev(), want, imsi, &mut items)?,
        }
        Ok(items)
    }

    pub(super) fn delete(
        &self,
        imsi: &Imsi,
        time: u64,
        used: &AtomicU64,
    ) -> Result<bool, HarvestError> {
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
            release(used, freed);
        } else {
            txn.abort()?;
        }
        Ok(deleted)
    }

    /// Deletes up to `chunk` entries older than `cutoff` in one transaction
    /// and returns how many.
    pub(super) fn sweep_chunk(
        &self,
        cutoff: u64,
        chunk: usize,
        used: &AtomicU64,
    ) -> Result<usize, HarvestError> {
        let txn = self.db.begin_write()?;
        let mut freed = 0;
        let n = {
            let mut entries = txn.open_table(ENTRIES)?;
            let mut by_time = txn.open_table(BY_TIME)?;
            let mut expired: Vec<(u64, String, u32)> = Vec::new();
            for item in by_time.range(..(cutoff, "", 0))?.take(chunk) {
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
        release(used, freed);
        Ok(n)
    }

    /// Up to `limit` SIMs with entries, in IMSI order, starting after
    /// `after`; one seek per SIM, not a scan of its entries.
    pub(super) fn resources(
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

impl Drop for RedbBackend {
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
