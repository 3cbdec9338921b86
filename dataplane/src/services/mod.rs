//! Device-facing services, each named as SORACOM names it, and the routing of
//! one device message to the services its SIM's group enables.

mod batch;
pub mod beam;
pub mod endorse;
pub mod funk;
pub mod funnel;
pub mod harvest;
pub mod harvest_files;
pub mod krypton;
pub mod metadata;
pub mod unified;

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use simgate_control::{Identity, IdentityError, SessionTable, Snapshot, SnapshotHandle};

use crate::metrics::Metrics;
pub use batch::BatchAnswers;
use funnel::{Accepted, Funnel, FunnelReply, SourceProtocol};
use harvest::{Category, HarvestError, HarvestStore, NewEntry};

/// Which entry point the device used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Port 23080 or an HTTP Host that names no service: whatever the group
    /// enables.
    Unified,
    Funnel,
    Harvest,
    /// HTTP Host `funk.*`: the group's `SoracomFunk` function.
    Funk,
}

/// One message from a device.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub peer: SocketAddr,
    pub protocol: SourceProtocol,
    pub entry: Entry,
    pub payload: &'a [u8],
    /// HTTP `Content-Type`, if any.
    pub content_type: Option<&'a str>,
    /// HTTP `X-Soracom-Timestamp`, if any (Harvest entry time).
    pub timestamp: Option<&'a str>,
}

/// A service's answer, in the forms each protocol needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// HTTP response body (may be empty).
    pub body: Bytes,
    /// Fixed by simgate, or from a group's Custom Unified Endpoint answer.
    pub content_type: Cow<'static, str>,
    /// What UDP and TCP devices receive.
    pub line: Bytes,
    /// HTTP `Retry-After`, seconds.
    pub retry_after: Option<u32>,
    /// Close the TCP connection after this reply (SORACOM sends FIN after a
    /// 400 on TCP).
    pub close: bool,
    /// Drop silently on UDP (queue full: answering would add load).
    pub silent_on_udp: bool,
}

impl Reply {
    fn ok(status: u16, line: &'static str) -> Self {
        Self {
            status,
            body: Bytes::new(),
            content_type: Cow::Borrowed("text/plain"),
            line: Bytes::from_static(line.as_bytes()),
            retry_after: None,
            close: false,
            silent_on_udp: false,
        }
    }

    pub fn error(status: u16, message: &str) -> Self {
        Self {
            status,
            body: Bytes::from(message.to_owned()),
            content_type: Cow::Borrowed("text/plain"),
            line: Bytes::from(format!("{status} {message}")),
            retry_after: None,
            close: status == 400,
            silent_on_udp: false,
        }
    }

    fn busy(status: u16, message: &str) -> Self {
        Self {
            retry_after: Some(1),
            silent_on_udp: true,
            ..Self::error(status, message)
        }
    }
}

/// An answer still to come.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// The answer now, or a future that will produce it (Harvest waits for its
/// commit; TCP waits for room in a full Funnel queue).
pub enum Handled {
    Now(Reply),
    Later(ReplyFuture),
    /// The source is not allowed: HTTP 403, TCP close, UDP drop.
    Refused(IdentityError),
}

/// Everything the ingress needs to serve devices.
pub struct Services {
    pub sessions: Arc<SessionTable>,
    pub snapshot: Arc<SnapshotHandle>,
    pub funnel: Funnel,
    pub harvest: Arc<HarvestStore>,
    pub metrics: Arc<Metrics>,
    /// Beam's proxies (ingress hands them the identified request or
    /// connection; UDP/TCP → HTTP goes through [`Services::handle`]).
    pub beam: Arc<beam::Beam>,
    /// Metadata (Host `metadata.*`): ingress hands it the request.
    pub metadata: metadata::Metadata,
    /// Endorse (Host `endorse.*`): ingress hands it the request.
    pub endorse: Arc<endorse::Endorse>,
    /// Harvest Files (Host `harvest-files.*`, and `/v1/files` on the API).
    pub harvest_files: Arc<harvest_files::HarvestFiles>,
    /// Funk (Host `funk.*`, and the Unified Endpoint): invokes the group's
    /// function ([`funk::Funk::handle`]).
    pub funk: funk::Funk,
    /// Krypton (Host `krypton.*`): ingress hands it the request.
    pub krypton: Arc<krypton::Krypton>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

use simgate_control::clock::now_ms;

impl Services {
    /// Resolves who sent a message from its source address.
    pub fn identify(
        &self,
        peer: SocketAddr,
    ) -> Result<(Arc<Identity>, arc_swap::Guard<Arc<Snapshot>>), IdentityError> {
        let snapshot = self.snapshot.load();
        let identity = self.identify_in(peer, &snapshot)?;
        Ok((identity, snapshot))
    }

