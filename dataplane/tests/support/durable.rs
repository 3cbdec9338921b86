//! Helpers for the durable-delivery tests (issue 7): a TCP fault proxy in
//! front of the sink, devices that remember which record ids they were
//! acknowledged, and a reader that finds those ids in a kinesalite stream.
//!
//! The promise under test: a record acknowledged to a device (UDP or TCP
//! `200`, HTTP 2xx) reaches the sink at least once. Every record carries a
//! unique id in its JSON payload; the devices keep the ids they were
//! acknowledged, the reader counts the ids in the stream, and the two sets
//! are compared.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simgate::sinks::kinesis::admin::KinesisAdmin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::kinesalite::Kinesalite;

/// The source address of simulated SIM number `sim` (1-254).
pub(crate) fn sim_ip(sim: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, sim as u8))
}

/// Appends a subscriber in `group` and its static session to a TOML config.
pub(crate) fn push_sim_toml(text: &mut String, imsi: &str, ip: IpAddr, group: &str) {
    text.push_str(&format!(
        "\n[[subscribers]]\nimsi = \"{imsi}\"\ngroup_id = \"{group}\"\n\n[[sessions]]\nip = \"{ip}\"\nimsi = \"{imsi}\"\n"
    ));
}

/// `name` from the environment as a number, else `default`.
pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// The `durability = …` line for `[funnel]`: `$SIMGATE_DURABILITY` (`spool`
/// unless set; `omit` leaves the key out, to run the harness against a
/// build that does not know it yet).
pub(crate) fn durability_line() -> String {
    let value = std::env::var("SIMGATE_DURABILITY").unwrap_or_else(|_| "spool".to_owned());
    match value.as_str() {
        "omit" | "" => String::new(),
        v => format!("durability = {v:?}"),
    }
}

// ---------------------------------------------------------------------------
// Fault proxy

/// What the proxy does with connections to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward both ways.
    Pass,
    /// Nothing listens: connects are refused, live connections are closed.
    Refuse,
    /// Connections are accepted (and live ones kept open) but nothing is
    /// forwarded or answered, so requests time out.
    Hang,
}

/// Counts that show the outage was felt by the gateway.
#[derive(Debug, Default)]
pub(crate) struct ProxyStats {
    /// Connections accepted and forwarded.
    pub(crate) passed: AtomicUsize,
    /// Connections accepted while hung (or live ones that were hung).
    pub(crate) hung: AtomicUsize,
    /// Live connections closed because the proxy started refusing.
    pub(crate) cut: AtomicUsize,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` whose behaviour can be
/// switched while it runs. Dropping it stops it and closes every connection.
#[derive(Debug)]
pub(crate) struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    pub(crate) stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding to `upstream` on a port chosen by the OS.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Pass);
        let stats = Arc::new(ProxyStats::default());
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            upstream,
            rx,
            Arc::clone(&stats),
        ));
        Self {
            addr,
            mode,
            stats,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`: the endpoint to give simgate.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connection tasks end when the mode channel closes (the sender
        // is dropped right after this).
        self.task.abort();
    }
}

