//! The durable spool: one per Funnel destination (`durability = "spool"`),
//! an append-only, crash-safe log of the records devices were acknowledged
//! for (DESIGN.md rule 5: nothing acknowledged is lost).
//!
//! ```text
//! ingress ── append ──▶ queue ──▶ writer thread: write + fdatasync (group commit)
//!    ▲                                 │  resolves each append's future,
//!    └──── 2xx after the future ───────┘  bumps `committed`
//! destination worker ◀── SpoolReader::next (tail cache, else segment files)
//!    └── ack (delivered or dead-lettered) ──▶ ack set ──▶ acks.log (lazily)
//! ```
//!
//! On disk, in the spool's directory:
//! * `{first_seq:020}.seg` — segments (format in [`format`]); the newest is
//!   appended to, rolled over at `segment_bytes`, and a segment whose every
//!   record is done is deleted (never the newest).
//! * `acks.log` — ranges of done seqs (format in [`acks`]), compacted by
//!   rewrite and rename when it grows.
//!
//! Seqs are consecutive per spool and persisted implicitly: after a restart
//! the next seq follows the last record recovered (or the last seq the ack
//! log mentions, whichever is higher, so a seq is never reused).
//!
//! Guarantees and their limits:
//! * An append's future resolves `Ok` only after its record was written and
//!   fdatasync'd; the reader never sees a record before that.
//! * Acks are persisted lazily (every ~100 ms, and on close): a crash may
//!   send again records delivered up to ~100 ms before it. Delivery is
//!   at-least-once, as the sinks' retries already make it.
//! * A crash may leave a torn record at the end of the newest segment; open
//!   cuts it off and reports it (its append never resolved `Ok`, so no
//!   device was told it was stored).
//! * Corruption inside a sealed segment (bit rot, a bad disk) loses the rest
//!   of that segment, counted in [`SpoolStats::corrupt_skipped`] and
//!   logged; it is found when the reader gets there, not at open.

pub mod acks;
pub mod format;
mod reader;
mod recovery;
mod segment;
mod state;
mod writer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tracing::error;

pub use reader::SpoolReader;

use state::State;
use writer::{Pending, Writer};

/// What `append` does when the spool is at `max_bytes` (the `[funnel]
/// spool_when_full` setting; one definition, in the config).
pub use simgate_control::config::WhenFull;

/// Sizing of one spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Budget for the segment files (plus records queued for them).
    pub max_bytes: u64,
    /// A segment is sealed and a new one started past this size. Capped at
    /// a quarter of `max_bytes`: space is freed a segment at a time, and
    /// the newest segment is never deleted, so a segment as large as the
    /// budget could leave a spool full of delivered records for good.
    pub segment_bytes: u64,
    pub when_full: WhenFull,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            when_full: WhenFull::Refuse,
        }
    }
}

impl SpoolOptions {
    fn effective(self) -> Self {
        Self {
            segment_bytes: self.segment_bytes.min(self.max_bytes / 4).max(1),
            ..self
        }
    }
}

/// One record, as appended and as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolRecord {
    pub seq: u64,
    pub accepted_at_ms: u64,
    pub partition_key: Arc<str>,
    pub data: Bytes,
}

/// What [`Spool::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files after recovery.
    pub segments: usize,
    /// Bytes cut from the end of the newest segment (a torn or corrupt
    /// tail), or discarded with an unreadable newest header.
    pub truncated_bytes: u64,
    /// What was found damaged (beyond an ordinary torn tail), for the log.
    pub corrupt: Option<String>,
    /// Records not yet done. Exact unless seqs are missing between sealed
    /// segments (after failed writes), which count until the reader passes.
    pub unacked_estimate: u64,
}

#[derive(thiserror::Error, Debug)]
pub enum SpoolError {
    #[error("spool is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("record of {size} bytes exceeds the spool's limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("spool I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool closed")]
    Closed,
}

impl SpoolError {
    /// A label for drop counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Full { .. } => "spool_full",
            Self::TooLarge { .. } => "too_large",
            Self::Io(_) => "spool_io",
            Self::Closed => "shutting_down",
        }
    }
}

