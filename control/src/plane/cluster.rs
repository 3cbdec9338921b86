//! The control plane of a fleet node: opened on etcd (`[cluster] etcd`),
//! kept in step with the other nodes by a watch, and with its own view of
//! the link for `/health` and metrics.
//!
//! The node serves from its in-memory state whatever etcd does: if etcd is
//! unreachable, the data plane keeps the last snapshot and sessions, and
//! writes answer 503 (`StoreError::Unavailable`) until it is back; the
//! watch then resumes from the last revision applied.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{
    api_token_path, read_token_file, token_digests, write_token_file, Backend, ControlPlane,
    DEFAULT_TOKEN_NAME,
};
use crate::clock::now_ms;
use crate::cluster::etcd::{EtcdError, Event, KeyValue, WatchBatch};
use crate::cluster::keys::Kind;
use crate::cluster::sessions::EtcdSessions;
use crate::cluster::store::{ClusterStatus, Committed, EtcdStore, Loaded};
use crate::config::{ClusterSettings, Config};
use crate::secret_file;
use crate::snapshot::{SessionTable, SnapshotHandle};
use crate::store::radius_sessions::decode_row;
use crate::store::records;
use crate::store::state::Edit;
use crate::store::token;
use crate::store::StoreError;

/// How this node's control state is kept, for `/health`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatusView {
    /// `redb` or `etcd`.
    pub backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// etcd answered the last call.
    pub connected: bool,
    pub etcd_revision: i64,
    pub applied_revision: i64,
    /// Revisions behind etcd.
    pub revision_lag: i64,
    pub watch_reconnects: u64,
    pub reloads: u64,
    pub write_retries: u64,
    pub unreadable_events: u64,
}