/// A listening socket with SO_REUSEADDR, so the same port can be bound
/// again right after it was closed (its accepted connections may linger in
/// TIME_WAIT).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    first: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    stats: Arc<ProxyStats>,
) {
    let mut listener = Some(first);
    loop {
        let now = *mode.borrow_and_update();
        if now == Mode::Refuse {
            // Closing the listener makes the kernel answer connects with RST.
            listener = None;
        } else if listener.is_none() {
            listener = Some(rebind(addr, &mode).await);
        }
        match &listener {
            Some(l) => tokio::select! {
                accepted = l.accept() => {
                    if let Ok((client, _)) = accepted {
                        tokio::spawn(connection(client, upstream, mode.clone(), Arc::clone(&stats)));
                    }
                }
                changed = mode.changed() => if changed.is_err() { return },
            },
            None => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Binds the proxy's port again. Another socket may hold it for a moment
/// (a connection that the kernel paired with itself while nothing listened,
/// kept until the client gives up), so keep trying.
async fn rebind(addr: SocketAddr, mode: &watch::Receiver<Mode>) -> TcpListener {
    let started = Instant::now();
    loop {
        match listen(addr) {
            Ok(l) => return l,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "fault proxy cannot bind {addr} again: {e}"
                );
                assert!(
                    mode.has_changed().is_ok(),
                    "fault proxy stopped while rebinding"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until the mode is no longer `mode` (or the proxy is gone).
async fn until_not(rx: &mut watch::Receiver<Mode>, mode: Mode) {
    loop {
        if *rx.borrow_and_update() != mode {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    stats: Arc<ProxyStats>,
) {
    let at_accept = *mode.borrow_and_update();
    // Kept open (not forwarded to) while hung, so the sink sees no EOF.
    let mut _upstream = None;
    match at_accept {
        Mode::Refuse => return,
        Mode::Pass => {
            let Ok(Ok(mut up)) =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await
            else {
                return;
            };
            stats.passed.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut up) => return,
                () = until_not(&mut mode, Mode::Pass) => {}
            }
            // Whatever was in flight is cut off here: a request the sink
            // accepted may never be answered.
            if *mode.borrow() != Mode::Hang {
                stats.cut.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _upstream = Some(up);
        }
        Mode::Hang => {}
    }
    stats.hung.fetch_add(1, Ordering::Relaxed);
    // Read and discard (never answer) until the client gives up or the
    // outage ends; then close.
    let mut sink = [0u8; 4096];
    tokio::select! {
        () = async { while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {} } => {}
        () = until_not(&mut mode, Mode::Hang) => {}
    }
}

// ---------------------------------------------------------------------------
// Devices and what they were told

/// A record's payload: its unique id, the SIM and the protocol.
pub(crate) fn payload(id: u64, sim: u32, via: &str) -> String {
    format!(r#"{{"id":{id},"sim":{sim},"via":"{via}"}}"#)
}

/// What a device got back for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// UDP/TCP `200`, HTTP 2xx: the gateway promised delivery.
    Acked,
    /// Another answer (a refusal such as 429): no promise.
    Refused(String),
    /// No answer (timeout, connection refused or reset): no promise.
    Silent(&'static str),
}

/// Sends one datagram from `src` on a fresh connected socket (so an ICMP
/// port-unreachable shows up at once as `refused`, and a late answer to an
/// earlier datagram cannot be mistaken for this one's).
pub(crate) async fn udp_send(src: IpAddr, to: SocketAddr, data: &[u8], wait: Duration) -> Answer {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    sock.connect(to).await.unwrap();
    if sock.send(data).await.is_err() {
        return Answer::Silent("send");
    }
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) if &buf[..n] == b"200" => Answer::Acked,
        Ok(Ok(n)) => Answer::Refused(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Answer::Silent("refused")
        }
        Ok(Err(_)) => Answer::Silent("recv_error"),
        Err(_) => Answer::Silent("timeout"),
    }
}

/// A device on one TCP connection that it re-opens after any failure.
#[derive(Debug)]
pub(crate) struct TcpDevice {
    src: IpAddr,
    to: SocketAddr,
    stream: Option<TcpStream>,
}

impl TcpDevice {
    pub(crate) fn new(src: IpAddr, to: SocketAddr) -> Self {
        Self {
            src,
            to,
            stream: None,
        }
    }

    /// Writes one message and reads its answer (`200` when accepted).
    pub(crate) async fn send(&mut self, data: &[u8], wait: Duration) -> Answer {
        if self.stream.is_none() {
            let sock = TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(self.src, 0)).unwrap();
            match tokio::time::timeout(wait, sock.connect(self.to)).await {
                Ok(Ok(s)) => self.stream = Some(s),
                Ok(Err(_)) => return Answer::Silent("connect"),
                Err(_) => return Answer::Silent("connect_timeout"),
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Answer::Silent("connect");
        };
        let answer = async {
            stream.write_all(data).await?;
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        };
        let answer = match tokio::time::timeout(wait, answer).await {
            Ok(Ok(reply)) if reply == b"200" => return Answer::Acked,
            Ok(Ok(reply)) if reply.is_empty() => Answer::Silent("closed"),
            Ok(Ok(reply)) => Answer::Refused(String::from_utf8_lossy(&reply).into_owned()),
            Ok(Err(_)) => Answer::Silent("io_error"),
            Err(_) => Answer::Silent("timeout"),
        };
        // After anything but `200` the connection's state is unknown.
        self.stream = None;
        answer
    }
}

/// One Funnel POST over a fresh HTTP/1.1 connection from `src`.
pub(crate) async fn http_post(src: IpAddr, to: SocketAddr, body: &[u8], wait: Duration) -> Answer {
    let exchange = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        let mut stream = sock.connect(to).await?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: funnel.localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = match tokio::time::timeout(wait, exchange).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(_)) => return Answer::Silent("io_error"),
        Err(_) => return Answer::Silent("timeout"),
    };
    let head = String::from_utf8_lossy(&raw);
    let status = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if (200..300).contains(&s) => Answer::Acked,
        Some(s) => Answer::Refused(format!("HTTP {s}")),
        None => Answer::Silent("bad_response"),
    }
}

/// Which ids were sent and which were acknowledged, by whom and when.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    next: AtomicU64,
    /// The test's current phase (outage phase, server incarnation), kept
    /// with each acknowledged id to explain a loss.
    phase: AtomicU32,
    inner: Mutex<TrackerInner>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    /// id → (protocol, phase when acknowledged).
    acked: HashMap<u64, (&'static str, u32)>,
    /// "protocol: why" → count, for records without a promise.
    unacked: BTreeMap<String, u64>,
}

impl Tracker {
    pub(crate) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn set_phase(&self, phase: u32) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Keeps the outcome of record `id` sent over `via`.
    pub(crate) fn record(&self, id: u64, via: &'static str, answer: &Answer) {
        let phase = self.phase.load(Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap();
        match answer {
            Answer::Acked => {
                inner.acked.insert(id, (via, phase));
            }
            Answer::Refused(why) => *inner.unacked.entry(format!("{via}: {why}")).or_default() += 1,
            Answer::Silent(why) => *inner.unacked.entry(format!("{via}: {why}")).or_default() += 1,
        }
    }

    pub(crate) fn acked_count(&self) -> usize {
        self.inner.lock().unwrap().acked.len()
    }

    /// Acknowledged ids per phase.
    pub(crate) fn acked_by_phase(&self) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for (_, phase) in self.inner.lock().unwrap().acked.values() {
            *out.entry(*phase).or_default() += 1;
        }
        out
    }

    pub(crate) fn acked(&self) -> HashMap<u64, (&'static str, u32)> {
        self.inner.lock().unwrap().acked.clone()
    }

    /// One line: sent, acknowledged by protocol, not acknowledged by reason.
    pub(crate) fn summary(&self) -> String {
        let inner = self.inner.lock().unwrap();
        let mut by_proto: BTreeMap<&str, usize> = BTreeMap::new();
        for (via, _) in inner.acked.values() {
            *by_proto.entry(via).or_default() += 1;
        }
        format!(
            "sent {}, acknowledged {} {:?}, not acknowledged {:?}",
            self.next.load(Ordering::Relaxed),
            inner.acked.len(),
            by_proto,
            inner.unacked
        )
    }
}

// ---------------------------------------------------------------------------
// The sink: a kinesalite stream read back incrementally

/// A kinesalite stream and every record id read from it so far.
#[derive(Debug)]
pub(crate) struct SinkStream {
    admin: KinesisAdmin,
    name: String,
    /// (shard, next iterator); empty until the first read.
    shards: Vec<(String, Option<String>)>,
    /// Payload id → times found in the stream.
    pub(crate) seen: HashMap<u64, u32>,
    /// Records read in total (duplicates included).
    pub(crate) records: usize,
}

/// The comparison of what was acknowledged with what the sink holds.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) acked: usize,
    /// Acknowledged ids not in the sink, sorted.
    pub(crate) missing: Vec<u64>,
    /// Extra copies in the sink (a record found n times counts n − 1).
    pub(crate) duplicates: usize,
    /// Ids in the sink that were never acknowledged (sent, no answer seen).
    pub(crate) unacked_delivered: usize,
    pub(crate) records: usize,
    pub(crate) waited: Duration,
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged, {} missing, {} duplicate copies, {} delivered without an acknowledgement, \
             {} records in the stream (waited {:.1} s after the load)",
            self.acked,
            self.missing.len(),
            self.duplicates,
            self.unacked_delivered,
            self.records,
            self.waited.as_secs_f64()
        )
    }
}

