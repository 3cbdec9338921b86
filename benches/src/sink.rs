//! The raw baseline peer: plain UDP sockets (SO_REUSEPORT, one thread each,
//! as many as simgate has UDP workers) read with `recvmmsg` in batches of 32
//! (quinn-udp's batch, which simgate uses) into 64 KiB slots, counting
//! datagrams and bytes. The counts are served as a Prometheus page so
//! `loadgen send` reads them exactly as it reads simgate's.
//!
//! By default it answers nothing. `--reply each` answers every datagram with
//! `200` through its own `sendto` (what simgate's UDP ingress does today);
//! `--reply batch` answers a whole received batch with one `sendmmsg`. These
//! tell how much of simgate's cost is the reply traffic itself.
//!
//! `--io-uring` (cargo feature `io-uring`) reads through io_uring instead
//! (see `uring`), counted the same way, for the recvmmsg-vs-io_uring
//! comparison of `scripts/bench.sh io-uring`.

use std::io::{IoSlice, IoSliceMut, Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, sendto, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn,
};
use socket2::{Domain, Protocol, Socket, Type};

/// Same slot size as simgate's UDP ingress (without GRO).
pub(crate) const SLOT: usize = 65_535;
/// What Funnel answers to an accepted UDP record.
pub(crate) const REPLY: &[u8] = b"200";

/// Whether and how the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReplyMode {
    None,
    /// One `sendto` per datagram.
    Each,
    /// One `sendmmsg` per received batch.
    Batch,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SinkArgs {
    /// UDP address to receive on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddrV4,
    /// Where `/metrics` is served (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    metrics_listen: SocketAddrV4,
    /// Sockets sharing the port (SO_REUSEPORT), one thread each.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Datagrams per recvmmsg call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Answer each datagram with "200", one syscall each or batched.
    #[arg(long, value_enum, default_value_t = ReplyMode::None)]
    reply: ReplyMode,
    /// The sink exits after this long whatever happens.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
    #[cfg(feature = "io-uring")]
    #[command(flatten)]
    uring: crate::uring::UringArgs,
}

#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) datagrams: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Receive syscalls: recvmmsg, or io_uring_enter with `--io-uring`.
    pub(crate) calls: AtomicU64,
    pub(crate) replies: AtomicU64,
}

pub(crate) fn run(a: &SinkArgs) -> anyhow::Result<()> {
    ensure!(
        a.listen.ip().is_loopback(),
        "the sink listens on loopback only"
    );
    ensure!(
        a.metrics_listen.ip().is_loopback(),
        "metrics are served on loopback only"
    );
    ensure!((1..=64).contains(&a.workers), "--workers must be 1..=64");
    ensure!((1..=1024).contains(&a.batch), "--batch must be 1..=1024");
    let deadline = Instant::now() + Duration::from_secs(a.max_seconds);
    let counts = Arc::new(Counts::default());

    let mut bound = SocketAddr::V4(a.listen);
    let mut sockets = Vec::new();
    for _ in 0..a.workers {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // As simgate asks; the kernel caps it at net.core.rmem_max.
        let _ = s.set_recv_buffer_size(8 << 20);
        s.bind(&bound.into())
            .with_context(|| format!("cannot bind UDP {bound}"))?;
        // Blocking with a timeout, so a worker notices the deadline.
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        if let Some(addr) = s.local_addr()?.as_socket() {
            bound = addr;
        }
        sockets.push(s);
    }
    let metrics =
        TcpListener::bind(a.metrics_listen).context("cannot bind the metrics listener")?;
    let metrics_addr = metrics.local_addr()?;

    #[cfg(feature = "io-uring")]
    if a.uring.io_uring {
        let design = crate::uring::choose(&a.uring).context("io_uring is not usable here")?;
        let plan = crate::uring::Plan {
            design,
            buffers: a.uring.uring_buffers,
            batch: a.batch,
            reply: a.reply,
        };
        for s in sockets {
            let c = Arc::clone(&counts);
            thread::spawn(move || {
                let stop = || Instant::now() >= deadline;
                if let Err(e) = crate::uring::receive_loop(s.as_raw_fd(), &plan, &c, &stop) {
                    eprintln!("loadgen sink: io_uring worker stopped: {e}");
                }
            });
        }
        let c = Arc::clone(&counts);
        thread::spawn(move || serve_metrics(&metrics, &c));
        println!("udp={bound} metrics=http://{metrics_addr}/metrics io_uring={design}");
        std::io::stdout().flush()?;
        thread::sleep(deadline.saturating_duration_since(Instant::now()));
        return Ok(());
    }

    for s in sockets {
        let c = Arc::clone(&counts);
        let (batch, reply) = (a.batch, a.reply);
        thread::spawn(move || receive_loop(&s, batch, reply, &c, deadline));
    }
    let c = Arc::clone(&counts);
    thread::spawn(move || serve_metrics(&metrics, &c));

    println!("udp={bound} metrics=http://{metrics_addr}/metrics");
    std::io::stdout().flush()?;
    let now = Instant::now();
    thread::sleep(deadline.saturating_duration_since(now));
    Ok(())
}

fn receive_loop(s: &Socket, batch: usize, reply: ReplyMode, c: &Counts, deadline: Instant) {
    let fd = s.as_raw_fd();
    let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let mut reply_hdrs = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let mut slots = vec![vec![0u8; SLOT]; batch];
    let mut peers: Vec<Option<SockaddrIn>> = Vec::with_capacity(batch);
    let reply_iovs = vec![[IoSlice::new(REPLY)]; batch];
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    while Instant::now() < deadline {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            slots.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        match recvmmsg(
            fd,
            &mut hdrs,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(results) => {
                let mut n = 0u64;
                let mut bytes = 0u64;
                peers.clear();
                for m in results {
                    n += 1;
                    bytes += m.bytes as u64;
                    peers.push(m.address);
                }
                c.datagrams.fetch_add(n, Ordering::Relaxed);
                c.bytes.fetch_add(bytes, Ordering::Relaxed);
                c.calls.fetch_add(1, Ordering::Relaxed);
                let answered = match reply {
                    ReplyMode::None => 0,
                    ReplyMode::Each => peers
                        .iter()
                        .flatten()
                        .filter(|p| sendto(fd, REPLY, *p, MsgFlags::MSG_DONTWAIT).is_ok())
                        .count(),
                    ReplyMode::Batch => sendmmsg(
                        fd,
                        &mut reply_hdrs,
                        &reply_iovs[..peers.len()],
                        &peers,
                        no_cmsgs,
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map_or(0, Iterator::count),
                };
                c.replies.fetch_add(answered as u64, Ordering::Relaxed);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                eprintln!("loadgen sink: recvmmsg failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn serve_metrics(listener: &TcpListener, c: &Counts) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        // Read the request head (bounded); its content does not matter.
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while head.len() < 16 << 10 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let body = format!(
            "# TYPE loadgen_sink_received counter\n\
             loadgen_sink_received_total {}\n\
             # TYPE loadgen_sink_received_bytes counter\n\
             loadgen_sink_received_bytes_total {}\n\
             # TYPE loadgen_sink_recvmmsg_calls counter\n\
             loadgen_sink_recvmmsg_calls_total {}\n\
             # TYPE loadgen_sink_replies counter\n\
             loadgen_sink_replies_total {}\n",
            c.datagrams.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
            c.calls.load(Ordering::Relaxed),
            c.replies.load(Ordering::Relaxed),
        );
        let _ = write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
