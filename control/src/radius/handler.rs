//! The accounting state machine: one datagram and `now` in, at most one
//! Accounting-Response out, the session table updated on the way. No sockets
//! and no clock: [`super::server`] does the I/O, tests call
//! [`AccountingHandler::handle`] directly.
//!
//! Order of checks, each failure dropped without a reply and counted:
//! known client → well-formed Accounting-Request → authenticator verifies with
//! that client's secret → (a retransmission is answered from the duplicate
//! cache here) → attributes make sense ([`Accounting::from_attributes`]) →
//! applied and acknowledged.
//!
//! A Start or Interim-Update for an address that holds a static session (API
//! or configuration file) is acknowledged but does not replace it: counted
//! (`static_kept`) and logged.
//!
//! With a [`SessionPersistence`] ([`AccountingHandler::with_persistence`]),
//! the bindings it makes survive a restart: every change (a new or changed
//! binding, a Stop, Accounting-On/Off) is handed to it, and the sessions it
//! kept are bound again at start, until the gateway's next Start or
//! Interim-Update replaces them or a Stop ends them. An Interim-Update that
//! repeats the binding hands nothing over. The handler never waits for the
//! disk: the store's implementation writes behind, in batches.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use super::accounting::{Accounting, SessionRecord};
use super::clients::ClientSecrets;
use super::codec::{parse_accounting_request, AccountingResponse, DropReason};
use super::dedup::{DuplicateCache, RequestKey};
use super::stats::{Event, RadiusStats};
use crate::model::Imsi;
use crate::snapshot::{canonical_ip, Session, SessionTable};

/// A session RADIUS bound, as kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedSession {
    pub ip: Ipv4Addr,
    /// The gateway that reported it (for Accounting-On/Off).
    pub nas: IpAddr,
    pub session: Session,
}

/// Where the handler keeps its bindings across restarts (the control
/// store's `radius_sessions` table in `simgate serve`). `save` and `remove`
/// are called on the packet path: they must not wait for the disk.
pub trait SessionPersistence: Send + Sync + std::fmt::Debug {
    /// The sessions kept by an earlier run.
    fn restore(&self) -> Vec<PersistedSession>;
    /// `ip` is now bound to `session`, reported by `nas`.
    fn save(&self, ip: Ipv4Addr, nas: IpAddr, session: &Session);
    /// `ip` is no longer bound by RADIUS.
    fn remove(&self, ip: Ipv4Addr);
    /// An Interim-Update repeated the binding of `ip`: the session is still
    /// alive. Stores that expire sessions (a fleet's etcd leases) extend it;
    /// others need do nothing.
    fn refresh(&self, _ip: Ipv4Addr, _nas: IpAddr, _session: &Session) {}
    /// Accounting-On/Off from `nas`: every session that gateway reported is
    /// over, including those other nodes of a fleet bound. Stores that only
    /// hold this handler's bindings need do nothing (`remove` was called
    /// for each of them).
    fn clear_nas(&self, _nas: IpAddr) {}
}

/// Who made a binding through RADIUS, so Accounting-On/Off from that gateway
/// can end it and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    nas: IpAddr,
    imsi: Imsi,
}

/// Applies Accounting-Requests to a [`SessionTable`].
#[derive(Debug)]
pub struct AccountingHandler {
    clients: ClientSecrets,
    sessions: Arc<SessionTable>,
    stats: Arc<RadiusStats>,
    duplicates: DuplicateCache,
    /// The bindings this handler made, by address. An entry goes away with
    /// the session's Stop, its gateway's Accounting-On/Off, or is replaced by
    /// the address's next Start; so it holds at most one entry per address
    /// RADIUS ever bound, like the session table itself.
    bound: HashMap<Ipv4Addr, Binding>,
    persistence: Option<Arc<dyn SessionPersistence>>,
}

