//! The writer thread: group commit, segment rollover, ack log, deletions.
//!
//! One dedicated std thread per spool loops: take everything `append`
//! queued → encode → write → `fdatasync` → publish (reader, waiters). One
//! fdatasync covers every record queued while the previous one ran, so the
//! commit rate adapts to the load: a device's wait is at most about two
//! fsyncs, and throughput is bounded by disk bandwidth, not fsync latency.
//! A thread rather than a tokio task because `fdatasync` blocks for
//! milliseconds; doing it on a runtime worker would stall unrelated I/O.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::acks::{self, LOG_ENTRY_LEN};
use super::format::{self, HEADER_LEN};
use super::segment::{create_segment, segment_path, sync_dir};
use super::{lock, Shared, SpoolError, SpoolRecord, WhenFull};

/// How long acks may stay only in memory. A crash loses at most this much
/// of acks, which means re-sending what was delivered in that window.
pub(super) const ACK_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The ack log is rewritten once it grows past this and past twice what a
/// rewrite would produce (so a fragmented set does not rewrite on every
/// flush). Tests use a small figure to get there quickly.
const ACK_LOG_COMPACT_BYTES: u64 = if cfg!(test) { 16 * 1024 } else { 1024 * 1024 };

/// Encoded records are written out in pieces of this size, so a large batch
/// does not need a second copy of itself in memory.
const WRITE_CHUNK: usize = 1024 * 1024;

pub(super) const ACK_LOG: &str = "acks.log";
pub(super) const ACK_LOG_TMP: &str = "acks.log.tmp";

/// One appended record waiting for its commit.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) record: SpoolRecord,
    pub(super) frame_len: u64,
    /// Who waits for the commit: the last record of an
    /// [`super::Spool::append_many`] carries it for all (records commit in
    /// seq order, so its success is theirs, and a failure before it fails
    /// it too).
    pub(super) done: Option<oneshot::Sender<Result<u64, SpoolError>>>,
}

impl Pending {
    fn answer(self, result: Result<u64, SpoolError>) {
        if let Some(done) = self.done {
            let _ = done.send(result);
        }
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) first_seq: u64,
    pub(super) file: File,
    /// Bytes committed (the file is truncated back here after a failure).
    pub(super) len: u64,
    /// Seq the next record must carry to go into this segment.
    pub(super) next_seq: u64,
}

/// The append handle on `acks.log`.
#[derive(Debug)]
pub(super) struct AckLog {
    pub(super) file: File,
    pub(super) len: u64,
    /// A write failed part-way: the next flush rewrites the whole log
    /// rather than append after possible garbage.
    pub(super) broken: bool,
}

impl AckLog {
    /// Creates (or replaces) the ack log with `ranges` via a temporary file
    /// and a rename, so a crash leaves the old log or the new, never half.
    pub(super) fn rewrite(dir: &Path, ranges: &[(u64, u64)]) -> io::Result<Self> {
        let mut buf = Vec::with_capacity(acks::LOG_HEADER_LEN + ranges.len() * LOG_ENTRY_LEN);
        acks::encode_log_header(&mut buf);
        for &(s, e) in ranges {
            acks::encode_log_entry(&mut buf, s, e);
        }
        let tmp = dir.join(ACK_LOG_TMP);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&buf)?;
        file.sync_data()?;
        fs::rename(&tmp, dir.join(ACK_LOG))?;
        sync_dir(dir)?;
        Ok(Self {
            file,
            len: buf.len() as u64,
            broken: false,
        })
    }

    fn append(&mut self, ranges: &[(u64, u64)]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(ranges.len() * LOG_ENTRY_LEN);
        for &(s, e) in ranges {
            acks::encode_log_entry(&mut buf, s, e);
        }
        let result = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Whether to rewrite rather than append `adding` entries, when the set
    /// is `ranges` ranges.
    fn needs_rewrite(&self, adding: usize, ranges: usize) -> bool {
        let len = self.len + (adding * LOG_ENTRY_LEN) as u64;
        let rewritten = (acks::LOG_HEADER_LEN + ranges * LOG_ENTRY_LEN) as u64;
        self.broken || (len > ACK_LOG_COMPACT_BYTES && len > 2 * rewritten)
    }
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) active: Option<Active>,
    pub(super) ack_log: AckLog,
    pub(super) buf: Vec<u8>,
    pub(super) last_flush: Instant,
}

/// Fails whatever is still queued if the writer thread ends for any reason
/// (normally the queue is empty by then), so no `append` waits forever.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let pending = {
            let mut q = lock(&self.0.queue);
            q.closed = true;
            q.pending_bytes = 0;
            std::mem::take(&mut q.pending)
        };
        for p in pending {
            self.0.used.fetch_sub(p.frame_len, Ordering::Relaxed);
            p.answer(Err(SpoolError::Closed));
        }
    }
}

