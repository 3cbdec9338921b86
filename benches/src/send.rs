//! The sender: one UDP socket per simulated SIM, bound to its own loopback
//! address and connected to the target, written with `sendmmsg` in batches
//! (all datagrams of a batch from one SIM, SIMs taken in turn).
//!
//! Replies (Funnel answers "200" to each datagram) are read back after every
//! batch on the same socket with a non-blocking `recvmmsg`, so they never
//! pile up in socket buffers; the raw sink sends none and the same call then
//! just returns `EAGAIN`, so both runs cost the generator the same syscalls.
//!
//! One window is measured: after `--warmup`, a measuring thread snapshots the
//! local counters and the `--metrics-url` page, waits `--duration`, and
//! snapshots again while the senders keep sending, so the window sees steady
//! state on both sides and sending never pauses for a scrape.
//!
//! With `--latency`, the senders do not read replies: one reader thread
//! polls every socket and times each reply against the oldest unanswered
//! datagram of its socket (replies carry no id, and a socket's replies come
//! back in order). That is exact only while every datagram is answered: a
//! datagram dropped without a reply makes the following replies of its
//! socket look later than they are, so use it below saturation and check
//! that `replies` ≈ `sent`.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use hdrhistogram::Histogram;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};

use crate::scrape::{self, Selector};

/// Longest window or warm-up accepted: runs stay bounded.
const MAX_SECONDS: f64 = 3600.0;
/// Replies are short ("200", or an error line); longer ones are truncated.
const REPLY_BUF: usize = 512;
/// Unanswered datagrams remembered per socket with `--latency`; beyond
/// that the oldest are forgotten (and counted as `ack_forgotten`).
const MAX_PENDING: usize = 1 << 16;

#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    /// Where to send: a 127.0.0.0/8 address and port.
    #[arg(long)]
    target: SocketAddrV4,
    /// Simulated SIMs, each with its own source address.
    #[arg(long, default_value_t = 1000)]
    sources: usize,
    /// Source address of the first SIM; SIM i sends from base + i.
    #[arg(long, default_value_t = crate::DEFAULT_SOURCE_BASE)]
    source_base: Ipv4Addr,
    /// Datagrams per sendmmsg call (one SIM per call).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Payload bytes per datagram (a JSON object padded to this size).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of sending before the measured window starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Length of the measured window in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many datagrams in all (the window then ends early).
    #[arg(long)]
    count: Option<u64>,
    /// Offered load in datagrams/s over all SIMs; unset = as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Sending threads (the SIMs are split among them).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Prometheus page read at the start and end of the window.
    #[arg(long)]
    metrics_url: Option<String>,
    /// KEY=SELECTOR (e.g. `accepted=simgate_funnel_records_in_total`):
    /// report how much the summed matching series grew over the window.
    #[arg(long = "metric", value_parser = parse_metric)]
    metrics: Vec<(String, Selector)>,
    /// Time each reply (send to reply, per socket in order) and report
    /// `ack_p50_ms`, `ack_p99_ms`… for the window; see the module doc.
    #[arg(long)]
    latency: bool,
    /// Also report `cpu_s`: the CPU time (user + system, all threads) this
    /// process (the receiver) used over the window, from /proc/PID/stat.
    #[arg(long)]
    pid: Option<u32>,
}

pub(crate) fn parse_metric(s: &str) -> Result<(String, Selector), String> {
    let (key, sel) = s.split_once('=').ok_or("expected KEY=SELECTOR")?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad key {key:?}"));
    }
    Ok((
        key.to_owned(),
        Selector::parse(sel).map_err(|e| e.to_string())?,
    ))
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    replies: AtomicU64,
    send_errors: AtomicU64,
    stop: AtomicBool,
    /// Senders still running.
    running: AtomicU64,
    /// Inside the measured window (latencies are recorded only then).
    measuring: AtomicBool,
}

/// `--latency`: per socket, when each unanswered datagram was sent.
struct Pending {
    queues: Vec<Mutex<VecDeque<Instant>>>,
    forgotten: AtomicU64,
}