impl AccountingHandler {
    pub fn new(
        clients: ClientSecrets,
        sessions: Arc<SessionTable>,
        stats: Arc<RadiusStats>,
        duplicates: DuplicateCache,
    ) -> Self {
        Self {
            clients,
            sessions,
            stats,
            duplicates,
            bound: HashMap::new(),
            persistence: None,
        }
    }

    /// Keeps bindings in `persistence` from now on, and binds again the
    /// sessions it kept (except where a static session holds the address
    /// now: that row is removed).
    pub fn with_persistence(mut self, persistence: Arc<dyn SessionPersistence>) -> Self {
        let mut restored = 0u64;
        for p in persistence.restore() {
            let ip = IpAddr::V4(p.ip);
            let imsi = p.session.imsi.clone();
            match self.sessions.bind_learned(ip, p.session) {
                Ok(_) => {
                    self.bound.insert(p.ip, Binding { nas: p.nas, imsi });
                    restored += 1;
                }
                Err(_) => persistence.remove(p.ip),
            }
        }
        self.stats.count_restored(restored);
        if restored > 0 {
            tracing::info!(
                sessions = restored,
                "RADIUS sessions restored from the store"
            );
        }
        self.persistence = Some(persistence);
        self
    }

    pub fn stats(&self) -> &Arc<RadiusStats> {
        &self.stats
    }

    /// Handles one datagram from `source`; returns the response to send back
    /// to `source`, or `None` when the datagram is dropped.
    pub fn handle(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
    ) -> Option<AccountingResponse> {
        self.stats.count(Event::Received);
        let Some(secret) = self.clients.secret_for(source.ip()) else {
            return self.drop(
                source,
                DropReason::UnknownClient,
                &"no secret for this address",
            );
        };
        let secret = secret.expose().as_bytes();
        let request = match parse_accounting_request(datagram) {
            Ok(r) => r,
            Err(e) => return self.drop(source, e.drop_reason(), &e),
        };
        if let Err(e) = request.verify(secret) {
            return self.drop(source, e.drop_reason(), &e);
        }
        let key = RequestKey {
            source,
            identifier: request.identifier,
            authenticator: request.authenticator,
        };
        if let Some(response) = self.duplicates.get(now, &key) {
            self.stats.count(Event::Duplicate);
            self.stats.count(Event::Answered);
            tracing::debug!(%source, identifier = request.identifier, "RADIUS retransmission answered again");
            return Some(response);
        }
        let accounting = match Accounting::from_attributes(&request.attributes) {
            Ok(a) => a,
            Err(e) => return self.drop(source, e.drop_reason(), &e),
        };
        let nas = request
            .attributes
            .nas_ip
            .map_or_else(|| canonical_ip(source.ip()), IpAddr::V4);
        let response = request.response(secret);
        self.apply(nas, accounting);
        self.duplicates.insert(now, key, response);
        self.stats.count(Event::Answered);
        Some(response)
    }

    /// Logs and counts a dropped datagram, in one call.
    fn drop(
        &self,
        source: SocketAddr,
        reason: DropReason,
        detail: &dyn std::fmt::Display,
    ) -> Option<AccountingResponse> {
        self.stats.count_drop(reason);
        tracing::debug!(%source, reason = reason.as_str(), %detail, "RADIUS accounting request dropped");
        None
    }

    fn apply(&mut self, nas: IpAddr, accounting: Accounting) {
        match accounting {
            Accounting::Start(r) => {
                self.stats.count(Event::Start);
                self.bind(nas, r);
            }
            Accounting::Interim(r) => {
                self.stats.count(Event::Interim);
                self.bind(nas, r);
            }
            Accounting::Stop(r) => {
                self.stats.count(Event::Stop);
                self.stop(&r);
            }
            Accounting::AccountingOn => {
                self.stats.count(Event::AccountingOn);
                self.clear_nas(nas);
            }
            Accounting::AccountingOff => {
                self.stats.count(Event::AccountingOff);
                self.clear_nas(nas);
            }
            Accounting::Other(status) => {
                self.stats.count(Event::OtherStatus);
                tracing::debug!(status, "RADIUS Acct-Status-Type not acted on");
            }
        }
    }

