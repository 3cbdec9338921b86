//! SORACOM Funnel: wraps each device message in the envelope and delivers it
//! in batches to the group's cloud destination.

pub mod delivery;
pub mod envelope;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use simgate_control::config::FunnelSettings;
use simgate_control::{
    Credential, CredentialId, Destination, FunnelConfig, FunnelContentType, Identity, Snapshot,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::Metrics;
use crate::sinks::factory::SinkFactory;
use crate::sinks::SinkRecord;

pub use delivery::{DestinationQueue, SubmitError};
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
        }
    }
}

impl From<SubmitError> for FunnelReply {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Full => Self::Busy,
            SubmitError::TooLarge => Self::TooLarge,
            SubmitError::Closed => Self::ShuttingDown,
        }
    }
}

/// Destination queues, looked up by destination without cloning it.
type Queues = HashMap<Destination, Vec<QueueEntry>>;

/// One destination queue and the credentials its sink was built with. When
/// the credentials are changed (a new `Arc` in the snapshot) a new sink and
/// queue take over; the old worker delivers what it holds and ends.
struct QueueEntry {
    credentials_id: CredentialId,
    credential: Option<Arc<Credential>>,
    queue: Arc<DestinationQueue>,
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

impl Funnel {
    pub fn new(
        factory: Arc<dyn SinkFactory>,
        settings: FunnelSettings,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            queues: RwLock::new(HashMap::new()),
            factory,
            settings,
            metrics,
            shutdown,
            workers: Mutex::new(JoinSet::new()),
            unusable_logged: Mutex::new(HashMap::new()),
        }
    }

    /// Encodes the envelope and finds the destination queue.
    /// `http_json`: `Some(true)` when an HTTP request said
    /// `Content-Type: application/json`, `Some(false)` for other HTTP
    /// content, `None` for UDP/TCP (the group's `content_type` decides).
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
        let encoding = match (http_json, config.content_type) {
            (Some(true), _) | (None, FunnelContentType::Json) => PayloadEncoding::Json,
            // HTTP follows its Content-Type: only JSON is embedded.
            (Some(false), _) | (None, FunnelContentType::Binary) => PayloadEncoding::Base64,
            (None, FunnelContentType::Auto) => PayloadEncoding::Auto,
        };
        let meta = EnvelopeMeta {
            operator_id: &identity.operator_id,
            credentials_id: &config.credentials_id,
            destination: &config.destination,
            source_protocol: protocol,
            timestamp_ms,
            imsi: &identity.subscriber.imsi,
            imei: identity.imei.as_ref(),
        };
        let mut data = Vec::new();
        envelope::encode(&meta, payload, encoding, config.payloads_only, &mut data)
            .map_err(|EnvelopeError::InvalidJson| FunnelReply::InvalidJson)?;
        let queue = self.queue(config, snapshot)?;
        Ok(Prepared {
            queue,
            record: SinkRecord {
                partition_key: identity.subscriber.imsi.shared(),
                data: data.into(),
            },
        })
    }

    fn queue(
        &self,
        config: &FunnelConfig,
        snapshot: &Snapshot,
    ) -> Result<Arc<DestinationQueue>, FunnelReply> {
        let credential = snapshot.credentials.get(&config.credentials_id);
        let find = |queues: &Queues| {
            queues
                .get(&config.destination)
                .and_then(|v| {
                    v.iter().find(|e| {
                        e.credentials_id == config.credentials_id
                            && match (&e.credential, credential) {
                                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                                (None, None) => true,
                                _ => false,
                            }
                    })
                })
                .map(|e| Arc::clone(&e.queue))
        };
        if let Some(q) = find(&self.queues.read().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(q);
        }
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(q) = find(&queues) {
            return Ok(q);
        }
        let sink = self
            .factory
            .build(
                &config.destination,
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
                    .get(&config.destination)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
                if due {
                    logged.insert(config.destination.clone(), now);
                    tracing::error!(
                        destination = %config.destination.resource_url,
                        error = %e,
                        "cannot use Funnel destination (messages to it are refused with 500 and counted)"
                    );
                }
                FunnelReply::Unavailable
            })?;
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let q = delivery::spawn_destination(
            sink,
            &config.destination.resource_url,
            &self.settings,
            &self.metrics,
            self.shutdown.clone(),
            &mut workers,
        );
        let entries = queues.entry(config.destination.clone()).or_default();
        // Dropping the old queue's last handle retires its worker.
        entries.retain(|e| e.credentials_id != config.credentials_id);
        entries.push(QueueEntry {
            credentials_id: config.credentials_id.clone(),
            credential: credential.cloned(),
            queue: Arc::clone(&q),
        });
        Ok(q)
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