    /// The session probe, then what the session remembers resolving to
    /// under this snapshot (resolved again only when the snapshot changed).
    fn identify_in(
        &self,
        peer: SocketAddr,
        snapshot: &Snapshot,
    ) -> Result<Arc<Identity>, IdentityError> {
        let session = self
            .sessions
            .lookup(peer.ip())
            .ok_or(IdentityError::NoSession)?;
        snapshot.resolve_cached(&session)
    }

    /// Serves one message.
    pub fn handle(&self, msg: &Message<'_>) -> Handled {
        let snapshot = self.snapshot.load();
        match self.sender(msg, &snapshot) {
            Ok(identity) => self.handle_identified(msg, &identity, &snapshot),
            Err(refused) => refused,
        }
    }

    /// Who sent `msg`; a refused sender is counted, and its answer returned
    /// as the error.
    fn sender(&self, msg: &Message<'_>, snapshot: &Snapshot) -> Result<Arc<Identity>, Handled> {
        self.identify_in(msg.peer, snapshot).map_err(|e| {
            self.metrics
                .reject(msg.protocol.as_str(), e.reason(), msg.peer);
            Handled::Refused(e)
        })
    }

    /// Serves one message from a sender already identified (HTTP checks the
    /// source before reading the body, and need not look it up again).
    pub fn handle_identified(
        &self,
        msg: &Message<'_>,
        identity: &Identity,
        snapshot: &Snapshot,
    ) -> Handled {
        let group = identity.group.as_deref();
        let funnel_on = funnel::is_enabled(identity);
        let harvest_on = group.is_some_and(|g| g.harvest.enabled);
        let proto = msg.protocol.as_str();
        match msg.entry {
            Entry::Funnel => self.funnel(msg, identity, snapshot),
            Entry::Harvest if harvest_on => self.harvest(msg, identity),
            Entry::Harvest => {
                self.metrics.served("harvest", proto, 400);
                Handled::Now(Reply::error(
                    400,
                    "Harvest is not enabled for this SIM's group",
                ))
            }
            Entry::Unified => self.unified(msg, identity, snapshot, funnel_on, harvest_on),
            Entry::Funk => self.funk.handle(msg, identity, snapshot),
        }
    }

    fn funnel(&self, msg: &Message<'_>, identity: &Identity, snapshot: &Snapshot) -> Handled {
        let proto = msg.protocol.as_str();
        let http_json =
            (msg.protocol == SourceProtocol::Http).then(|| is_json_type(msg.content_type));
        let prepared = match self.funnel.prepare(
            identity,
            snapshot,
            msg.protocol,
            msg.payload,
            http_json,
            now_ms(),
        ) {
            Ok(p) => p,
            Err(reply) => return Handled::Now(self.funnel_reply(proto, &reply)),
        };
        let metrics = Arc::clone(&self.metrics);
        if msg.protocol == SourceProtocol::Tcp {
            return Handled::Later(Box::pin(async move {
                let r = match prepared.queue.submit(prepared.record).await {
                    Ok(()) => FunnelReply::Accepted,
                    Err(e) => e.into(),
                };
                funnel_reply(&metrics, proto, &r)
            }));
        }
        match prepared.queue.try_submit(prepared.record) {
            Ok(Accepted::Now) => Handled::Now(self.funnel_reply(proto, &FunnelReply::Accepted)),
            // The device hears back once the spool's group commit has
            // fsynced the record.
            Ok(Accepted::Commit(commit)) => Handled::Later(Box::pin(async move {
                let r = match commit.await {
                    Ok(()) => FunnelReply::Accepted,
                    Err(e) => e.into(),
                };
                funnel_reply(&metrics, proto, &r)
            })),
            Err(e) => Handled::Now(self.funnel_reply(proto, &e.into())),
        }
    }

    fn funnel_reply(&self, proto: &'static str, r: &FunnelReply) -> Reply {
        funnel_reply(&self.metrics, proto, r)
    }

