//! Which seqs are done, and how that is logged to disk. Sans-IO.
//!
//! Records are acked roughly in order (the worker sends oldest first), so the
//! set is kept as coalesced ranges: a steady stream of acks is one range,
//! and a few retried or dead-lettered stragglers add a few more.
//!
//! The ack log (`acks.log`) is a header followed by fixed-size entries, each
//! a half-open range `[start, end)` with its own CRC:
//!
//! ```text
//! header (8 bytes):  "SGACKS" | version u16 LE
//! entry (20 bytes):  start u64 LE | end u64 LE | crc32c u32 LE of the 16 bytes before
//! ```
//!
//! Entries are only ever added (the set is their union), so replaying a
//! prefix of the log gives a subset of the acks: a torn or corrupt tail loses
//! the newest acks, which means a few records are sent again — never that an
//! unacked record is skipped.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Identifies the ack log.
pub const LOG_MAGIC: [u8; 6] = *b"SGACKS";
pub const LOG_VERSION: u16 = 1;
pub const LOG_HEADER_LEN: usize = 8;
pub const LOG_ENTRY_LEN: usize = 20;

/// A set of seqs, as coalesced half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckSet {
    /// start → end (exclusive); ranges neither overlap nor touch.
    ranges: BTreeMap<u64, u64>,
    /// Seqs in the set.
    count: u64,
}

