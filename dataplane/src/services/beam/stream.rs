//! Beam TCP → TCP(S) (:8023, key `tcp://beam.soracom.io:8023`, destination
//! `tcps://host:port`): the first line sent upstream is the SIM's identity
//! (`imsi=… timestamp=…[;signature=…]`, [`super::signature`]), then bytes
//! flow both ways until both sides have closed. A half-close is passed on
//! (the other direction keeps flowing); an idle connection, an upstream
//! failure or simgate's shutdown closes both sides.
//!
//! Also the upstream side shared with the MQTT proxy: which entry, which
//! credentials ([`Beam::stream_target`]), one connection ([`Beam::dial`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use simgate_control::clock::now_ms;
use simgate_control::{split_destination, BeamEntry, BeamEntryPoint, Identity, Secret, Snapshot};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::headers::BeamIdentity;
use super::{client_identity, entry_label, failure_status, signing_key, tcp_identity_line, Beam};
use crate::ingress::tcp::DeviceConnection;
use crate::metrics::{member, BeamDirectionLabels, BeamEntryLabels};
use crate::upstream::{ClientIdentity, StreamIo, UpstreamError};

/// Line end after the identity line.
pub const IDENTITY_LINE_END: &[u8] = b"\r\n";

/// Where one device connection's upstream goes, resolved once at accept
/// (a reconnect dials the same target).
#[derive(Debug, Clone)]
pub(crate) struct StreamTarget {
    pub label: String,
    pub entry: BeamEntry,
    /// The entry's signing key, when it has `addSignature`.
    pub psk: Option<Secret>,
    cert: Option<ClientIdentity>,
    tls: bool,
    host: String,
    port: u16,
}

/// An open upstream, counted in `beam_streams_open` while it lives.
pub(crate) struct OpenStream {
    pub io: Box<dyn StreamIo>,
    _open: OpenGuard,
}

impl AsyncRead for OpenStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for OpenStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct OpenGuard(Gauge<i64, AtomicI64>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why no upstream was opened (already counted and logged).
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The group has no enabled entry for this entry point.
    NoEntry,
    /// Misconfigured entry or credentials.
    Config,
    /// The upstream could not be reached.
    Upstream(UpstreamError),
}