/// A snapshot of a spool's gauges and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of the segment files, plus records queued for them.
    pub bytes: u64,
    /// Committed records not yet acked.
    pub records: u64,
    pub segments: u64,
    /// Accepted-at of the oldest unacked record: exact for records in
    /// flight or recently committed, else estimated from samples taken
    /// every ~1 MiB of segment (so it may read a little older).
    pub oldest_unacked_ms: Option<u64>,
    /// Unacked records deleted by `when_full = drop_oldest`.
    pub dropped_oldest: u64,
    /// Group commits (segment fdatasyncs) so far: appends per commit is the
    /// group-commit factor.
    pub commits: u64,
    /// Records lost to corruption found while reading (or missing from a
    /// segment that should hold them).
    pub corrupt_skipped: u64,
}

/// What `append` and the writer thread share.
#[derive(Debug)]
struct Queue {
    next_seq: u64,
    pending: Vec<Pending>,
    /// Bytes in `pending` (the writer has not taken them yet).
    pending_bytes: u64,
    closed: bool,
    /// The writer waits on `Shared::wake`; only then does `append` notify.
    writer_idle: bool,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    opts: SpoolOptions,
    queue: Mutex<Queue>,
    wake: Condvar,
    state: Mutex<State>,
    /// Segment bytes plus queued bytes: the budget `append` checks.
    used: Arc<AtomicU64>,
    committed: watch::Sender<u64>,
}

/// A durable, append-only record log for one destination. See the module
/// documentation.
#[derive(Debug)]
pub struct Spool {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// A lock that a panic elsewhere does not make unusable: every critical
/// section leaves the state consistent between statements that can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves when an appended record is durable (or failed). Returned by
/// [`Spool::append`]; knows its record's seq up front.
#[derive(Debug)]
#[must_use = "the record is durable only when this resolves Ok"]
pub struct AppendAck {
    seq: u64,
    rx: oneshot::Receiver<Result<u64, SpoolError>>,
}

impl AppendAck {
    /// The seq assigned to the record.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl Future for AppendAck {
    type Output = Result<u64, SpoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SpoolError::Closed)))
    }
}

/// The bytes a record takes on disk, or why it cannot be spooled.
fn frame_len(partition_key: &str, data: &[u8]) -> Result<u64, SpoolError> {
    format::frame_len(partition_key.len(), data.len())
        .map(|n| n as u64)
        .map_err(|e| SpoolError::TooLarge {
            size: e.size,
            max: e.max,
        })
}

/// Queues one admitted record under the queue lock; returns its seq.
fn push(
    q: &mut Queue,
    partition_key: Arc<str>,
    data: Bytes,
    accepted_at_ms: u64,
    frame_len: u64,
    done: Option<oneshot::Sender<Result<u64, SpoolError>>>,
) -> u64 {
    let seq = q.next_seq;
    q.next_seq += 1;
    q.pending.push(Pending {
        record: SpoolRecord {
            seq,
            accepted_at_ms,
            partition_key,
            data,
        },
        frame_len,
        done,
    });
    seq
}