impl Writer {
    pub(super) fn run(mut self) {
        let _guard = ExitGuard(Arc::clone(&self.shared));
        loop {
            let (batch, closed) = self.take_batch();
            let idle = batch.is_empty();
            if !idle {
                self.write_batch(batch);
            }
            self.maintain(closed);
            if closed && idle {
                break;
            }
        }
        debug!(dir = %self.shared.dir.display(), "spool writer stopped");
    }

    /// Waits for appends (or the next ack flush), then takes all of them.
    fn take_batch(&mut self) -> (Vec<Pending>, bool) {
        let mut q = lock(&self.shared.queue);
        while q.pending.is_empty() && !q.closed {
            let wait = ACK_FLUSH_INTERVAL.saturating_sub(self.last_flush.elapsed());
            if wait.is_zero() {
                break;
            }
            q.writer_idle = true;
            q = self
                .shared
                .wake
                .wait_timeout(q, wait)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
            q.writer_idle = false;
        }
        q.pending_bytes = 0;
        (std::mem::take(&mut q.pending), q.closed)
    }

    fn write_batch(&mut self, mut batch: Vec<Pending>) {
        let opts = self.shared.opts;
        if opts.when_full == WhenFull::DropOldest {
            let dropped = lock(&self.shared.state).drop_oldest_over(opts.max_bytes);
            for (first, unacked) in dropped {
                warn!(
                    dir = %self.shared.dir.display(),
                    segment = first,
                    unacked,
                    "spool over budget: dropped its oldest segment (when_full = drop_oldest)"
                );
            }
        }
        while let Some(head) = batch.first() {
            let seq = head.record.seq;
            let needs_roll = self.active.as_ref().is_none_or(|a| {
                a.next_seq != seq
                    || (a.len > HEADER_LEN as u64 && a.len + head.frame_len > opts.segment_bytes)
            });
            if needs_roll {
                if let Err(e) = self.roll(seq) {
                    error!(dir = %self.shared.dir.display(), error = %e, "spool: cannot create a segment");
                    self.fail(batch, &e);
                    return;
                }
            }
            let Some(active) = self.active.as_mut() else {
                // roll() either sets a segment or fails above.
                self.fail(batch, &io::Error::other("no active segment"));
                return;
            };
            let (n, bytes, result) = write_run(active, &mut self.buf, &batch, opts.segment_bytes);
            if let Err(e) = result {
                error!(
                    dir = %self.shared.dir.display(),
                    segment = active.first_seq,
                    error = %e,
                    "spool write failed; failing the batch and starting a new segment"
                );
                self.seal_after_failure();
                self.fail(batch, &e);
                return;
            }
            let run: Vec<Pending> = batch.drain(..n).collect();
            active.len += bytes;
            active.next_seq += n as u64;
            let committed_end = {
                let mut st = lock(&self.shared.state);
                st.commit(active.first_seq, bytes, run.iter().map(|p| &p.record));
                st.committed_end
            };
            self.shared.committed.send_replace(committed_end);
            for p in run {
                let seq = p.record.seq;
                p.answer(Ok(seq));
            }
        }
        if self.buf.capacity() > 4 * WRITE_CHUNK {
            self.buf = Vec::new();
        }
    }

    /// Starts a new segment whose first record is `seq`.
    fn roll(&mut self, seq: u64) -> io::Result<()> {
        let dir = &self.shared.dir;
        let file = create_segment(dir, seq)?;
        self.shared
            .used
            .fetch_add(HEADER_LEN as u64, Ordering::Relaxed);
        let previous = self.active.replace(Active {
            first_seq: seq,
            file,
            len: HEADER_LEN as u64,
            next_seq: seq,
        });
        let mut st = lock(&self.shared.state);
        st.segments
            .insert(seq, super::state::SegmentMeta::new(HEADER_LEN as u64));
        st.active = Some(seq);
        st.committed_end = st.committed_end.max(seq);
        if let Some(prev) = previous {
            if prev.len == HEADER_LEN as u64 {
                // Never held a record: no reason to keep it around sealed.
                st.remove_segment(prev.first_seq);
            }
        }
        // The segment before now has an end; it may already be all done
        // (e.g. sealed after a failure and its seqs voided).
        if let Some((&before, _)) = st.segments.range(..seq).next_back() {
            st.delete_covered(before, seq);
        }
        debug!(dir = %dir.display(), segment = seq, "spool segment started");
        Ok(())
    }