impl Pending {
    fn queue(&self, i: usize) -> MutexGuard<'_, VecDeque<Instant>> {
        // A panicking sender leaves a queue that is still a valid queue.
        self.queues[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct Snapshot {
    at: Instant,
    sent: u64,
    replies: u64,
    send_errors: u64,
    metrics: Vec<Option<f64>>,
    /// `--pid`'s CPU time so far, seconds.
    cpu_s: Option<f64>,
}

pub(crate) fn run(a: &SendArgs) -> anyhow::Result<()> {
    ensure!(a.target.ip().is_loopback(), "target must be in 127.0.0.0/8");
    ensure!(
        a.sources > 0 && a.threads > 0,
        "--sources and --threads must be positive"
    );
    ensure!((1..=1024).contains(&a.batch), "--batch must be 1..=1024");
    ensure!((48..=65_000).contains(&a.size), "--size must be 48..=65000");
    ensure!(
        (0.0..=MAX_SECONDS).contains(&a.warmup) && a.duration > 0.0 && a.duration <= MAX_SECONDS,
        "--warmup and --duration must be within 0..{MAX_SECONDS} s"
    );
    ensure!(a.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
    ensure!(
        a.metrics.is_empty() || a.metrics_url.is_some(),
        "--metric needs --metrics-url"
    );

    let threads = a.threads.min(a.sources);
    let mut groups: Vec<Vec<Source>> = (0..threads).map(|_| Vec::new()).collect();
    // With --latency: the reader's handles on the same sockets.
    let mut reader_sockets = Vec::new();
    for i in 0..a.sources {
        let ip = crate::source_addr(a.source_base, i)?;
        let socket = open_source(ip, a.target).with_context(|| {
            format!(
                "cannot open source socket {ip} (are file descriptors limited? see `ulimit -n`)"
            )
        })?;
        if a.latency {
            reader_sockets.push(socket.try_clone()?);
        }
        let sim = u32::try_from(i + 1)?;
        groups[i % threads].push(Source {
            socket,
            index: i,
            sim,
            seq: 0,
        });
    }
    let pending = a.latency.then(|| {
        Arc::new(Pending {
            queues: (0..a.sources).map(|_| Mutex::default()).collect(),
            forgotten: AtomicU64::new(0),
        })
    });

    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    // A hard end even if the measuring thread never said stop.
    let hard_end = started + Duration::from_secs_f64(a.warmup + a.duration + 60.0);
    let per_thread_rate = a.rate.map(|r| r / threads as f64);
    let per_thread_count = a.count.map(|c| c.div_ceil(threads as u64));
    counters.running.store(threads as u64, Ordering::SeqCst);
    let mut senders = Vec::new();
    for group in groups {
        let c = Arc::clone(&counters);
        let plan = Plan {
            batch: a.batch,
            size: a.size,
            rate: per_thread_rate,
            count: per_thread_count,
            hard_end,
            pending: pending.clone(),
        };
        senders.push(thread::spawn(move || {
            let r = send_loop(group, &plan, &c);
            c.running.fetch_sub(1, Ordering::SeqCst);
            r
        }));
    }
    let reader = pending.clone().map(|p| {
        let c = Arc::clone(&counters);
        let batch = a.batch;
        thread::spawn(move || read_replies(&reader_sockets, &p, &c, batch, hard_end))
    });

    let measured = measure(a, &counters, started);
    counters.stop.store(true, Ordering::SeqCst);
    for s in senders {
        match s.join() {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("a sender thread panicked"),
        }
    }
    let latencies = match reader.map(thread::JoinHandle::join) {
        Some(Ok(r)) => Some(r?),
        Some(Err(_)) => anyhow::bail!("the reply reader thread panicked"),
        None => None,
    };
    let (before, after) = measured?;
    report(a, &before, &after, latencies.as_ref(), pending.as_deref());
    Ok(())
}

fn measure(a: &SendArgs, c: &Counters, started: Instant) -> anyhow::Result<(Snapshot, Snapshot)> {
    sleep_until(started + Duration::from_secs_f64(a.warmup), c);
    c.measuring.store(true, Ordering::SeqCst);
    let before = snapshot(a, c)?;
    let end = before.at + Duration::from_secs_f64(a.duration);
    sleep_until(end, c);
    let after = snapshot(a, c);
    c.measuring.store(false, Ordering::SeqCst);
    Ok((before, after?))
}

/// Sleeps until `t` or until every sender has finished.
fn sleep_until(t: Instant, c: &Counters) {
    loop {
        let now = Instant::now();
        if now >= t || c.running.load(Ordering::SeqCst) == 0 {
            return;
        }
        thread::sleep((t - now).min(Duration::from_millis(10)));
    }
}

fn snapshot(a: &SendArgs, c: &Counters) -> anyhow::Result<Snapshot> {
    let t0 = Instant::now();
    let page = a.metrics_url.as_deref().map(scrape::get).transpose()?;
    let cpu_s = a.pid.map(cpu_seconds).transpose()?;
    let t1 = Instant::now();
    // The page was made somewhere between request and answer.
    let at = t0 + (t1 - t0) / 2;
    Ok(Snapshot {
        at,
        sent: c.sent.load(Ordering::Relaxed),
        replies: c.replies.load(Ordering::Relaxed),
        send_errors: c.send_errors.load(Ordering::Relaxed),
        metrics: a
            .metrics
            .iter()
            .map(|(_, sel)| page.as_deref().and_then(|p| sel.sum(p)))
            .collect(),
        cpu_s,
    })
}

/// User + system CPU time of process `pid` (all its threads, live or
/// ended), in seconds: fields 14 and 15 of /proc/PID/stat, in clock ticks.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from after its closing one (field 3 is the state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: unexpected format"))?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick = || -> anyhow::Result<u64> {
        Ok(fields
            .next()
            .with_context(|| format!("{path}: too few fields"))?
            .parse()?)
    };
    let ticks = tick()? + tick()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .filter(|&t| t > 0)
        .context("sysconf(CLK_TCK) gave no value")?;
    Ok(ticks as f64 / per_second as f64)
}

/// One line of `key=value` pairs on stdout (for scripts), rates per second.
fn report(
    a: &SendArgs,
    before: &Snapshot,
    after: &Snapshot,
    latencies: Option<&Histogram<u64>>,
    pending: Option<&Pending>,
) {
    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let mut out = vec![
        format!("window_s={secs:.3}"),
        format!("sources={}", a.sources),
        format!("batch={}", a.batch),
        format!("size={}", a.size),
        format!(
            "offered={}",
            a.rate
                .map_or_else(|| "max".to_owned(), |r| format!("{r:.0}"))
        ),
    ];
    let mut pair = |key: &str, delta: f64| {
        out.push(format!("{key}={delta:.0}"));
        out.push(format!("{key}_rate={:.0}", delta / secs));
    };
    pair("sent", (after.sent - before.sent) as f64);
    pair("replies", (after.replies - before.replies) as f64);
    pair(
        "send_errors",
        (after.send_errors - before.send_errors) as f64,
    );
    // A labelled counter appears only once something was counted (a drop
    // reason, say): missing means zero.
    for (i, (key, _)) in a.metrics.iter().enumerate() {
        let (b, e) = (before.metrics[i], after.metrics[i]);
        pair(key, e.unwrap_or(0.0) - b.unwrap_or(0.0));
    }
    if let (Some(b), Some(e)) = (before.cpu_s, after.cpu_s) {
        out.push(format!("cpu_s={:.2}", e - b));
    }
    if let Some(h) = latencies {
        // Recorded in microseconds, reported in milliseconds.
        let ms = |us: u64| format!("{:.3}", us as f64 / 1e3);
        out.push(format!("ack_n={}", h.len()));
        for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            out.push(format!("ack_{key}_ms={}", ms(h.value_at_quantile(q))));
        }
        out.push(format!("ack_max_ms={}", ms(h.max())));
    }
    if let Some(p) = pending {
        out.push(format!(
            "ack_forgotten={}",
            p.forgotten.load(Ordering::Relaxed)
        ));
    }
    println!("{}", out.join(" "));
}