impl SinkStream {
    /// Creates stream `name` with `shards` shards in `kinesalite`.
    pub(crate) async fn create(kinesalite: &Kinesalite, name: &str, shards: u32) -> Self {
        // Talks to kinesalite directly, never through the fault proxy.
        let admin = KinesisAdmin::new(
            &kinesalite.endpoint(),
            Kinesalite::REGION.to_owned(),
            Kinesalite::credentials(),
            Duration::from_secs(10),
        )
        .unwrap();
        admin.create_stream(name, shards).await.unwrap();
        admin.wait_active(name).await.unwrap();
        Self {
            admin,
            name: name.to_owned(),
            shards: Vec::new(),
            seen: HashMap::new(),
            records: 0,
        }
    }

    /// Reads what arrived since the last call. A failed read (an expired
    /// iterator, say) starts over from the beginning on the next call.
    pub(crate) async fn poll(&mut self) {
        if let Err(e) = self.try_poll().await {
            eprintln!("reading stream {} failed ({e}); starting over", self.name);
            self.shards.clear();
            self.seen.clear();
            self.records = 0;
        }
    }

    async fn try_poll(&mut self) -> Result<(), simgate::sinks::kinesis::admin::AdminError> {
        if self.shards.is_empty() {
            for shard in self.admin.list_shards(&self.name).await? {
                let it = self
                    .admin
                    .get_shard_iterator(&self.name, &shard, "TRIM_HORIZON")
                    .await?;
                self.shards.push((shard, Some(it)));
            }
        }
        for i in 0..self.shards.len() {
            while let Some(it) = self.shards[i].1.clone() {
                let (records, next, behind) = self.admin.get_records(&it, 10_000).await?;
                let caught_up = records.is_empty() && behind == 0;
                for (_, data) in &records {
                    let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_else(|e| {
                        panic!("not an envelope ({e}): {}", String::from_utf8_lossy(data))
                    });
                    let id = v["payloads"]["id"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("record without a payload id: {v}"));
                    *self.seen.entry(id).or_default() += 1;
                    self.records += 1;
                }
                // An open shard always hands out a next iterator; keep it
                // for the next call once caught up.
                self.shards[i].1 = next;
                if caught_up {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Polls until every id of `acked` is in the stream or `within` has
    /// passed, and compares.
    pub(crate) async fn wait_for(
        &mut self,
        acked: &HashMap<u64, (&'static str, u32)>,
        within: Duration,
    ) -> Delivery {
        let started = Instant::now();
        loop {
            self.poll().await;
            let all = acked.keys().all(|id| self.seen.contains_key(id));
            if all || started.elapsed() > within {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut missing: Vec<u64> = acked
            .keys()
            .filter(|id| !self.seen.contains_key(id))
            .copied()
            .collect();
        missing.sort_unstable();
        Delivery {
            acked: acked.len(),
            missing,
            duplicates: self.seen.values().map(|&n| n as usize - 1).sum(),
            unacked_delivered: self
                .seen
                .keys()
                .filter(|id| !acked.contains_key(id))
                .count(),
            records: self.records,
            waited: started.elapsed(),
        }
    }
}

/// Missing ids grouped by (protocol, phase), with a few examples.
pub(crate) fn explain_missing(
    missing: &[u64],
    acked: &HashMap<u64, (&'static str, u32)>,
) -> String {
    let mut groups: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    for id in missing {
        if let Some((via, phase)) = acked.get(id) {
            *groups.entry((via, *phase)).or_default() += 1;
        }
    }
    let first: Vec<u64> = missing.iter().take(20).copied().collect();
    format!("by (protocol, phase): {groups:?}; first ids: {first:?}")
}

// ---------------------------------------------------------------------------
// Metrics

/// The sum of the Prometheus sample lines of `name` (exactly, labels
/// aside) that contain every one of `parts`.
pub(crate) fn metric_sum(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The non-zero sample lines that count records Funnel gave up on: records
/// out with any result but `delivered` (`failed`, `dead_lettered`), and
/// dead letters.
pub(crate) fn given_up(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            (l.starts_with("simgate_funnel_records_out") && !l.contains("result=\"delivered\""))
                || l.starts_with("simgate_funnel_dead_letters")
        })
        .filter(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v != 0.0)
        })
        .collect()
}

/// The Funnel, spool and drop lines of a Prometheus text, for a report.
pub(crate) fn funnel_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("simgate_funnel_records")
                    || l.starts_with("simgate_funnel_retries")
                    || l.starts_with("simgate_funnel_batches_total")
                    || l.starts_with("simgate_funnel_dropped")
                    || l.starts_with("simgate_funnel_dead")
                    || l.starts_with("simgate_funnel_queue")
                    || l.starts_with("simgate_spool"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fetches `/metrics` from the API listener at `api` with `token`.
pub(crate) async fn scrape(api: SocketAddr, token: &str) -> String {
    let auth = format!("Bearer {token}");
    let (status, _, body) = crate::common::http_request(
        IpAddr::from([127, 0, 0, 1]),
        api,
        "GET",
        "localhost",
        "/metrics",
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "/metrics: {text}");
    text
}
