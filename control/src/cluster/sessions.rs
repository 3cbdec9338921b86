//! Sessions learned from RADIUS, shared by the fleet: the handler on any
//! node writes them to `{prefix}/radius/{ip}` and every node's watch binds
//! them in its own session table (`plane/cluster.rs`).
//!
//! Each session key is attached to an etcd lease, so a session whose
//! gateway went quiet (no Interim-Update, no Stop) ends on every node when
//! the lease expires. One lease per session would cost a grant per Start;
//! instead sessions written in the same window of `ttl / 10` share one lease
//! of `ttl` plus that window, and an Interim-Update moves its session to the
//! current window's lease (only when the window changed, so a burst of
//! Interim-Updates costs nothing). A session thus lives between `ttl` and
//! `ttl × 1.1` after its last Start or Interim-Update.
//!
//! Like the redb writer, this writes behind: the RADIUS listener never waits
//! for etcd. Changes are gathered for [`BATCH_WINDOW`], the last per address
//! kept, and written in transactions of at most 120 operations.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::etcd::{Compare, EtcdClient, Op};
use super::keys::Keys;
use crate::radius::{PersistedSession, RadiusStats, SessionPersistence};
use crate::snapshot::Session;
use crate::store::radius_sessions::{decode_row, encode_row};

/// How long changes are gathered before they are written: short, because
/// the fleet promises a Start is seen everywhere within a second.
pub(crate) const BATCH_WINDOW: Duration = Duration::from_millis(20);

enum Change {
    Save {
        ip: Ipv4Addr,
        row: Vec<u8>,
        /// An Interim-Update repeating the binding: written only to move the
        /// session to a newer lease.
        refresh: bool,
    },
    Remove(Ipv4Addr),
    /// Accounting-On/Off: every session this gateway reported ends.
    ClearNas(IpAddr),
}

/// The fleet's [`SessionPersistence`].
#[derive(Debug)]
pub(crate) struct EtcdSessions {
    queue: mpsc::UnboundedSender<Change>,
}

impl EtcdSessions {
    pub(crate) fn spawn(
        client: EtcdClient,
        keys: Keys,
        ttl: Duration,
        stats: Arc<RadiusStats>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(write_loop(client, keys, ttl, stats, rx));
        Self { queue: tx }
    }
}

impl SessionPersistence for EtcdSessions {
    /// Nothing: the node binds the fleet's sessions from etcd itself, at
    /// start and from its watch.
    fn restore(&self) -> Vec<PersistedSession> {
        Vec::new()
    }

    fn save(&self, ip: Ipv4Addr, nas: IpAddr, session: &Session) {
        if let Some(row) = encode_row(nas, session) {
            let _ = self.queue.send(Change::Save {
                ip,
                row,
                refresh: false,
            });
        }
    }

    fn refresh(&self, ip: Ipv4Addr, nas: IpAddr, session: &Session) {
        if let Some(row) = encode_row(nas, session) {
            let _ = self.queue.send(Change::Save {
                ip,
                row,
                refresh: true,
            });
        }
    }

    fn remove(&self, ip: Ipv4Addr) {
        let _ = self.queue.send(Change::Remove(ip));
    }

    fn clear_nas(&self, nas: IpAddr) {
        let _ = self.queue.send(Change::ClearNas(nas));
    }
}

/// Leases by window: the current window's lease, granted on first use.
struct Leases {
    ttl: Duration,
    window: Duration,
    started: Instant,
    current: Option<(u64, i64)>,
}

impl Leases {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            window: (ttl / 10).max(Duration::from_secs(1)),
            started: Instant::now(),
            current: None,
        }
    }

    fn window_now(&self) -> u64 {
        (self.started.elapsed().as_millis() / self.window.as_millis().max(1)) as u64
    }

    async fn lease(&mut self, client: &EtcdClient) -> Result<(u64, i64), super::etcd::EtcdError> {
        let w = self.window_now();
        if let Some((cw, id)) = self.current {
            if cw == w {
                return Ok((w, id));
            }
        }
        let id = client.grant_lease(self.ttl + self.window).await?;
        self.current = Some((w, id));
        Ok((w, id))
    }
}

async fn write_loop(
    client: EtcdClient,
    keys: Keys,
    ttl: Duration,
    stats: Arc<RadiusStats>,
    mut rx: mpsc::UnboundedReceiver<Change>,
) {
    let mut leases = Leases::new(ttl);
    // The window each address's key was last written in (to skip refreshes).
    let mut written: HashMap<Ipv4Addr, u64> = HashMap::new();
    let mut next = rx.recv().await;
    while let Some(first) = next.take() {
        let mut pending: BTreeMap<Ipv4Addr, Change> = BTreeMap::new();
        // An Accounting-On/Off ends the batch before it: what came earlier
        // is written first, what comes later survives it.
        let mut clear = None;
        match first {
            Change::ClearNas(nas) => clear = Some(nas),
            c => absorb(&mut pending, c),
        }
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while clear.is_none() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Change::ClearNas(nas))) => clear = Some(nas),
                Ok(Some(c)) => absorb(&mut pending, c),
                Ok(None) | Err(_) => break,
            }
        }
        if !pending.is_empty() {
            write(&client, &keys, &mut leases, &mut written, &stats, pending).await;
        }
        if let Some(nas) = clear {
            clear_nas(&client, &keys, &mut written, &stats, nas).await;
        }
        next = rx.recv().await;
    }
}

