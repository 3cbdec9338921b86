//! The control state in etcd: what [`crate::store::Store`] is for one node.
//!
//! Writes: an edit's changes go in one etcd transaction guarded by the
//! revision, as this node last saw it, of every key the edit writes and of
//! every entity its new values name (a SIM's group must still be the group
//! the rules checked). Removing an entity others may name is guarded by its
//! `{prefix}/refs/…` key, which every write naming the entity rewrites. If
//! any guard fails, nothing is written; the caller waits until its watch
//! has brought in the newer version of a guarded key, then runs the edit
//! again on the newer state. So no update is lost, no reference dangles,
//! and writes to different entities from different nodes do not wait for
//! each other.
//!
//! Reads: each node keeps the whole state in memory. A watch over the prefix
//! streams every change in revision order ([`Watcher`]), resuming after the
//! last revision it applied when the connection breaks, or reloading
//! everything if etcd compacted that revision away.
//!
//! etcd is async and the control plane's mutations block (the API calls them
//! from `spawn_blocking`), so the client runs on a small runtime of its own
//! and blocking callers wait on a channel: callable from any thread.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::etcd::{Compare, EtcdClient, EtcdError, EtcdOptions, KeyValue, Op};
use super::keys::{Keys, Kind};
use crate::config::ClusterSettings;
use crate::store::records;
use crate::store::state::{Change, State};
use crate::store::StoreError;

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// What a node knows of its link to etcd, for `/health` and metrics.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// Whether the last call to etcd (watch or probe) got an answer.
    pub connected: AtomicBool,
    /// etcd's revision at the last probe.
    pub etcd_revision: AtomicI64,
    /// The revision this node's state reflects (the watch's progress).
    pub applied_revision: AtomicI64,
    /// Times the watch had to be set up again.
    pub watch_reconnects: AtomicU64,
    /// Full reloads because etcd had compacted the revision to resume from.
    pub reloads: AtomicU64,
    /// Watch events that could not be read (skipped, logged).
    pub unreadable_events: AtomicU64,
    /// Writes that lost the race to another node and were run again.
    pub write_retries: AtomicU64,
}

impl ClusterStatus {
    /// Revisions this node is behind etcd (0 when caught up).
    pub fn lag(&self) -> i64 {
        (self.etcd_revision.load(Ordering::Relaxed) - self.applied_revision.load(Ordering::Relaxed))
            .max(0)
    }
}

/// Everything under the prefix at one revision.
pub(crate) struct Loaded {
    pub(crate) state: State,
    pub(crate) seeded: bool,
    /// The radius sessions, as `(key-value)` pairs for [`super::sessions`].
    pub(crate) radius: Vec<KeyValue>,
    pub(crate) revision: i64,
}

/// How a guarded write ended.
pub(crate) enum Committed {
    Yes,
    /// Another node wrote a guarded key first; nothing was written. The
    /// guards, to wait on ([`EtcdStore::wait_for_newer`]).
    Stale(Vec<(Vec<u8>, i64)>),
}

/// etcd refuses a transaction with more than 128 comparisons or operations
/// (`--max-txn-ops`); a little room is left for the seeding marker.
const MAX_TXN_OPS: usize = 120;

/// `changes` in runs that each fit one transaction: a change costs its
/// record plus a comparison and an operation per entity it names or
/// removes (see [`EtcdStore::commit`]).
fn chunks(changes: &[Change]) -> Vec<&[Change]> {
    let mut out = Vec::new();
    let (mut start, mut cost) = (0, 0);
    for (i, c) in changes.iter().enumerate() {
        let n = 1 + c.references().len() + usize::from(c.removes_referable().is_some());
        if cost + n > MAX_TXN_OPS && i > start {
            out.push(&changes[start..i]);
            (start, cost) = (i, 0);
        }
        cost += n;
    }
    if start < changes.len() {
        out.push(&changes[start..]);
    }
    out
}

/// A key's last known revision; `exists: false` is a deletion.
#[derive(Debug, Clone, Copy)]
struct Rev {
    rev: i64,
    exists: bool,
}

