//! Sessions learned from RADIUS, kept in the `radius_sessions` table (schema
//! v3) so they survive a restart: [`RadiusSessionWriter`] implements the
//! handler's [`SessionPersistence`].
//!
//! Write-behind: `save` and `remove` only queue the change (the RADIUS
//! listener never waits for the disk). A writer thread takes the first
//! change, gathers whatever else arrives within [`BATCH_WINDOW`], keeps the
//! last change per address, and writes them in one durable transaction — a
//! burst of Starts after a gateway restart costs a few fsyncs, not one per
//! session; Interim-Updates that repeat a binding are not even queued. A
//! crash loses at most the last window's changes, which the gateway's next
//! Interim-Update re-sends. Dropping the writer writes what is queued and
//! joins the thread (so the file can be opened again at once).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable as _};
use serde::{Deserialize, Serialize};

use super::schema::RADIUS_SESSIONS;
use super::StoreError;
use crate::model::{Imei, Imsi, Msisdn};
use crate::radius::{PersistedSession, RadiusStats, SessionPersistence};
use crate::snapshot::Session;

/// How long the writer gathers changes before one commit.
pub const BATCH_WINDOW: Duration = Duration::from_millis(200);

/// A row of `radius_sessions` (key: the IPv4 address as text).
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    imsi: Imsi,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    imei: Option<Imei>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    msisdn: Option<Msisdn>,
    nas: IpAddr,
}

/// A learned session as stored (here and in a fleet's etcd).
pub(crate) fn encode_row(nas: IpAddr, session: &Session) -> Option<Vec<u8>> {
    serde_json::to_vec(&Row {
        imsi: session.imsi.clone(),
        imei: session.imei.clone(),
        msisdn: session.msisdn.clone(),
        nas,
    })
    .ok()
}

/// The gateway and the session of a stored row; `None` if unreadable.
pub(crate) fn decode_row(bytes: &[u8]) -> Option<(IpAddr, Session)> {
    let row: Row = serde_json::from_slice(bytes).ok()?;
    Some((row.nas, Session::new(row.imsi, row.imei, row.msisdn)))
}

enum Op {
    Save(Ipv4Addr, Vec<u8>),
    Remove(Ipv4Addr),
}

/// Keeps RADIUS sessions in the control store, writing behind.
pub struct RadiusSessionWriter {
    db: Arc<Database>,
    queue: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RadiusSessionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadiusSessionWriter")
            .finish_non_exhaustive()
    }
}

impl RadiusSessionWriter {
    pub(crate) fn new(db: Arc<Database>, stats: Arc<RadiusStats>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("radius-sessions".into())
            .spawn(move || run(&writer_db, &rx, &stats))?;
        Ok(Self {
            db,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn send(&self, op: Op) {
        if let Some(q) = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = q.send(op);
        }
    }

    fn load(&self) -> Result<Vec<PersistedSession>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RADIUS_SESSIONS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let key = k.value();
            let decoded = key.parse::<Ipv4Addr>().ok().zip(decode_row(v.value()));
            let Some((ip, (nas, session))) = decoded else {
                tracing::warn!(key, "unreadable RADIUS session row skipped");
                continue;
            };
            out.push(PersistedSession { ip, nas, session });
        }
        Ok(out)
    }
}

impl SessionPersistence for RadiusSessionWriter {
    fn restore(&self) -> Vec<PersistedSession> {
        self.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the stored RADIUS sessions");
            Vec::new()
        })
    }

    fn save(&self, ip: Ipv4Addr, nas: IpAddr, session: &Session) {
        if let Some(bytes) = encode_row(nas, session) {
            self.send(Op::Save(ip, bytes));
        }
    }

    fn remove(&self, ip: Ipv4Addr) {
        self.send(Op::Remove(ip));
    }
}

impl Drop for RadiusSessionWriter {
    fn drop(&mut self) {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(w) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            if w.join().is_err() {
                tracing::error!("RADIUS session writer panicked");
            }
        }
    }
}

/// Removes the row of `ip` at once (an API `DELETE /v1/sessions/{ip}` of a
/// RADIUS session). Blocking.
pub(crate) fn remove_now(db: &Database, ip: Ipv4Addr) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(RADIUS_SESSIONS)?
        .remove(ip.to_string().as_str())?;
    txn.commit()?;
    Ok(())
}

fn run(db: &Database, queue: &mpsc::Receiver<Op>, stats: &RadiusStats) {
    let mut pending: BTreeMap<Ipv4Addr, Option<Vec<u8>>> = BTreeMap::new();
    let mut open = true;
    while open {
        let Ok(first) = queue.recv() else { break };
        absorb(&mut pending, first);
        let deadline = Instant::now() + BATCH_WINDOW;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match queue.recv_timeout(left) {
                Ok(op) => absorb(&mut pending, op),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if let Err(e) = write(db, &pending) {
            stats.count_persist_error();
            tracing::error!(error = %e, changes = pending.len(), "cannot store RADIUS sessions");
        }
        pending.clear();
    }
}

fn absorb(pending: &mut BTreeMap<Ipv4Addr, Option<Vec<u8>>>, op: Op) {
    match op {
        Op::Save(ip, row) => pending.insert(ip, Some(row)),
        Op::Remove(ip) => pending.insert(ip, None),
    };
}

fn write(db: &Database, pending: &BTreeMap<Ipv4Addr, Option<Vec<u8>>>) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(RADIUS_SESSIONS)?;
        for (ip, row) in pending {
            let key = ip.to_string();
            match row {
                Some(bytes) => {
                    table.insert(key.as_str(), bytes.as_slice())?;
                }
                None => {
                    table.remove(key.as_str())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn saved_sessions_come_back_and_removed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.redb");
        let store = Store::open(&path).unwrap();
        let stats = Arc::new(RadiusStats::new());
        let w = store.radius_sessions(Arc::clone(&stats)).unwrap();
        assert!(w.restore().is_empty());
        let imsi = |s: &str| Imsi::parse(s).unwrap();
        let nas: IpAddr = "192.0.2.1".parse().unwrap();
        let a = Session::new(imsi("001010000000001"), None, None);
        let b = Session::new(imsi("001010000000002"), None, None);
        w.save("10.0.0.1".parse().unwrap(), nas, &a);
        w.save("10.0.0.2".parse().unwrap(), nas, &b);
        w.save("10.0.0.3".parse().unwrap(), nas, &a);
        w.remove("10.0.0.3".parse().unwrap());
        drop(w); // writes what is queued
        let w = store.radius_sessions(Arc::clone(&stats)).unwrap();
        let mut got = w.restore();
        got.sort_by_key(|p| p.ip);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].session, a);
        assert_eq!(got[0].nas, nas);
        assert_eq!(got[1].session, b);
        remove_now(&store.db, "10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(w.restore().len(), 1);
        assert_eq!(stats.snapshot().persist_errors, 0);
    }
}