async fn write(
    client: &EtcdClient,
    keys: &Keys,
    leases: &mut Leases,
    written: &mut HashMap<Ipv4Addr, u64>,
    stats: &RadiusStats,
    pending: BTreeMap<Ipv4Addr, Change>,
) {
    let (window, lease) = match leases.lease(client).await {
        Ok(l) => l,
        Err(e) => {
            stats.count_persist_error();
            tracing::error!(error = %e, changes = pending.len(),
                "cannot get an etcd lease for RADIUS sessions; they stay on this node only");
            return;
        }
    };
    let mut ops = Vec::with_capacity(pending.len());
    for (ip, c) in pending {
        match c {
            Change::Save { row, refresh, .. } => {
                if refresh && written.get(&ip) == Some(&window) {
                    continue;
                }
                written.insert(ip, window);
                ops.push(Op::Put {
                    key: keys.radius(ip),
                    value: row,
                    lease,
                });
            }
            Change::Remove(ip) => {
                written.remove(&ip);
                ops.push(Op::Delete {
                    key: keys.radius(ip),
                });
            }
            Change::ClearNas(_) => {}
        }
    }
    // Transactions of one batch touch different keys: sent together (a
    // burst of Starts after a gateway restart is bounded by etcd's
    // throughput, not by one round trip after another).
    let mut inflight = tokio::task::JoinSet::new();
    let mut chunks = ops.chunks(120).map(<[Op]>::to_vec);
    loop {
        while inflight.len() < TXNS_IN_FLIGHT {
            let Some(chunk) = chunks.next() else { break };
            let client = client.clone();
            inflight.spawn(async move { (chunk.len(), client.txn(&[], &chunk).await) });
        }
        let Some(done) = inflight.join_next().await else {
            break;
        };
        if let Ok((n, Err(e))) = done {
            stats.count_persist_error();
            tracing::error!(error = %e, changes = n,
                "cannot write RADIUS sessions to etcd; they stay on this node only");
        }
    }
}

/// Transactions of one batch in flight at once.
const TXNS_IN_FLIGHT: usize = 8;

/// Deletes every session `nas` reported, whichever node bound it (each key
/// only if unchanged since read, so a newer Start from elsewhere stays).
async fn clear_nas(
    client: &EtcdClient,
    keys: &Keys,
    written: &mut HashMap<Ipv4Addr, u64>,
    stats: &RadiusStats,
    nas: IpAddr,
) {
    let (start, end) = keys.radius_range();
    let kvs = match client.range_all(&start, &end).await {
        Ok((kvs, _)) => kvs,
        Err(e) => {
            stats.count_persist_error();
            tracing::error!(error = %e, %nas, "cannot read the fleet's RADIUS sessions to end a gateway's");
            return;
        }
    };
    let mut cleared = 0usize;
    for kv in kvs {
        let Some((row_nas, _)) = decode_row(&kv.value) else {
            continue;
        };
        if row_nas != nas {
            continue;
        }
        if let super::keys::Kind::Radius(ip) = keys.classify(&kv.key) {
            written.remove(&ip);
        }
        let guard = [Compare::ModRevision(kv.key.clone(), kv.mod_revision)];
        match client.txn(&guard, &[Op::Delete { key: kv.key }]).await {
            Ok(o) if o.succeeded => cleared += 1,
            Ok(_) => {}
            Err(e) => {
                stats.count_persist_error();
                tracing::error!(error = %e, %nas, "cannot end a gateway's RADIUS session in etcd");
            }
        }
    }
    tracing::info!(%nas, cleared, "Accounting-On/Off: the gateway's sessions ended across the fleet");
}

fn absorb(pending: &mut BTreeMap<Ipv4Addr, Change>, c: Change) {
    let ip = match &c {
        Change::Save { ip, .. } | Change::Remove(ip) => *ip,
        Change::ClearNas(_) => return,
    };
    // A refresh never downgrades a pending save of a changed binding.
    if let (Change::Save { refresh: true, .. }, Some(Change::Save { refresh: false, .. })) =
        (&c, pending.get(&ip))
    {
        return;
    }
    pending.insert(ip, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(ip: [u8; 4], row: &str, refresh: bool) -> Change {
        Change::Save {
            ip: Ipv4Addr::from(ip),
            row: row.as_bytes().to_vec(),
            refresh,
        }
    }

    fn pending(changes: Vec<Change>) -> BTreeMap<Ipv4Addr, Change> {
        let mut p = BTreeMap::new();
        for c in changes {
            absorb(&mut p, c);
        }
        p
    }

    #[test]
    fn the_last_change_per_address_wins_but_a_refresh_never_hides_a_save() {
        let p = pending(vec![
            save([10, 0, 0, 1], "first", false),
            save([10, 0, 0, 1], "second", false),
            save([10, 0, 0, 2], "bound", false),
            save([10, 0, 0, 2], "interim", true),
            save([10, 0, 0, 3], "x", false),
            Change::Remove(Ipv4Addr::new(10, 0, 0, 3)),
        ]);
        let row = |ip: [u8; 4]| match p.get(&Ipv4Addr::from(ip)) {
            Some(Change::Save { row, refresh, .. }) => {
                Some((String::from_utf8_lossy(row).into_owned(), *refresh))
            }
            _ => None,
        };
        assert_eq!(row([10, 0, 0, 1]), Some(("second".into(), false)));
        assert_eq!(row([10, 0, 0, 2]), Some(("bound".into(), false)));
        assert!(matches!(
            p.get(&Ipv4Addr::new(10, 0, 0, 3)),
            Some(Change::Remove(_))
        ));
    }

    #[test]
    fn a_lease_window_is_a_tenth_of_the_ttl_and_at_least_a_second() {
        assert_eq!(
            Leases::new(Duration::from_secs(3600)).window,
            Duration::from_secs(360)
        );
        assert_eq!(
            Leases::new(Duration::from_secs(5)).window,
            Duration::from_secs(1)
        );
        assert_eq!(Leases::new(Duration::from_secs(3600)).window_now(), 0);
    }
}