impl Spool {
    /// Opens or creates the spool in `dir` and starts its writer thread.
    ///
    /// Fast however much is spooled: only the newest segment is scanned (a
    /// torn or corrupt tail is cut at the last good record and reported,
    /// never an error); sealed segments are validated when read.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<(Arc<Self>, RecoveryReport), SpoolError> {
        let opts = opts.effective();
        let used = Arc::new(AtomicU64::new(0));
        let recovered = recovery::recover(dir, Arc::clone(&used))?;
        let (committed, _) = watch::channel(recovered.state.committed_end);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts,
            queue: Mutex::new(Queue {
                next_seq: recovered.next_seq,
                pending: Vec::new(),
                pending_bytes: 0,
                closed: false,
                writer_idle: false,
            }),
            wake: Condvar::new(),
            state: Mutex::new(recovered.state),
            used,
            committed,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            active: Some(recovered.active),
            ack_log: recovered.ack_log,
            buf: Vec::new(),
            last_flush: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())?;
        let spool = Arc::new(Self {
            shared,
            writer: Mutex::new(Some(handle)),
        });
        Ok((spool, recovered.report))
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Queues one record for the next group commit. The returned future
    /// resolves with its seq once it is written and fdatasync'd — only then
    /// may the device be told it is stored.
    ///
    /// Refused at once with `Full` when over `max_bytes` and
    /// `when_full = refuse`; with `drop_oldest` the writer deletes the
    /// oldest segment instead (and `Full` comes only if the disk cannot
    /// keep up at all: a whole budget queued and not yet written).
    pub fn append(
        &self,
        partition_key: Arc<str>,
        data: Bytes,
        accepted_at_ms: u64,
    ) -> Result<AppendAck, SpoolError> {
        let frame_len = frame_len(&partition_key, &data)?;
        let mut q = self.admit(frame_len)?;
        let (tx, rx) = oneshot::channel();
        let seq = push(
            &mut q,
            partition_key,
            data,
            accepted_at_ms,
            frame_len,
            Some(tx),
        );
        self.wake(&mut q);
        Ok(AppendAck { seq, rx })
    }

    /// [`Self::append`] for several records at once (a receive batch's
    /// records to one destination): one lock, one budget check for all of
    /// them (all or none are queued), and one future, resolved once every
    /// one of them is durable (with the last seq).
    pub fn append_many(
        &self,
        records: Vec<(Arc<str>, Bytes)>,
        accepted_at_ms: u64,
    ) -> Result<AppendAck, SpoolError> {
        let lens = records
            .iter()
            .map(|(key, data)| frame_len(key, data))
            .collect::<Result<Vec<_>, _>>()?;
        let total = lens.iter().fold(0u64, |sum, &len| sum.saturating_add(len));
        let mut q = self.admit(total)?;
        let (tx, rx) = oneshot::channel();
        let mut done = Some(tx);
        let last = records.len().saturating_sub(1);
        let mut seq = q.next_seq;
        for (i, ((key, data), len)) in records.into_iter().zip(lens).enumerate() {
            let waiter = if i == last { done.take() } else { None };
            seq = push(&mut q, key, data, accepted_at_ms, len, waiter);
        }
        if let Some(tx) = done {
            // Nothing to write: durable already.
            let _ = tx.send(Ok(seq));
        }
        self.wake(&mut q);
        Ok(AppendAck { seq, rx })
    }

    /// Takes the queue lock and reserves `bytes` of the budget, or refuses.
    fn admit(&self, bytes: u64) -> Result<MutexGuard<'_, Queue>, SpoolError> {
        let max = self.shared.opts.max_bytes;
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(SpoolError::Closed);
        }
        let used = self.shared.used.load(Ordering::Relaxed);
        let over = match self.shared.opts.when_full {
            WhenFull::Refuse => used.saturating_add(bytes) > max,
            WhenFull::DropOldest => q.pending_bytes.saturating_add(bytes) > max,
        };
        if over {
            return Err(SpoolError::Full { used, max });
        }
        self.shared.used.fetch_add(bytes, Ordering::Relaxed);
        q.pending_bytes += bytes;
        Ok(q)
    }

    fn wake(&self, q: &mut Queue) {
        if q.writer_idle {
            q.writer_idle = false;
            self.shared.wake.notify_one();
        }
    }

    /// A cursor over committed, unacked records, oldest first. Meant for one
    /// reader per spool (the destination worker); each new reader starts
    /// again from the oldest unacked record.
    pub fn reader(self: &Arc<Self>) -> SpoolReader {
        SpoolReader::new(Arc::clone(self))
    }

    /// The record is done (delivered or dead-lettered): never replayed
    /// after a restart (once the ack is persisted, within ~100 ms). Cheap:
    /// an in-memory range insert; the writer thread persists acks and
    /// deletes finished segments. Unknown, repeated or already dropped seqs
    /// are ignored.
    pub fn ack(&self, seq: u64) {
        lock(&self.shared.state).mark_done(seq, seq.saturating_add(1));
    }

    /// [`Self::ack`] for several records under one lock.
    pub fn ack_many(&self, seqs: &[u64]) {
        let mut st = lock(&self.shared.state);
        for &seq in seqs {
            st.mark_done(seq, seq.saturating_add(1));
        }
    }

    pub fn stats(&self) -> SpoolStats {
        let st = lock(&self.shared.state);
        SpoolStats {
            bytes: self.shared.used.load(Ordering::Relaxed),
            records: st.unacked(),
            segments: st.segments.len() as u64,
            oldest_unacked_ms: st.oldest_unacked_ms(),
            dropped_oldest: st.dropped_oldest,
            commits: st.commits,
            corrupt_skipped: st.corrupt_skipped,
        }
    }

    /// Changes whenever records are committed; the value is one past the
    /// last committed seq. The reader's owner waits on it when
    /// [`SpoolReader::next`] returns `None`.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Stops the spool: appends are refused from now on, those already
    /// queued are committed, acks are flushed, and the writer thread is
    /// joined. Blocks for up to one commit; idempotent. Also runs on drop.
    pub fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                error!(dir = %self.shared.dir.display(), "spool writer thread panicked");
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}
