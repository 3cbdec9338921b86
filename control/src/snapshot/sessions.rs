//! IP → IMSI bindings, learned from RADIUS accounting, the API or the config.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use dashmap::{DashMap, DashSet};

use super::{Identity, IdentityError};
use crate::model::{Imei, Imsi, Msisdn};

/// One packet-data session: which SIM holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub imsi: Imsi,
    pub imei: Option<Imei>,
    pub msisdn: Option<Msisdn>,
    /// What this session resolved to under the newest snapshot that
    /// resolved it ([`super::Snapshot::resolve_cached`]).
    resolved: ResolvedSlot,
}

impl Session {
    pub fn new(imsi: Imsi, imei: Option<Imei>, msisdn: Option<Msisdn>) -> Self {
        Self {
            imsi,
            imei,
            msisdn,
            resolved: ResolvedSlot::default(),
        }
    }

    pub(super) fn resolved(&self) -> Option<Arc<Resolution>> {
        self.resolved.0.load_full()
    }

    pub(super) fn remember(&self, resolution: &Arc<Resolution>) {
        self.resolved.0.store(Some(Arc::clone(resolution)));
    }
}

/// A session's identity as one snapshot version resolved it: a datagram
/// from a known device costs the session probe and a version compare, not
/// two more map probes and an `Identity` built (or refused) again.
#[derive(Debug)]
pub(super) struct Resolution {
    pub(super) version: u64,
    pub(super) result: Result<Arc<Identity>, IdentityError>,
}

/// A cache, not part of what a session is: equal whatever it holds, and a
/// copied session starts without it.
#[derive(Default)]
struct ResolvedSlot(ArcSwapOption<Resolution>);

impl Clone for ResolvedSlot {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for ResolvedSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ResolvedSlot {}

impl std::fmt::Debug for ResolvedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// Concurrent map from source address to session. Entries are `Arc`s so a
/// lookup on the hot path is one probe and a reference-count increment.
///
/// Hashed with foldhash (per-process random seed) rather than SipHash: the
/// keys are addresses the packet gateway assigns, not attacker-chosen, and
/// at a million sessions the hash was a measurable part of a lookup
/// (criterion, `benches/benches/sessions.rs`).
#[derive(Debug, Default)]
pub struct SessionTable {
    by_ip: DashMap<IpAddr, Arc<Session>, foldhash::fast::RandomState>,
    /// Addresses whose session is static (API or configuration file): RADIUS
    /// does not replace those ([`Self::bind_learned`]).
    statics: DashSet<IpAddr, foldhash::fast::RandomState>,
}

impl SessionTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<Session>> {
        self.by_ip
            .get(&canonical_ip(ip))
            .map(|e| Arc::clone(e.value()))
    }

    /// Binds `ip` to a session, replacing whatever held it.
    pub fn bind(&self, ip: IpAddr, session: Session) -> Option<Arc<Session>> {
        self.by_ip.insert(canonical_ip(ip), Arc::new(session))
    }

    pub fn unbind(&self, ip: IpAddr) -> Option<Arc<Session>> {
        self.by_ip.remove(&canonical_ip(ip)).map(|(_, s)| s)
    }

    /// Binds a static session (API or configuration file): one that
    /// [`Self::bind_learned`] leaves alone.
    pub fn bind_static(&self, ip: IpAddr, session: Session) -> Option<Arc<Session>> {
        let ip = canonical_ip(ip);
        self.statics.insert(ip);
        self.by_ip.insert(ip, Arc::new(session))
    }

    /// Removes a static session.
    pub fn unbind_static(&self, ip: IpAddr) -> Option<Arc<Session>> {
        let ip = canonical_ip(ip);
        self.statics.remove(&ip);
        self.by_ip.remove(&ip).map(|(_, s)| s)
    }

    /// Whether `ip` holds a static session.
    pub fn is_static(&self, ip: IpAddr) -> bool {
        self.statics.contains(&canonical_ip(ip))
    }

    /// Binds a session learned from RADIUS, unless `ip` holds a static one:
    /// `Err(static session)` then, and nothing changes. `Ok(true)` when the
    /// binding changed, `Ok(false)` when it was already this session (the
    /// usual Interim-Update: the entry, and the `Arc` readers hold, stay).
    pub fn bind_learned(&self, ip: IpAddr, session: Session) -> Result<bool, Arc<Session>> {
        let ip = canonical_ip(ip);
        if self.statics.contains(&ip) {
            if let Some(s) = self.lookup(ip) {
                return Err(s);
            }
        }
        if self.lookup(ip).is_some_and(|s| *s == session) {
            return Ok(false);
        }
        self.by_ip.insert(ip, Arc::new(session));
        Ok(true)
    }

    /// Unbinds `ip` only if its current session satisfies `pred`, atomically
    /// (a RADIUS Stop must not end a newer session that rebound the address
    /// between a lookup and an unbind).
    pub fn unbind_if(
        &self,
        ip: IpAddr,
        pred: impl FnOnce(&Session) -> bool,
    ) -> Option<Arc<Session>> {
        self.by_ip
            .remove_if(&canonical_ip(ip), |_, s| pred(s))
            .map(|(_, s)| s)
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Calls `f` with each binding, without copying the table (the API's
    /// per-SIM session lookups; not for the hot path).
    pub fn for_each(&self, mut f: impl FnMut(IpAddr, &Arc<Session>)) {
        for e in self.by_ip.iter() {
            f(*e.key(), e.value());
        }
    }

    /// A copy of all bindings, for listing (not for the hot path).
    pub fn entries(&self) -> Vec<(IpAddr, Arc<Session>)> {
        self.by_ip
            .iter()
            .map(|e| (*e.key(), Arc::clone(e.value())))
            .collect()
    }
}

/// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; sessions are
/// keyed by the plain IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_v4_finds_v4_binding() {
        let t = SessionTable::new();
        let imsi = Imsi::parse("001010000000001").unwrap();
        t.bind(
            "127.0.1.5".parse().unwrap(),
            Session::new(imsi.clone(), None, None),
        );
        let s = t.lookup("::ffff:127.0.1.5".parse().unwrap()).unwrap();
        assert_eq!(s.imsi, imsi);
        assert!(t.unbind("127.0.1.5".parse().unwrap()).is_some());
        assert!(t.lookup("127.0.1.5".parse().unwrap()).is_none());
    }

    #[test]
    fn learned_sessions_do_not_replace_static_ones() {
        let t = SessionTable::new();
        let ip: IpAddr = "10.1.0.1".parse().unwrap();
        let fixed = Session::new(Imsi::parse("001010000000001").unwrap(), None, None);
        let radius = Session::new(Imsi::parse("001010000000002").unwrap(), None, None);
        t.bind_static(ip, fixed.clone());
        assert!(t.is_static(ip));
        assert_eq!(*t.bind_learned(ip, radius.clone()).unwrap_err(), fixed);
        assert_eq!(*t.lookup(ip).unwrap(), fixed);
        t.unbind_static(ip);
        assert!(!t.is_static(ip));
        assert_eq!(t.bind_learned(ip, radius.clone()), Ok(true));
        assert_eq!(t.bind_learned(ip, radius.clone()), Ok(false));
        assert_eq!(*t.lookup(ip).unwrap(), radius);
    }
}