struct Source {
    socket: Socket,
    /// Position among all sources (its `Pending` queue).
    index: usize,
    sim: u32,
    seq: u64,
}

fn open_source(ip: Ipv4Addr, target: SocketAddrV4) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.bind(&SocketAddr::from((ip, 0)).into())?;
    // Connected: the route is resolved once, and only the target's replies
    // are received.
    socket.connect(&SocketAddr::V4(target).into())?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

struct Plan {
    batch: usize,
    size: usize,
    rate: Option<f64>,
    count: Option<u64>,
    hard_end: Instant,
    /// `--latency`: where send times go; the senders then read no replies.
    pending: Option<Arc<Pending>>,
}

fn send_loop(mut sources: Vec<Source>, plan: &Plan, c: &Counters) -> anyhow::Result<()> {
    let mut send_hdrs = MultiHeaders::<SockaddrIn>::preallocate(plan.batch, None);
    let mut recv_hdrs = MultiHeaders::<SockaddrIn>::preallocate(plan.batch, None);
    let mut bufs = vec![vec![0u8; plan.size]; plan.batch];
    let mut reply_bufs = vec![[0u8; REPLY_BUF]; plan.batch];
    // Connected sockets: no per-message address.
    let addrs: Vec<Option<SockaddrIn>> = vec![None; plan.batch];
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let started = Instant::now();
    let mut sent_here: u64 = 0;
    let mut batches: u64 = 0;
    'outer: loop {
        for src in &mut sources {
            let mut n = plan.batch;
            if let Some(limit) = plan.count {
                n = n.min(usize::try_from(limit - sent_here).unwrap_or(usize::MAX));
                if n == 0 {
                    break 'outer;
                }
            }
            if let Some(rate) = plan.rate {
                let due = started + Duration::from_secs_f64(sent_here as f64 / rate);
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
            }
            // The clock and the stop flag are read once per 16 batches.
            if batches & 15 == 0
                && (c.stop.load(Ordering::Relaxed) || Instant::now() >= plan.hard_end)
            {
                break 'outer;
            }
            batches += 1;

            for (k, buf) in bufs[..n].iter_mut().enumerate() {
                fill_record(buf, src.sim, src.seq + k as u64);
            }
            let fd = src.socket.as_raw_fd();
            if let Some(p) = &plan.pending {
                // Queued before the send: a reply may come back before
                // sendmmsg returns.
                let now = Instant::now();
                let mut q = p.queue(src.index);
                q.extend(std::iter::repeat_n(now, n));
                let over = q.len().saturating_sub(MAX_PENDING);
                if over > 0 {
                    q.drain(..over);
                    p.forgotten.fetch_add(over as u64, Ordering::Relaxed);
                }
            }
            let iovs: Vec<[IoSlice<'_>; 1]> = bufs[..n].iter().map(|b| [IoSlice::new(b)]).collect();
            match sendmmsg(
                fd,
                &mut send_hdrs,
                &iovs,
                &addrs[..n],
                no_cmsgs,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(results) => {
                    let done = results.count();
                    src.seq += done as u64;
                    sent_here += done as u64;
                    c.sent.fetch_add(done as u64, Ordering::Relaxed);
                    if let Some(p) = &plan.pending {
                        // Those not sent were queued last: drop them.
                        let mut q = p.queue(src.index);
                        let keep = q.len().saturating_sub(n - done);
                        q.truncate(keep);
                    }
                }
                // Buffer full or a port-unreachable for an earlier datagram:
                // counted, and the SIM is skipped this round.
                Err(_) => {
                    c.send_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = &plan.pending {
                        let mut q = p.queue(src.index);
                        let keep = q.len().saturating_sub(n);
                        q.truncate(keep);
                    }
                }
            }
            drop(iovs);
            if plan.pending.is_none() {
                let replies = drain_replies(fd, &mut recv_hdrs, &mut reply_bufs);
                if replies > 0 {
                    c.replies.fetch_add(replies, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}

/// `--latency`: reads every socket's replies as they come (poll, then a
/// non-blocking `recvmmsg`) and times each against its socket's oldest
/// unanswered send, in microseconds; until the senders are done.
fn read_replies(
    sockets: &[Socket],
    pending: &Pending,
    c: &Counters,
    batch: usize,
    hard_end: Instant,
) -> anyhow::Result<Histogram<u64>> {
    // 1 µs … 100 s, 3 significant digits.
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000, 3)?;
    let mut hdrs = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let mut bufs = vec![[0u8; REPLY_BUF]; batch];
    let timeout = PollTimeout::from(10u16);
    while c.running.load(Ordering::SeqCst) > 0 && Instant::now() < hard_end {
        let mut fds: Vec<PollFd<'_>> = sockets
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.any().unwrap_or(false))
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        for i in ready {
            let got = drain_replies(sockets[i].as_raw_fd(), &mut hdrs, &mut bufs);
            if got == 0 {
                continue;
            }
            let now = Instant::now();
            c.replies.fetch_add(got, Ordering::Relaxed);
            let measuring = c.measuring.load(Ordering::Relaxed);
            let mut q = pending.queue(i);
            for _ in 0..got {
                // A reply with nothing pending (its send time forgotten)
                // is counted as a reply but not timed.
                let Some(sent) = q.pop_front() else { break };
                if measuring {
                    let us =
                        u64::try_from(now.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                    h.saturating_record(us.max(1));
                }
            }
        }
    }
    Ok(h)
}

/// Reads whatever replies wait on `fd` without blocking.
fn drain_replies(
    fd: i32,
    hdrs: &mut MultiHeaders<SockaddrIn>,
    bufs: &mut [[u8; REPLY_BUF]],
) -> u64 {
    let mut total = 0;
    // Bounded: at most a few batches' worth per call.
    for _ in 0..4 {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let got = match recvmmsg(fd, hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
            Ok(results) => results.count(),
            // EAGAIN (nothing there) or ECONNREFUSED (target port closed).
            Err(Errno::EAGAIN | Errno::ECONNREFUSED) | Err(_) => 0,
        };
        total += got as u64;
        if got < bufs.len() {
            break;
        }
    }
    total
}

/// Writes `{"sim":S,"seq":Q,"pad":"xxx…"}`, exactly `buf.len()` bytes.
pub(crate) fn fill_record(buf: &mut [u8], sim: u32, seq: u64) {
    let mut w = 0;
    let mut put = |bytes: &[u8], w: &mut usize| {
        let end = (*w + bytes.len()).min(buf.len());
        buf[*w..end].copy_from_slice(&bytes[..end - *w]);
        *w = end;
    };
    let mut digits = [0u8; 20];
    put(b"{\"sim\":", &mut w);
    put(decimal(u64::from(sim), &mut digits), &mut w);
    put(b",\"seq\":", &mut w);
    put(decimal(seq, &mut digits), &mut w);
    put(b",\"pad\":\"", &mut w);
    let len = buf.len();
    let pad_end = len.saturating_sub(2).max(w);
    buf[w..pad_end].fill(b'x');
    if pad_end + 2 <= len {
        buf[pad_end..].copy_from_slice(b"\"}");
    }
}

fn decimal(mut v: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &out[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_of_the_exact_size() {
        for (sim, seq) in [(1, 0), (17, 123), (1000, u64::MAX)] {
            let mut buf = vec![0u8; 100];
            fill_record(&mut buf, sim, seq);
            let text = std::str::from_utf8(&buf).unwrap_or_default();
            assert!(
                text.starts_with(&format!("{{\"sim\":{sim},\"seq\":{seq},\"pad\":\"x")),
                "{text}"
            );
            assert!(text.ends_with("x\"}"), "{text}");
        }
    }

    #[test]
    fn cpu_time_of_this_process() -> anyhow::Result<()> {
        let spent = cpu_seconds(std::process::id())?;
        assert!((0.0..1e6).contains(&spent), "{spent}");
        Ok(())
    }

    #[test]
    fn metric_arguments() {
        assert!(parse_metric("ok=simgate_x_total{a=\"b\"}").is_ok());
        assert!(parse_metric("bad key=x").is_err());
        assert!(parse_metric("nokey").is_err());
    }
}