    fn bind(&mut self, nas: IpAddr, r: SessionRecord) {
        if r.msisdn_ignored {
            self.stats.count(Event::MsisdnIgnored);
        }
        let ip = IpAddr::V4(r.framed_ip);
        let session = r.session();
        // An Interim-Update usually repeats what is bound: the table leaves
        // the entry (and the `Arc` readers hold) alone then.
        let changed = match self.sessions.bind_learned(ip, session.clone()) {
            Ok(changed) => changed,
            Err(fixed) => {
                self.stats.count(Event::StaticKept);
                tracing::info!(
                    %ip, radius_imsi = %r.imsi, static_imsi = %fixed.imsi, %nas,
                    "RADIUS session for an address with a static session: the static one is kept"
                );
                return;
            }
        };
        if changed {
            tracing::debug!(%ip, imsi = %r.imsi, %nas, "RADIUS session bound");
        }
        let binding = Binding { nas, imsi: r.imsi };
        let rebound = self.bound.get(&r.framed_ip) != Some(&binding);
        if let Some(p) = &self.persistence {
            if changed || rebound {
                p.save(r.framed_ip, nas, &session);
            } else {
                p.refresh(r.framed_ip, nas, &session);
            }
        }
        self.bound.insert(r.framed_ip, binding);
    }

    /// Unbinds only if the address still belongs to this IMSI: a Stop that
    /// arrives after the address went to another SIM must not end that SIM's
    /// session; the check and the removal are one atomic step.
    fn stop(&mut self, r: &SessionRecord) {
        let ip = IpAddr::V4(r.framed_ip);
        // A static session is not RADIUS's to end.
        let ended = !self.sessions.is_static(ip)
            && self.sessions.unbind_if(ip, |s| s.imsi == r.imsi).is_some();
        if ended {
            tracing::debug!(%ip, imsi = %r.imsi, "RADIUS session ended");
        } else {
            self.stats.count(Event::StaleStop);
            tracing::debug!(%ip, imsi = %r.imsi, "RADIUS Stop for an address this SIM no longer holds");
        }
        let ours = self
            .bound
            .get(&r.framed_ip)
            .is_some_and(|b| b.imsi == r.imsi);
        if ours {
            self.bound.remove(&r.framed_ip);
        }
        if ended || ours {
            if let Some(p) = &self.persistence {
                p.remove(r.framed_ip);
            }
        }
    }

    /// Accounting-On/Off: the gateway restarted or stops, so every session it
    /// reported is over. Ends the bindings this handler made for that gateway
    /// and that still hold the same IMSI (an address rebound since, through
    /// the API or another gateway, is left alone).
    fn clear_nas(&mut self, nas: IpAddr) {
        let mut cleared = 0u64;
        let sessions = &self.sessions;
        let persistence = self.persistence.as_deref();
        self.bound.retain(|&ip4, binding| {
            if binding.nas != nas {
                return true;
            }
            let ip = IpAddr::V4(ip4);
            if !sessions.is_static(ip)
                && sessions.unbind_if(ip, |s| s.imsi == binding.imsi).is_some()
            {
                cleared += 1;
            }
            if let Some(p) = persistence {
                p.remove(ip4);
            }
            false
        });
        if let Some(p) = persistence {
            p.clear_nas(nas);
        }
        self.stats.count_sessions_cleared(cleared);
        tracing::info!(%nas, cleared, "RADIUS Accounting-On/Off: gateway's sessions ended");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Secret;
    use crate::radius::clients::RadiusClient;
    use crate::radius::codec::{
        encode_accounting_request, verify_accounting_response, AccountingAttributes, AcctStatusType,
    };

    const SECRET: &[u8] = b"s3cret";

    struct Fixture {
        handler: AccountingHandler,
        sessions: Arc<SessionTable>,
        stats: Arc<RadiusStats>,
        now: Instant,
        next_id: u8,
    }

    fn fixture() -> Fixture {
        let clients = ClientSecrets::new(
            &[RadiusClient {
                address: "127.0.0.0/8".parse().unwrap(),
                secret: Secret::new("s3cret"),
            }],
            None,
        )
        .unwrap();
        let sessions = Arc::new(SessionTable::new());
        let stats = Arc::new(RadiusStats::new());
        Fixture {
            handler: AccountingHandler::new(
                clients,
                Arc::clone(&sessions),
                Arc::clone(&stats),
                DuplicateCache::default(),
            ),
            sessions,
            stats,
            now: Instant::now(),
            next_id: 0,
        }
    }

    const GW: &str = "127.0.0.1:40000";

    fn attrs(
        status: AcctStatusType,
        ip: [u8; 4],
        imsi: &'static str,
    ) -> AccountingAttributes<'static> {
        AccountingAttributes {
            status_type: Some(status),
            framed_ip: Some(Ipv4Addr::from(ip)),
            imsi: Some(imsi.as_bytes()),
            imeisv: Some(b"3530000000000101"),
            calling_station_id: Some(b"818000000001"),
            ..Default::default()
        }
    }

