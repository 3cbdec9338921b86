//! Reading committed records back, oldest first.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::segment::{segment_path, Next, OpenError, RawRecord, SegmentCursor};
use super::state::SAMPLE_BYTES;
use super::{lock, Spool, SpoolError, SpoolRecord};

/// A cursor over a spool's committed, unacked records. See
/// [`Spool::reader`].
#[derive(Debug)]
pub struct SpoolReader {
    spool: Arc<Spool>,
    /// The next seq to consider.
    cursor: u64,
    /// The segment being read from disk, kept open between calls.
    open: Option<SegmentCursor>,
    /// Records mostly share a partition key per device: reuse the last one
    /// rather than allocate it again for each record read from disk.
    last_key: Option<Arc<str>>,
    /// Segment offset of the last accepted-at sample this reader took.
    last_sample: Option<(u64, u64)>,
}

/// Where the record at the cursor is, decided under the state lock.
enum Plan {
    Done,
    Cached(SpoolRecord),
    Skip(u64),
    Disk {
        first_seq: u64,
        len: u64,
        end_seq: u64,
    },
}

impl SpoolReader {
    pub(super) fn new(spool: Arc<Spool>) -> Self {
        Self {
            spool,
            cursor: 0,
            open: None,
            last_key: None,
            last_sample: None,
        }
    }

    /// The next committed, unacked record after the previous one returned,
    /// or `None` when caught up with what is committed (wait on
    /// [`Spool::committed`], then call again).
    ///
    /// Served from the in-memory tail cache when the reader keeps up, else
    /// read from the segment files in 1 MiB chunks (a record read from disk
    /// is copied out of its chunk, so holding it for a retry pins only its
    /// own bytes). A corrupt record in a segment is logged and counted
    /// (`SpoolStats::corrupt_skipped`) and the rest of that segment skipped:
    /// the frames after it cannot be located reliably.
    // Not an Iterator: a read can fail, and `None` means "caught up for
    // now", not "finished" — the next commit makes `next` return more.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<SpoolRecord>, SpoolError> {
        loop {
            match self.plan() {
                Plan::Done => return Ok(None),
                Plan::Cached(r) => return Ok(Some(r)),
                Plan::Skip(to) => self.cursor = to,
                Plan::Disk {
                    first_seq,
                    len,
                    end_seq,
                } => {
                    if let Some(r) = self.read_disk(first_seq, len, end_seq)? {
                        return Ok(Some(r));
                    }
                }
            }
        }
    }

    fn plan(&mut self) -> Plan {
        let mut st = lock(&self.spool.shared.state);
        let cursor = st.acks.next_missing(self.cursor.max(st.floor));
        self.cursor = cursor;
        st.read_cursor = cursor;
        st.cache.evict_below(cursor);
        if cursor >= st.committed_end {
            return Plan::Done;
        }
        if let Some(r) = st.cache.get(cursor).cloned() {
            st.inflight.insert(r.seq, r.accepted_at_ms);
            self.cursor = r.seq + 1;
            st.read_cursor = self.cursor;
            return Plan::Cached(r);
        }
        match st.segment_for(cursor) {
            Some(seg) if cursor < seg.end_seq => Plan::Disk {
                first_seq: seg.first_seq,
                len: seg.len,
                end_seq: seg.end_seq,
            },
            Some(seg) => Plan::Skip(seg.end_seq),
            // Below every segment: only possible if the floor moved on.
            None => match st.segments.keys().next() {
                Some(&first) => Plan::Skip(first),
                None => Plan::Done,
            },
        }
    }

    /// Reads segment `first_seq` up to the cursor's record. `None`: the
    /// cursor moved on (skipped a gap or a corrupt rest), plan again.
    fn read_disk(
        &mut self,
        first_seq: u64,
        len: u64,
        end_seq: u64,
    ) -> Result<Option<SpoolRecord>, SpoolError> {
        let reusable = self
            .open
            .as_ref()
            .is_some_and(|c| c.first_seq == first_seq && c.next_seq <= self.cursor);
        if !reusable {
            self.open = None;
            let path = segment_path(&self.spool.shared.dir, first_seq);
            match SegmentCursor::open(&path, first_seq) {
                Ok(c) => self.open = Some(c),
                Err(OpenError::Io(e)) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(e.into())
                }
                Err(e) => {
                    // Missing (maybe deleted since the plan; then skipping
                    // is right, and costs nothing) or an unreadable header.
                    if self.segment_exists(first_seq) {
                        self.give_up(first_seq, first_seq, end_seq, &e.to_string());
                    }
                    return Ok(None);
                }
            }
        }
        let Some(c) = self.open.as_mut() else {
            return Ok(None);
        };
        loop {
            let offset = c.offset();
            match c.next(len)? {
                Next::Record(r) if r.seq < self.cursor => {}
                Next::Record(r) => return Ok(self.hand_out(r, first_seq, offset)),
                Next::End => {
                    // Seqs the segment's range has but its file does not:
                    // not written (a failed write, a gap at restart) or
                    // lost if the file was cut short.
                    let from = c.next_seq.max(self.cursor);
                    self.give_up(first_seq, from, end_seq, "ends before its last seq");
                    return Ok(None);
                }
                Next::Stop { reason, offset } => {
                    let from = c.next_seq.max(self.cursor);
                    self.open = None;
                    let why = format!("{reason} at offset {offset}");
                    self.give_up(first_seq, from, end_seq, &why);
                    return Ok(None);
                }
            }
        }
    }

    fn segment_exists(&self, first_seq: u64) -> bool {
        lock(&self.spool.shared.state)
            .segments
            .contains_key(&first_seq)
    }

    /// Seqs `[from, end)` of a segment will never be read: mark them done
    /// (so the segment can go) and count those that were not.
    fn give_up(&mut self, segment: u64, from: u64, end: u64, why: &str) {
        let lost = {
            let mut st = lock(&self.spool.shared.state);
            let lost = st.mark_done(from, end);
            st.corrupt_skipped += lost;
            lost
        };
        if lost > 0 {
            warn!(
                dir = %self.spool.shared.dir.display(),
                segment,
                first_lost = from,
                lost,
                "spool segment {why}: skipping the rest of it"
            );
        }
        self.cursor = self.cursor.max(end);
    }

    fn hand_out(&mut self, r: RawRecord, segment: u64, offset: u64) -> Option<SpoolRecord> {
        let partition_key = match &self.last_key {
            Some(k) if k.as_bytes() == &r.key[..] => Arc::clone(k),
            _ => {
                let k: Arc<str> = Arc::from(String::from_utf8_lossy(&r.key).as_ref());
                self.last_key = Some(Arc::clone(&k));
                k
            }
        };
        let record = SpoolRecord {
            seq: r.seq,
            accepted_at_ms: r.accepted_at_ms,
            partition_key,
            data: Bytes::copy_from_slice(&r.data),
        };
        self.cursor = r.seq + 1;
        let sample = self
            .last_sample
            .is_none_or(|(seg, at)| seg != segment || offset >= at + SAMPLE_BYTES);
        let mut st = lock(&self.spool.shared.state);
        st.read_cursor = self.cursor;
        // Acked or dropped while it was read without the lock: skip it.
        if r.seq < st.floor || st.acks.contains(r.seq) {
            return None;
        }
        if sample {
            st.ts_index.insert(r.seq, r.accepted_at_ms);
            self.last_sample = Some((segment, offset));
        }
        st.inflight.insert(r.seq, r.accepted_at_ms);
        Some(record)
    }
}
