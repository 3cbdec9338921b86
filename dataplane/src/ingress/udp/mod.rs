//! UDP ingress: one SO_REUSEPORT socket per worker, read in batches through
//! quinn-udp (recvmmsg, and GRO where the kernel coalesces datagrams).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::FutureExt as _;
use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
use socket2::Socket;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::{member, ListenerLabels};
use crate::services::funnel::SourceProtocol;
use crate::services::{BatchAnswers, Entry, Handled, Message, Reply, ReplyFuture, Services};

mod replies;

use replies::{Bound, Replies};

/// Largest datagram payload over IPv4.
const MAX_DATAGRAM: usize = 65_535;

/// Binds `workers` sockets on `addr` and serves them until shutdown.
/// Returns the bound address (useful when `addr` had port 0).
/// What one UDP listener serves and how.
#[derive(Debug, Clone, Copy)]
pub struct UdpOptions {
    pub entry: Entry,
    /// Metrics label, e.g. `unified`.
    pub name: &'static str,
    /// SO_REUSEPORT sockets (one task each).
    pub workers: usize,
    /// `ingress.udp_reply`.
    pub reply: bool,
}

pub fn spawn(
    addr: SocketAddr,
    options: UdpOptions,
    services: Arc<Services>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> io::Result<SocketAddr> {
    let mut bound = addr;
    let workers = options.workers.max(1);
    #[cfg(target_os = "linux")]
    let mut drops = super::kernel_drops::Watcher::new(options.name, addr);
    for i in 0..workers {
        // With port 0 the first bind picks the port; the others share it.
        let socket = super::bind_socket(bound, true)?;
        if i == 0 {
            log_recv_buffer(options.name, addr, workers, &socket);
        }
        let std_socket: std::net::UdpSocket = socket.into();
        #[cfg(target_os = "linux")]
        drops.add(&std_socket);
        let state = UdpSocketState::new((&std_socket).into())?;
        let socket = UdpSocket::from_std(std_socket)?;
        if i == 0 {
            bound = socket.local_addr()?;
        }
        let bound_as = Bound::of(socket.local_addr()?);
        let worker = Worker {
            socket,
            bound: bound_as,
            state,
            entry: options.entry,
            listener: options.name,
            reply: options.reply,
            services: Arc::clone(&services),
        };
        tasks.spawn(worker.run(shutdown.clone()));
    }
    // Rule 4: datagrams the kernel drops on a full buffer are counted too.
    #[cfg(target_os = "linux")]
    drops.spawn(Arc::clone(&services.metrics), shutdown, tasks);
    Ok(bound)
}

/// Logs the receive buffer the kernel granted (all workers ask for the
/// same), and warns when net.core.rmem_max cut it: bursts then overflow
/// sooner, showing as `kernel_overflow` rejects.
fn log_recv_buffer(listener: &'static str, addr: SocketAddr, workers: usize, socket: &Socket) {
    let requested = super::UDP_RECV_BUFFER;
    // Linux caps the request at rmem_max, then doubles it (to cover
    // bookkeeping overhead) and reports the doubled value.
    let full = if cfg!(target_os = "linux") {
        requested * 2
    } else {
        requested
    };
    // The port actually bound, when the configuration said 0.
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    // Shown in the units of the request (the kernel's figure halved on
    // Linux), so "granted 4 MiB of 8 MiB" reads as what it is.
    let granted = |effective: usize| effective * requested / full.max(1);
    match socket.recv_buffer_size() {
        Ok(effective) if effective < full => tracing::warn!(
            listener,
            %addr,
            workers,
            granted = granted(effective),
            requested,
            "UDP receive buffer smaller than requested; raise net.core.rmem_max \
             to absorb longer bursts"
        ),
        Ok(effective) => tracing::info!(
            listener,
            %addr,
            workers,
            granted = granted(effective),
            "UDP receive buffer"
        ),
        Err(e) => tracing::warn!(listener, %addr, error = %e, "cannot read SO_RCVBUF"),
    }
}

/// An answer that waits (for a commit): who to answer, from which local
/// address, and the answer to come; several devices may wait for one
/// commit and get the same answer.
struct Later {
    to: To,
    reply: ReplyFuture,
}

/// Who gets an answer, and from which local address.
enum To {
    One(SocketAddr, Option<std::net::IpAddr>),
    Many(Vec<(SocketAddr, Option<std::net::IpAddr>)>),
}

struct Worker {
    socket: UdpSocket,
    state: UdpSocketState,
    /// How answers leave (wildcard address, IPv6).
    bound: Bound,
    entry: Entry,
    listener: &'static str,
    /// `ingress.udp_reply`.
    reply: bool,
    services: Arc<Services>,
}

impl Worker {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let gro = this.state.gro_segments().max(1);
        let slot = (MAX_DATAGRAM * gro).min(1 << 20);
        let mut buf = vec![0u8; slot * BATCH_SIZE];
        let mut meta = [RecvMeta::default(); BATCH_SIZE];
        let mut later: Vec<Later> = Vec::new();
        let mut answers = BatchAnswers::default();
        let mut replies = Replies::default();
        let received = member(
            &this.services.metrics.ingress_messages,
            &ListenerLabels {
                listener: this.listener,
                protocol: "udp",
            },
        );
        loop {
            tokio::select! {
                r = this.socket.readable() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "udp socket failed");
                        return;
                    }
                }
                _ = shutdown.changed() => return,
            }
            let n = {
                let mut slices: Vec<IoSliceMut<'_>> =
                    buf.chunks_mut(slot).map(IoSliceMut::new).collect();
                match this.socket.try_io(Interest::READABLE, || {
                    this.state
                        .recv((&this.socket).into(), &mut slices, &mut meta)
                }) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "udp receive failed");
                        continue;
                    }
                }
            };
            // One configuration snapshot for the whole receive batch, and
            // the batch served as one ([`Services::handle_batch`]).
            let snapshot = this.services.snapshot.load_full();
            let mut msgs = Vec::with_capacity(n);
            let mut dst = Vec::with_capacity(n);
            for (m, chunk) in meta.iter().zip(buf.chunks(slot)).take(n) {
                let data = &chunk[..m.len.min(chunk.len())];
                let stride = if m.stride == 0 {
                    data.len().max(1)
                } else {
                    m.stride
                };
                let mut add = |datagram| {
                    msgs.push(Message {
                        peer: m.addr,
                        protocol: SourceProtocol::Udp,
                        entry: this.entry,
                        payload: datagram,
                        content_type: None,
                        timestamp: None,
                    });
                    dst.push(m.dst_ip);
                };
                if data.is_empty() {
                    add(data);
                }
                data.chunks(stride).for_each(&mut add);
            }
            received.inc_by(msgs.len() as u64);
            this.services.handle_batch(&msgs, &snapshot, &mut answers);
            drop(snapshot);
            for (i, handled) in answers.each.drain(..).enumerate() {
                let (peer, local) = (msgs[i].peer, dst[i]);
                match handled {
                    Some(Handled::Now(reply)) => {
                        if let Some(line) = this.answer(&reply) {
                            replies.push(peer, local, line);
                        }
                    }
                    Some(Handled::Later(reply)) => later.push(Later {
                        to: To::One(peer, local),
                        reply,
                    }),
                    // Unknown sources get no answer: nothing to learn
                    // from probing. `None`: answered together below.
                    Some(Handled::Refused(_)) | None => {}
                }
            }
            for (slots, fut) in answers.together.drain(..) {
                let to = slots.iter().map(|&i| (msgs[i].peer, dst[i])).collect();
                later.push(Later {
                    to: To::Many(to),
                    reply: fut,
                });
            }
            if !replies.is_empty() {
                this.flush(&mut replies);
            }
            if !later.is_empty() {
                // One task per receive batch, not per datagram: the answers
                // wait for the same group commit (spool, Harvest), and a
                // spawn per datagram was a measurable share of the CPU.
                let batch = std::mem::take(&mut later);
                tokio::spawn(Arc::clone(&this).answer_later(batch));
            }
            // Under sustained load the socket is always readable and this
            // loop would run for a whole coop budget (thousands of
            // datagrams) while the Funnel workers it feeds wait; let them
            // run after every receive batch.
            tokio::task::yield_now().await;
        }
    }

    /// The datagram answering `reply`, unless UDP answers are off for it.
    fn answer(&self, reply: &Reply) -> Option<Bytes> {
        (!reply.silent_on_udp && self.reply).then(|| reply.line.clone())
    }

    fn flush(&self, replies: &mut Replies) {
        let flushed = replies.flush(&self.socket, self.bound);
        if flushed.dropped > 0 {
            // Socket buffer full: the devices will retry on their own, as
            // with any lost datagram; count it so an operator sees it.
            self.services
                .metrics
                .replies_dropped("udp", flushed.dropped as u64);
        }
    }

    /// Sends the answers that wait for a commit, each as soon as it is
    /// ready (a Beam request to a slow upstream must not hold back the
    /// Funnel answers received with it), those ready together in one call.
    async fn answer_later(self: Arc<Self>, batch: Vec<Later>) {
        let mut pending: FuturesUnordered<_> = batch
            .into_iter()
            .map(|later| async move { (later.to, later.reply.await) })
            .collect();
        let mut replies = Replies::default();
        while let Some(first) = pending.next().await {
            let mut ready = Some(first);
            while let Some((to, reply)) = ready {
                if let Some(line) = self.answer(&reply) {
                    match to {
                        To::One(peer, local) => replies.push(peer, local, line),
                        To::Many(to) => {
                            for (peer, local) in to {
                                replies.push(peer, local, line.clone());
                            }
                        }
                    }
                }
                ready = pending.next().now_or_never().flatten();
            }
            if replies.is_empty() {
                continue;
            }
            if self.socket.writable().await.is_err() {
                return;
            }
            self.flush(&mut replies);
        }
    }
}