impl AckSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Seqs in the set.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ranges the set is stored as.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// One past the highest seq in the set.
    pub fn max_end(&self) -> Option<u64> {
        self.ranges.last_key_value().map(|(_, &e)| e)
    }

    /// Adds one seq; true if it was not in the set. (`u64::MAX` cannot be
    /// stored: a spool never gets there.)
    pub fn insert(&mut self, seq: u64) -> bool {
        self.insert_range(seq, seq.saturating_add(1)) == 1
    }

    /// Adds `[start, end)`; returns how many seqs were not in the set.
    pub fn insert_range(&mut self, mut start: u64, mut end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let before = self.count;
        // A range starting at or before `start` that reaches it absorbs the
        // new one (or is absorbed).
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= end {
                return 0;
            }
            if e >= start {
                self.ranges.remove(&s);
                self.count -= e - s;
                start = s;
            }
        }
        // Ranges starting inside (or right at the end of) the new one merge.
        while let Some((&s, &e)) = self
            .ranges
            .range((Bound::Included(start), Bound::Included(end)))
            .next()
        {
            self.ranges.remove(&s);
            self.count -= e - s;
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.count += end - start;
        self.count.saturating_sub(before)
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &e)| seq < e)
    }

    /// The first seq at or after `from` that is not in the set.
    pub fn next_missing(&self, from: u64) -> u64 {
        match self.ranges.range(..=from).next_back() {
            Some((_, &e)) if from < e => e,
            _ => from,
        }
    }

    /// Whether every seq of `[start, end)` is in the set.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        start >= end || self.next_missing(start) >= end
    }

    /// How many seqs of `[start, end)` are in the set.
    pub fn count_in(&self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        self.ranges
            .range(first..end)
            .map(|(&s, &e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    /// Forgets every seq below `floor` (segments below it are gone, so their
    /// acks no longer matter).
    pub fn remove_below(&mut self, floor: u64) {
        let keep = self.ranges.split_off(&floor);
        let below = std::mem::replace(&mut self.ranges, keep);
        for (s, e) in below {
            if e > floor {
                self.ranges.insert(floor, e);
                self.count -= floor - s;
            } else {
                self.count -= e - s;
            }
        }
    }
}

/// Appends the ack log header.
pub fn encode_log_header(out: &mut Vec<u8>) {
    out.extend_from_slice(&LOG_MAGIC);
    out.extend_from_slice(&LOG_VERSION.to_le_bytes());
}

/// Appends one log entry for `[start, end)`.
pub fn encode_log_entry(out: &mut Vec<u8>, start: u64, end: u64) {
    let at = out.len();
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&end.to_le_bytes());
    let crc = crc32c::crc32c(&out[at..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Why the ack log was refused as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogHeaderError {
    #[error("ack log header is incomplete")]
    Torn,
    #[error("not an ack log (bad magic)")]
    BadMagic,
    #[error("unsupported ack log version {0}")]
    BadVersion(u16),
}

/// Why replaying the ack log stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogStop {
    #[error("torn entry at the end of the ack log")]
    Torn,
    #[error("ack log entry checksum mismatch")]
    BadCrc,
    #[error("ack log entry with an empty range")]
    BadRange,
}

/// What replaying an ack log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReplay {
    pub acks: AckSet,
    /// End of the last good entry: the length to truncate the file to.
    pub good_end: usize,
    /// Why replay stopped short of the input, if it did.
    pub stop: Option<LogStop>,
}

/// Replays an ack log.
pub fn decode_log(buf: &[u8]) -> Result<LogReplay, LogHeaderError> {
    let Some(header) = buf.get(..LOG_HEADER_LEN) else {
        return Err(LogHeaderError::Torn);
    };
    if header[..6] != LOG_MAGIC {
        return Err(LogHeaderError::BadMagic);
    }
    let version = u16::from_le_bytes([header[6], header[7]]);
    if version != LOG_VERSION {
        return Err(LogHeaderError::BadVersion(version));
    }
    let mut acks = AckSet::new();
    let mut pos = LOG_HEADER_LEN;
    let mut stop = None;
    while pos < buf.len() {
        let Some(entry) = buf.get(pos..pos + LOG_ENTRY_LEN) else {
            stop = Some(LogStop::Torn);
            break;
        };
        let mut crc = [0; 4];
        crc.copy_from_slice(&entry[16..20]);
        if crc32c::crc32c(&entry[..16]) != u32::from_le_bytes(crc) {
            stop = Some(LogStop::BadCrc);
            break;
        }
        let mut start = [0; 8];
        let mut end = [0; 8];
        start.copy_from_slice(&entry[..8]);
        end.copy_from_slice(&entry[8..16]);
        let (start, end) = (u64::from_le_bytes(start), u64::from_le_bytes(end));
        if start >= end {
            stop = Some(LogStop::BadRange);
            break;
        }
        acks.insert_range(start, end);
        pos += LOG_ENTRY_LEN;
    }
    Ok(LogReplay {
        acks,
        good_end: pos,
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn check_against(set: &AckSet, model: &BTreeSet<u64>) {
        assert_eq!(set.count(), model.len() as u64);
        let mut prev_end = None;
        for (s, e) in set.ranges() {
            assert!(s < e);
            if let Some(p) = prev_end {
                assert!(s > p, "ranges touch or overlap: {p} then {s}");
            }
            prev_end = Some(e);
            for x in s..e {
                assert!(model.contains(&x));
            }
        }
    }

    proptest! {
        /// The set agrees with a plain BTreeSet under random inserts,
        /// queries and pruning, and stays coalesced.
        #[test]
        fn agrees_with_a_plain_set(
            ops in proptest::collection::vec((0u8..4, 0u64..200, 0u64..20), 0..200),
        ) {
            let mut set = AckSet::new();
            let mut model = BTreeSet::new();
            let mut floor = 0;
            for (op, a, len) in ops {
                match op {
                    0 => {
                        let a = a.max(floor);
                        prop_assert_eq!(set.insert(a), model.insert(a));
                    }
                    1 => {
                        let a = a.max(floor);
                        let added = (a..a + len).filter(|x| model.insert(*x)).count() as u64;
                        prop_assert_eq!(set.insert_range(a, a + len), added);
                    }
                    2 => {
                        let b = a + len;
                        prop_assert_eq!(set.contains(a), model.contains(&a));
                        prop_assert_eq!(set.count_in(a, b), model.range(a..b).count() as u64);
                        prop_assert_eq!(set.covers(a, b), (a..b).all(|x| model.contains(&x)));
                        let missing = (a..).find(|x| !model.contains(x)).unwrap();
                        prop_assert_eq!(set.next_missing(a), missing);
                    }
                    _ => {
                        floor = floor.max(a / 2);
                        set.remove_below(floor);
                        model = model.split_off(&floor);
                    }
                }
                check_against(&set, &model);
            }
        }

        /// Any prefix of a log replays to a subset of the full set, and the
        /// good end is on an entry boundary.
        #[test]
        fn log_prefix_is_a_subset(
            ranges in proptest::collection::vec((0u64..1000, 1u64..50), 0..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut log = Vec::new();
            encode_log_header(&mut log);
            let mut full = AckSet::new();
            for &(s, len) in &ranges {
                encode_log_entry(&mut log, s, s + len);
                full.insert_range(s, s + len);
            }
            prop_assert_eq!(&decode_log(&log).unwrap().acks, &full);
            let cut = cut.index(log.len() + 1);
            match decode_log(&log[..cut]) {
                Err(e) => prop_assert!(cut < LOG_HEADER_LEN, "{e}"),
                Ok(replay) => {
                    prop_assert_eq!((replay.good_end - LOG_HEADER_LEN) % LOG_ENTRY_LEN, 0);
                    prop_assert!(replay.good_end <= cut);
                    prop_assert_eq!(replay.stop.is_some(), replay.good_end < cut);
                    for (s, e) in replay.acks.ranges() {
                        prop_assert!(full.covers(s, e));
                    }
                }
            }
        }
    }

    #[test]
    fn corrupt_entry_stops_replay() {
        let mut log = Vec::new();
        encode_log_header(&mut log);
        encode_log_entry(&mut log, 0, 10);
        encode_log_entry(&mut log, 20, 30);
        encode_log_entry(&mut log, 40, 50);
        log[LOG_HEADER_LEN + LOG_ENTRY_LEN + 3] ^= 0x10;
        let replay = decode_log(&log).unwrap();
        assert_eq!(replay.stop, Some(LogStop::BadCrc));
        assert_eq!(replay.good_end, LOG_HEADER_LEN + LOG_ENTRY_LEN);
        assert_eq!(replay.acks.ranges().collect::<Vec<_>>(), vec![(0, 10)]);
    }

    #[test]
    fn ranges_coalesce() {
        let mut set = AckSet::new();
        for seq in [5, 3, 4, 7, 6] {
            assert!(set.insert(seq));
        }
        assert!(!set.insert(5));
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(3, 8)]);
        assert_eq!(set.next_missing(3), 8);
        assert_eq!(set.next_missing(2), 2);
        assert!(set.covers(3, 8));
        assert!(!set.covers(3, 9));
        set.remove_below(6);
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(6, 8)]);
        assert_eq!(set.count(), 2);
    }
}
