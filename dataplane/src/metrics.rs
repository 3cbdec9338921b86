//! Prometheus metrics, all named `simgate_*`. Every drop or refusal goes
//! through a method here that counts and logs in one call, so no drop is
//! uncounted.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use simgate_control::radius::codec::DropReason;
use simgate_control::radius::RadiusStats;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
    pub protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub protocol: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: &'static str,
    pub protocol: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
    pub destination: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkResultLabels {
    pub sink: &'static str,
    pub destination: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BeamLabels {
    pub entry: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BeamErrorLabels {
    pub entry: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BeamEntryLabels {
    pub entry: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BeamDirectionLabels {
    pub entry: String,
    /// `up` (device → server) or `down` (server → device).
    pub direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunkLabels {
    /// `lambda`, `https`, or `none` (refused before a function was chosen).
    pub target: &'static str,
    /// `ok`, `function_error`, `refused`, `unreachable`, `timeout`,
    /// `disabled`, `bad_request`, `config_error`, `internal_error`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub sink: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

fn batch_size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// A cached handle on one member of a family. The family's read guard is
/// released before returning: holding it while asking the same family for
/// another member deadlocks (the second lookup may need the write lock).
pub fn member<L, M, C>(family: &Family<L, M, C>, labels: &L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    let guard = family.get_or_create(labels);
    M::clone(&guard)
}

/// All of simgate's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub ingress_messages: Family<ListenerLabels, Counter>,
    pub ingress_connections: Family<ListenerLabels, Counter>,
    pub ingress_rejected: Family<RejectLabels, Counter>,
    pub service_requests: Family<ServiceLabels, Counter>,
    pub funnel_records_in: Family<SinkLabels, Counter>,
    pub funnel_records_out: Family<SinkResultLabels, Counter>,
    pub funnel_retries: Family<SinkResultLabels, Counter>,
    pub funnel_batches: Family<SinkResultLabels, Counter>,
    pub funnel_dropped: Family<ReasonLabels, Counter>,
    pub funnel_queue_records: Family<SinkLabels, Gauge<i64, AtomicI64>>,
    pub funnel_queue_bytes: Family<SinkLabels, Gauge<i64, AtomicI64>>,
    pub funnel_batch_records: HistogramFamily<KindLabels>,
    pub funnel_request_seconds: HistogramFamily<KindLabels>,
    pub funnel_delivery_seconds: HistogramFamily<KindLabels>,
    pub funnel_dead_letters: Family<SinkResultLabels, Counter>,
    pub funnel_dead_letters_stored: Gauge<i64, AtomicI64>,
    pub funnel_window: Family<SinkLabels, Gauge<i64, AtomicI64>>,
    pub spool_bytes: Family<SinkLabels, Gauge<i64, AtomicI64>>,
    pub spool_records: Family<SinkLabels, Gauge<i64, AtomicI64>>,
    pub spool_segments: Family<SinkLabels, Gauge<i64, AtomicI64>>,
    pub spool_oldest_unsent_seconds: Family<SinkLabels, Gauge<i64, AtomicI64>>,
    pub spool_truncated_bytes: Counter,
    pub harvest_append_seconds: Histogram,
    pub sessions: Gauge<i64, AtomicI64>,
    /// Beam HTTP requests answered, by entry and status (`entry="none"`:
    /// no enabled entry matched).
    pub beam_requests: Family<BeamLabels, Counter>,
    /// Beam upstream failures (answered 502/504), by entry and reason.
    pub beam_upstream_errors: Family<BeamErrorLabels, Counter>,
    /// Beam HTTP: time to the upstream's response headers (or failure).
    pub beam_request_seconds: HistogramFamily<BeamEntryLabels>,
    /// Beam stream connections (TCP → TLS, MQTT) open now, by entry.
    pub beam_streams_open: Family<BeamEntryLabels, Gauge<i64, AtomicI64>>,
    /// Bytes (TCP → TLS) or messages (MQTT PUBLISH) relayed, by entry and
    /// direction.
    pub beam_relayed: Family<BeamDirectionLabels, Counter>,
    /// Device-side protocol errors on Beam streams (MQTT garbage, QoS 2,
    /// bad keepalive, ...), by entry and reason.
    pub beam_device_errors: Family<BeamErrorLabels, Counter>,
    /// Funk invocations, by target and outcome.
    pub funk_invocations: Family<FunkLabels, Counter>,
    /// Members of `service_requests` for the success answers, resolved once.
    served_ok: [[Counter; 3]; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("simgate");
        let m = Self {
            ingress_messages: Family::default(),
            ingress_connections: Family::default(),
            ingress_rejected: Family::default(),
            service_requests: Family::default(),
            funnel_records_in: Family::default(),
            funnel_records_out: Family::default(),
            funnel_retries: Family::default(),
            funnel_batches: Family::default(),
            funnel_dropped: Family::default(),
            funnel_queue_records: Family::default(),
            funnel_queue_bytes: Family::default(),
            funnel_batch_records: Family::new_with_constructor(batch_size_histogram),
            funnel_request_seconds: Family::new_with_constructor(latency_histogram),
            funnel_delivery_seconds: Family::new_with_constructor(latency_histogram),
            funnel_dead_letters: Family::default(),
            funnel_dead_letters_stored: Gauge::default(),
            funnel_window: Family::default(),
            spool_bytes: Family::default(),
            spool_records: Family::default(),
            spool_segments: Family::default(),
            spool_oldest_unsent_seconds: Family::default(),
            spool_truncated_bytes: Counter::default(),
            harvest_append_seconds: latency_histogram(),
            sessions: Gauge::default(),
            beam_requests: Family::default(),
            beam_upstream_errors: Family::default(),
            beam_request_seconds: Family::new_with_constructor(latency_histogram),
            beam_streams_open: Family::default(),
            beam_relayed: Family::default(),
            beam_device_errors: Family::default(),
            funk_invocations: Family::default(),
            registry: Registry::default(),
            served_ok: Default::default(),
        };
        registry.register(
            "ingress_messages",
            "Messages received, by listener and protocol",
            m.ingress_messages.clone(),
        );
        registry.register(
            "ingress_connections",
            "TCP connections accepted from identified devices, by listener",
            m.ingress_connections.clone(),
        );
        registry.register(
            "ingress_rejected",
            "Messages refused before reaching a service, by reason",
            m.ingress_rejected.clone(),
        );
        registry.register(
            "service_requests",
            "Messages handled by a service, by the status answered",
            m.service_requests.clone(),
        );
        registry.register(
            "funnel_records_in",
            "Records accepted into a Funnel destination queue",
            m.funnel_records_in.clone(),
        );
        registry.register(
            "funnel_records_out",
            "Records leaving Funnel: delivered, or failed after retries",
            m.funnel_records_out.clone(),
        );
        registry.register(
            "funnel_retries",
            "Records scheduled for another attempt, by error code",
            m.funnel_retries.clone(),
        );
        registry.register(
            "funnel_batches",
            "Sink requests, by result (ok, partial, failed)",
            m.funnel_batches.clone(),
        );
        registry.register(
            "funnel_dropped",
            "Records refused or dropped by Funnel, by reason",
            m.funnel_dropped.clone(),
        );
        registry.register(
            "funnel_queue_records",
            "Records waiting or in flight per destination",
            m.funnel_queue_records.clone(),
        );
        registry.register(
            "funnel_queue_bytes",
            "Bytes waiting or in flight per destination",
            m.funnel_queue_bytes.clone(),
        );
        registry.register(
            "funnel_batch_records",
            "Records per sink request",
            m.funnel_batch_records.clone(),
        );
        registry.register(
            "funnel_request_seconds",
            "Sink request latency",
            m.funnel_request_seconds.clone(),
        );
        registry.register(
            "funnel_delivery_seconds",
            "Time from acceptance to delivery of a record",
            m.funnel_delivery_seconds.clone(),
        );
        registry.register(
            "funnel_dead_letters",
            "Records dead-lettered (kept with their reason, not delivered), by reason",
            m.funnel_dead_letters.clone(),
        );
        registry.register(
            "funnel_dead_letters_stored",
            "Dead letters in the store now (all destinations; replay or purge to empty it)",
            m.funnel_dead_letters_stored.clone(),
        );
        registry.register(
            "funnel_window",
            "Sink requests allowed in flight now (adaptive: halved on throttling)",
            m.funnel_window.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes of spool segments on disk per destination",
            m.spool_bytes.clone(),
        );
        registry.register(
            "spool_records",
            "Spooled records not yet delivered per destination",
            m.spool_records.clone(),
        );
        registry.register(
            "spool_segments",
            "Spool segment files per destination",
            m.spool_segments.clone(),
        );
        registry.register(
            "spool_oldest_unsent_seconds",
            "Age of the oldest spooled record not yet delivered",
            m.spool_oldest_unsent_seconds.clone(),
        );
        registry.register(
            "spool_truncated_bytes",
            "Bytes cut from torn or corrupt spool tails at recovery",
            m.spool_truncated_bytes.clone(),
        );
        registry.register(
            "harvest_append_seconds",
            "Time for a Harvest entry to be durably committed",
            m.harvest_append_seconds.clone(),
        );
        registry.register("sessions", "Bound IP sessions", m.sessions.clone());
        registry.register(
            "beam_requests",
            "Beam HTTP requests answered, by entry and status (entry=\"none\": no entry matched)",
            m.beam_requests.clone(),
        );
        registry.register(
            "beam_upstream_errors",
            "Beam upstream failures answered 502 or 504, by entry and reason",
            m.beam_upstream_errors.clone(),
        );
        registry.register(
            "beam_request_seconds",
            "Beam HTTP: time from the device's request to the upstream's response headers",
            m.beam_request_seconds.clone(),
        );
        registry.register(
            "beam_streams_open",
            "Beam stream connections (TCP to TLS, MQTT) open now, by entry",
            m.beam_streams_open.clone(),
        );
        registry.register(
            "beam_relayed",
            "Beam streams: bytes (TCP to TLS) or PUBLISH messages (MQTT) relayed, by entry and direction",
            m.beam_relayed.clone(),
        );
        registry.register(
            "beam_device_errors",
            "Beam streams: device-side protocol errors, by entry and reason",
            m.beam_device_errors.clone(),
        );
        registry.register(
            "funk_invocations",
            "Funk invocations, by target (lambda, https, none) and outcome",
            m.funk_invocations.clone(),
        );
        let ok = |service, status| {
            ["udp", "tcp", "http"].map(|protocol| {
                member(
                    &m.service_requests,
                    &ServiceLabels {
                        service,
                        protocol,
                        status,
                    },
                )
            })
        };
        let served_ok = [ok("funnel", 204), ok("harvest", 201)];
        Self {
            registry,
            served_ok,
            ..m
        }
    }

    /// Exposes the RADIUS accounting listener's counters (kept as atomics in
    /// the control crate, read at each scrape).
    pub fn register_radius(&mut self, stats: Arc<RadiusStats>) {
        self.registry
            .register_collector(Box::new(RadiusCollector(stats)));
    }

    /// `simgate_harvest_refused_total{reason="full"}` and
    /// `simgate_harvest_stored_bytes`, read from the store (not kept alive
    /// by the registry).
    /// The control store's link to a fleet's etcd (`simgate_cluster_*`;
    /// only `backend` on a single node).
    pub fn register_cluster(&mut self, plane: &Arc<simgate_control::ControlPlane>) {
        self.registry
            .register_collector(Box::new(ClusterCollector(Arc::downgrade(plane))));
    }

    pub fn register_harvest(&mut self, store: &Arc<crate::services::harvest::HarvestStore>) {
        self.registry
            .register_collector(Box::new(HarvestCollector(Arc::downgrade(store))));
    }

    /// `simgate_krypton_issued_total` and
    /// `simgate_krypton_refused_total{reason}`, counted by the Krypton
    /// service.
    pub fn register_krypton(&mut self, m: &crate::services::krypton::KryptonMetrics) {
        self.registry.register(
            "krypton_issued",
            "Krypton device certificates issued",
            m.issued.clone(),
        );
        self.registry.register(
            "krypton_refused",
            "Krypton requests refused, by reason",
            m.refused.clone(),
        );
    }

    /// Counts and logs a message refused before any service saw it.
    pub fn reject(&self, protocol: &'static str, reason: &'static str, peer: std::net::SocketAddr) {
        self.ingress_rejected
            .get_or_create(&RejectLabels { protocol, reason })
            .inc();
        tracing::debug!(%peer, protocol, reason, "message refused");
    }

    /// Counts and logs datagrams the kernel dropped on a UDP socket whose
    /// receive buffer was full, before simgate could read them. Same family
    /// and labels as [`Self::reject`], but no peer: the kernel keeps only a
    /// count, not who sent them. Called at most about once a second per
    /// listener, so the log is a warning: it means the workers fall behind.
    pub fn kernel_overflow(&self, listener: &'static str, dropped: u64) {
        self.ingress_rejected
            .get_or_create(&RejectLabels {
                protocol: "udp",
                reason: "kernel_overflow",
            })
            .inc_by(dropped);
        tracing::warn!(
            listener,
            dropped,
            "kernel dropped UDP datagrams: socket receive buffer full"
        );
    }

    /// Counts a Funnel record that will not be delivered, with its reason.
    /// Answers the kernel would not take (socket buffer full); the devices
    /// retry as with any lost datagram.
    pub fn replies_dropped(&self, protocol: &'static str, n: u64) {
        self.ingress_rejected
            .get_or_create(&RejectLabels {
                protocol,
                reason: "reply_dropped",
            })
            .inc_by(n);
        tracing::debug!(protocol, n, "answers dropped: socket buffer full");
    }

    pub fn funnel_drop(&self, reason: &'static str) {
        self.funnel_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc();
        tracing::debug!(reason, "funnel record dropped");
    }

    pub fn served(&self, service: &'static str, protocol: &'static str, status: u16) {
        // The answers sent on every message skip the family's lock and hash.
        let hot = match (service, status) {
            ("funnel", 204) => Some(0),
            ("harvest", 201) => Some(1),
            _ => None,
        };
        let proto = match protocol {
            "udp" => Some(0),
            "tcp" => Some(1),
            "http" => Some(2),
            _ => None,
        };
        if let (Some(s), Some(p)) = (hot, proto) {
            self.served_ok[s][p].inc();
            return;
        }
        self.service_requests
            .get_or_create(&ServiceLabels {
                service,
                protocol,
                status,
            })
            .inc();
    }

    /// Counts one Beam HTTP request answered with `status`.
    pub fn beam_served(&self, entry: &str, status: u16) {
        self.beam_requests
            .get_or_create(&BeamLabels {
                entry: entry.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts and logs (once, at warn, naming the entry) a Beam upstream
    /// failure.
    pub fn beam_upstream_error(&self, entry: &str, error: &crate::upstream::UpstreamError) {
        self.beam_upstream_errors
            .get_or_create(&BeamErrorLabels {
                entry: entry.to_owned(),
                reason: error.label(),
            })
            .inc();
        tracing::warn!(entry, reason = error.label(), error = %error, "Beam upstream failed");
    }

    /// Counts one Funk invocation (or refusal).
    pub fn funk_invocation(&self, target: &'static str, outcome: &'static str) {
        self.funk_invocations
            .get_or_create(&FunkLabels { target, outcome })
            .inc();
    }

    /// Counts (and logs at debug) a device-side protocol error on a Beam
    /// stream.
    pub fn beam_device_error(&self, entry: &str, reason: &'static str) {
        self.beam_device_errors
            .get_or_create(&BeamErrorLabels {
                entry: entry.to_owned(),
                reason,
            })
            .inc();
        tracing::debug!(entry, reason, "Beam device protocol error");
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[derive(Debug)]
struct HarvestCollector(std::sync::Weak<crate::services::harvest::HarvestStore>);

impl Collector for HarvestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(store) = self.0.upgrade() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "harvest_refused",
            "Harvest entries refused by the store: full = [harvest] max_bytes reached (507)",
            None,
            MetricType::Counter,
        )?;
        let m = family.encode_family(&[("reason", "full")])?;
        ConstCounter::new(store.refused_full()).encode(m)?;
        let g = ConstGauge::new(i64::try_from(store.stored_bytes()).unwrap_or(i64::MAX));
        let m = encoder.encode_descriptor(
            "harvest_stored_bytes",
            "Bytes of Harvest keys and values stored, as counted against [harvest] max_bytes",
            None,
            g.metric_type(),
        )?;
        g.encode(m)
    }
}

#[derive(Debug)]
struct ClusterCollector(std::sync::Weak<simgate_control::ControlPlane>);

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(plane) = self.0.upgrade() else {
            return Ok(());
        };
        let s = plane.cluster_status();
        let gauges: [(&str, &str, i64); 4] = [
            (
                "cluster_etcd_connected",
                "1 if etcd answered this node's last call (1 on a single node)",
                i64::from(s.connected),
            ),
            (
                "cluster_etcd_revision",
                "etcd's revision at the last probe",
                s.etcd_revision,
            ),
            (
                "cluster_applied_revision",
                "The etcd revision this node's control state reflects",
                s.applied_revision,
            ),
            (
                "cluster_watch_lag_revisions",
                "Revisions this node's state is behind etcd",
                s.revision_lag,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        let counters: [(&str, &str, u64); 4] = [
            (
                "cluster_watch_reconnects",
                "Times the etcd watch was set up again",
                s.watch_reconnects,
            ),
            (
                "cluster_reloads",
                "Full reloads of the control state (etcd compacted past this node)",
                s.reloads,
            ),
            (
                "cluster_write_retries",
                "API writes run again because another node wrote first",
                s.write_retries,
            ),
            (
                "cluster_unreadable_events",
                "etcd records this node could not read (skipped)",
                s.unreadable_events,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        let info = ConstGauge::new(1i64);
        let mut family = encoder.encode_descriptor(
            "cluster_backend",
            "The control store in use (label backend: redb or etcd)",
            None,
            info.metric_type(),
        )?;
        let labels = [("backend", s.backend)];
        info.encode(family.encode_family(&labels)?)?;
        Ok(())
    }
}

#[derive(Debug)]
struct RadiusCollector(Arc<RadiusStats>);

impl Collector for RadiusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        let counters: [(&str, &str, u64); 15] = [
            (
                "radius_received",
                "Datagrams received on the accounting port",
                s.received,
            ),
            ("radius_answered", "Accounting-Responses sent", s.answered),
            (
                "radius_starts",
                "Accounting Start requests applied",
                s.starts,
            ),
            (
                "radius_interims",
                "Interim-Update requests applied",
                s.interims,
            ),
            (
                "radius_stops",
                "Stop requests that ended a session",
                s.stops,
            ),
            (
                "radius_stale_stops",
                "Stop requests for a session no longer bound to that IMSI",
                s.stale_stops,
            ),
            (
                "radius_accounting_on",
                "Accounting-On requests",
                s.accounting_on,
            ),
            (
                "radius_accounting_off",
                "Accounting-Off requests",
                s.accounting_off,
            ),
            (
                "radius_sessions_cleared",
                "Sessions ended by Accounting-On/Off",
                s.sessions_cleared,
            ),
            (
                "radius_duplicates",
                "Retransmissions answered again, not re-applied (RFC 5080)",
                s.duplicates,
            ),
            (
                "radius_msisdn_ignored",
                "Calling-Station-Id values that were not an MSISDN",
                s.msisdn_ignored,
            ),
            (
                "radius_io_errors",
                "Socket errors on the accounting port",
                s.io_errors,
            ),
            (
                "radius_static_kept",
                "Start/Interim-Update for an address with a static session: the static one kept",
                s.static_kept,
            ),
            (
                "radius_restored",
                "RADIUS sessions reloaded from the store at start",
                s.restored,
            ),
            (
                "radius_persist_errors",
                "Batches of RADIUS session changes the store could not write",
                s.persist_errors,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        let mut family = encoder.encode_descriptor(
            "radius_dropped",
            "Accounting requests dropped without an answer, by reason",
            None,
            MetricType::Counter,
        )?;
        for reason in DropReason::ALL {
            let labels = [("reason", reason.as_str())];
            let m = family.encode_family(&labels)?;
            ConstCounter::new(s.dropped(reason)).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_counters_show() {
        let m = Metrics::new();
        m.reject(
            "udp",
            "unknown_source",
            "127.0.0.9:1".parse().unwrap_or_else(|_| unreachable!()),
        );
        let text = m.encode();
        assert!(
            text.contains(
                "simgate_ingress_rejected_total{protocol=\"udp\",reason=\"unknown_source\"} 1"
            ),
            "{text}"
        );
    }
}
