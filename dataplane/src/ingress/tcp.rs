//! TCP ingress. The connection is refused at accept when its source has no
//! session; an identified connection is then handed to its service
//! ([`Handoff`]): the message loop (each read is one message and gets one
//! reply, as SORACOM's :23080 and :8514 do), or Beam's TCP → TLS and MQTT
//! proxies, which drive the stream themselves. Connection limits, the
//! identity check, metrics and shutdown stay here, in one place.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use simgate_control::{Identity, Snapshot};

use crate::metrics::{member, ListenerLabels};
use crate::services::funnel::SourceProtocol;
use crate::services::{Entry, Handled, Message, Services};

/// Who serves a listener's identified connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Each read is one message to `Entry`, answered with one reply.
    Messages(Entry),
    /// Beam TCP → TCP(S) (:8023).
    BeamTcp,
    /// Beam MQTT → MQTT(S) (:1883).
    BeamMqtt,
}

/// An accepted connection from an identified device, handed to the service
/// that drives it.
pub struct DeviceConnection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Who the device was at accept (a stream service keeps this identity
    /// for the connection's life, as a SORACOM session does).
    pub identity: Arc<Identity>,
    pub snapshot: Arc<Snapshot>,
    pub listener: &'static str,
    pub limits: TcpLimits,
    /// Becomes `true` when simgate shuts down: close the connection.
    pub shutdown: watch::Receiver<bool>,
}

/// Limits of one TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_message: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

pub fn spawn(
    addr: SocketAddr,
    handoff: Handoff,
    listener_name: &'static str,
    limits: TcpLimits,
    services: Arc<Services>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> io::Result<SocketAddr> {
    let socket = super::bind_socket(addr, false)?;
    let listener = TcpListener::from_std(socket.into())?;
    let bound = listener.local_addr()?;
    tasks.spawn(accept_loop(
        listener,
        handoff,
        listener_name,
        limits,
        services,
        shutdown,
    ));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    handoff: Handoff,
    name: &'static str,
    limits: TcpLimits,
    services: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            services.metrics.reject("tcp", "too_many_connections", peer);
            continue;
        };
        let (identity, snapshot) = match services.identify(peer) {
            Ok((identity, snapshot)) => (identity, arc_swap::Guard::into_inner(snapshot)),
            Err(e) => {
                services.metrics.reject("tcp", e.reason(), peer);
                continue; // dropping the stream closes it
            }
        };
        let _ = stream.set_nodelay(true);
        member(
            &services.metrics.ingress_connections,
            &ListenerLabels {
                listener: name,
                protocol: "tcp",
            },
        )
        .inc();
        let conn = DeviceConnection {
            stream,
            peer,
            identity,
            snapshot,
            listener: name,
            limits,
            shutdown: shutdown.clone(),
        };
        let services = Arc::clone(&services);
        conns.spawn(async move {
            let _permit = permit;
            match handoff {
                Handoff::Messages(entry) => messages(conn, entry, services).await,
                Handoff::BeamTcp => Arc::clone(&services.beam).serve_tcp(conn).await,
                Handoff::BeamMqtt => Arc::clone(&services.beam).serve_mqtt(conn).await,
            }
        });
    }
    // Let open connections finish their current message (stream services
    // close on the shutdown signal).
    while conns.join_next().await.is_some() {}
}

/// The message loop: each read is one message, answered with one reply.
async fn messages(conn: DeviceConnection, entry: Entry, services: Arc<Services>) {
    let DeviceConnection {
        mut stream,
        peer,
        listener: name,
        limits,
        mut shutdown,
        ..
    } = conn;
    let received = member(
        &services.metrics.ingress_messages,
        &ListenerLabels {
            listener: name,
            protocol: "tcp",
        },
    );
    let mut buf = vec![0u8; limits.max_message.max(1)];
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(limits.idle_timeout, stream.read(&mut buf)) => r,
            _ = shutdown.changed() => return,
        };
        let n = match read {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tcp read failed");
                return;
            }
            Err(_) => {
                services.metrics.reject("tcp", "idle_timeout", peer);
                return;
            }
        };
        received.inc();
        let msg = Message {
            peer,
            protocol: SourceProtocol::Tcp,
            entry,
            payload: &buf[..n],
            content_type: None,
            timestamp: None,
        };
        // The session may have ended since accept: re-checked per message.
        let reply = match services.handle(&msg) {
            Handled::Now(r) => r,
            Handled::Later(f) => f.await,
            Handled::Refused(_) => return,
        };
        if let Err(e) = stream.write_all(&reply.line).await {
            tracing::debug!(%peer, error = %e, "tcp write failed");
            return;
        }
        if reply.close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