impl ControlPlane {
    /// Opens the fleet's control state in etcd; on the fleet's first start
    /// seeds it from `seed` (once, whichever node gets there first). Like
    /// [`open`](Self::open), makes a `default` token if the fleet has none,
    /// written to this node's `{data_dir}/api.token`.
    pub fn open_cluster(
        data_dir: &Path,
        seed: &Config,
        settings: &ClusterSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Arc<Self>, StoreError> {
        secret_file::create_private_dir(data_dir)?;
        let etcd = EtcdStore::new(settings, tls)?;
        let token_path = api_token_path(data_dir);
        let mut created = None;
        let loaded = loop {
            let Loaded {
                mut state,
                seeded,
                radius,
                revision,
            } = etcd.load()?;
            let now = now_ms();
            let mut edit = Edit::new(&mut state, now);
            if !seeded {
                edit.apply_config(seed)?;
                if let Some(legacy) = read_token_file(&token_path)? {
                    edit.put_token(DEFAULT_TOKEN_NAME, token::digest(&legacy))?;
                }
            }
            let mut made = None;
            if edit.state().tokens.is_empty() {
                let t = token::generate();
                edit.put_token(DEFAULT_TOKEN_NAME, token::digest(&t))?;
                made = Some(t);
            }
            if !seeded || !edit.changes().is_empty() {
                if let Some(t) = &made {
                    write_token_file(&token_path, t)?;
                }
                match etcd.commit(edit.changes(), (!seeded).then_some(now))? {
                    Committed::Yes => {}
                    // Another node seeded or wrote meanwhile: start over
                    // from what it wrote.
                    Committed::Stale(_) => continue,
                }
            }
            created = made.or(created);
            edit.finish();
            break Loaded {
                state,
                seeded,
                radius,
                revision,
            };
        };
        let Loaded {
            state,
            radius,
            revision,
            seeded,
        } = loaded;
        let sessions = Arc::new(SessionTable::new());
        for (ip, s) in &state.sessions {
            sessions.bind_static(*ip, s.session());
        }
        for kv in &radius {
            bind_radius(&etcd, &sessions, kv);
        }
        tracing::info!(
            node = %etcd.node,
            endpoints = ?etcd.client.endpoints(),
            revision,
            subscribers = state.subscribers.len(),
            groups = state.groups.len(),
            radius_sessions = radius.len(),
            seeded_now = !seeded,
            "control state loaded from etcd"
        );
        let plane = Arc::new(Self {
            snapshot: Arc::new(SnapshotHandle::new(state.snapshot())),
            sessions,
            tokens: ArcSwap::from_pointee(token_digests(&state)),
            state: RwLock::new(state),
            created_token: Mutex::new(created),
            allow_insecure_endpoints: std::sync::atomic::AtomicBool::new(
                seed.funnel.allow_insecure_endpoints,
            ),
            api_keys: RwLock::default(),
            store: Backend::Etcd(etcd),
        });
        if let Backend::Etcd(etcd) = &plane.store {
            etcd.spawn(watch_loop(Arc::downgrade(&plane), revision + 1));
            etcd.spawn(probe_loop(Arc::downgrade(&plane)));
        }
        Ok(plane)
    }

    /// The store behind this node and, in a fleet, its link to etcd.
    pub fn cluster_status(&self) -> ClusterStatusView {
        match &self.store {
            Backend::Local(_) => ClusterStatusView {
                backend: "redb",
                node: None,
                connected: true,
                etcd_revision: 0,
                applied_revision: 0,
                revision_lag: 0,
                watch_reconnects: 0,
                reloads: 0,
                write_retries: 0,
                unreadable_events: 0,
            },
            Backend::Etcd(e) => {
                let s = &e.status;
                ClusterStatusView {
                    backend: "etcd",
                    node: Some(e.node.clone()),
                    connected: s.connected.load(Ordering::Relaxed),
                    etcd_revision: s.etcd_revision.load(Ordering::Relaxed),
                    applied_revision: s.applied_revision.load(Ordering::Relaxed),
                    revision_lag: s.lag(),
                    watch_reconnects: s.watch_reconnects.load(Ordering::Relaxed),
                    reloads: s.reloads.load(Ordering::Relaxed),
                    write_retries: s.write_retries.load(Ordering::Relaxed),
                    unreadable_events: s.unreadable_events.load(Ordering::Relaxed),
                }
            }
        }
    }

    /// Removes a RADIUS session from the fleet at once.
    pub(super) fn remove_radius_everywhere(
        etcd: &EtcdStore,
        ip: std::net::Ipv4Addr,
    ) -> Result<(), StoreError> {
        let client = etcd.client.clone();
        let key = etcd.keys.radius(ip);
        etcd.block(async move {
            client
                .txn(&[], &[crate::cluster::etcd::Op::Delete { key }])
                .await
        })?;
        Ok(())
    }

    /// One watch answer: other nodes' writes (and echoes of this node's).
    fn apply_watch(&self, etcd: &EtcdStore, batch: &WatchBatch) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let mut changes = Vec::new();
        for event in &batch.events {
            let kv = event.kv();
            let exists = matches!(event, Event::Put(_));
            match etcd.keys.classify(&kv.key) {
                Kind::Control { table, key } => {
                    // Own writes come back, and a write this node already
                    // has a newer version of is old news.
                    if !etcd.observe(&kv.key, kv.mod_revision, exists) {
                        continue;
                    }
                    let value = exists.then_some(kv.value.as_slice());
                    match records::decode_change(table, key, value) {
                        Ok(c) => {
                            state.apply(c.clone());
                            changes.push(c);
                        }
                        Err(e) => {
                            etcd.status
                                .unreadable_events
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(error = %e, "etcd watch: record skipped");
                        }
                    }
                }
                Kind::Refs => {
                    etcd.observe(&kv.key, kv.mod_revision, exists);
                }
                Kind::Radius(ip) => match event {
                    Event::Put(kv) => bind_radius(etcd, &self.sessions, kv),
                    Event::Delete(_) => {
                        let ip = IpAddr::V4(ip);
                        if !self.sessions.is_static(ip) {
                            self.sessions.unbind(ip);
                        }
                    }
                },
                Kind::Seeded | Kind::Other => {}
            }
        }
        self.publish(&state, &changes);
        drop(state);
        let seen = batch
            .events
            .iter()
            .map(|e| e.kv().mod_revision)
            .max()
            .unwrap_or(batch.revision);
        let s = &etcd.status;
        s.applied_revision.fetch_max(seen, Ordering::Relaxed);
        s.etcd_revision.fetch_max(seen, Ordering::Relaxed);
        s.connected.store(true, Ordering::Relaxed);
    }

