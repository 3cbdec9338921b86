//! SORACOM Funnel: wraps each device message in the envelope and delivers it
//! in batches to the group's cloud destination.

pub mod dead_letter_api;
pub mod delivery;
pub mod envelope;

use std::collections::HashMap;

use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use simgate_control::config::{Durability, FunnelSettings};
use simgate_control::{
    Credential, CredentialId, Destination, FunnelConfig, FunnelContentType, Identity, Snapshot,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dead_letters::{DeadLetter, DeadLetterStore};
use crate::metrics::Metrics;
use crate::sinks::factory::SinkFactory;
use crate::sinks::{Sink, SinkRecord};
use crate::spool::{Spool, SpoolError, SpoolOptions};
use delivery::SharedSink;

pub use delivery::{Accepted, Commit, DestinationQueue, SubmitError, Submitted};

/// What a dead-letter replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub replayed: usize,
    pub failed: usize,
}
pub use envelope::{EnvelopeError, EnvelopeMeta, PayloadEncoding, SourceProtocol};

/// What Funnel tells the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunnelReply {
    Accepted,
    InvalidJson,
    TooLarge,
    /// Queue full: come back later.
    Busy,
    /// Funnel is not enabled for the SIM's group.
    Disabled,
    /// The destination cannot be used (bad configuration); the reason is
    /// logged, not shown to the device.
    Unavailable,
    ShuttingDown,
    /// The spool could not store the record (disk error): not acknowledged.
    StorageFailed,
}

impl FunnelReply {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::InvalidJson => "invalid_json",
            Self::TooLarge => "too_large",
            Self::Busy => "queue_full",
            Self::Disabled => "funnel_disabled",
            Self::Unavailable => "destination_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::StorageFailed => "spool_error",
        }
    }
}

impl From<SubmitError> for FunnelReply {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Full => Self::Busy,
            SubmitError::TooLarge => Self::TooLarge,
            SubmitError::Closed => Self::ShuttingDown,
            SubmitError::Storage => Self::StorageFailed,
        }
    }
}

/// A destination and the credentials it is sent with: what a queue, a
/// spool and a dead-letter file belong to. Changed credential *contents*
/// keep the key (the queue's sink is replaced); another credentials id is
/// another queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationKey {
    pub destination: Destination,
    pub credentials_id: CredentialId,
}

impl DestinationKey {
    /// A stable name for files: the first 16 bytes of the SHA-256 of the
    /// key's JSON, in hex.
    pub fn id(&self) -> String {
        use sha2::Digest as _;
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&sha2::Sha256::digest(&json)[..16])
    }
}

/// The file in a spool directory that says whose spool it is, so that
/// records spooled before a restart are delivered without waiting for the
/// next message to that destination.
const SPOOL_OWNER_FILE: &str = "destination.json";

