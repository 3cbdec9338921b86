//! Duplicate detection for retransmitted requests (RFC 5080 §2.2.2).
//!
//! A gateway that does not hear our Accounting-Response resends the same
//! packet: same source address and port, same Identifier, same Request
//! Authenticator. The cache remembers the response it got for a few seconds,
//! so the retransmission is answered again without being applied again (a
//! re-applied Start could otherwise undo a Stop that arrived in between).
//!
//! Sans-IO: the caller passes `now`. Memory is bounded: at most `capacity`
//! entries, the oldest evicted first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::codec::AccountingResponse;

/// How long a response is remembered by default. FreeRADIUS keeps replies for
/// 5 s (`cleanup_delay`); gateways retransmit within a few seconds.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
/// Default bound: at ~100 octets an entry, 64 Ki entries are ~6.5 MiB and
/// cover 13,000 requests/s over the default window. Past that, the oldest are
/// evicted early; a retransmission of an evicted request is applied again,
/// which Start/Interim/Stop tolerate (they are idempotent on their own).
pub const DEFAULT_CAPACITY: usize = 65_536;

/// What identifies a retransmission (RFC 5080 §2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub source: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

#[derive(Debug)]
struct Entry {
    response: AccountingResponse,
    at: Instant,
}

/// Bounded, time-windowed memory of the responses sent.
#[derive(Debug)]
pub struct DuplicateCache {
    entries: HashMap<RequestKey, Entry>,
    /// Insertion order; exactly one item per entry in `entries`.
    order: VecDeque<(Instant, RequestKey)>,
    window: Duration,
    capacity: usize,
}

impl DuplicateCache {
    /// A `capacity` of 0 disables the cache.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            window,
            capacity,
        }
    }

    /// The response already sent for `key`, if within the window.
    pub fn get(&mut self, now: Instant, key: &RequestKey) -> Option<AccountingResponse> {
        self.expire(now);
        self.entries.get(key).map(|e| e.response)
    }

    /// Remembers the response sent for `key`. A key already present keeps
    /// its first response and time.
    pub fn insert(&mut self, now: Instant, key: RequestKey, response: AccountingResponse) {
        self.expire(now);
        if self.capacity == 0 || self.entries.contains_key(&key) {
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.entries.insert(key, Entry { response, at: now });
        self.order.push_back((now, key));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            // Only the entry this order item was pushed for.
            if self.entries.get(&key).is_some_and(|e| e.at == at) {
                self.entries.remove(&key);
            }
        }
    }
}

impl Default for DuplicateCache {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, identifier: u8) -> RequestKey {
        RequestKey {
            source: SocketAddr::from(([127, 0, 0, 1], port)),
            identifier,
            authenticator: [identifier; 16],
        }
    }

    #[test]
    fn remembers_within_the_window() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(5), 10);
        c.insert(t0, key(1, 1), [1; 20]);
        assert_eq!(
            c.get(t0 + Duration::from_secs(4), &key(1, 1)),
            Some([1; 20])
        );
        assert_eq!(c.get(t0, &key(2, 1)), None, "other port");
        assert_eq!(c.get(t0, &key(1, 2)), None, "other identifier");
        let mut other_auth = key(1, 1);
        other_auth.authenticator[0] ^= 1;
        assert_eq!(c.get(t0, &other_auth), None, "other authenticator");
        assert_eq!(c.get(t0 + Duration::from_secs(5), &key(1, 1)), None);
        assert!(c.is_empty());
    }

    #[test]
    fn first_response_wins() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::default();
        c.insert(t0, key(1, 1), [1; 20]);
        c.insert(t0 + Duration::from_secs(1), key(1, 1), [2; 20]);
        assert_eq!(
            c.get(t0 + Duration::from_secs(1), &key(1, 1)),
            Some([1; 20])
        );
        assert_eq!(c.len(), 1);
        // Still expires with the first insertion's time.
        assert_eq!(c.get(t0 + Duration::from_secs(5), &key(1, 1)), None);
    }

    #[test]
    fn bounded_evicts_oldest() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(60), 3);
        for i in 0..5u8 {
            c.insert(t0 + Duration::from_millis(u64::from(i)), key(1, i), [i; 20]);
        }
        assert_eq!(c.len(), 3);
        let now = t0 + Duration::from_millis(10);
        assert_eq!(c.get(now, &key(1, 0)), None);
        assert_eq!(c.get(now, &key(1, 1)), None);
        assert_eq!(c.get(now, &key(1, 4)), Some([4; 20]));
    }

    #[test]
    fn zero_capacity_disables() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(5), 0);
        c.insert(t0, key(1, 1), [1; 20]);
        assert_eq!(c.get(t0, &key(1, 1)), None);
    }

    #[test]
    fn reinserted_after_expiry_is_kept() {
        let t0 = Instant::now();
        let mut c = DuplicateCache::new(Duration::from_secs(5), 10);
        c.insert(t0, key(1, 1), [1; 20]);
        let t1 = t0 + Duration::from_secs(6);
        c.insert(t1, key(1, 1), [2; 20]);
        assert_eq!(
            c.get(t1 + Duration::from_secs(1), &key(1, 1)),
            Some([2; 20])
        );
        assert_eq!(c.order.len(), c.entries.len());
    }

    proptest::proptest! {
        #[test]
        fn never_exceeds_capacity(
            ops in proptest::collection::vec((0u16..8, any_u8(), 0u64..3000), 0..200),
            capacity in 0usize..6,
        ) {
            let t0 = Instant::now();
            let mut c = DuplicateCache::new(Duration::from_secs(1), capacity);
            let mut now = t0;
            for (port, id, advance_ms) in ops {
                now += Duration::from_millis(advance_ms / 10);
                if c.get(now, &key(port, id)).is_none() {
                    c.insert(now, key(port, id), [id; 20]);
                }
                proptest::prop_assert!(c.len() <= capacity);
                proptest::prop_assert_eq!(c.order.len(), c.entries.len());
            }
        }
    }

    fn any_u8() -> impl proptest::strategy::Strategy<Value = u8> {
        0u8..4
    }
}