    /// After a failed write or fsync the file's tail is unknown: cut it back
    /// to what was committed and stop appending to it. The next batch
    /// starts a new segment (its seqs no longer follow this one's).
    fn seal_after_failure(&mut self) {
        if let Some(a) = self.active.take() {
            if let Err(e) = a.file.set_len(a.len) {
                warn!(segment = a.first_seq, error = %e, "spool: cannot truncate a failed segment");
            }
            lock(&self.shared.state).active = None;
        }
    }

    /// Fails `batch`: its seqs are voided (never to be waited for) and its
    /// bytes leave the budget.
    fn fail(&mut self, batch: Vec<Pending>, e: &io::Error) {
        let mut st = lock(&self.shared.state);
        let mut range: Option<(u64, u64)> = None;
        for p in &batch {
            self.shared.used.fetch_sub(p.frame_len, Ordering::Relaxed);
            let seq = p.record.seq;
            range = match range {
                Some((start, end)) if end == seq => Some((start, seq + 1)),
                Some((start, end)) => {
                    st.void_uncommitted(start, end);
                    Some((seq, seq + 1))
                }
                None => Some((seq, seq + 1)),
            };
        }
        if let Some((start, end)) = range {
            st.void_uncommitted(start, end);
        }
        drop(st);
        for p in batch {
            p.answer(Err(SpoolError::Io(io::Error::new(e.kind(), e.to_string()))));
        }
    }

    /// Every `ACK_FLUSH_INTERVAL` (and when closing): persists acks and
    /// deletes the files of finished segments.
    fn maintain(&mut self, closing: bool) {
        if !closing && self.last_flush.elapsed() < ACK_FLUSH_INTERVAL {
            return;
        }
        self.last_flush = Instant::now();
        let (dirty, to_delete, snapshot) = {
            let mut st = lock(&self.shared.state);
            let dirty = std::mem::take(&mut st.dirty_acks);
            let to_delete = std::mem::take(&mut st.to_delete);
            let rewrite = self.ack_log.broken
                || (!dirty.is_empty()
                    && self
                        .ack_log
                        .needs_rewrite(dirty.len(), st.acks.range_count()));
            let snapshot = rewrite.then(|| st.acks.ranges().collect::<Vec<_>>());
            (dirty, to_delete, snapshot)
        };
        let dir = &self.shared.dir;
        if let Some(ranges) = snapshot {
            match AckLog::rewrite(dir, &ranges) {
                Ok(log) => {
                    debug!(dir = %dir.display(), ranges = ranges.len(), "spool ack log compacted");
                    self.ack_log = log;
                }
                Err(e) => {
                    self.ack_log.broken = true;
                    error!(dir = %dir.display(), error = %e, "spool: cannot rewrite the ack log");
                }
            }
        } else if !dirty.is_empty() {
            if let Err(e) = self.ack_log.append(&dirty) {
                error!(dir = %dir.display(), error = %e, "spool: cannot append to the ack log");
            }
        }
        if !to_delete.is_empty() {
            for first in &to_delete {
                match fs::remove_file(segment_path(dir, *first)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        warn!(dir = %dir.display(), segment = first, error = %e, "spool: cannot delete a segment");
                    }
                }
            }
            if let Err(e) = sync_dir(dir) {
                warn!(dir = %dir.display(), error = %e, "spool: cannot sync the directory");
            }
            debug!(dir = %dir.display(), segments = ?to_delete, "spool segments deleted");
        }
    }
}

/// Writes the longest run of `batch` that belongs in `active` (consecutive
/// seqs, within the segment size; at least one record) and fsyncs it.
/// Returns the records written, their bytes, and the outcome.
fn write_run(
    active: &mut Active,
    buf: &mut Vec<u8>,
    batch: &[Pending],
    segment_bytes: u64,
) -> (usize, u64, io::Result<()>) {
    buf.clear();
    let mut n = 0;
    let mut bytes = 0;
    let mut result = Ok(());
    for p in batch {
        let r = &p.record;
        if r.seq != active.next_seq + n as u64
            || (n > 0 && active.len + bytes + p.frame_len > segment_bytes)
        {
            break;
        }
        if let Err(e) =
            format::encode_record(buf, r.seq, r.accepted_at_ms, &r.partition_key, &r.data)
        {
            // append() refused records this large; reaching here is a bug,
            // and failing the batch beats writing a frame we cannot read.
            result = Err(io::Error::new(io::ErrorKind::InvalidInput, e));
            break;
        }
        n += 1;
        bytes += p.frame_len;
        if buf.len() >= WRITE_CHUNK {
            if let Err(e) = active.file.write_all(buf) {
                result = Err(e);
                break;
            }
            buf.clear();
        }
    }
    let result = result
        .and_then(|()| active.file.write_all(buf))
        .and_then(|()| active.file.sync_data());
    buf.clear();
    (n, bytes, result)
}