impl Beam {
    /// `point`'s entry for the connection's SIM, its credentials and
    /// destination.
    pub(crate) fn stream_target(
        &self,
        point: &BeamEntryPoint,
        identity: &Identity,
        snapshot: &Snapshot,
    ) -> Result<StreamTarget, OpenError> {
        let empty = simgate_control::BeamConfig::default();
        let config = identity.group.as_deref().map_or(&empty, |g| &g.beam);
        let Some(entry) = config.enabled(point) else {
            self.metrics.beam_served(super::http::NO_ENTRY, 400);
            tracing::debug!(imsi = %identity.subscriber.imsi, entry = %point.key(), "Beam entry not enabled for this SIM's group");
            return Err(OpenError::NoEntry);
        };
        let label = entry_label(entry, point);
        let imsi = &identity.subscriber.imsi;
        let config_error = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(entry = %label, error = %e, "Beam {what} unavailable");
            self.metrics.beam_served(&label, 500);
            OpenError::Config
        };
        let psk =
            signing_key(entry, snapshot, imsi).map_err(|e| config_error("psk credential", &e))?;
        let cert = client_identity(entry, snapshot, imsi)
            .map_err(|e| config_error("client certificate", &e))?;
        let parts =
            split_destination(&entry.destination).map_err(|e| config_error("destination", &e))?;
        Ok(StreamTarget {
            tls: parts.tls(),
            host: parts.host.to_owned(),
            port: parts.port_or_default(),
            label,
            entry: entry.clone(),
            psk,
            cert,
        })
    }

    /// Connects to `target` (TLS for `tcps://` and `mqtts://`, presenting
    /// the entry's client certificate when it has one).
    pub(crate) async fn dial(&self, target: &StreamTarget) -> Result<OpenStream, OpenError> {
        let upstream = self.upstream().await.map_err(|e| {
            tracing::warn!(entry = %target.label, error = %e, "Beam cannot set up outbound TLS");
            self.metrics.beam_served(&target.label, 502);
            OpenError::Config
        })?;
        let started = Instant::now();
        let stream = upstream
            .connect_stream(target.tls, &target.host, target.port, target.cert.as_ref())
            .await;
        let labels = BeamEntryLabels {
            entry: target.label.clone(),
        };
        self.observe_upstream(&target.label, started);
        match stream {
            Ok(io) => {
                let open = member(&self.metrics.beam_streams_open, &labels);
                open.inc();
                Ok(OpenStream {
                    io,
                    _open: OpenGuard(open),
                })
            }
            Err(e) => {
                self.metrics.beam_upstream_error(&target.label, &e);
                self.metrics
                    .beam_served(&target.label, failure_status(&e).0.as_u16());
                Err(OpenError::Upstream(e))
            }
        }
    }

    /// Beam TCP → TCP(S): serves one device connection on :8023.
    pub(crate) async fn serve_tcp(self: Arc<Self>, mut conn: DeviceConnection) {
        let Ok(target) =
            self.stream_target(&BeamEntryPoint::TcpToTcp, &conn.identity, &conn.snapshot)
        else {
            return; // dropping the connection closes it
        };
        let Ok(mut open) = self.dial(&target).await else {
            return;
        };
        let imei15 = conn.identity.imei.as_ref().map(|i| i.imei15());
        let id = BeamIdentity::new(&conn.identity, imei15.as_deref());
        let fields = id.fields(&target.entry, now_ms());
        let psk = target.psk.as_ref().map(|k| k.expose().as_bytes());
        let mut line = tcp_identity_line(&fields, psk).into_bytes();
        line.extend_from_slice(IDENTITY_LINE_END);
        if let Err(e) = open.io.write_all(&line).await {
            tracing::warn!(entry = %target.label, error = %e, "Beam upstream closed before the identity line");
            self.metrics.beam_served(&target.label, 502);
            return;
        }
        self.metrics.beam_served(&target.label, 200);

        let up = Counted::new(&mut conn.stream);
        let down = Counted::new(&mut open.io);
        let (up_bytes, down_bytes) = (Arc::clone(&up.bytes), Arc::clone(&down.bytes));
        let idle = conn.limits.idle_timeout;
        let ended = relay(up, down, idle, &mut conn.shutdown).await;
        match ended {
            Relayed::Closed => {}
            Relayed::Idle => self
                .metrics
                .beam_device_error(&target.label, "idle_timeout"),
            Relayed::Shutdown => {}
            Relayed::Failed(e) => {
                tracing::debug!(entry = %target.label, peer = %conn.peer, error = %e, "Beam TCP relay ended with an error");
                self.metrics
                    .beam_device_error(&target.label, "relay_failed");
            }
        }
        for (direction, bytes) in [("up", &up_bytes), ("down", &down_bytes)] {
            self.metrics
                .beam_relayed
                .get_or_create(&BeamDirectionLabels {
                    entry: target.label.clone(),
                    direction,
                })
                .inc_by(bytes.load(Ordering::Relaxed));
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
enum Relayed {
    /// Both sides closed.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    Shutdown,
    /// A read or write failed (reset, TLS error).
    Failed(std::io::Error),
}

/// Copies both ways until both directions have ended, nothing moved for
/// `idle`, or shutdown.
async fn relay<A, B>(
    mut a: Counted<A>,
    mut b: Counted<B>,
    idle: Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Relayed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(AtomicU64::new(0));
    a.activity = Some(Arc::clone(&activity));
    b.activity = Some(Arc::clone(&activity));
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let check = (idle / 4).max(Duration::from_millis(10));
    let mut seen = 0;
    let mut last_change = Instant::now();
    loop {
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok(_) => Relayed::Closed,
                    Err(e) => Relayed::Failed(e),
                };
            }
            _ = tokio::time::sleep(check) => {
                let now = activity.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    last_change = Instant::now();
                } else if last_change.elapsed() >= idle {
                    return Relayed::Idle;
                }
            }
            _ = shutdown.changed() => return Relayed::Shutdown,
        }
    }
}

/// A stream that counts the bytes read from it (and notes activity).
struct Counted<S> {
    inner: S,
    bytes: Arc<AtomicU64>,
    activity: Option<Arc<AtomicU64>>,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            bytes: Arc::new(AtomicU64::new(0)),
            activity: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.bytes.fetch_add(n, Ordering::Relaxed);
            if let Some(a) = &self.activity {
                a.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn relay_passes_half_close_and_counts() {
        let (mut dev, dev_side) = tokio::io::duplex(1024);
        let (up_side, mut server) = tokio::io::duplex(1024);
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        let a = Counted::new(dev_side);
        let b = Counted::new(up_side);
        let (ab, bb) = (Arc::clone(&a.bytes), Arc::clone(&b.bytes));
        let task = tokio::spawn(async move { relay(a, b, Duration::from_secs(5), &mut rx).await });
        dev.write_all(b"hello").await.unwrap();
        dev.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // The other direction still flows after the device's half-close.
        server.write_all(b"world!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        dev.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        assert!(matches!(task.await.unwrap(), Relayed::Closed));
        assert_eq!(ab.load(Ordering::Relaxed), 5);
        assert_eq!(bb.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn idle_relay_ends() {
        let (_dev, dev_side) = tokio::io::duplex(64);
        let (up_side, _server) = tokio::io::duplex(64);
        let (_tx, mut rx) = tokio::sync::watch::channel(false);
        let r = relay(
            Counted::new(dev_side),
            Counted::new(up_side),
            Duration::from_millis(100),
            &mut rx,
        )
        .await;
        assert!(matches!(r, Relayed::Idle));
    }
}