thread_local! {
    /// Envelope encoding space, reused from record to record.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Destination queues, looked up by destination without cloning it, for
/// every record: foldhash, not SipHash (the destinations come
/// from the operator's configuration, not from devices).
type Queues = HashMap<Destination, Vec<QueueEntry>, foldhash::fast::RandomState>;

/// One destination queue and the credential its sink was built with. When
/// the credential is changed (a new `Arc` in the snapshot) the sink is
/// rebuilt and swapped: records already queued go out with the new one.
struct QueueEntry {
    credentials_id: CredentialId,
    credential: Option<Arc<Credential>>,
    sink: SharedSink,
    queue: Arc<DestinationQueue>,
}

impl QueueEntry {
    /// Whether the sink was built with this very credential (the snapshot
    /// gives a changed credential a new `Arc`).
    fn built_with(&self, credential: Option<&Arc<Credential>>) -> bool {
        match (&self.credential, credential) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

/// The Funnel service: destination queues, created on first use.
pub struct Funnel {
    /// Read on every message, written once per new destination.
    queues: RwLock<Queues>,
    factory: Arc<dyn SinkFactory>,
    settings: FunnelSettings,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    workers: Mutex<JoinSet<()>>,
    /// `{data_dir}/spool`, when durability is `spool`.
    spool_dir: Option<PathBuf>,
    pub dead_letters: Arc<DeadLetterStore>,
    /// One replay at a time: two at once would send the same letters twice.
    replay_lock: tokio::sync::Mutex<()>,
    /// When each unusable destination was last logged: every message to it
    /// is refused and counted, but logged at most once a minute.
    unusable_logged: Mutex<HashMap<Destination, Instant>>,
}

impl std::fmt::Debug for Funnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Funnel")
            .field("settings", &self.settings)
            .finish()
    }
}

/// A message turned into a record for a destination queue.
#[derive(Debug)]
pub struct Prepared {
    pub queue: Arc<DestinationQueue>,
    pub record: SinkRecord,
}

/// Why Funnel could not start.
#[derive(Debug, thiserror::Error)]
pub enum FunnelError {
    #[error("cannot read spool directory {path}: {source}")]
    SpoolDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Funnel {
    /// A Funnel keeping spools and dead letters under `data_dir`.
    pub fn new(
        factory: Arc<dyn SinkFactory>,
        settings: FunnelSettings,
        data_dir: &Path,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let spool_dir = (settings.durability == Durability::Spool).then(|| data_dir.join("spool"));
        Self {
            queues: RwLock::new(Queues::default()),
            factory,
            settings,
            metrics,
            shutdown,
            workers: Mutex::new(JoinSet::new()),
            spool_dir,
            dead_letters: Arc::new(DeadLetterStore::new(data_dir.join("dead-letters"))),
            replay_lock: tokio::sync::Mutex::new(()),
            unusable_logged: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a worker for every spool left by an earlier run, so what was
    /// acknowledged then is delivered now. A spool whose destination cannot
    /// be built (its credentials are gone) stays on disk, logged.
    pub fn recover(&self, snapshot: &Snapshot) -> Result<usize, FunnelError> {
        let Some(dir) = &self.spool_dir else {
            return Ok(0);
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(FunnelError::SpoolDir {
                    path: dir.clone(),
                    source,
                })
            }
        };
        let mut started = 0;
        for entry in entries.filter_map(Result::ok) {
            let owner = entry.path().join(SPOOL_OWNER_FILE);
            let key: DestinationKey = match std::fs::read(&owner)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(k) => k,
                None => {
                    tracing::warn!(path = %entry.path().display(), "spool directory without a readable destination.json: left alone");
                    continue;
                }
            };
            match self.queue_for(&key, snapshot) {
                Ok(_) => started += 1,
                Err(_) => tracing::error!(
                    destination = %key.destination.resource_url,
                    "spooled records cannot be delivered yet: the destination is unusable (they stay in the spool)"
                ),
            }
        }
        Ok(started)
    }

    /// Encodes the envelope and finds the destination queue.
    /// `http_json`: `Some(true)` when an HTTP request said
    /// `Content-Type: application/json`, `Some(false)` for other HTTP
    /// content, `None` for UDP/TCP (the group's `contentType` decides).
    /// `timestamp_ms` is the time of arrival: SORACOM honours
    /// `X-Soracom-Timestamp` for Harvest only, never for Funnel.
    pub fn prepare(
        &self,
        identity: &Identity,
        snapshot: &Snapshot,
        protocol: SourceProtocol,
        payload: &[u8],
        http_json: Option<bool>,
        timestamp_ms: u64,
    ) -> Result<Prepared, FunnelReply> {
        let Some(config) = enabled_config(identity) else {
            return Err(FunnelReply::Disabled);
        };
        let encoding = match http_json {
            Some(true) => PayloadEncoding::Json,
            // HTTP follows its Content-Type: only JSON is embedded.
            Some(false) => PayloadEncoding::Wrapped,
            None => group_encoding(config.content_type),
        };
        let data = SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            let r = encode_into(
                identity,
                config,
                protocol,
                payload,
                encoding,
                timestamp_ms,
                scratch,
            )
            .map(|()| Bytes::copy_from_slice(scratch));
            // A rare large record does not pin its size on every thread.
            scratch.shrink_to(64 << 10);
            r
        })?;
        let queue = self.queue(config, snapshot)?;
        Ok(Prepared {
            queue,
            record: SinkRecord {
                partition_key: Arc::clone(&identity.imsi_text),
                data,
            },
        })
    }

    /// [`Self::prepare`] for a record of a receive batch (UDP/TCP payload,
    /// the group's `contentType` decides): its envelope goes into the
    /// batch's buffer and its destination queue is looked up once per group
    /// in the batch. `slot` is the message's place in the batch.
    pub fn prepare_in(
        &self,
        batch: &mut FunnelBatch,
        slot: usize,
        identity: &Identity,
        snapshot: &Snapshot,
        msg: &super::Message<'_>,
        timestamp_ms: u64,
    ) -> Result<(), FunnelReply> {
        let Some(config) = enabled_config(identity) else {
            return Err(FunnelReply::Disabled);
        };
        let encoding = group_encoding(config.content_type);
        let start = batch.arena.len();
        // On error the envelope encoder leaves the buffer as it was.
        encode_into(
            identity,
            config,
            msg.protocol,
            msg.payload,
            encoding,
            timestamp_ms,
            &mut batch.arena,
        )?;
        // The group's configuration lives as long as the snapshot the batch
        // is served under, so its address names it for the batch.
        let group_key = std::ptr::from_ref(config) as usize;
        let queue = match batch.last_group {
            Some((key, q)) if key == group_key => q,
            _ => {
                let queue = match self.queue(config, snapshot) {
                    Ok(q) => q,
                    Err(e) => {
                        batch.arena.truncate(start);
                        return Err(e);
                    }
                };
                let q = match batch.queues.iter().position(|q| Arc::ptr_eq(q, &queue)) {
                    Some(q) => q,
                    None => {
                        batch.queues.push(queue);
                        batch.queues.len() - 1
                    }
                };
                batch.last_group = Some((group_key, q));
                q
            }
        };
        batch.records.push(BatchRecord {
            slot,
            queue,
            span: start..batch.arena.len(),
            partition_key: Arc::clone(&identity.imsi_text),
        });
        Ok(())
    }

    fn queue(
        &self,
        config: &FunnelConfig,
        snapshot: &Snapshot,
    ) -> Result<Arc<DestinationQueue>, FunnelReply> {
        let credential = snapshot.credentials.get(&config.credentials_id);
        let find = |queues: &Queues| {
            queues.get(&config.destination).and_then(|v| {
                v.iter()
                    .find(|e| e.credentials_id == config.credentials_id)
                    .map(|e| (e.built_with(credential), Arc::clone(&e.queue)))
            })
        };
        if let Some((true, q)) = find(&self.queues.read().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(q);
        }
        let key = DestinationKey {
            destination: config.destination.clone(),
            credentials_id: config.credentials_id.clone(),
        };
        self.queue_for(&key, snapshot)
    }

    /// The queue of `key`, created (or its sink rebuilt for changed
    /// credentials) under the write lock.
    fn queue_for(
        &self,
        key: &DestinationKey,
        snapshot: &Snapshot,
    ) -> Result<Arc<DestinationQueue>, FunnelReply> {
        let credential = snapshot.credentials.get(&key.credentials_id);
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        let entries = queues.entry(key.destination.clone()).or_default();
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.credentials_id == key.credentials_id)
        {
            if !e.built_with(credential) {
                let sink = self.build_sink(&key.destination, credential)?;
                e.sink.store(Arc::new(sink));
                e.credential = credential.cloned();
                tracing::info!(destination = %key.destination.resource_url, "funnel credentials changed: queued records use the new ones");
            }
            return Ok(Arc::clone(&e.queue));
        }
        let sink: SharedSink = Arc::new(ArcSwap::from_pointee(
            self.build_sink(&key.destination, credential)?,
        ));
        let spool = match &self.spool_dir {
            Some(dir) => Some(self.open_spool(dir, key).map_err(|e| {
                tracing::error!(destination = %key.destination.resource_url, error = %e, "cannot open the destination's spool");
                FunnelReply::Unavailable
            })?),
            None => None,
        };
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let q = delivery::spawn_destination(
            delivery::DestinationSetup {
                key,
                sink: Arc::clone(&sink),
                spool,
                dead_letters: Arc::clone(&self.dead_letters),
                settings: &self.settings,
                metrics: &self.metrics,
            },
            self.shutdown.clone(),
            &mut workers,
        );
        entries.push(QueueEntry {
            credentials_id: key.credentials_id.clone(),
            credential: credential.cloned(),
            sink,
            queue: Arc::clone(&q),
        });
        Ok(q)
    }

    fn open_spool(&self, dir: &Path, key: &DestinationKey) -> Result<Arc<Spool>, SpoolError> {
        let dir = dir.join(key.id());
        // Records hold device payloads: owner only.
        simgate_control::secret_file::create_private_dir(&dir)?;
        let owner = dir.join(SPOOL_OWNER_FILE);
        if !owner.exists() {
            let tmp = dir.join("destination.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(key).unwrap_or_default())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &owner)?;
        }
        let (spool, report) = Spool::open(
            &dir,
            SpoolOptions {
                max_bytes: self.settings.spool_max_bytes,
                segment_bytes: self.settings.spool_segment_bytes,
                when_full: self.settings.spool_when_full,
            },
        )?;
        if report.truncated_bytes > 0 || report.corrupt.is_some() {
            self.metrics
                .spool_truncated_bytes
                .inc_by(report.truncated_bytes);
            tracing::warn!(
                destination = %key.destination.resource_url,
                truncated_bytes = report.truncated_bytes,
                corrupt = ?report.corrupt,
                "spool recovered from a torn or corrupt tail"
            );
        }
        if report.unacked_estimate > 0 {
            tracing::info!(
                destination = %key.destination.resource_url,
                records = report.unacked_estimate,
                segments = report.segments,
                "spooled records from an earlier run will be delivered"
            );
        }
        Ok(spool)
    }

    fn build_sink(
        &self,
        destination: &Destination,
        credential: Option<&Arc<Credential>>,
    ) -> Result<Arc<dyn Sink>, FunnelReply> {
        self.factory
            .build(
                destination,
                credential.map(AsRef::as_ref),
                Duration::from_millis(self.settings.request_timeout_ms),
            )
            .map_err(|e| {
                let mut logged = self
                    .unusable_logged
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let due = logged
                    .get(destination)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
                if due {
                    logged.insert(destination.clone(), now);
                    tracing::error!(
                        destination = %destination.resource_url,
                        error = %e,
                        "cannot use Funnel destination (messages to it are refused with 500 and counted)"
                    );
                }
                FunnelReply::Unavailable
            })
    }

    /// Sends dead letters again through their destination's queue; those
    /// accepted leave the dead-letter store. `filter` picks which.
    pub async fn replay_dead_letters(
        &self,
        snapshot: &Snapshot,
        mut filter: impl FnMut(&str, &DeadLetter) -> bool,
    ) -> Result<ReplayReport, crate::dead_letters::DeadLetterError> {
        let _one_at_a_time = self.replay_lock.lock().await;
        let all = self.dead_letters.list()?;
        let mut replayed = std::collections::HashSet::new();
        let mut report = ReplayReport::default();
        for (id, letter) in all {
            if !filter(&id, &letter) {
                continue;
            }
            let Ok(credentials_id) = letter.credentials_id.parse::<CredentialId>() else {
                report.failed += 1;
                continue;
            };
            let key = DestinationKey {
                destination: letter.destination.clone(),
                credentials_id,
            };
            let (Ok(queue), Some(data)) = (self.queue_for(&key, snapshot), letter.data_bytes())
            else {
                report.failed += 1;
                continue;
            };
            let record = SinkRecord {
                partition_key: Arc::from(letter.partition_key.as_str()),
                data: data.into(),
            };
            match queue.submit(record).await {
                Ok(()) => {
                    report.replayed += 1;
                    replayed.insert((id, letter.time, letter.data.clone()));
                }
                Err(_) => report.failed += 1,
            }
        }
        self.dead_letters
            .retain(|id, l| !replayed.contains(&(id.to_owned(), l.time, l.data.clone())))?;
        Ok(report)
    }

    /// Waits until every destination worker has finished (after shutdown
    /// was signalled: queues drained or the grace period over).
    pub async fn join(&self) {
        let mut set = {
            let mut w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *w)
        };
        while set.join_next().await.is_some() {}
    }
}

