//! The data plane's read-only view of the control plane.
//!
//! Configuration (groups, subscribers, credentials) is an immutable
//! [`Snapshot`] behind an [`arc_swap::ArcSwap`]: readers take a cheap guard,
//! writers build a new snapshot and swap it in. Sessions change far more often
//! and number in the millions, so they live apart in a concurrent map keyed by
//! IP ([`SessionTable`]); an identity lookup is one probe there, and the
//! session remembers what it resolved to under the current snapshot's
//! version ([`Snapshot::resolve_cached`]), so the snapshot's maps are probed
//! again only after a configuration change.

mod credentials;
mod sessions;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::model::{
    Credential, CredentialId, Group, GroupId, Imei, Imsi, Operator, OperatorId, Subscriber,
    SubscriberStatus,
};

pub use credentials::{resolve_credentials_ref, resolve_psk, resolve_x509, CredentialRefError};
use sessions::Resolution;
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
    /// Unique in the process for every snapshot a [`SnapshotHandle`] holds
    /// (0 for one that never was in a handle), so that what a session
    /// resolved to under it can be remembered in the session.
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
    /// The IMSI as shared text (Funnel's partition key), made once per
    /// resolution rather than for every record.
    pub imsi_text: Arc<str>,
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
    /// [`Self::resolve`], remembered in the session for this snapshot's
    /// version: the hot path of every device message.
    pub fn resolve_cached(&self, session: &Session) -> Result<Arc<Identity>, IdentityError> {
        if let Some(r) = session.resolved() {
            if r.version == self.version && self.version != 0 {
                return r.result.clone();
            }
        }
        let result = self.resolve(session).map(Arc::new);
        let r = Arc::new(Resolution {
            version: self.version,
            result: result.clone(),
        });
        if self.version != 0 {
            // A reader still on an older snapshot may overwrite a newer
            // entry; the version check above makes that a miss, not a
            // wrong answer.
            session.remember(&r);
        }
        result
    }

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
            imsi_text: subscriber.imsi.shared(),
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

/// The next snapshot version, shared by every handle in the process (an
/// in-process fleet test runs several), so a version names one snapshot.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

impl SnapshotHandle {
    pub fn new(mut snapshot: Snapshot) -> Self {
        snapshot.version = next_version();
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

    /// Installs a new snapshot under a new version.
    pub fn store(&self, mut snapshot: Snapshot) {
        snapshot.version = next_version();
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

    #[test]
    fn a_session_remembers_its_identity_until_the_snapshot_changes() {
        let handle = SnapshotHandle::new(snap(SubscriberStatus::Active, None));
        let session = Arc::new(session(None));
        let first = handle.load().resolve_cached(&session).unwrap();
        let again = handle.load().resolve_cached(&session).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "resolved again without a change"
        );
        assert_eq!(&*first.imsi_text, "001010000000001");

        // Suspending the SIM makes a new snapshot: the cached identity is
        // not used under it, and the refusal is remembered in turn.
        handle.store(snap(SubscriberStatus::Suspended, None));
        let e = handle.load().resolve_cached(&session).unwrap_err();
        assert_eq!(e.reason(), "sim_not_active");
        assert_eq!(
            handle.load().resolve_cached(&session).unwrap_err().reason(),
            "sim_not_active"
        );

        // An older snapshot still in a reader's hands gets its own answer,
        // not the newer one's.
        let old = Snapshot {
            version: handle.load().version - 1,
            ..snap(SubscriberStatus::Active, None)
        };
        assert!(old.resolve_cached(&session).is_ok());
        handle.store(snap(SubscriberStatus::Active, None));
        assert!(!Arc::ptr_eq(
            &handle.load().resolve_cached(&session).unwrap(),
            &first
        ));

        // A copied session starts with nothing remembered and still equals
        // the original.
        assert_eq!(*session, (*session).clone());
    }

    #[test]
    fn snapshots_outside_a_handle_are_not_remembered() {
        let s = snap(SubscriberStatus::Active, None);
        assert_eq!(s.version, 0);
        let session = session(None);
        let a = s.resolve_cached(&session).unwrap();
        let b = s.resolve_cached(&session).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
