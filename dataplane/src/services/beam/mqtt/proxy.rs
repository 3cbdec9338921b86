//! The I/O driver of Beam MQTT (:1883, key `mqtt://beam.soracom.io:1883`,
//! destination `mqtts://host:8883`): reads the device's CONNECT, checks it
//! (keepalive 0 or 5–1200 s, MQTT 3.1 or 3.1.1), connects to the broker
//! with the entry's client certificate, relays the broker's CONNACK, then
//! moves packets both ways through the [`Session`]. When the broker
//! connection drops, the device stays connected while simgate reconnects
//! (with backoff, for at most [`RECONNECT_FOR`]); then the session replays
//! what the broker has not acknowledged.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use simgate_control::BeamEntryPoint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{self, ConnAck, Connect, ConnectReturnCode, DecodeError, Packet};
use super::session::{Action, Outcome, Session};
use super::topic::{keep_alive_allowed, TopicContext};
use crate::ingress::tcp::DeviceConnection;
use crate::metrics::{member, BeamDirectionLabels};
use crate::services::beam::stream::{OpenError, OpenStream, StreamTarget};
use crate::services::beam::Beam;
use crate::upstream::{UpstreamError, UpstreamErrorKind};

/// Largest MQTT packet accepted from either side. AWS IoT Core's limit is
/// 128 KiB; SORACOM documents none. Larger announced sizes close the
/// connection before the body is read.
pub const MAX_PACKET: usize = 256 * 1024;

/// Time for the device's CONNECT after accept, and for the broker's CONNACK.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long simgate keeps trying to reach the broker again before closing
/// the device's connection (the device then reconnects, and resends what
/// was never acknowledged to it).
pub const RECONNECT_FOR: Duration = Duration::from_secs(30);

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why reading a packet stopped.
#[derive(Debug)]
enum ReadError {
    Closed,
    Io(std::io::Error),
    Decode(DecodeError),
    Timeout,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("connection closed"),
            Self::Io(e) => write!(f, "read failed: {e}"),
            Self::Decode(e) => write!(f, "bad MQTT packet: {e}"),
            Self::Timeout => f.write_str("timed out"),
        }
    }
}

impl ReadError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Io(_) => "io",
            Self::Decode(e) => e.reason(),
            Self::Timeout => "timeout",
        }
    }
}

/// One buffered MQTT connection.
struct Conn<S> {
    io: S,
    buf: BytesMut,
    out: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(4096),
            out: BytesMut::with_capacity(4096),
        }
    }

    /// The next whole packet. Cancel-safe: bytes read stay in `buf`.
    async fn read(&mut self) -> Result<Packet, ReadError> {
        loop {
            if let Some(p) = codec::decode(&mut self.buf, MAX_PACKET).map_err(ReadError::Decode)? {
                return Ok(p);
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    async fn read_within(&mut self, limit: Duration) -> Result<Packet, ReadError> {
        tokio::time::timeout(limit, self.read())
            .await
            .unwrap_or(Err(ReadError::Timeout))
    }

    /// Encodes and writes `packets` in one write.
    async fn send(&mut self, packets: impl IntoIterator<Item = Packet>) -> std::io::Result<()> {
        self.out.clear();
        for p in packets {
            if let Err(e) = codec::encode(&p, &mut self.out) {
                // Only a packet simgate rewrote can fail here (a topic
                // grown past 65,535 bytes): drop it, say so.
                tracing::warn!(packet = p.name(), error = %e, "MQTT packet cannot be encoded; dropped");
            }
        }
        self.io.write_all(&self.out).await?;
        self.io.flush().await
    }
}

fn connack(code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
    })
}

/// A broker connection being made.
type Handshake = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(Conn<OpenStream>, ConnAck), String>> + Send>,
>;

/// Connects to the broker and completes its CONNECT / CONNACK exchange.
async fn broker_handshake(
    beam: &Beam,
    target: &StreamTarget,
    connect: &Connect,
) -> Result<(Conn<OpenStream>, ConnAck), String> {
    let open = beam.dial(target).await.map_err(|e| match e {
        OpenError::Upstream(e) => e.to_string(),
        other => format!("{other:?}"),
    })?;
    let mut up = Conn::new(open);
    let exchange = async {
        up.send([Packet::Connect(connect.clone())])
            .await
            .map_err(|e| format!("sending CONNECT: {e}"))?;
        match up.read_within(HANDSHAKE_TIMEOUT).await {
            Ok(Packet::ConnAck(ack)) => Ok(ack),
            Ok(other) => Err(format!("broker answered CONNECT with {}", other.name())),
            Err(e) => Err(format!("broker's CONNACK: {e}")),
        }
    };
    match exchange.await {
        Ok(ack) => Ok((up, ack)),
        Err(e) => {
            // Connected but no CONNACK: a TLS 1.3 server refuses a client
            // certificate only after the client's handshake is done.
            let error = UpstreamError::new(UpstreamErrorKind::Other, e.clone());
            beam.metrics.beam_upstream_error(&target.label, &error);
            beam.metrics.beam_served(&target.label, 502);
            Err(e)
        }
    }
}

