//! The control state in etcd: what [`crate::store::Store`] is for one node.
//!
//! Writes: an edit's changes go in one etcd transaction together with a new
//! `{prefix}/fence`, guarded by the fence's revision as this node last saw
//! it. If any node wrote since, the guard fails, nothing is written, and the
//! caller waits for its watch to bring the other write in, then runs the
//! edit again on the newer state: no update is lost, and the rules in
//! `store::state` always judge the latest state.
//!
//! Reads: each node keeps the whole state in memory. A watch over the prefix
//! streams every change in revision order ([`Watcher`]), resuming after the
//! last revision it applied when the connection breaks, or reloading
//! everything if etcd compacted that revision away.
//!
//! etcd is async and the control plane's mutations block (the API calls them
//! from `spawn_blocking`), so the client runs on a small runtime of its own
//! and blocking callers wait on a channel: callable from any thread.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::etcd::{Compare, EtcdClient, EtcdError, EtcdOptions, KeyValue, Op};
use super::keys::{Keys, Kind};
use crate::config::ClusterSettings;
use crate::store::records;
use crate::store::state::{Change, State};
use crate::store::StoreError;

/// etcd refuses transactions of more than 128 operations (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 120;

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
    /// Another node wrote first; nothing was written.
    Stale,
}

/// The fleet's control store.
pub(crate) struct EtcdStore {
    pub(crate) client: EtcdClient,
    pub(crate) keys: Keys,
    pub(crate) node: String,
    pub(crate) timeout: Duration,
    pub(crate) session_ttl: Duration,
    pub(crate) status: Arc<ClusterStatus>,
    /// The fence's revision as this node last saw it (watch or own write).
    fence: AtomicI64,
    /// Control records are applied up to this revision (own writes
    /// included), so the watch skips what this node already has.
    applied_control: AtomicI64,
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
            fence: AtomicI64::new(0),
            applied_control: AtomicI64::new(0),
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
        let mut fence = 0;
        for kv in kvs {
            match self.keys.classify(&kv.key) {
                Kind::Control { table, key } => {
                    state.apply(records::decode_change(table, key, Some(&kv.value))?);
                }
                Kind::Fence => fence = kv.mod_revision,
                Kind::Seeded => seeded = true,
                Kind::Radius(_) => radius.push(kv),
                Kind::Other => {}
            }
        }
        self.reset(fence, revision);
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

    /// Writes `changes` if nothing changed since this node's view (and, with
    /// `seeded_at`, only if the fleet was never seeded, marking it so).
    /// Call with the state's write lock held, so the view cannot move.
    ///
    /// More than one transaction's worth (a large configuration file) goes
    /// in several, each guarded by the one before: no update of another
    /// node is lost, but another node may see the first part before the rest.
    pub(crate) fn commit(
        &self,
        changes: &[Change],
        seeded_at: Option<u64>,
    ) -> Result<Committed, StoreError> {
        let mut ops = Vec::with_capacity(changes.len());
        for change in changes {
            let r = records::encode_change(change)?;
            let key = self.keys.control(r.table, &r.key);
            ops.push(match r.value {
                Some(value) => Op::Put {
                    key,
                    value,
                    lease: 0,
                },
                None => Op::Delete { key },
            });
        }
        let mut first = true;
        let mut chunks = ops.chunks(MAX_TXN_OPS).peekable();
        while let Some(chunk) = chunks.next() {
            let mut compare = vec![Compare::ModRevision(
                self.keys.fence(),
                self.fence.load(Ordering::SeqCst),
            )];
            let mut chunk = chunk.to_vec();
            chunk.push(Op::Put {
                key: self.keys.fence(),
                value: self.node.clone().into_bytes(),
                lease: 0,
            });
            if let (Some(at), true) = (seeded_at, chunks.peek().is_none()) {
                compare.push(Compare::CreateRevision(self.keys.seeded(), 0));
                chunk.push(Op::Put {
                    key: self.keys.seeded(),
                    value: at.to_string().into_bytes(),
                    lease: 0,
                });
            }
            let client = self.client.clone();
            let outcome = self.block(async move { client.txn(&compare, &chunk).await })?;
            if !outcome.succeeded {
                if !first {
                    tracing::warn!(
                        "a large control write was interrupted by another node's write \
                         after its first part; the rest is written again on the newer state"
                    );
                }
                return Ok(Committed::Stale);
            }
            first = false;
            self.fence.store(outcome.revision, Ordering::SeqCst);
            self.applied_control
                .fetch_max(outcome.revision, Ordering::SeqCst);
        }
        Ok(Committed::Yes)
    }

    /// After a [`Committed::Stale`]: waits (the state's lock released) until
    /// the watch has brought in a newer fence than `seen`, or `deadline`.
    pub(crate) fn wait_for_newer_fence(
        &self,
        seen: i64,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        self.status.write_retries.fetch_add(1, Ordering::Relaxed);
        while self.fence.load(Ordering::SeqCst) == seen {
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(
                    "another node wrote at the same time and this node has not caught up \
                     with etcd yet; retry"
                        .into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    pub(crate) fn fence(&self) -> i64 {
        self.fence.load(Ordering::SeqCst)
    }

    /// Records a fence seen by the watch.
    pub(crate) fn saw_fence(&self, revision: i64) {
        self.fence.fetch_max(revision, Ordering::SeqCst);
    }

    /// Whether a control record written at `revision` is already applied.
    pub(crate) fn has_control(&self, revision: i64) -> bool {
        revision <= self.applied_control.load(Ordering::SeqCst)
    }

    pub(crate) fn applied_control_through(&self, revision: i64) {
        self.applied_control.fetch_max(revision, Ordering::SeqCst);
    }

    /// After a full reload at `revision`.
    pub(crate) fn reset(&self, fence: i64, revision: i64) {
        self.fence.store(fence, Ordering::SeqCst);
        self.applied_control.store(revision, Ordering::SeqCst);
    }
}
