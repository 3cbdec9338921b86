//! [`ControlPlane`]: the store, the snapshot the data plane reads, and the
//! session table, kept in step.
//!
//! Every mutation holds the state's write lock: the rules in
//! `store::state` change the state in place and list the records to
//! write, the records are written in one durable redb transaction (or the
//! edit is undone), and only then is the new [`Snapshot`]
//! swapped into the [`SnapshotHandle`] (and static sessions bound in the
//! [`SessionTable`]), so the data plane never sees a change the store could
//! lose. API reads take the read lock (waiting at most for one commit);
//! token checks and the data plane's reads take no lock at all.
//!
//! Cost: a mutation writes only what it changes (one fsync, ~2 ms here); the
//! new snapshot is the previous one patched, and its maps are persistent
//! (imbl), so a change costs O(log n) whatever the fleet size. Sessions and
//! tokens build no snapshot. Mutations block: call them
//! from `spawn_blocking` in async code (the REST API does).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use arc_swap::ArcSwap;
use serde_json::Value;

mod auth;

pub use auth::{AuthKeyInfo, CreatedAuthKey};

use crate::cluster::store::{Committed, EtcdStore};
use crate::config::Config;
use crate::model::{
    Credential, CredentialId, Group, GroupId, Imei, Imsi, Subscriber, SubscriberStatus,
};
use crate::secret_file;
use crate::snapshot::{Session, SessionTable, Snapshot, SnapshotHandle};
use crate::store::configuration;
use crate::store::state::{canonical_ip, Change, Edit, State};
use crate::store::token::{self, TokenDigest};
use crate::store::{Loaded, Stamped, StaticSession, Store, StoreError, STORE_FILE};

mod cluster;

pub use cluster::ClusterStatusView;

/// Where the control state is kept.
enum Backend {
    /// `{data_dir}/control.redb`: one node.
    Local(Store),
    /// A fleet's etcd.
    Etcd(EtcdStore),
}

impl Backend {
    /// How long a write may take before it is given up (503).
    fn timeout(&self) -> std::time::Duration {
        match self {
            Self::Local(_) => std::time::Duration::from_secs(30),
            Self::Etcd(e) => e.timeout,
        }
    }
}

/// The name of the token made on first start (or imported from a legacy
/// `api.token`).
pub const DEFAULT_TOKEN_NAME: &str = "default";

/// `{data_dir}/api.token`: the first token, readable by the owner only, so
/// `curl -H "Authorization: Bearer $(cat simgate-data/api.token)"` works.
pub fn api_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api.token")
}

/// `{data_dir}/control.redb`.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_FILE)
}

/// Where a session in the [`SessionTable`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSource {
    /// Kept in the store: from the configuration file or the API.
    Static,
    /// Learned from RADIUS accounting; in memory only.
    Radius,
}

impl SessionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Radius => "radius",
        }
    }
}

/// One entry of the session table, for listing.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub ip: IpAddr,
    pub session: Arc<Session>,
    pub source: SessionSource,
}

/// An API token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub created_at: u64,
}

/// Which subscribers a listing returns. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct SubscriberFilter {
    /// Any of these states.
    pub statuses: Vec<SubscriberStatus>,
    pub group_id: Option<GroupId>,
    pub tag: Option<TagFilter>,
}

/// Subscribers having tag `name`; with `value`, equal to it (or starting
/// with it when `prefix`).
#[derive(Debug, Clone)]
pub struct TagFilter {
    pub name: String,
    pub value: Option<String>,
    pub prefix: bool,
}

impl SubscriberFilter {
    pub fn matches(&self, s: &Subscriber) -> bool {
        if !self.statuses.is_empty() && !self.statuses.contains(&s.status) {
            return false;
        }
        if self.group_id.is_some() && s.group_id != self.group_id {
            return false;
        }
        match &self.tag {
            None => true,
            Some(t) => match (s.tags.get(&t.name), &t.value) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(want)) if t.prefix => v.starts_with(want.as_str()),
                (Some(v), Some(want)) => v == want,
            },
        }
    }
}

/// One page of a listing, in key order.
#[derive(Debug, Clone)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_key: Option<K>,
}