impl Beam {
    /// Beam MQTT: serves one device connection on :1883.
    pub(crate) async fn serve_mqtt(self: Arc<Self>, conn: DeviceConnection) {
        let point = BeamEntryPoint::Mqtt;
        let DeviceConnection {
            stream,
            peer,
            identity,
            snapshot,
            listener: _,
            limits: _,
            mut shutdown,
        } = conn;
        let mut device = Conn::new(stream);
        let connect = match device.read_within(HANDSHAKE_TIMEOUT).await {
            Ok(Packet::Connect(c)) => c,
            Ok(other) => {
                self.metrics
                    .beam_device_error("none", "first_packet_not_connect");
                tracing::debug!(%peer, packet = other.name(), "MQTT device did not start with CONNECT");
                return;
            }
            Err(ReadError::Decode(DecodeError::UnsupportedProtocolLevel(_))) => {
                self.metrics
                    .beam_device_error("none", "unsupported_protocol_level");
                let _ = device
                    .send([connack(ConnectReturnCode::UnacceptableProtocolVersion)])
                    .await;
                return;
            }
            Err(e) => {
                self.metrics.beam_device_error("none", e.reason());
                return;
            }
        };
        if !keep_alive_allowed(connect.keep_alive) {
            self.metrics.beam_device_error("none", "keep_alive");
            tracing::debug!(%peer, keep_alive = connect.keep_alive, "MQTT keepalive must be 0 or 5-1200 s");
            let _ = device
                .send([connack(ConnectReturnCode::NotAuthorized)])
                .await;
            return;
        }
        let Ok(target) = self.stream_target(&point, &identity, &snapshot) else {
            let _ = device
                .send([connack(ConnectReturnCode::NotAuthorized)])
                .await;
            return;
        };
        let label = target.label.clone();
        let ctx = TopicContext {
            imsi: identity.subscriber.imsi.to_string(),
            sim_id: identity.subscriber.sim_id.as_ref().map(|s| s.to_string()),
            imei: identity.imei.as_ref().map(|i| i.imei15().into_owned()),
        };
        let mut session = Session::new(ctx, target.entry.add_subscriber_header);
        let upstream_connect = match session.upstream_connect(
            &connect,
            target.entry.username.as_deref(),
            target
                .entry
                .password
                .as_ref()
                .map(|p| p.expose().as_bytes()),
        ) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.beam_device_error(&label, "topic_placeholder");
                tracing::debug!(entry = %label, %peer, error = %e, "MQTT will topic refused");
                let _ = device
                    .send([connack(ConnectReturnCode::NotAuthorized)])
                    .await;
                return;
            }
        };
        let (up, ack) = match broker_handshake(&self, &target, &upstream_connect).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(entry = %label, %peer, error = %e, "MQTT broker unavailable");
                let _ = device
                    .send([connack(ConnectReturnCode::ServerUnavailable)])
                    .await;
                return;
            }
        };
        let accepted = ack.code == ConnectReturnCode::Accepted;
        if device.send([Packet::ConnAck(ack)]).await.is_err() || !accepted {
            if !accepted {
                tracing::info!(entry = %label, %peer, code = ?ack.code, "MQTT broker refused the connection");
                self.metrics.beam_served(&label, 502);
            }
            return;
        }
        self.metrics.beam_served(&label, 200);

        // Keepalive: no packet from the device within 1.5 × its keepalive
        // ends the connection (MQTT-3.1.2-24); 0 means none.
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let relayed = |direction| {
            member(
                &self.metrics.beam_relayed,
                &BeamDirectionLabels {
                    entry: label.clone(),
                    direction,
                },
            )
        };
        let (relayed_up, relayed_down) = (relayed("up"), relayed("down"));
        let mut upstream: Option<Conn<OpenStream>> = Some(up);
        let mut retry = Retry::default();
        // A reconnect runs beside the device's traffic (pings answered,
        // messages kept) rather than blocking it for its timeouts.
        let mut reconnect: Option<Handshake> = None;
        let mut actions = Vec::new();
        let far = Duration::from_secs(86_400 * 365);
        let mut device_seen = tokio::time::Instant::now();
        loop {
            let device_deadline = tokio::time::sleep_until(device_seen + keep_alive.unwrap_or(far));
            tokio::pin!(device_deadline);
            let reconnect_due = tokio::time::sleep_until(retry.at);
            tokio::pin!(reconnect_due);
            actions.clear();
            tokio::select! {
                r = device.read() => {
                    device_seen = tokio::time::Instant::now();
                    let packet = match r {
                        Ok(p) => p,
                        Err(ReadError::Closed) => break,
                        Err(e) => {
                            self.metrics.beam_device_error(&label, e.reason());
                            tracing::debug!(entry = %label, %peer, error = %e, "MQTT device connection ended");
                            break;
                        }
                    };
                    if matches!(packet, Packet::Publish(_)) {
                        relayed_up.inc();
                    }
                    match session.on_device(packet, &mut actions) {
                        Ok(Outcome::Continue) => {}
                        Ok(Outcome::Disconnect) => {
                            if let Some(up) = upstream.as_mut() {
                                let _ = up.send(split(&mut actions).1).await;
                            }
                            break;
                        }
                        Err(e) => {
                            self.metrics.beam_device_error(&label, e.reason());
                            tracing::debug!(entry = %label, %peer, error = %e, "MQTT device broke the rules");
                            break;
                        }
                    }
                }
                r = async {
                    match upstream.as_mut() {
                        Some(u) => u.read().await,
                        None => std::future::pending().await,
                    }
                }, if upstream.is_some() => {
                    match r {
                        Ok(packet) => {
                            if matches!(packet, Packet::Publish(_)) {
                                relayed_down.inc();
                            }
                            session.on_upstream(packet, &mut actions);
                        }
                        Err(e) => {
                            tracing::warn!(entry = %label, %peer, error = %e, "MQTT broker connection lost; reconnecting");
                            self.metrics.beam_upstream_error(&label, &UpstreamError::new(
                                UpstreamErrorKind::Other,
                                format!("broker connection lost: {}", e.reason()),
                            ));
                            upstream = None;
                            session.on_upstream_lost();
                            retry.lost();
                        }
                    }
                }
                () = &mut reconnect_due, if upstream.is_none() && reconnect.is_none() => {
                    let (beam, target, connect) =
                        (Arc::clone(&self), target.clone(), upstream_connect.clone());
                    reconnect = Some(Box::pin(async move {
                        broker_handshake(&beam, &target, &connect).await
                    }));
                }
                r = async {
                    match reconnect.as_mut() {
                        Some(handshake) => handshake.await,
                        None => std::future::pending().await,
                    }
                }, if reconnect.is_some() => {
                    reconnect = None;
                    match r {
                        Ok((conn, ack)) if ack.code == ConnectReturnCode::Accepted => {
                            tracing::info!(entry = %label, %peer, "MQTT broker reconnected");
                            upstream = Some(conn);
                            retry = Retry::default();
                            session.on_upstream_ready(&mut actions);
                        }
                        other => {
                            if let Err(e) = &other {
                                tracing::debug!(entry = %label, error = %e, "MQTT broker reconnect failed");
                            }
                            if !retry.failed() {
                                tracing::warn!(entry = %label, %peer, "MQTT broker unreachable; closing the device connection");
                                break;
                            }
                        }
                    }
                }
                () = &mut device_deadline => {
                    self.metrics.beam_device_error(&label, "keepalive_timeout");
                    break;
                }
                _ = shutdown.changed() => break,
            }
            let (to_device, to_upstream) = split(&mut actions);
            if !to_device.is_empty() && device.send(to_device).await.is_err() {
                break;
            }
            if !to_upstream.is_empty() {
                if let Some(up) = upstream.as_mut() {
                    if let Err(e) = up.send(to_upstream).await {
                        tracing::warn!(entry = %label, error = %e, "MQTT broker write failed; reconnecting");
                        upstream = None;
                        session.on_upstream_lost();
                        retry.lost();
                    }
                }
            }
        }
        if session.inflight() > 0 {
            tracing::debug!(entry = %label, %peer, unacknowledged = session.inflight(), "MQTT session ended with messages the broker never acknowledged (the device was not told they were)");
        }
    }
}