/// The fleet's control store.
pub(crate) struct EtcdStore {
    pub(crate) client: EtcdClient,
    pub(crate) keys: Keys,
    pub(crate) node: String,
    pub(crate) timeout: Duration,
    pub(crate) session_ttl: Duration,
    pub(crate) status: Arc<ClusterStatus>,
    /// The revision of each control and refs key as this node knows it
    /// (load, watch, own writes), deletions kept as tombstones: the guards
    /// of the next write, and what the watch may skip as already applied.
    revs: Mutex<HashMap<Vec<u8>, Rev>>,
    runtime: tokio::runtime::Handle,
    /// Dropped with the store: ends the runtime's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.client.endpoints())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Starts the client's runtime; no call to etcd yet.
    pub(crate) fn new(
        settings: &ClusterSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, StoreError> {
        let auth = match (&settings.username, &settings.password_file) {
            (Some(user), Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    StoreError::Invalid(format!("[cluster] password_file {}: {e}", file.display()))
                })?;
                let password = text.lines().next().unwrap_or_default().to_owned();
                Some((user.clone(), password))
            }
            _ => None,
        };
        let client = EtcdClient::new(EtcdOptions {
            endpoints: settings.etcd.clone(),
            auth,
            tls,
            timeout: settings.request_timeout(),
        })?;
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("etcd".into())
            .spawn(move || {
                // Two workers: the watch applies changes under the state's
                // lock (in `block_in_place`) while a write holding that lock
                // waits for its transaction on the other.
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("etcd")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| StoreError::Unavailable("etcd client thread did not start".into()))??;
        Ok(Self {
            client,
            keys: Keys::new(&settings.prefix),
            node: settings.node_name(),
            timeout: settings.request_timeout(),
            session_ttl: settings.session_ttl(),
            status: Arc::default(),
            revs: Mutex::default(),
            runtime,
            _stop: stop,
        })
    }