    /// After etcd compacted the revision the watch would resume from: the
    /// whole state again (read by the caller at one revision), published.
    fn reload(&self, etcd: &EtcdStore, loaded: Loaded) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        for ip in state.sessions.keys() {
            if !loaded.state.sessions.contains_key(ip) {
                self.sessions.unbind_static(*ip);
            }
        }
        *state = loaded.state;
        self.snapshot.store(state.snapshot());
        for (ip, s) in &state.sessions {
            self.sessions.bind_static(*ip, s.session());
        }
        self.tokens.store(Arc::new(token_digests(&state)));
        drop(state);
        let live: std::collections::HashSet<IpAddr> = loaded
            .radius
            .iter()
            .filter_map(|kv| match etcd.keys.classify(&kv.key) {
                Kind::Radius(ip) => Some(IpAddr::V4(ip)),
                _ => None,
            })
            .collect();
        for (ip, _) in self.sessions.entries() {
            if !live.contains(&ip) && !self.sessions.is_static(ip) {
                self.sessions.unbind(ip);
            }
        }
        for kv in &loaded.radius {
            bind_radius(etcd, &self.sessions, kv);
        }
        etcd.status.reloads.fetch_add(1, Ordering::Relaxed);
        etcd.status
            .applied_revision
            .store(loaded.revision, Ordering::Relaxed);
    }
}

fn bind_radius(etcd: &EtcdStore, sessions: &SessionTable, kv: &KeyValue) {
    let Kind::Radius(ip) = etcd.keys.classify(&kv.key) else {
        return;
    };
    match decode_row(&kv.value) {
        Some((_nas, session)) => {
            // A static session is kept over a learned one, as on one node.
            let _ = sessions.bind_learned(IpAddr::V4(ip), session);
        }
        None => {
            etcd.status
                .unreadable_events
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%ip, "etcd: unreadable RADIUS session skipped");
        }
    }
}

/// The fleet's RADIUS session writer (leases in etcd).
pub(super) fn etcd_sessions(
    etcd: &EtcdStore,
    stats: Arc<crate::radius::RadiusStats>,
) -> EtcdSessions {
    EtcdSessions::spawn(
        etcd.client.clone(),
        etcd.keys.clone(),
        etcd.session_ttl,
        stats,
        &etcd.runtime(),
    )
}

/// Follows etcd from `from`, for as long as the plane lives.
async fn watch_loop(plane: Weak<ControlPlane>, mut from: i64) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(p) = plane.upgrade() else { return };
        let Backend::Etcd(etcd) = &p.store else {
            return;
        };
        let client = etcd.client.clone();
        let status = Arc::clone(&etcd.status);
        let (start, end) = etcd.keys.all();
        drop(p);
        let weak = plane.clone();
        let mut next = from;
        let result = client
            .watch(&start, &end, from, |batch| {
                if let Some(p) = weak.upgrade() {
                    if let Backend::Etcd(etcd) = &p.store {
                        // Takes the state's lock, which a write may hold
                        // while it waits for this runtime.
                        tokio::task::block_in_place(|| p.apply_watch(etcd, &batch));
                    }
                }
                let last = batch
                    .events
                    .iter()
                    .map(|e| e.kv().mod_revision)
                    .max()
                    .unwrap_or(batch.revision);
                next = next.max(last + 1);
            })
            .await;
        if next > from {
            backoff = Duration::from_millis(100);
        }
        from = next;
        match result {
            Ok(()) => tracing::warn!("etcd watch ended; resuming from revision {from}"),
            Err(EtcdError::Compacted(at)) => {
                tracing::warn!(
                    compacted = at,
                    "etcd compacted past this node's revision; reloading"
                );
                match client.range_all(&start, &end).await {
                    Ok((kvs, revision)) => {
                        let Some(p) = plane.upgrade() else { return };
                        let Backend::Etcd(etcd) = &p.store else {
                            return;
                        };
                        match etcd.decode(kvs, revision) {
                            Ok(loaded) => {
                                tokio::task::block_in_place(|| p.reload(etcd, loaded));
                                from = revision + 1;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "etcd reload unreadable; retrying")
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "etcd reload failed; retrying"),
                }
            }
            Err(e) => {
                status.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "etcd watch lost; serving from this node's state");
            }
        }
        status.watch_reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Once a second, asks etcd its revision: the lag figure, and whether etcd
/// is reachable when nothing is being written.
async fn probe_loop(plane: Weak<ControlPlane>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(p) = plane.upgrade() else { return };
        let Backend::Etcd(etcd) = &p.store else {
            return;
        };
        let client = etcd.client.clone();
        let status: Arc<ClusterStatus> = Arc::clone(&etcd.status);
        let probe_key = etcd.keys.seeded();
        drop(p);
        match client.current_revision(&probe_key).await {
            Ok(rev) => {
                status.etcd_revision.fetch_max(rev, Ordering::Relaxed);
                status.connected.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                if status.connected.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "etcd unreachable; serving from this node's state, writes answer 503");
                }
            }
        }
    }
}
