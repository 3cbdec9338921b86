//! TCP ingress: as SORACOM does, each read is one message and gets one reply.
//! The connection is refused at accept when its source has no session.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::{member, ListenerLabels};
use crate::services::funnel::SourceProtocol;
use crate::services::{Entry, Handled, Message, Services};

/// Limits of one TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_message: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

pub fn spawn(
    addr: SocketAddr,
    entry: Entry,
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
        entry,
        listener_name,
        limits,
        services,
        shutdown,
    ));
    Ok(bound)
}

async fn accept_loop(
    listener: TcpListener,
    entry: Entry,
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
        if let Err(e) = services.identify(peer) {
            services.metrics.reject("tcp", e.reason(), peer);
            continue; // dropping the stream closes it
        }
        let services = Arc::clone(&services);
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            connection(stream, peer, entry, name, limits, services, shutdown).await;
        });
    }
    // Let open connections finish their current message.
    while conns.join_next().await.is_some() {}
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    entry: Entry,
    name: &'static str,
    limits: TcpLimits,
    services: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
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