    impl Fixture {
        fn packet(&mut self, a: &AccountingAttributes<'_>) -> Vec<u8> {
            self.next_id = self.next_id.wrapping_add(1);
            encode_accounting_request(self.next_id, a, SECRET).unwrap()
        }

        fn send_from(&mut self, source: &str, packet: &[u8]) -> Option<AccountingResponse> {
            self.now += Duration::from_millis(10);
            self.handler
                .handle(self.now, source.parse().unwrap(), packet)
        }

        fn send(&mut self, a: &AccountingAttributes<'_>) -> Option<AccountingResponse> {
            let p = self.packet(a);
            let r = self.send_from(GW, &p);
            if let Some(r) = r {
                let req = parse_accounting_request(&p).unwrap();
                assert_eq!(
                    verify_accounting_response(&r, &req.authenticator, SECRET),
                    Ok(req.identifier)
                );
            }
            r
        }

        fn imsi_at(&self, ip: [u8; 4]) -> Option<String> {
            self.sessions
                .lookup(IpAddr::from(ip))
                .map(|s| s.imsi.to_string())
        }
    }

    #[test]
    fn start_binds_stop_unbinds() {
        let mut f = fixture();
        assert!(f
            .send(&attrs(
                AcctStatusType::Start,
                [10, 0, 0, 1],
                "001010000000001"
            ))
            .is_some());
        let s = f.sessions.lookup("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(s.imsi.as_str(), "001010000000001");
        assert_eq!(s.imei.as_ref().unwrap().as_str(), "3530000000000101");
        assert_eq!(s.msisdn.as_ref().unwrap().as_str(), "818000000001");
        assert!(f
            .send(&attrs(
                AcctStatusType::InterimUpdate,
                [10, 0, 0, 1],
                "001010000000001"
            ))
            .is_some());
        assert!(f
            .send(&attrs(
                AcctStatusType::Stop,
                [10, 0, 0, 1],
                "001010000000001"
            ))
            .is_some());
        assert_eq!(f.imsi_at([10, 0, 0, 1]), None);
        let s = f.stats.snapshot();
        assert_eq!((s.starts, s.interims, s.stops, s.stale_stops), (1, 1, 1, 0));
        assert_eq!((s.received, s.answered, s.dropped_total()), (3, 3, 0));
    }

    #[test]
    fn late_stop_does_not_end_the_new_holder() {
        let mut f = fixture();
        f.send(&attrs(
            AcctStatusType::Start,
            [10, 0, 0, 1],
            "001010000000001",
        ));
        // The address is reassigned to another SIM before the old Stop arrives.
        f.send(&attrs(
            AcctStatusType::Start,
            [10, 0, 0, 1],
            "001010000000002",
        ));
        assert!(f
            .send(&attrs(
                AcctStatusType::Stop,
                [10, 0, 0, 1],
                "001010000000001"
            ))
            .is_some());
        assert_eq!(f.imsi_at([10, 0, 0, 1]).as_deref(), Some("001010000000002"));
        assert_eq!(f.stats.snapshot().stale_stops, 1);
        // A Stop for an address nobody holds is acknowledged too.
        assert!(f
            .send(&attrs(
                AcctStatusType::Stop,
                [10, 0, 0, 9],
                "001010000000009"
            ))
            .is_some());
        assert_eq!(f.stats.snapshot().stale_stops, 2);
    }

    #[test]
    fn drops_are_silent_and_counted() {
        let mut f = fixture();
        let start = attrs(AcctStatusType::Start, [10, 0, 0, 1], "001010000000001");
        let p = f.packet(&start);
        assert_eq!(f.send_from("192.0.2.1:1813", &p), None);
        let mut forged = p.clone();
        forged[4] ^= 1;
        assert_eq!(f.send_from(GW, &forged), None);
        let wrong_secret = encode_accounting_request(1, &start, b"other").unwrap();
        assert_eq!(f.send_from(GW, &wrong_secret), None);
        assert_eq!(f.send_from(GW, &p[..10]), None);
        assert_eq!(
            f.send(&AccountingAttributes {
                imsi: None,
                ..start
            }),
            None
        );
        assert_eq!(
            f.send(&AccountingAttributes {
                framed_ip: None,
                ..start
            }),
            None
        );
        assert_eq!(
            f.send(&AccountingAttributes {
                imsi: Some(b"12"),
                ..start
            }),
            None
        );
        assert_eq!(
            f.send(&AccountingAttributes {
                imeisv: Some(b"abc"),
                ..start
            }),
            None
        );
        let mut response_code = p.clone();
        response_code[0] = 5;
        assert_eq!(f.send_from(GW, &response_code), None);
        assert!(f.sessions.is_empty());
        let s = f.stats.snapshot();
        for (reason, n) in [
            (DropReason::UnknownClient, 1),
            (DropReason::BadAuthenticator, 2),
            (DropReason::Malformed, 1),
            (DropReason::MissingImsi, 1),
            (DropReason::MissingFramedIp, 1),
            (DropReason::InvalidImsi, 1),
            (DropReason::InvalidImei, 1),
            (DropReason::NotAccountingRequest, 1),
        ] {
            assert_eq!(s.dropped(reason), n, "{}", reason.as_str());
            assert_eq!(f.stats.dropped(reason), n);
        }
        assert_eq!((s.received, s.answered, s.starts), (9, 0, 0));
    }

    #[test]
    fn duplicate_answered_again_not_applied() {
        let mut f = fixture();
        let p = f.packet(&attrs(
            AcctStatusType::Start,
            [10, 0, 0, 1],
            "001010000000001",
        ));
        let first = f.send_from(GW, &p).unwrap();
        // Someone ends the session (a Stop, the API) before the retransmission.
        f.sessions.unbind("10.0.0.1".parse().unwrap());
        assert_eq!(f.send_from(GW, &p), Some(first));
        assert_eq!(f.imsi_at([10, 0, 0, 1]), None, "retransmission re-applied");
        // From another port it is a different request.
        assert!(f.send_from("127.0.0.1:40001", &p).is_some());
        assert!(f.imsi_at([10, 0, 0, 1]).is_some());
        // Past the window, the same packet is new again.
        f.sessions.unbind("10.0.0.1".parse().unwrap());
        f.now += Duration::from_secs(6);
        assert_eq!(f.send_from(GW, &p), Some(first));
        assert!(f.imsi_at([10, 0, 0, 1]).is_some());
        let s = f.stats.snapshot();
        assert_eq!((s.starts, s.duplicates, s.answered), (3, 1, 4));
    }

    #[test]
    fn accounting_on_off_end_that_gateways_sessions() {
        let mut f = fixture();
        let nas_a = Some(Ipv4Addr::new(192, 0, 2, 1));
        let nas_b = Some(Ipv4Addr::new(192, 0, 2, 2));
        let on_a = |a: AccountingAttributes<'static>| AccountingAttributes { nas_ip: nas_a, ..a };
        let on_b = |a: AccountingAttributes<'static>| AccountingAttributes { nas_ip: nas_b, ..a };
        f.send(&on_a(attrs(
            AcctStatusType::Start,
            [10, 0, 0, 1],
            "001010000000001",
        )));
        f.send(&on_a(attrs(
            AcctStatusType::Start,
            [10, 0, 0, 2],
            "001010000000002",
        )));
        f.send(&on_b(attrs(
            AcctStatusType::Start,
            [10, 0, 0, 3],
            "001010000000003",
        )));
        // 10.0.0.2 was rebound through the API since: not RADIUS's to end.
        f.sessions.bind(
            "10.0.0.2".parse().unwrap(),
            Session::new(Imsi::parse("001010000000099").unwrap(), None, None),
        );
        let on = AccountingAttributes {
            status_type: Some(AcctStatusType::AccountingOn),
            nas_ip: nas_a,
            ..Default::default()
        };
        assert!(f.send(&on).is_some());
        assert_eq!(f.imsi_at([10, 0, 0, 1]), None);
        assert_eq!(f.imsi_at([10, 0, 0, 2]).as_deref(), Some("001010000000099"));
        assert_eq!(f.imsi_at([10, 0, 0, 3]).as_deref(), Some("001010000000003"));
        let off = AccountingAttributes {
            status_type: Some(AcctStatusType::AccountingOff),
            nas_ip: nas_b,
            ..Default::default()
        };
        assert!(f.send(&off).is_some());
        assert_eq!(f.imsi_at([10, 0, 0, 3]), None);
        let s = f.stats.snapshot();
        assert_eq!(
            (s.accounting_on, s.accounting_off, s.sessions_cleared),
            (1, 1, 2)
        );
        assert!(f.handler.bound.is_empty());
    }

    #[test]
    fn without_nas_ip_the_source_address_is_the_gateway() {
        let mut f = fixture();
        f.send(&attrs(
            AcctStatusType::Start,
            [10, 0, 0, 1],
            "001010000000001",
        ));
        let on = AccountingAttributes {
            status_type: Some(AcctStatusType::AccountingOn),
            ..Default::default()
        };
        let p = f.packet(&on);
        assert!(f.send_from("127.0.0.2:1", &p).is_some());
        assert!(f.imsi_at([10, 0, 0, 1]).is_some(), "another gateway");
        let p = f.packet(&on);
        assert!(f.send_from("[::ffff:127.0.0.1]:9", &p).is_some());
        assert_eq!(f.imsi_at([10, 0, 0, 1]), None);
    }

    #[test]
    fn other_status_and_bad_msisdn_are_acknowledged() {
        let mut f = fixture();
        let a = AccountingAttributes {
            status_type: Some(AcctStatusType::Other(9)),
            ..Default::default()
        };
        assert!(f.send(&a).is_some());
        let a = AccountingAttributes {
            calling_station_id: Some(b"not-a-number"),
            ..attrs(AcctStatusType::Start, [10, 0, 0, 1], "001010000000001")
        };
        assert!(f.send(&a).is_some());
        let s = f.sessions.lookup("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(s.msisdn, None);
        let s = f.stats.snapshot();
        assert_eq!((s.other_status, s.msisdn_ignored), (1, 1));
        let missing = AccountingAttributes {
            status_type: None,
            ..Default::default()
        };
        assert_eq!(f.send(&missing), None);
        assert_eq!(f.stats.dropped(DropReason::MissingStatusType), 1);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_datagram(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)
        ) {
            let mut f = fixture();
            let _ = f.send_from(GW, &data);
        }
    }
}