/// How a UDP or TCP payload is put in the envelope: as the group's
/// `contentType` says.
fn group_encoding(content_type: FunnelContentType) -> PayloadEncoding {
    match content_type {
        FunnelContentType::Json => PayloadEncoding::Json,
        FunnelContentType::Text | FunnelContentType::Binary | FunnelContentType::BinaryParser => {
            PayloadEncoding::Wrapped
        }
        FunnelContentType::Unspecified => PayloadEncoding::Unspecified,
    }
}

/// Appends a record's envelope to `out`.
fn encode_into(
    identity: &Identity,
    config: &FunnelConfig,
    protocol: SourceProtocol,
    payload: &[u8],
    encoding: PayloadEncoding,
    timestamp_ms: u64,
    out: &mut Vec<u8>,
) -> Result<(), FunnelReply> {
    let meta = EnvelopeMeta {
        operator_id: &identity.operator_id,
        credentials_id: &config.credentials_id,
        destination: &config.destination,
        source_protocol: protocol,
        timestamp_ms,
        imsi: &identity.subscriber.imsi,
        imei: identity.imei.as_ref(),
        sim_id: config
            .add_sim_id
            .then_some(identity.subscriber.sim_id.as_ref()),
    };
    envelope::encode(
        &meta,
        payload,
        encoding,
        config.destination.payloads_only,
        out,
    )
    .map_err(|EnvelopeError::InvalidJson| FunnelReply::InvalidJson)
}

