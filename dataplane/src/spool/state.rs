//! What the spool knows in memory, shared by the writer thread, the reader
//! and `ack`: segments and their committed lengths, the ack set, the tail
//! cache. No I/O happens here: files to delete and acks to persist are
//! queued for the writer thread, so `ack` stays cheap on the hot path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::acks::AckSet;
use super::format::HEADER_LEN;
use super::SpoolRecord;

/// Committed records kept in memory so a reader that keeps up never touches
/// the disk. Bounded both ways so a lagging reader costs memory only up to
/// here (past it, records are read back from the segment files).
const CACHE_MAX_BYTES: usize = 8 * 1024 * 1024;
const CACHE_MAX_RECORDS: usize = 16 * 1024;

/// One accepted-at sample per this many segment bytes: enough for the
/// oldest-record estimate, ~1,000 samples per GiB spooled.
pub(super) const SAMPLE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentMeta {
    /// Bytes of the file known good: header plus committed records (for a
    /// segment recovered at open, its length on disk).
    pub(super) len: u64,
    /// Offset of the last accepted-at sample taken from this segment.
    pub(super) last_sample_offset: u64,
}

impl SegmentMeta {
    pub(super) fn new(len: u64) -> Self {
        Self {
            len,
            last_sample_offset: 0,
        }
    }
}

/// A segment as the reader needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentView {
    pub(super) first_seq: u64,
    /// Readable length: bytes past it are not committed.
    pub(super) len: u64,
    /// One past the last seq this segment may hold: the next segment's first
    /// seq, or the committed end for the newest.
    pub(super) end_seq: u64,
}

#[derive(Debug)]
pub(super) struct State {
    /// first seq → segment; the last one is the one being written.
    pub(super) segments: BTreeMap<u64, SegmentMeta>,
    /// The segment the writer appends to (the last one), if it has one.
    pub(super) active: Option<u64>,
    /// One past the last committed (fsynced) seq.
    pub(super) committed_end: u64,
    /// First seq of the oldest segment: everything below is gone.
    pub(super) floor: u64,
    /// Seqs that are done: acked, or known not to exist (failed writes,
    /// gaps, corrupt records given up).
    pub(super) acks: AckSet,
    /// Done ranges not yet in the ack log.
    pub(super) dirty_acks: Vec<(u64, u64)>,
    /// Segments removed from `segments` whose files the writer deletes.
    pub(super) to_delete: Vec<u64>,
    /// seq → accepted-at of records the reader handed out and nobody acked
    /// yet: the oldest unacked record is usually among them.
    pub(super) inflight: BTreeMap<u64, u64>,
    pub(super) cache: TailCache,
    /// Sparse seq → accepted-at samples, for estimating the age of records
    /// not in memory.
    pub(super) ts_index: BTreeMap<u64, u64>,
    /// The reader's position: unacked seqs below it are in `inflight`.
    pub(super) read_cursor: u64,
    pub(super) dropped_oldest: u64,
    pub(super) commits: u64,
    pub(super) corrupt_skipped: u64,
    /// Bytes of the segment files plus records queued for them; shared with
    /// `append`, which checks the budget without taking this lock.
    pub(super) used: Arc<AtomicU64>,
}

impl State {
    pub(super) fn new(used: Arc<AtomicU64>) -> Self {
        Self {
            segments: BTreeMap::new(),
            active: None,
            committed_end: 0,
            floor: 0,
            acks: AckSet::new(),
            dirty_acks: Vec::new(),
            to_delete: Vec::new(),
            inflight: BTreeMap::new(),
            cache: TailCache::default(),
            ts_index: BTreeMap::new(),
            read_cursor: 0,
            dropped_oldest: 0,
            commits: 0,
            corrupt_skipped: 0,
            used,
        }
    }

    /// Committed seqs not done yet (gaps between segments recovered at open
    /// count until the reader passes them, hence "estimate" there).
    pub(super) fn unacked(&self) -> u64 {
        // Voided seqs of a failed write can lie past the committed end.
        let done = self.acks.count() - self.acks.count_in(self.committed_end, u64::MAX);
        self.committed_end
            .saturating_sub(self.floor)
            .saturating_sub(done)
    }

    /// The segment that holds `seq`, or would.
    pub(super) fn segment_for(&self, seq: u64) -> Option<SegmentView> {
        let (&first_seq, meta) = self.segments.range(..=seq).next_back()?;
        let end_seq = self
            .segments
            .range(first_seq + 1..)
            .next()
            .map_or(self.committed_end, |(&f, _)| f);
        Some(SegmentView {
            first_seq,
            len: meta.len,
            end_seq,
        })
    }

