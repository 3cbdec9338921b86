//! Counters of the accounting listener: plain atomics, so the control crate
//! needs no metrics library; the data plane's `/metrics` reads a
//! [`RadiusStats::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::codec::DropReason;

/// What the listener did, counted since it started. Shared (`Arc`) between
/// the listener and whoever exports metrics.
#[derive(Debug, Default)]
pub struct RadiusStats {
    received: AtomicU64,
    answered: AtomicU64,
    starts: AtomicU64,
    interims: AtomicU64,
    stops: AtomicU64,
    stale_stops: AtomicU64,
    accounting_on: AtomicU64,
    accounting_off: AtomicU64,
    sessions_cleared: AtomicU64,
    other_status: AtomicU64,
    duplicates: AtomicU64,
    msisdn_ignored: AtomicU64,
    io_errors: AtomicU64,
    static_kept: AtomicU64,
    restored: AtomicU64,
    persist_errors: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadiusStatsSnapshot {
    /// Datagrams received.
    pub received: u64,
    /// Accounting-Responses sent, duplicates included.
    pub answered: u64,
    /// Start, Interim-Update and Stop requests applied (duplicates excluded).
    pub starts: u64,
    pub interims: u64,
    pub stops: u64,
    /// Stops acknowledged without unbinding: the address was free or held by
    /// another IMSI (a late Stop after the address was reassigned).
    pub stale_stops: u64,
    pub accounting_on: u64,
    pub accounting_off: u64,
    /// Sessions unbound because their gateway sent Accounting-On/Off.
    pub sessions_cleared: u64,
    /// Requests with a status type simgate does not act on (acknowledged).
    pub other_status: u64,
    /// Retransmissions answered from the duplicate cache, not applied again.
    pub duplicates: u64,
    /// Sessions bound without an MSISDN because Calling-Station-Id was not one.
    pub msisdn_ignored: u64,
    /// Socket receive or send errors.
    pub io_errors: u64,
    /// Start/Interim-Update for an address that has a static session (API or
    /// configuration file): acknowledged, the static session kept.
    pub static_kept: u64,
    /// Sessions reloaded from the store at start.
    pub restored: u64,
    /// Batches of session changes the store could not write (the sessions
    /// stay bound in memory; the gateway's next Interim-Update retries).
    pub persist_errors: u64,
    /// Datagrams dropped without a reply, by reason, in [`DropReason::ALL`] order.
    pub dropped: [(DropReason, u64); DropReason::ALL.len()],
}

impl Default for RadiusStatsSnapshot {
    fn default() -> Self {
        Self {
            received: 0,
            answered: 0,
            starts: 0,
            interims: 0,
            stops: 0,
            stale_stops: 0,
            accounting_on: 0,
            accounting_off: 0,
            sessions_cleared: 0,
            other_status: 0,
            duplicates: 0,
            msisdn_ignored: 0,
            io_errors: 0,
            static_kept: 0,
            restored: 0,
            persist_errors: 0,
            dropped: DropReason::ALL.map(|r| (r, 0)),
        }
    }
}

impl RadiusStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> RadiusStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RadiusStatsSnapshot {
            received: get(&self.received),
            answered: get(&self.answered),
            starts: get(&self.starts),
            interims: get(&self.interims),
            stops: get(&self.stops),
            stale_stops: get(&self.stale_stops),
            accounting_on: get(&self.accounting_on),
            accounting_off: get(&self.accounting_off),
            sessions_cleared: get(&self.sessions_cleared),
            other_status: get(&self.other_status),
            duplicates: get(&self.duplicates),
            msisdn_ignored: get(&self.msisdn_ignored),
            io_errors: get(&self.io_errors),
            static_kept: get(&self.static_kept),
            restored: get(&self.restored),
            persist_errors: get(&self.persist_errors),
            dropped: DropReason::ALL.map(|r| (r, get(&self.dropped[r.index()]))),
        }
    }

    /// Drops counted for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }

    /// Every drop goes through here (with its log line, in the handler).
    pub(crate) fn count_drop(&self, reason: DropReason) {
        bump(&self.dropped[reason.index()]);
    }

    pub(crate) fn count(&self, event: Event) {
        bump(match event {
            Event::Received => &self.received,
            Event::Answered => &self.answered,
            Event::Start => &self.starts,
            Event::Interim => &self.interims,
            Event::Stop => &self.stops,
            Event::StaleStop => &self.stale_stops,
            Event::AccountingOn => &self.accounting_on,
            Event::AccountingOff => &self.accounting_off,
            Event::OtherStatus => &self.other_status,
            Event::Duplicate => &self.duplicates,
            Event::MsisdnIgnored => &self.msisdn_ignored,
            Event::IoError => &self.io_errors,
            Event::StaticKept => &self.static_kept,
            Event::PersistError => &self.persist_errors,
        });
    }

    pub(crate) fn count_restored(&self, n: u64) {
        self.restored.fetch_add(n, Ordering::Relaxed);
    }

    /// For a [`SessionPersistence`](super::SessionPersistence) that failed
    /// to write.
    pub fn count_persist_error(&self) {
        self.count(Event::PersistError);
    }

    pub(crate) fn count_sessions_cleared(&self, n: u64) {
        self.sessions_cleared.fetch_add(n, Ordering::Relaxed);
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Counted events other than drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Received,
    Answered,
    Start,
    Interim,
    Stop,
    StaleStop,
    AccountingOn,
    AccountingOff,
    OtherStatus,
    Duplicate,
    MsisdnIgnored,
    IoError,
    StaticKept,
    PersistError,
}

impl RadiusStatsSnapshot {
    /// Drops counted for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}
