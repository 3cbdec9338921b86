//! The data plane's read-only view of the control plane.
//!
//! Configuration (groups, subscribers, credentials) is an immutable
//! [`Snapshot`] behind an [`arc_swap::ArcSwap`]: readers take a cheap guard,
//! writers build a new snapshot and swap it in. Sessions change far more often
//! and number in the millions, so they live apart in a concurrent map keyed by
//! IP ([`SessionTable`]); an identity lookup is one probe there plus two map
//! lookups in the snapshot.

mod credentials;
mod sessions;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::model::{
    Credential, CredentialId, Group, GroupId, Imei, Imsi, Operator, OperatorId, Subscriber,
    SubscriberStatus,
};

pub use credentials::{resolve_credentials_ref, resolve_psk, resolve_x509, CredentialRefError};
pub use sessions::{canonical_ip, Session, SessionTable};

/// Persistent (structurally shared) map: cloning a snapshot to change one
/// SIM costs O(log n), not a copy of every entry — with hundreds of
/// thousands of SIMs a plain `HashMap` clone took ~50 ms per API change.
/// Hashed with foldhash: SipHash of the IMSI on every datagram was a few
/// per cent of UDP ingress CPU, and the keys come from the operator, not
/// from devices, so flooding resistance buys nothing here.
pub type Map<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

/// One consistent version of all configuration.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub operators: Map<OperatorId, Arc<Operator>>,
    pub groups: Map<GroupId, Arc<Group>>,
    pub subscribers: Map<Imsi, Arc<Subscriber>>,
    pub credentials: Map<CredentialId, Arc<Credential>>,
}

/// Who sent a packet, resolved from its session.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subscriber: Arc<Subscriber>,
    pub group: Option<Arc<Group>>,
    pub operator_id: OperatorId,
    /// IMEI the session reported, else the one registered on the SIM.
    pub imei: Option<Imei>,
}

/// Why traffic from a known session is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no session for this source address")]
    NoSession,
    #[error("session names IMSI {0} which is not registered")]
    UnknownSubscriber(Imsi),
    #[error("SIM {imsi} is {status:?}")]
    NotActive {
        imsi: Imsi,
        status: SubscriberStatus,
    },
    #[error("SIM {imsi} is locked to another IMEI (or the session reported none)")]
    ImeiMismatch { imsi: Imsi },
}

impl IdentityError {
    /// Label value for drop counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoSession => "unknown_source",
            Self::UnknownSubscriber(_) => "unknown_subscriber",
            Self::NotActive { .. } => "sim_not_active",
            Self::ImeiMismatch { .. } => "imei_lock",
        }
    }
}

impl Snapshot {
    /// Resolves a session to the subscriber and group it belongs to,
    /// enforcing status and IMEI lock.
    pub fn resolve(&self, session: &Session) -> Result<Identity, IdentityError> {
        let subscriber = self
            .subscribers
            .get(&session.imsi)
            .ok_or_else(|| IdentityError::UnknownSubscriber(session.imsi.clone()))?;
        if !subscriber.status.may_send() {
            return Err(IdentityError::NotActive {
                imsi: subscriber.imsi.clone(),
                status: subscriber.status,
            });
        }
        if let Some(lock) = &subscriber.imei_lock {
            // A session that reported no IMEI cannot prove it is the locked
            // device: refuse it too (secure by default).
            if !session
                .imei
                .as_ref()
                .is_some_and(|seen| imei_matches(lock, seen))
            {
                return Err(IdentityError::ImeiMismatch {
                    imsi: subscriber.imsi.clone(),
                });
            }
        }
        let group = subscriber
            .group_id
            .as_ref()
            .and_then(|g| self.groups.get(g))
            .cloned();
        let operator_id = subscriber
            .operator_id
            .clone()
            .or_else(|| group.as_ref().and_then(|g| g.operator_id.clone()))
            .or_else(|| self.operators.keys().next().cloned())
            .unwrap_or_else(default_operator);
        Ok(Identity {
            imei: session.imei.clone().or_else(|| subscriber.imei.clone()),
            subscriber: Arc::clone(subscriber),
            group,
            operator_id,
        })
    }
}

/// The first 14 digits identify the device (TAC + serial); IMEISV differs from
/// the IMEI only in its software version digits, and the 15th IMEI digit is a
/// check digit, so a lock set with either form matches the other.
fn imei_matches(lock: &Imei, seen: &Imei) -> bool {
    let a = lock.as_str();
    let b = seen.as_str();
    a.get(..14) == b.get(..14)
}

fn default_operator() -> OperatorId {
    #[allow(clippy::unwrap_used)] // a literal that satisfies the format
    OperatorId::parse("OP0000000001").unwrap()
}

/// The current snapshot, swapped atomically when configuration changes.
#[derive(Debug)]
pub struct SnapshotHandle {
    current: ArcSwap<Snapshot>,
}

impl SnapshotHandle {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// Cheap, lock-free read of the current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs a new snapshot; its version is set to follow the current one.
    pub fn store(&self, mut snapshot: Snapshot) {
        snapshot.version = self.current.load().version + 1;
        self.current.store(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn snap(status: SubscriberStatus, lock: Option<&str>) -> Snapshot {
        let imsi = Imsi::parse("001010000000001").unwrap();
        let mut s = Snapshot::default();
        s.subscribers.insert(
            imsi.clone(),
            Arc::new(Subscriber {
                imsi,
                imei: None,
                msisdn: None,
                sim_id: None,
                operator_id: None,
                group_id: None,
                tags: Default::default(),
                status,
                imei_lock: lock.map(|l| Imei::parse(l).unwrap()),
            }),
        );
        s
    }

    fn session(imei: Option<&str>) -> Session {
        Session::new(
            Imsi::parse("001010000000001").unwrap(),
            imei.map(|i| Imei::parse(i).unwrap()),
            None,
        )
    }

    #[test]
    fn resolves_active_sim() {
        let id = snap(SubscriberStatus::Active, None)
            .resolve(&session(Some("353000000000001")))
            .unwrap();
        assert_eq!(id.imei.unwrap().as_str(), "353000000000001");
        assert_eq!(id.operator_id.as_str(), "OP0000000001");
    }

    #[test]
    fn refuses_suspended_and_unknown() {
        let e = snap(SubscriberStatus::Suspended, None)
            .resolve(&session(None))
            .unwrap_err();
        assert_eq!(e.reason(), "sim_not_active");
        let e = Snapshot::default().resolve(&session(None)).unwrap_err();
        assert_eq!(e.reason(), "unknown_subscriber");
    }

    #[test]
    fn imei_lock_compares_device_part() {
        let s = snap(SubscriberStatus::Active, Some("353000000000001"));
        // IMEISV of the same device: same first 14 digits.
        assert!(s.resolve(&session(Some("3530000000000012"))).is_ok());
        let e = s.resolve(&session(Some("353000000000099"))).unwrap_err();
        assert_eq!(e.reason(), "imei_lock");
        let e = s.resolve(&session(None)).unwrap_err();
        assert_eq!(e.reason(), "imei_lock");
    }
}