/// A receive batch's Funnel records before they are queued: their
/// envelopes side by side in one buffer (copied out once, as one
/// allocation the records share), and the destination queues they go to.
/// Reused from batch to batch by the ingress worker.
#[derive(Default)]
pub struct FunnelBatch {
    arena: Vec<u8>,
    records: Vec<BatchRecord>,
    queues: Vec<Arc<DestinationQueue>>,
    /// The group configuration last looked up, and its queue's index.
    last_group: Option<(usize, usize)>,
}

struct BatchRecord {
    /// The message's place in the receive batch.
    slot: usize,
    /// Index into `FunnelBatch::queues`.
    queue: usize,
    span: std::ops::Range<usize>,
    partition_key: Arc<str>,
}

impl FunnelBatch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Queues the batch's records, one submission per destination, and
    /// calls `answer(slots, submitted)` for each destination: `slots[i]`
    /// is the batch place of the record `submitted.results[i]` is about.
    /// Leaves the batch empty for reuse.
    ///
    /// The records share one buffer, so a record still queued keeps the
    /// envelopes of its receive batch (at most a batch's worth) in memory:
    /// the price of one allocation per batch instead of one per record.
    pub fn submit(&mut self, mut answer: impl FnMut(Vec<usize>, Submitted)) {
        let shared = Bytes::copy_from_slice(&self.arena);
        for (q, queue) in self.queues.drain(..).enumerate() {
            let mut slots = Vec::new();
            let mut records = Vec::new();
            for r in self.records.iter().filter(|r| r.queue == q) {
                slots.push(r.slot);
                records.push(SinkRecord {
                    partition_key: Arc::clone(&r.partition_key),
                    data: shared.slice(r.span.clone()),
                });
            }
            answer(slots, queue.try_submit_many(records));
        }
        self.records.clear();
        self.last_group = None;
        self.arena.clear();
        // A rare large batch does not pin its size on the worker.
        self.arena.shrink_to(1 << 20);
    }
}

fn enabled_config(identity: &Identity) -> Option<&FunnelConfig> {
    identity
        .group
        .as_deref()
        .and_then(|g| g.funnel.as_ref())
        .filter(|f| f.enabled)
}

/// Whether the SIM's group has Funnel on.
pub fn is_enabled(identity: &Identity) -> bool {
    enabled_config(identity).is_some()
}