    /// Runs `fut` on the client's runtime and waits for it (from any thread).
    pub(crate) fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, EtcdError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        // The client bounds each endpoint's answer by the timeout twice
        // (headers, then body); past that the call is lost, not pending.
        let endpoints = self.client.endpoints().len().max(1) as u32;
        match rx.recv_timeout(self.timeout * (2 * endpoints + 1)) {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Unavailable(
                "etcd did not answer in time".into(),
            )),
        }
    }

    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(fut);
    }

    /// Reads everything under the prefix at one revision.
    pub(crate) fn load(&self) -> Result<Loaded, StoreError> {
        let client = self.client.clone();
        let (start, end) = self.keys.all();
        let (kvs, revision) = self.block(async move { client.range_all(&start, &end).await })?;
        self.decode(kvs, revision)
    }

    /// The state in `kvs` (everything under the prefix at `revision`); this
    /// node's view moves to it.
    pub(crate) fn decode(&self, kvs: Vec<KeyValue>, revision: i64) -> Result<Loaded, StoreError> {
        let mut state = State::default();
        let mut seeded = false;
        let mut radius = Vec::new();
        let mut revs = HashMap::new();
        for kv in kvs {
            let tracked = match self.keys.classify(&kv.key) {
                Kind::Control { table, key } => {
                    state.apply(records::decode_change(table, key, Some(&kv.value))?);
                    true
                }
                Kind::Refs => true,
                Kind::Seeded => {
                    seeded = true;
                    false
                }
                Kind::Radius(_) => {
                    radius.push(kv);
                    continue;
                }
                Kind::Other => false,
            };
            if tracked {
                let rev = Rev {
                    rev: kv.mod_revision,
                    exists: true,
                };
                revs.insert(kv.key, rev);
            }
        }
        *self.revs_mut() = revs;
        self.status
            .applied_revision
            .store(revision, Ordering::Relaxed);
        self.status
            .etcd_revision
            .fetch_max(revision, Ordering::Relaxed);
        self.status.connected.store(true, Ordering::Relaxed);
        Ok(Loaded {
            state,
            seeded,
            radius,
            revision,
        })
    }

    pub(crate) fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime.clone()
    }

    /// Writes `changes` if none of the keys they guard changed since this
    /// node's view (and, with `seeded_at`, only if the fleet was never
    /// seeded, marking it so). Call with the state's write lock held, so
    /// the view cannot move.
    ///
    /// A change set larger than one transaction (a large configuration
    /// file) goes in several, each with its own guards: no update of another
    /// node is lost, but another node may see the first part before the rest.
    pub(crate) fn commit(
        &self,
        changes: &[Change],
        seeded_at: Option<u64>,
    ) -> Result<Committed, StoreError> {
        let mut chunks = chunks(changes).into_iter().peekable();
        while let Some(chunk) = chunks.next() {
            let (mut compare, mut ops) = self.guarded(chunk)?;
            if let (Some(at), true) = (seeded_at, chunks.peek().is_none()) {
                compare.push(Compare::CreateRevision(self.keys.seeded(), 0));
                ops.push(Op::Put {
                    key: self.keys.seeded(),
                    value: at.to_string().into_bytes(),
                    lease: 0,
                });
            }
            let guards: Vec<(Vec<u8>, i64)> = compare
                .iter()
                .filter_map(|c| match c {
                    Compare::ModRevision(k, r) => Some((k.clone(), *r)),
                    Compare::CreateRevision(..) => None,
                })
                .collect();
            let client = self.client.clone();
            let sent = ops.clone();
            let outcome = self.block(async move { client.txn(&compare, &sent).await })?;
            if !outcome.succeeded {
                return Ok(Committed::Stale(guards));
            }
            let mut revs = self.revs_mut();
            for op in &ops {
                let (key, exists) = match op {
                    Op::Put { key, .. } => (key, true),
                    Op::Delete { key } => (key, false),
                };
                revs.insert(
                    key.clone(),
                    Rev {
                        rev: outcome.revision,
                        exists,
                    },
                );
            }
        }
        Ok(Committed::Yes)
    }

    /// The guards and operations of one transaction writing `changes`.
    fn guarded(&self, changes: &[Change]) -> Result<(Vec<Compare>, Vec<Op>), StoreError> {
        let mut compare: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut ops: BTreeMap<Vec<u8>, Op> = BTreeMap::new();
        let revs = self.revs_mut();
        let expected = |key: &[u8]| revs.get(key).filter(|r| r.exists).map_or(0, |r| r.rev);
        for change in changes {
            let r = records::encode_change(change)?;
            let key = self.keys.control(r.table, &r.key);
            compare.insert(key.clone(), expected(&key));
            let op = match r.value {
                Some(value) => Op::Put {
                    key: key.clone(),
                    value,
                    lease: 0,
                },
                None => Op::Delete { key: key.clone() },
            };
            ops.insert(key, op);
            for (table, id) in change.references() {
                let entity = self.keys.control(table, &id);
                compare
                    .entry(entity.clone())
                    .or_insert_with(|| expected(&entity));
                let refs = self.keys.refs(table, &id);
                ops.entry(refs.clone()).or_insert(Op::Put {
                    key: refs,
                    value: self.node.clone().into_bytes(),
                    lease: 0,
                });
            }
            if let Some((table, id)) = change.removes_referable() {
                let refs = self.keys.refs(table, &id);
                compare
                    .entry(refs.clone())
                    .or_insert_with(|| expected(&refs));
                ops.insert(refs.clone(), Op::Delete { key: refs });
            }
        }
        let compare = compare
            .into_iter()
            .map(|(k, r)| Compare::ModRevision(k, r))
            .collect();
        Ok((compare, ops.into_values().collect()))
    }

    /// After a [`Committed::Stale`]: waits (the state's lock released)
    /// until the watch has brought in a newer version of one of `guards`
    /// (the one that failed), or `deadline`.
    pub(crate) fn wait_for_newer(
        &self,
        guards: &[(Vec<u8>, i64)],
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.status.write_retries.fetch_add(1, Ordering::Relaxed);
        loop {
            {
                let revs = self.revs_mut();
                let moved = guards.iter().any(|(k, expected)| {
                    let now = revs.get(k).filter(|r| r.exists).map_or(0, |r| r.rev);
                    now != *expected
                });
                if moved {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    "another node wrote the same entities at the same time and this node \
                     has not caught up with etcd yet; retry"
                        .into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The watch saw `key` written (`exists`) or removed at `revision`:
    /// whether that is news (else this node has it, or something newer).
    pub(crate) fn observe(&self, key: &[u8], revision: i64, exists: bool) -> bool {
        let mut revs = self.revs_mut();
        match revs.get(key) {
            Some(r) if r.rev >= revision => false,
            _ => {
                revs.insert(
                    key.to_vec(),
                    Rev {
                        rev: revision,
                        exists,
                    },
                );
                true
            }
        }
    }

    fn revs_mut(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Rev>> {
        self.revs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Imsi;
    use crate::store::StaticSession;

    fn session(i: u32) -> Change {
        Change::Session(
            std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
            Some(StaticSession {
                imsi: Imsi::parse("001010000000001").unwrap_or_else(|e| panic!("{e}")),
                imei: None,
                msisdn: None,
                created_at: 0,
            }),
        )
    }

    #[test]
    fn chunks_fit_etcds_operation_limit_and_keep_every_change_in_order() {
        // A static session costs its record and its SIM's guard: 2.
        let changes: Vec<Change> = (0..150).map(session).collect();
        let parts = chunks(&changes);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![60, 60, 30]
        );
        assert!(chunks(&[]).is_empty());
        assert_eq!(chunks(&changes[..1]).len(), 1);
    }
}