    fn harvest(&self, msg: &Message<'_>, identity: &Identity) -> Handled {
        match self.harvest_entry(msg, identity) {
            Ok(entry) => {
                let store = Arc::clone(&self.harvest);
                let metrics = Arc::clone(&self.metrics);
                let proto = msg.protocol.as_str();
                Handled::Later(Box::pin(async move {
                    let started = std::time::Instant::now();
                    let r = store.append(entry).await;
                    metrics
                        .harvest_append_seconds
                        .observe(started.elapsed().as_secs_f64());
                    harvest_reply(&metrics, proto, r)
                }))
            }
            Err(reply) => Handled::Now(reply),
        }
    }

    fn harvest_entry(&self, msg: &Message<'_>, identity: &Identity) -> Result<NewEntry, Reply> {
        let proto = msg.protocol.as_str();
        let retention = self.harvest.settings().retention_days;
        let time = match harvest::entry_time(msg.timestamp, now_ms(), retention) {
            Ok(t) => t,
            Err(e) => {
                self.metrics.served("harvest", proto, 400);
                return Err(Reply::error(400, &e.to_string()));
            }
        };
        let category = match msg.protocol {
            SourceProtocol::Http => Category::Http,
            SourceProtocol::Tcp => Category::Tcp,
            SourceProtocol::Udp => Category::Udp,
        };
        Ok(NewEntry {
            imsi: identity.subscriber.imsi.clone(),
            time,
            content_type: msg
                .content_type
                .unwrap_or(harvest::DEFAULT_CONTENT_TYPE)
                .to_owned(),
            category,
            content: Bytes::copy_from_slice(msg.payload),
        })
    }
}

async fn resolve(h: Handled) -> Reply {
    match h {
        Handled::Now(r) => r,
        Handled::Later(f) => f.await,
        Handled::Refused(e) => Reply::error(403, &e.to_string()),
    }
}

/// Whether a request's `Content-Type` says JSON (`application/json` or
/// any `+json` type, parameters and case ignored): Funnel embeds such
/// bodies instead of wrapping them.
pub fn is_json_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json")
    })
}

fn funnel_reply(metrics: &Metrics, proto: &'static str, r: &FunnelReply) -> Reply {
    let reply = funnel_answer(r);
    count_funnel_reply(metrics, proto, r, reply.status);
    reply
}

/// What the device is told.
fn funnel_answer(r: &FunnelReply) -> Reply {
    match r {
        FunnelReply::Accepted => Reply {
            status: 204,
            ..Reply::ok(204, "200")
        },
        FunnelReply::InvalidJson => Reply::error(400, "Invalid JSON is send to funnel."),
        FunnelReply::TooLarge => Reply::error(413, "Payload Too Large"),
        FunnelReply::Disabled => Reply::error(400, "Funnel is not enabled for this SIM's group"),
        FunnelReply::Busy => Reply::busy(429, "Too Many Requests: Funnel queue is full"),
        FunnelReply::Unavailable => Reply::error(500, "Funnel destination is unavailable"),
        FunnelReply::ShuttingDown => Reply::busy(503, "Service Unavailable: shutting down"),
        FunnelReply::StorageFailed => {
            Reply::busy(503, "Service Unavailable: the record could not be stored")
        }
    }
}

/// Counts one device told `status` for `r` (and a drop, unless accepted).
fn count_funnel_reply(metrics: &Metrics, proto: &'static str, r: &FunnelReply, status: u16) {
    if !matches!(r, FunnelReply::Accepted) {
        metrics.funnel_drop(r.reason());
    }
    metrics.served("funnel", proto, status);
}

fn harvest_reply(metrics: &Metrics, proto: &'static str, r: Result<(), HarvestError>) -> Reply {
    let reply = match r {
        Ok(()) => Reply::ok(201, "201\n"),
        Err(e) => {
            let (status, busy) = harvest::error_status(&e);
            tracing::debug!(error = %e, "harvest entry refused");
            if busy {
                Reply::busy(status, &e.to_string())
            } else {
                Reply::error(status, &e.to_string())
            }
        }
    };
    metrics.served("harvest", proto, reply.status);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json_type(Some("application/json; charset=utf-8")));
        assert!(is_json_type(Some("application/ld+json")));
        assert!(!is_json_type(Some("text/plain")));
        assert!(!is_json_type(None));
    }
}