/// The control plane: store, snapshot and sessions.
pub struct ControlPlane {
    /// What the data plane reads on its hot path; replaced on every change.
    pub snapshot: Arc<SnapshotHandle>,
    /// IP → session; static sessions from the store are bound at open, and
    /// RADIUS binds its own here.
    pub sessions: Arc<SessionTable>,
    store: Backend,
    state: RwLock<State>,
    /// Token digests, apart from `state` so checking a token takes no lock.
    tokens: ArcSwap<Vec<TokenDigest>>,
    created_token: Mutex<Option<String>>,
    /// `[funnel] allow_insecure_endpoints` of the configuration (API writes
    /// of a Funnel `destination.endpoint` are checked against it).
    allow_insecure_endpoints: AtomicBool,
    /// API key / token pairs made by `POST /v1/auth` (memory only; see
    /// `plane/auth.rs`).
    api_keys: RwLock<crate::store::auth_key::ApiKeys>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.read();
        f.debug_struct("ControlPlane")
            .field("subscribers", &st.subscribers.len())
            .field("groups", &st.groups.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

use crate::clock::now_ms;

fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

impl ControlPlane {
    /// Opens `{data_dir}/control.redb`, creating it on first start.
    ///
    /// On first start the store is seeded from `seed` (operators, groups,
    /// subscribers, credentials, static sessions) and a legacy
    /// `{data_dir}/api.token` is imported as the token `default`; later starts
    /// use the store and ignore the file's entities (see
    /// [`apply_config`](Self::apply_config)). Whenever the store has no token
    /// at all, a `default` token is made, written to `{data_dir}/api.token`
    /// (mode 0600) and handed out once by
    /// [`take_created_token`](Self::take_created_token).
    pub fn open(data_dir: &Path, seed: &Config) -> Result<Arc<Self>, StoreError> {
        secret_file::create_private_dir(data_dir)?;
        let store = Store::open(&store_path(data_dir))?;
        let Loaded { mut state, seeded } = store.load()?;
        let now = now_ms();
        let mut edit = Edit::new(&mut state, now);
        let token_path = api_token_path(data_dir);
        if !seeded {
            edit.apply_config(seed)?;
            if let Some(legacy) = read_token_file(&token_path)? {
                edit.put_token(DEFAULT_TOKEN_NAME, token::digest(&legacy))?;
                tracing::info!(
                    path = %token_path.display(),
                    "imported the existing API token as \"{DEFAULT_TOKEN_NAME}\""
                );
            }
        }
        let mut created = None;
        if edit.state().tokens.is_empty() {
            let t = token::generate();
            edit.put_token(DEFAULT_TOKEN_NAME, token::digest(&t))?;
            // Written before the commit: if the commit fails, the next start
            // finds the file and imports it, so the two never disagree.
            write_token_file(&token_path, &t)?;
            created = Some(t);
        }
        if !seeded || !edit.changes().is_empty() {
            store.commit(edit.changes(), (!seeded).then_some(now))?;
        }
        edit.finish();
        let sessions = Arc::new(SessionTable::new());
        for (ip, s) in &state.sessions {
            sessions.bind_static(*ip, s.session());
        }
        tracing::info!(
            subscribers = state.subscribers.len(),
            groups = state.groups.len(),
            static_sessions = state.sessions.len(),
            seeded_now = !seeded,
            "control store open"
        );
        Ok(Arc::new(Self {
            snapshot: Arc::new(SnapshotHandle::new(state.snapshot())),
            sessions,
            store: Backend::Local(store),
            tokens: ArcSwap::from_pointee(token_digests(&state)),
            state: RwLock::new(state),
            created_token: Mutex::new(created),
            allow_insecure_endpoints: AtomicBool::new(seed.funnel.allow_insecure_endpoints),
            api_keys: RwLock::default(),
        }))
    }

    /// The token made by [`open`](Self::open), once (for `simgate serve` to
    /// print); `None` if none was made or it was taken already.
    pub fn take_created_token(&self) -> Option<String> {
        self.created_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The state for reading. A panic under the write lock leaves the state
    /// as it was (the edit is undone while unwinding), so poisoning is moot.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// One mutation: rules, one durable write, then the new snapshot. In a
    /// fleet, `f` runs again on the newer state when another node wrote
    /// first (see `cluster::store`), so it must not consume what it edits.
    fn mutate<T>(
        &self,
        f: impl Fn(&mut Edit<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = std::time::Instant::now() + self.store.timeout();
        loop {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let mut edit = Edit::new(&mut state, now_ms());
            // On any error below, dropping `edit` undoes it.
            let out = f(&mut edit)?;
            if edit.changes().is_empty() {
                return Ok(out);
            }
            match &self.store {
                Backend::Local(store) => store.commit(edit.changes(), None)?,
                Backend::Etcd(etcd) => {
                    if let Committed::Stale(guards) = etcd.commit(edit.changes(), None)? {
                        drop(edit);
                        drop(state);
                        etcd.wait_for_newer(&guards, deadline)?;
                        continue;
                    }
                }
            }
            let changes = edit.finish();
            self.publish(&state, &changes);
            return Ok(out);
        }
    }

    /// Makes committed `changes` (this node's or, in a fleet, another's)
    /// visible: the snapshot, the static sessions, the token list.
    fn publish(&self, state: &State, changes: &[Change]) {
        if changes.iter().any(Change::in_snapshot) {
            self.snapshot.store(patched(&self.snapshot.load(), changes));
        }
        for change in changes {
            match change {
                Change::Session(ip, Some(s)) => {
                    self.sessions.bind_static(*ip, s.session());
                }
                Change::Session(ip, None) => {
                    self.sessions.unbind_static(*ip);
                }
                _ => {}
            }
        }
        if changes.iter().any(|c| matches!(c, Change::Token(..))) {
            self.tokens.store(Arc::new(token_digests(state)));
        }
    }

    /// Upserts everything `config` declares and keeps what the API added
    /// (for SIGHUP). The file wins for the entities it declares.
    pub fn apply_config(&self, config: &Config) -> Result<(), StoreError> {
        self.mutate(|e| e.apply_config(config))?;
        self.allow_insecure_endpoints
            .store(config.funnel.allow_insecure_endpoints, Ordering::Relaxed);
        Ok(())
    }

    /// Refuses a group whose Funnel `destination.endpoint` is plain HTTP
    /// unless `[funnel] allow_insecure_endpoints` (called inside the edit,
    /// so a refusal undoes it).
    fn check_funnel_endpoint(&self, g: &Group) -> Result<(), StoreError> {
        let allow = self.allow_insecure_endpoints.load(Ordering::Relaxed);
        match &g.funnel {
            Some(f) => crate::config::check_funnel_destination(&f.destination, allow)
                .map_err(|m| StoreError::Invalid(format!("SoracomFunnel: {m}"))),
            None => Ok(()),
        }
    }

    /// Keeps the sessions RADIUS binds in the store (`radius_sessions`),
    /// writing behind; hand it to [`crate::radius::spawn_with`]. Dropping it
    /// writes what is queued.
    pub fn radius_persistence(
        &self,
        stats: Arc<crate::radius::RadiusStats>,
    ) -> Result<Arc<dyn crate::radius::SessionPersistence>, StoreError> {
        match &self.store {
            Backend::Local(store) => Ok(Arc::new(store.radius_sessions(stats)?)),
            Backend::Etcd(etcd) => Ok(Arc::new(cluster::etcd_sessions(etcd, stats))),
        }
    }

    // ---- subscribers ----

    pub fn subscriber(&self, imsi: &Imsi) -> Option<Stamped<Subscriber>> {
        self.read().subscribers.get(imsi).cloned()
    }

    /// Subscribers matching `filter`, in IMSI order, after `after`.
    pub fn list_subscribers(
        &self,
        filter: &SubscriberFilter,
        after: Option<&Imsi>,
        limit: usize,
    ) -> Page<Stamped<Subscriber>, Imsi> {
        let st = self.read();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = st
            .subscribers
            .range::<Imsi, _>((start, Bound::Unbounded))
            .map(|(_, s)| s)
            .filter(|s| filter.matches(&s.value));
        let items: Vec<_> = matching.by_ref().take(limit).cloned().collect();
        let next_key = match (items.last(), matching.next()) {
            (Some(last), Some(_)) => Some(last.value.imsi.clone()),
            _ => None,
        };
        Page { items, next_key }
    }

    /// Registers a SIM; `Conflict` if the IMSI exists.
    pub fn create_subscriber(&self, s: Subscriber) -> Result<Stamped<Subscriber>, StoreError> {
        self.mutate(|e| e.create_subscriber(s.clone()))
    }

    /// Replaces a SIM's record; `NotFound` if it does not exist.
    pub fn update_subscriber(&self, s: Subscriber) -> Result<Stamped<Subscriber>, StoreError> {
        self.mutate(|e| e.update_subscriber(s.clone()))
    }

    /// Removes a SIM and the static sessions naming it.
    pub fn delete_subscriber(&self, imsi: &Imsi) -> Result<(), StoreError> {
        self.mutate(|e| e.delete_subscriber(imsi))
    }

    /// Moves a SIM into a group (`Some`) or out of any (`None`).
    pub fn set_group(
        &self,
        imsi: &Imsi,
        group: Option<GroupId>,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        self.mutate(|e| {
            e.modify_subscriber(imsi, |s| {
                s.group_id = group.clone();
                Ok(())
            })
        })
    }

    /// Changes a SIM's state; leaving `terminated` is `InvalidState`.
    pub fn set_status(
        &self,
        imsi: &Imsi,
        status: SubscriberStatus,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        self.mutate(|e| e.set_status(imsi, status))
    }

    /// Adds or replaces the given tags, keeping the others.
    pub fn put_tags(
        &self,
        imsi: &Imsi,
        tags: BTreeMap<String, String>,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        self.mutate(|e| {
            e.modify_subscriber(imsi, |s| {
                s.tags.extend(tags.clone());
                Ok(())
            })
        })
    }

    /// Removes one tag; `NotFound` if the SIM does not have it.
    pub fn delete_tag(&self, imsi: &Imsi, name: &str) -> Result<Stamped<Subscriber>, StoreError> {
        self.mutate(|e| {
            e.modify_subscriber(imsi, |s| {
                s.tags
                    .remove(name)
                    .map(drop)
                    .ok_or_else(|| not_found("tag", name))
            })
        })
    }

    /// Locks a SIM to a device (`Some`) or unlocks it (`None`).
    pub fn set_imei_lock(
        &self,
        imsi: &Imsi,
        imei: Option<Imei>,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        self.mutate(|e| {
            e.modify_subscriber(imsi, |s| {
                s.imei_lock = imei.clone();
                Ok(())
            })
        })
    }

    // ---- groups ----

    pub fn group(&self, id: &GroupId) -> Option<Stamped<Group>> {
        self.read().groups.get(id).cloned()
    }

    /// All groups in id order.
    pub fn groups(&self) -> Vec<Stamped<Group>> {
        self.read().groups.values().cloned().collect()
    }

    pub fn create_group(&self, g: Group) -> Result<Stamped<Group>, StoreError> {
        self.check_funnel_endpoint(&g)?;
        self.mutate(|e| e.create_group(g.clone()))
    }

    pub fn update_group(&self, g: Group) -> Result<Stamped<Group>, StoreError> {
        self.check_funnel_endpoint(&g)?;
        self.mutate(|e| e.update_group(g.clone()))
    }

    /// Removes a group; `Conflict` while subscribers belong to it.
    pub fn delete_group(&self, id: &GroupId) -> Result<(), StoreError> {
        self.mutate(|e| e.delete_group(id))
    }

    /// Sets keys of a configuration namespace (`SoracomHarvest`,
    /// `SoracomFunnel`, `SoracomAir`, …); see [`configuration`].
    pub fn put_group_configuration(
        &self,
        id: &GroupId,
        namespace: &str,
        entries: Vec<(String, Value)>,
    ) -> Result<Stamped<Group>, StoreError> {
        let ns = configuration::namespace(namespace)?;
        self.mutate(|e| {
            let g = e.put_configuration(id, ns, entries.clone())?;
            self.check_funnel_endpoint(&g.value)?;
            Ok(g)
        })
    }

    pub fn delete_group_configuration(
        &self,
        id: &GroupId,
        namespace: &str,
        key: &str,
    ) -> Result<Stamped<Group>, StoreError> {
        let ns = configuration::namespace(namespace)?;
        self.mutate(|e| e.delete_configuration(id, ns, key))
    }

    // ---- credentials ----

    pub fn credential(&self, id: &CredentialId) -> Option<Stamped<Credential>> {
        self.read().credentials.get(id).cloned()
    }

    pub fn credentials(&self) -> Vec<Stamped<Credential>> {
        self.read().credentials.values().cloned().collect()
    }

    /// Creates or replaces a credential set; `true` if it was created.
    pub fn put_credential(&self, c: Credential) -> Result<(Stamped<Credential>, bool), StoreError> {
        self.mutate(|e| e.put_credential(c.clone()))
    }

    /// Removes a credential set; `Conflict` while a group's Funnel uses it.
    pub fn delete_credential(&self, id: &CredentialId) -> Result<(), StoreError> {
        self.mutate(|e| e.delete_credential(id))
    }

    // ---- sessions ----

    /// Binds `ip` to a registered SIM, durably (a static session).
    pub fn put_session(&self, ip: IpAddr, session: Session) -> Result<StaticSession, StoreError> {
        self.mutate(|e| {
            e.put_session(
                ip,
                session.imsi.clone(),
                session.imei.clone(),
                session.msisdn.clone(),
            )
        })
    }

    /// Removes the session of `ip`, static or learned from RADIUS.
    pub fn delete_session(&self, ip: IpAddr) -> Result<SessionSource, StoreError> {
        let ip = canonical_ip(ip);
        let was_static = self.mutate(|e| Ok(e.delete_session(ip).is_some()))?;
        if was_static {
            return Ok(SessionSource::Static);
        }
        match self.sessions.unbind(ip) {
            Some(_) => {
                // Or it would come back at the next start.
                if let IpAddr::V4(v4) = ip {
                    match &self.store {
                        Backend::Local(store) => store.remove_radius_session(v4)?,
                        Backend::Etcd(etcd) => Self::remove_radius_everywhere(etcd, v4)?,
                    }
                }
                Ok(SessionSource::Radius)
            }
            None => Err(not_found("session", ip)),
        }
    }

    /// Static sessions kept in the store, by IP.
    pub fn static_sessions(&self) -> Vec<(IpAddr, StaticSession)> {
        self.read()
            .sessions
            .iter()
            .map(|(ip, s)| (*ip, s.clone()))
            .collect()
    }

    /// Every session in the table, by IP, each with where it came from.
    pub fn list_sessions(&self) -> Vec<SessionInfo> {
        let st = self.read();
        let mut out: Vec<SessionInfo> = self
            .sessions
            .entries()
            .into_iter()
            .map(|(ip, session)| {
                let is_static = st
                    .sessions
                    .get(&ip)
                    .is_some_and(|s| s.imsi == session.imsi && s.imei == session.imei);
                SessionInfo {
                    ip,
                    session,
                    source: if is_static {
                        SessionSource::Static
                    } else {
                        SessionSource::Radius
                    },
                }
            })
            .collect();
        out.sort_by_key(|s| s.ip);
        out
    }

    // ---- API tokens ----

    /// Makes a token named `name` and returns it; only its SHA-256 is kept,
    /// so this is the one time it can be seen.
    pub fn create_token(&self, name: &str) -> Result<String, StoreError> {
        let t = token::generate();
        let d = token::digest(&t);
        self.mutate(|e| e.put_token(name, d))?;
        Ok(t)
    }

    /// Whether `presented` is a current token (constant time per token).
    pub fn verify_token(&self, presented: &str) -> bool {
        token::verify(presented, self.tokens.load().iter())
    }

    pub fn list_tokens(&self) -> Vec<TokenInfo> {
        self.read()
            .tokens
            .values()
            .map(|t| TokenInfo {
                name: t.name.clone(),
                created_at: t.created_at,
            })
            .collect()
    }

    pub fn revoke_token(&self, name: &str) -> Result<(), StoreError> {
        self.mutate(|e| e.revoke_token(name))
    }
}

fn token_digests(state: &State) -> Vec<TokenDigest> {
    state.tokens.values().map(|t| t.digest).collect()
}

/// `prev` with `changes` applied: clones the maps (reference counts), not the
/// entities, and rehashes nothing that did not change.
fn patched(prev: &Snapshot, changes: &[Change]) -> Snapshot {
    let mut s = Snapshot {
        version: prev.version,
        operators: prev.operators.clone(),
        groups: prev.groups.clone(),
        subscribers: prev.subscribers.clone(),
        credentials: prev.credentials.clone(),
    };
    for change in changes {
        match change {
            Change::Operator(k, Some(v)) => {
                s.operators.insert(k.clone(), Arc::clone(v));
            }
            Change::Operator(k, None) => {
                s.operators.remove(k);
            }
            Change::Group(k, Some(v)) => {
                s.groups.insert(k.clone(), Arc::clone(&v.value));
            }
            Change::Group(k, None) => {
                s.groups.remove(k);
            }
            Change::Subscriber(k, Some(v)) => {
                s.subscribers.insert(k.clone(), Arc::clone(&v.value));
            }
            Change::Subscriber(k, None) => {
                s.subscribers.remove(k);
            }
            Change::Credential(k, Some(v)) => {
                s.credentials.insert(k.clone(), Arc::clone(&v.value));
            }
            Change::Credential(k, None) => {
                s.credentials.remove(k);
            }
            Change::Session(..) | Change::Token(..) | Change::AuthKey(..) => {}
        }
    }
    s
}

fn read_token_file(path: &Path) -> Result<Option<String>, StoreError> {
    Ok(secret_file::read(path)?)
}

fn write_token_file(path: &Path, token: &str) -> Result<(), StoreError> {
    Ok(secret_file::write(path, token)?)
}
