//! Batch assembly, retry decisions and the delivery core of a destination.
//! All pure: time is an argument, randomness a seeded generator or a sample
//! passed in, so tests can replay any schedule.

pub mod core;
mod retry;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use self::core::{Batch, BatchResult, CoreConfig, DeadReason, DestinationCore, Entry, Event};
pub use retry::RetryPolicy;

use crate::sinks::BatchLimits;

/// Collects records into batches that respect a sink's limits, and says when
/// a partial batch has waited long enough (`linger`).
///
/// Records are pushed with their size in the sink's terms (for Kinesis, data
/// plus partition key). A batch is ready when it holds `max_records`, when
/// the next record would push it past `max_bytes`, or when its oldest record
/// has waited `linger`.
#[derive(Debug)]
pub struct Batcher<T> {
    limits: BatchLimits,
    linger: Duration,
    open: Vec<T>,
    open_bytes: usize,
    opened_at: Option<Instant>,
    ready: VecDeque<Vec<T>>,
}

/// A record bigger than the sink accepts; it can never be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record of {size} bytes exceeds the sink's limit of {limit} bytes")]
pub struct TooLarge<T> {
    pub record: T,
    pub size: usize,
    pub limit: usize,
}

impl<T> Batcher<T> {
    pub fn new(limits: BatchLimits, linger: Duration) -> Self {
        Self {
            limits,
            linger,
            open: Vec::new(),
            open_bytes: 0,
            opened_at: None,
            ready: VecDeque::new(),
        }
    }

    /// Adds a record. Full batches become available through [`Self::pop_ready`].
    pub fn push(&mut self, record: T, size: usize, now: Instant) -> Result<(), TooLarge<T>> {
        if size > self.limits.max_record_bytes || size > self.limits.max_bytes {
            return Err(TooLarge {
                record,
                size,
                limit: self.limits.max_record_bytes.min(self.limits.max_bytes),
            });
        }
        if !self.open.is_empty() && self.open_bytes + size > self.limits.max_bytes {
            self.close();
        }
        if self.open.is_empty() {
            self.opened_at = Some(now);
        }
        self.open.push(record);
        self.open_bytes += size;
        if self.open.len() >= self.limits.max_records {
            self.close();
        }
        Ok(())
    }

    /// Closes the open batch if it has lingered long enough.
    pub fn poll(&mut self, now: Instant) {
        if let Some(deadline) = self.deadline() {
            if now >= deadline {
                self.close();
            }
        }
    }

    /// When the open batch must be closed, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.linger)
    }

    /// Closes the open batch now (shutdown, or the caller is idle).
    pub fn flush(&mut self) {
        self.close();
    }

    pub fn pop_ready(&mut self) -> Option<Vec<T>> {
        self.ready.pop_front()
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Records held, open or ready.
    pub fn len(&self) -> usize {
        self.open.len() + self.ready.iter().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.ready.is_empty()
    }

    fn close(&mut self) {
        if !self.open.is_empty() {
            let batch = std::mem::replace(
                &mut self.open,
                Vec::with_capacity(self.limits.max_records.min(512)),
            );
            self.ready.push_back(batch);
        }
        self.open_bytes = 0;
        self.opened_at = None;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_records: 5,
        max_bytes: 100,
        max_record_bytes: 40,
    };

    #[test]
    fn closes_on_count_bytes_and_linger() {
        let t0 = Instant::now();
        let mut b = Batcher::new(LIMITS, Duration::from_millis(10));
        for i in 0..5 {
            b.push(i, 1, t0).unwrap();
        }
        assert_eq!(b.pop_ready().unwrap(), vec![0, 1, 2, 3, 4]);
        b.push(10, 40, t0).unwrap();
        b.push(11, 40, t0).unwrap();
        b.push(12, 40, t0).unwrap(); // 120 > 100: previous two close
        assert_eq!(b.pop_ready().unwrap(), vec![10, 11]);
        assert!(b.pop_ready().is_none());
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(10)));
        b.poll(t0 + Duration::from_millis(9));
        assert!(!b.has_ready());
        b.poll(t0 + Duration::from_millis(10));
        assert_eq!(b.pop_ready().unwrap(), vec![12]);
        assert!(b.deadline().is_none());
        assert!(b.push(13, 41, t0).is_err());
    }

    proptest! {
        /// Every record comes out exactly once, in order, and no batch breaks
        /// a limit.
        #[test]
        fn batches_respect_limits_and_keep_everything(
            sizes in proptest::collection::vec(0usize..60, 0..200),
            ticks in proptest::collection::vec(0u64..30, 0..200),
        ) {
            let t0 = Instant::now();
            let mut b = Batcher::new(LIMITS, Duration::from_millis(10));
            let mut out: Vec<(usize, usize)> = Vec::new();
            let mut accepted = Vec::new();
            let mut now = t0;
            for (i, &size) in sizes.iter().enumerate() {
                now += Duration::from_millis(*ticks.get(i).unwrap_or(&0));
                b.poll(now);
                match b.push((i, size), size, now) {
                    Ok(()) => accepted.push((i, size)),
                    Err(e) => prop_assert!(e.size > LIMITS.max_record_bytes),
                }
                while let Some(batch) = b.pop_ready() {
                    prop_assert!(!batch.is_empty());
                    prop_assert!(batch.len() <= LIMITS.max_records);
                    prop_assert!(batch.iter().map(|r| r.1).sum::<usize>() <= LIMITS.max_bytes);
                    out.extend(batch);
                }
            }
            b.flush();
            while let Some(batch) = b.pop_ready() {
                out.extend(batch);
            }
            prop_assert_eq!(out, accepted);
            prop_assert!(b.is_empty());
        }
    }
}