/// When to try the broker again, and since when it has been gone.
struct Retry {
    /// When the broker connection was lost (None while it is up).
    since: Option<tokio::time::Instant>,
    delay: Duration,
    at: tokio::time::Instant,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            since: None,
            delay: BACKOFF_FIRST,
            at: tokio::time::Instant::now(),
        }
    }
}

impl Retry {
    /// The broker connection just dropped (read or write): try at once,
    /// then back off from the first delay.
    fn lost(&mut self) {
        *self = Self {
            since: Some(tokio::time::Instant::now()),
            ..Self::default()
        };
    }

    /// A reconnect failed: schedules the next one, or `false` once the
    /// broker has been gone for [`RECONNECT_FOR`].
    fn failed(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= RECONNECT_FOR {
            return false;
        }
        self.at = tokio::time::Instant::now() + jitter(self.delay);
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
        true
    }
}

/// The packets for the device and for the broker, in order.
fn split(actions: &mut Vec<Action>) -> (Vec<Packet>, Vec<Packet>) {
    let mut device = Vec::new();
    let mut upstream = Vec::new();
    for a in actions.drain(..) {
        match a {
            Action::ToDevice(p) => device.push(p),
            Action::ToUpstream(p) => upstream.push(p),
        }
    }
    (device, upstream)
}

/// Full jitter: a uniform delay in `[d/2, d]`.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}