    /// Records that `[start, end)` is done (clamped to what is committed and
    /// not yet gone), queues it for the ack log, and deletes the segments it
    /// completes. Returns how many seqs were not done before.
    pub(super) fn mark_done(&mut self, start: u64, end: u64) -> u64 {
        let start = start.max(self.floor);
        let end = end.min(self.committed_end);
        if start >= end {
            return 0;
        }
        let added = self.acks.insert_range(start, end);
        if added > 0 {
            self.push_dirty(start, end);
            if end - start == 1 {
                self.inflight.remove(&start);
            } else {
                let mut tail = self.inflight.split_off(&start);
                let mut after = tail.split_off(&end);
                self.inflight.append(&mut after);
                drop(tail);
            }
        }
        self.delete_covered(start, end);
        added
    }

    /// Marks seqs that were assigned but never committed (their write
    /// failed). They lie past the committed end, so `mark_done` would clamp
    /// them away; they go to the ack log too, so a restart never waits for
    /// them.
    pub(super) fn void_uncommitted(&mut self, start: u64, end: u64) {
        if self.acks.insert_range(start, end) > 0 {
            self.push_dirty(start, end);
        }
    }

    fn push_dirty(&mut self, start: u64, end: u64) {
        // Acks mostly arrive in order, one seq each: extend the last range.
        if let Some(last) = self.dirty_acks.last_mut() {
            if last.1 == start {
                last.1 = end;
                return;
            }
        }
        self.dirty_acks.push((start, end));
    }

    /// Deletes every segment overlapping `[start, end)` whose seqs are all
    /// done, except the newest (it is, or will be, written to).
    pub(super) fn delete_covered(&mut self, start: u64, end: u64) {
        let mut at = self
            .segments
            .range(..=start)
            .next_back()
            .or_else(|| self.segments.iter().next())
            .map(|(&f, _)| f);
        while let Some(first) = at {
            if first >= end && first > start {
                break;
            }
            let Some(next) = self.segments.range(first + 1..).next().map(|(&f, _)| f) else {
                break;
            };
            if self.acks.covers(first, next) {
                self.remove_segment(first);
            }
            at = Some(next);
        }
    }

    /// Forgets a segment and queues its file for deletion.
    pub(super) fn remove_segment(&mut self, first: u64) -> Option<SegmentMeta> {
        let meta = self.segments.remove(&first)?;
        self.to_delete.push(first);
        self.used.fetch_sub(meta.len, Ordering::Relaxed);
        if self.active == Some(first) {
            self.active = None;
        }
        let floor = self
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(self.committed_end);
        if floor > self.floor {
            self.floor = floor;
            self.acks.remove_below(floor);
            self.inflight = self.inflight.split_off(&floor);
            self.ts_index = self.ts_index.split_off(&floor);
        }
        Some(meta)
    }

    /// `when_full = drop_oldest`: deletes the oldest segments, unacked
    /// records and all, until the spool fits `max_bytes` again or only the
    /// newest segment is left. Returns the (first seq, unacked records) of
    /// each segment dropped.
    pub(super) fn drop_oldest_over(&mut self, max_bytes: u64) -> Vec<(u64, u64)> {
        let mut dropped = Vec::new();
        while self.used.load(Ordering::Relaxed) > max_bytes {
            let mut keys = self.segments.keys();
            let (Some(&first), Some(&next)) = (keys.next(), keys.next()) else {
                break;
            };
            let unacked = (next - first).saturating_sub(self.acks.count_in(first, next));
            self.dropped_oldest += unacked;
            self.remove_segment(first);
            dropped.push((first, unacked));
        }
        dropped
    }

    /// Records that `records` (consecutive, all in segment `first`) are
    /// fsynced: `bytes` more of the segment are readable.
    pub(super) fn commit<'a>(
        &mut self,
        first: u64,
        bytes: u64,
        records: impl IntoIterator<Item = &'a SpoolRecord>,
    ) {
        let mut records = records.into_iter().peekable();
        if let Some(meta) = self.segments.get_mut(&first) {
            let offset = meta.len;
            if let Some(r) = records.peek() {
                if offset <= HEADER_LEN as u64 || offset - meta.last_sample_offset >= SAMPLE_BYTES {
                    self.ts_index.insert(r.seq, r.accepted_at_ms);
                    meta.last_sample_offset = offset;
                }
            }
            meta.len += bytes;
        }
        for r in records {
            self.committed_end = self.committed_end.max(r.seq + 1);
            self.cache.push(r);
        }
        self.commits += 1;
    }

    /// Accepted-at of the oldest record not done yet, as well as is known
    /// without reading the disk: exact when it is in flight or in the tail
    /// cache, otherwise the nearest earlier sample (an upper bound on its
    /// age, off by at most the span of ~1 MiB of records).
    pub(super) fn oldest_unacked_ms(&self) -> Option<u64> {
        if self.unacked() == 0 {
            return None;
        }
        let in_flight = self.inflight.first_key_value().map(|(_, &ms)| ms);
        let next = self.acks.next_missing(self.read_cursor.max(self.floor));
        let unread = (next < self.committed_end)
            .then(|| {
                self.cache
                    .get(next)
                    .map(|r| r.accepted_at_ms)
                    .or_else(|| self.ts_index.range(..=next).next_back().map(|(_, &ms)| ms))
            })
            .flatten();
        match (in_flight, unread) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The most recently committed records, contiguous by seq.
#[derive(Debug, Default)]
pub(super) struct TailCache {
    records: VecDeque<SpoolRecord>,
    bytes: usize,
}

impl TailCache {
    pub(super) fn push(&mut self, r: &SpoolRecord) {
        if self.records.back().is_some_and(|b| b.seq + 1 != r.seq) {
            self.records.clear();
            self.bytes = 0;
        }
        self.bytes += r.data.len();
        self.records.push_back(r.clone());
        while self.bytes > CACHE_MAX_BYTES || self.records.len() > CACHE_MAX_RECORDS {
            self.pop_front();
        }
    }

    pub(super) fn get(&self, seq: u64) -> Option<&SpoolRecord> {
        let front = self.records.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.records.get(i)
    }

    /// Drops what the reader has passed: it never goes back.
    pub(super) fn evict_below(&mut self, seq: u64) {
        while self.records.front().is_some_and(|r| r.seq < seq) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(r) = self.records.pop_front() {
            self.bytes -= r.data.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(seq: u64) -> SpoolRecord {
        SpoolRecord {
            seq,
            accepted_at_ms: 1000 + seq,
            partition_key: Arc::from("k"),
            data: Bytes::from_static(b"data"),
        }
    }

    /// Segments at 0, 10, 20 (active); seqs 0..25 committed.
    fn three_segments() -> State {
        let used = Arc::new(AtomicU64::new(300));
        let mut st = State::new(used);
        for first in [0, 10, 20] {
            st.segments.insert(first, SegmentMeta::new(100));
        }
        st.active = Some(20);
        st.committed_end = 25;
        st
    }

    #[test]
    fn a_fully_acked_segment_is_deleted_but_never_the_newest() {
        let mut st = three_segments();
        assert_eq!(st.mark_done(10, 20), 10);
        assert_eq!(st.to_delete, vec![10]);
        assert_eq!(st.floor, 0, "a middle segment leaves the floor");
        assert_eq!(st.mark_done(20, 25), 5);
        assert!(st.segments.contains_key(&20), "the newest stays");
        for seq in 0..10 {
            st.mark_done(seq, seq + 1);
        }
        assert_eq!(st.to_delete, vec![10, 0]);
        assert_eq!(st.floor, 20);
        assert_eq!(st.unacked(), 0);
        assert_eq!(st.used.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn done_is_clamped_to_committed_and_floor() {
        let mut st = three_segments();
        assert_eq!(st.mark_done(24, 40), 1);
        assert!(!st.acks.contains(25));
        assert_eq!(st.unacked(), 24);
    }

    #[test]
    fn drop_oldest_counts_only_unacked_records() {
        let mut st = three_segments();
        st.mark_done(0, 4);
        let dropped = st.drop_oldest_over(150);
        assert_eq!(dropped, vec![(0, 6), (10, 10)]);
        assert_eq!(st.dropped_oldest, 16);
        assert_eq!(st.floor, 20);
        assert_eq!(st.segments.len(), 1);
        assert_eq!(st.acks.count(), 0, "acks below the floor are forgotten");
        assert_eq!(st.unacked(), 5);
    }

    #[test]
    fn oldest_comes_from_in_flight_then_cache_then_samples() {
        let mut st = three_segments();
        st.ts_index.insert(0, 500);
        assert_eq!(st.oldest_unacked_ms(), Some(500));
        for seq in 20..25 {
            st.cache.push(&rec(seq));
        }
        st.read_cursor = 20;
        st.mark_done(0, 20);
        assert_eq!(st.oldest_unacked_ms(), Some(1020));
        st.inflight.insert(20, 1020);
        st.read_cursor = 21;
        st.cache.evict_below(21);
        assert_eq!(st.oldest_unacked_ms(), Some(1020));
        st.mark_done(20, 21);
        assert!(st.inflight.is_empty());
        assert_eq!(st.oldest_unacked_ms(), Some(1021));
        st.mark_done(21, 25);
        assert_eq!(st.oldest_unacked_ms(), None);
    }

    #[test]
    fn cache_restarts_on_a_gap() {
        let mut c = TailCache::default();
        c.push(&rec(1));
        c.push(&rec(2));
        c.push(&rec(5));
        assert!(c.get(2).is_none());
        assert_eq!(c.get(5).unwrap().seq, 5);
    }
}
