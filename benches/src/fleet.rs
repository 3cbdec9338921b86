//! `loadgen fleet`: the fleet benchmark's pieces (`scripts/bench.sh fleet`).
//!
//! * `config` — simgate.toml for N nodes sharing one etcd prefix (or, with
//!   no `--etcd`, one stand-alone node on redb): the API and RADIUS on free
//!   loopback ports, RADIUS open to any loopback client with one secret,
//!   and `--sims` subscribers in the first node's file only (it seeds the
//!   fleet; the others load everything from etcd).
//! * `writes` — closed-loop API writes (`PUT /v1/subscribers/{imsi}/tags`)
//!   over keep-alive connections spread across the nodes' APIs, each write
//!   on a SIM no other connection is writing at the time; 2xx counted,
//!   latency, and the nodes' `writeRetries` (from `/health`) over the window.
//! * `radius` — Accounting-Request Starts, each for a new address and SIM,
//!   closed loop from many UDP sockets spread across the nodes' RADIUS
//!   ports; Accounting-Responses counted, then the time until every node's
//!   session table (`/health` `sessions`) holds every session answered.
//! * `propagation` — one tag write on node A, then node C's API polled
//!   until it shows the new value; sequential samples.
//!
//! Each measuring mode prints one JSON line (see `report`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use hdrhistogram::Histogram;
use simgate_control::radius::codec::{
    encode_accounting_request, verify_accounting_response, AccountingAttributes, AcctStatusType,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};

use crate::conn::{self, Tally, REQUEST_TIMEOUT};
use crate::report::{self, JsonLine, Phase};
use crate::sims;

/// IMSI of SIM `i`: test network 001-01, ten digits of MSIN, so a million
/// SIMs fit (`sims::imsi`'s five stop at 99,999; the first 99,999 are the same).
fn imsi(i: usize) -> String {
    format!("00101{:010}", i + 1)
}

/// The group every benchmark SIM is in.
const GROUP: &str = "fleet";
/// How long a RADIUS request waits for its response before it is a timeout.
const RADIUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two reads of a node while waiting for a change to show.
const POLL_PAUSE: Duration = Duration::from_millis(1);

#[derive(Debug, clap::Args)]
pub(crate) struct FleetArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Write simgate.toml for each node (DIR/node-N/) and print their ports.
    Config(ConfigArgs),
    /// Closed-loop API writes spread across the nodes.
    Writes(WritesArgs),
    /// RADIUS Accounting Starts spread across the nodes, then the time until
    /// every node has bound them all.
    Radius(RadiusArgs),
    /// Write on one node, time until another node's API shows it.
    Propagation(PropagationArgs),
}

pub(crate) fn run(a: &FleetArgs) -> anyhow::Result<()> {
    match &a.mode {
        Mode::Config(a) => run_config(a),
        Mode::Writes(a) => report::runtime(a.threads)?.block_on(writes(a)),
        Mode::Radius(a) => report::runtime(a.threads)?.block_on(radius(a)),
        Mode::Propagation(a) => report::runtime(1)?.block_on(propagation(a)),
    }
}

// ------------------------------------------------------------------ config

#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// Each node's files go in DIR/node-N (config, data directory, logs).
    #[arg(long)]
    dir: PathBuf,
    /// Nodes of the fleet (1 without --etcd).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// etcd client endpoints, comma-separated; none: a single node on redb.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// `[cluster] prefix`.
    #[arg(long, default_value = "/simgate-bench")]
    prefix: String,
    /// Subscribers (IMSIs 001010000000001 …), in the first node's file.
    #[arg(long, default_value_t = 100_000)]
    sims: usize,
    /// `[radius] default_secret`.
    #[arg(long, default_value = "fleet-bench")]
    secret: String,
}

/// One node's files and listeners.
struct NodeConfig {
    name: String,
    dir: PathBuf,
    api: SocketAddr,
    radius: SocketAddr,
}

fn run_config(a: &ConfigArgs) -> anyhow::Result<()> {
    ensure!((1..=16).contains(&a.nodes), "--nodes must be 1..=16");
    ensure!(
        a.nodes == 1 || !a.etcd.is_empty(),
        "more than one node needs --etcd"
    );
    ensure!(a.sims <= 1_000_000, "--sims must be at most 1000000");
    let ports = free_ports(a.nodes)?;
    for (i, (api, radius)) in ports.into_iter().enumerate() {
        let node = NodeConfig {
            name: format!("n{}", i + 1),
            dir: a.dir.join(format!("node-{}", i + 1)),
            api,
            radius,
        };
        // Only the first node seeds the fleet; the others' subscribers
        // would be ignored anyway (the fleet is seeded once).
        let sims = if i == 0 || a.etcd.is_empty() {
            a.sims
        } else {
            0
        };
        let text = render(a, &node, sims)?;
        sims::write_in(&node.dir, "simgate.toml", &text)?;
        println!(
            "node={} dir={} api={} radius={}",
            node.name,
            node.dir.display(),
            node.api,
            node.radius
        );
    }
    Ok(())
}

fn render(a: &ConfigArgs, node: &NodeConfig, sims: usize) -> anyhow::Result<String> {
    let mut t = String::new();
    writeln!(
        t,
        "# Generated by `loadgen fleet config` (scripts/bench.sh fleet)."
    )?;
    writeln!(t, "data_dir = {}", sims::toml_path(&node.dir.join("data"))?)?;
    writeln!(t, "\n[listen]\napi = \"{}\"", node.api)?;
    // What the bench does not use: any free port, so nodes never collide.
    for key in [
        "http",
        "unified",
        "harvest",
        "beam_http",
        "beam_website",
        "beam_tcp",
        "beam_mqtt",
    ] {
        writeln!(t, "{key} = \"127.0.0.1:0\"")?;
    }
    ensure!(
        !a.secret.is_empty()
            && a.secret
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\'),
        "--secret must be printable ASCII without quotes or backslashes"
    );
    writeln!(
        t,
        "\n[radius]\nlisten = \"{}\"\ndefault_secret = \"{}\"",
        node.radius, a.secret
    )?;
    if !a.etcd.is_empty() {
        let endpoints: Vec<String> = a.etcd.iter().map(|e| format!("{e:?}")).collect();
        writeln!(
            t,
            "\n[cluster]\netcd = [{}]\nprefix = {:?}\nnode = {:?}",
            endpoints.join(", "),
            a.prefix,
            node.name
        )?;
    }
    writeln!(
        t,
        "\n[[operators]]\nid = \"OP0000000001\"\nname = \"bench\"\n\n[[groups]]\nid = \"{GROUP}\"\nname = \"fleet benchmark\""
    )?;
    for i in 0..sims {
        writeln!(
            t,
            "\n[[subscribers]]\nimsi = \"{}\"\ngroup_id = \"{GROUP}\"",
            imsi(i)
        )?;
    }
    Ok(t)
}

/// Per node, a loopback TCP port (API) and a UDP port (RADIUS), all
/// distinct and free right now (held until all are found).
fn free_ports(nodes: usize) -> anyhow::Result<Vec<(SocketAddr, SocketAddr)>> {
    let mut held_tcp = Vec::new();
    let mut held_udp = Vec::new();
    let mut out = Vec::new();
    for _ in 0..nodes {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let udp = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        out.push((tcp.local_addr()?, udp.local_addr()?));
        held_tcp.push(tcp);
        held_udp.push(udp);
    }
    Ok(out)
}

// ------------------------------------------------------------------ HTTP

/// The API token the first node wrote (`{data_dir}/api.token`).
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    ensure!(!token.is_empty(), "{} is empty", path.display());
    Ok(token)
}

fn tags_request(api: SocketAddr, token: &str, sim: &str, value: &str) -> Vec<u8> {
    let body = format!(r#"[{{"tagName":"bench","tagValue":"{value}"}}]"#);
    format!(
        "PUT /v1/subscribers/{sim}/tags HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get_request(api: SocketAddr, token: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\n\r\n")
        .into_bytes()
}

async fn connect(api: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(api).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request on a keep-alive connection: status and body.
async fn exchange(
    s: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<(u16, Vec<u8>, bool)> {
    s.write_all(request).await?;
    loop {
        if let Some(p) = crate::http::parse_response(buf)? {
            let head_end = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(p.len, |i| i + 4);
            let body = buf[head_end..p.len].to_vec();
            buf.drain(..p.len);
            return Ok((p.status, body, p.close));
        }
        ensure!(buf.len() < 4 << 20, "response too long");
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed mid-response");
        }
    }
}

/// A node's `/health`, parsed.
fn health(api: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let body = crate::scrape::get(&format!("http://{api}/health"))?;
    serde_json::from_str(&body).with_context(|| format!("{api}/health is not JSON"))
}

fn health_u64(v: &serde_json::Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

fn health_i64(v: &serde_json::Value, pointer: &str) -> i64 {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ writes

/// `total += t` (`conn::Tally`'s own sum is private to `conn`).
fn add_tally(total: &mut Tally, t: &Tally) -> anyhow::Result<()> {
    total.latency_us.add(&t.latency_us)?;
    total.ok += t.ok;
    total.bad += t.bad;
    total.io_errors += t.io_errors;
    total.timeouts += t.timeouts;
    total.connects += t.connects;
    total.connect_errors += t.connect_errors;
    Ok(())
}

/// Non-2xx answers by status: how many, and the first one's body.
type Refusals = std::collections::BTreeMap<u16, (u64, String)>;

#[derive(Debug, clap::Args)]
pub(crate) struct WritesArgs {
    /// The nodes' API addresses, comma-separated; connection i goes to
    /// node i mod N.
    #[arg(long, value_delimiter = ',', required = true)]
    api: Vec<SocketAddr>,
    /// The API token (the first node's `{data_dir}/api.token`).
    #[arg(long)]
    token_file: PathBuf,
    /// Concurrent keep-alive connections, one write outstanding on each.
    #[arg(long, default_value_t = 24)]
    connections: usize,
    /// SIMs to write to (IMSIs 001010000000001 …; at least --connections).
    #[arg(long, default_value_t = 100_000)]
    sims: usize,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A `label` field in the JSON line.
    #[arg(long, default_value = "fleet")]
    label: String,
    /// NAME=PID: also report this process's CPU time (repeatable).
    #[arg(long = "cpu", value_parser = report::parse_cpu)]
    cpu: Vec<(String, u32)>,
}

async fn writes(a: &WritesArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=4096).contains(&a.connections) && a.sims >= a.connections,
        "--connections must be 1..=4096 and at most --sims"
    );
    report::check_window(a.warmup, a.duration)?;
    let token: Arc<str> = read_token(&a.token_file)?.into();
    let before: Vec<serde_json::Value> =
        a.api.iter().map(|&n| health(n)).collect::<Result<_, _>>()?;
    let phase = Arc::new(Phase::default());
    let mut tasks = Vec::with_capacity(a.connections);
    for c in 0..a.connections {
        tasks.push(tokio::spawn(writer(
            a.api[c % a.api.len()],
            Arc::clone(&token),
            c,
            a.connections,
            a.sims,
            Arc::clone(&phase),
        )));
    }
    let w = report::measure(&phase, &a.cpu, a.warmup, a.duration, report::sleep_secs).await?;
    let mut total = Tally::new()?;
    let mut refused = Refusals::new();
    report::join_all(
        tasks,
        REQUEST_TIMEOUT + Duration::from_secs(5),
        "connection",
        |(t, r): (Tally, Refusals)| {
            add_tally(&mut total, &t)?;
            for (status, (n, body)) in r {
                refused.entry(status).or_insert((0, body)).0 += n;
            }
            Ok(())
        },
    )
    .await?;
    // What the non-2xx answers were, for the log (not the JSON line).
    for (status, (n, body)) in &refused {
        eprintln!("{}: {n} x {status}, e.g. {body}", a.label);
    }
    let after: Vec<serde_json::Value> =
        a.api.iter().map(|&n| health(n)).collect::<Result<_, _>>()?;
    let retries: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| {
            health_u64(a, "/store/writeRetries")
                .saturating_sub(health_u64(b, "/store/writeRetries"))
        })
        .sum();
    let lag = after
        .iter()
        .map(|h| health_i64(h, "/store/revisionLag"))
        .max()
        .unwrap_or(0);
    let mut j = JsonLine::default();
    j.string("mode", "fleet-writes")
        .string("label", &a.label)
        .raw("nodes", a.api.len())
        .raw("connections", a.connections)
        .raw("window_s", format!("{:.3}", w.secs));
    total.fields(&mut j, "non_2xx", w.secs);
    let codes: Vec<String> = refused
        .iter()
        .map(|(s, (n, _))| format!("{s}x{n}"))
        .collect();
    j.string("non_2xx_statuses", &codes.join(" "))
        .raw("write_retries", retries)
        .raw("revision_lag_after", lag)
        .cpu(&w.cpu, &w.cpu_after, total.ok);
    println!("{}", j.finish());
    Ok(())
}

/// One connection: tag writes on SIMs `c`, `c + stride`, … (no other
/// connection writes the same SIM at the same time), closed loop.
async fn writer(
    api: SocketAddr,
    token: Arc<str>,
    c: usize,
    stride: usize,
    sims: usize,
    phase: Arc<Phase>,
) -> anyhow::Result<(Tally, Refusals)> {
    let mut tally = Tally::new()?;
    let mut refused = Refusals::new();
    let mut buf = Vec::with_capacity(4096);
    let mut stream: Option<TcpStream> = None;
    let mut k: usize = 0;
    while !phase.stop.load(Ordering::Relaxed) {
        let measuring = phase.measuring.load(Ordering::Relaxed);
        let dial = || {
            buf.clear();
            connect(api)
        };
        let Some(s) = conn::connected(&mut stream, &mut tally, measuring, dial).await else {
            continue;
        };
        let sim = imsi((c + k * stride) % sims);
        k += 1;
        let request = tags_request(api, &token, &sim, &format!("{c}-{k}"));
        let t0 = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, &request, &mut buf)).await;
        let measuring = phase.measuring.load(Ordering::Relaxed);
        match result {
            Ok(Ok((status, body, close))) => {
                if measuring {
                    if (200..300).contains(&status) {
                        tally.ok += 1;
                        report::record_since(&mut tally.latency_us, t0);
                    } else {
                        tally.bad += 1;
                        refused
                            .entry(status)
                            .or_insert_with(|| (0, String::from_utf8_lossy(&body).into_owned()))
                            .0 += 1;
                    }
                }
                if close {
                    stream = None;
                }
            }
            Ok(Err(_)) => {
                if measuring {
                    tally.io_errors += 1;
                }
                stream = None;
            }
            Err(_) => {
                if measuring {
                    tally.timeouts += 1;
                }
                stream = None;
            }
        }
    }
    Ok((tally, refused))
}

// ------------------------------------------------------------------ radius

#[derive(Debug, clap::Args)]
pub(crate) struct RadiusArgs {
    /// The nodes' RADIUS addresses, comma-separated; client i sends to
    /// node i mod N.
    #[arg(long, value_delimiter = ',', required = true)]
    radius: Vec<SocketAddr>,
    /// The nodes' API addresses (their `/health` counts sessions).
    #[arg(long, value_delimiter = ',', required = true)]
    api: Vec<SocketAddr>,
    /// `[radius] default_secret` of the nodes.
    #[arg(long, default_value = "fleet-bench")]
    secret: String,
    /// UDP sockets, one request outstanding on each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// IMSIs cycle through this many SIMs.
    #[arg(long, default_value_t = 100_000)]
    sims: usize,
    /// Framed-IP-Address of the first session; request k is for base + k.
    #[arg(long, default_value_t = Ipv4Addr::new(10, 64, 0, 0))]
    framed_base: Ipv4Addr,
    /// Length of the load in seconds (all of it measured: every session
    /// answered must then show on every node).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Give up waiting for the sessions to show after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    bind_timeout: f64,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long = "cpu", value_parser = report::parse_cpu)]
    cpu: Vec<(String, u32)>,
}

struct RadiusTally {
    latency_us: Histogram<u64>,
    answered: u64,
    timeouts: u64,
    bad: u64,
}

async fn radius(a: &RadiusArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=4096).contains(&a.clients) && a.sims > 0,
        "--clients must be 1..=4096, --sims more than 0"
    );
    ensure!(!a.secret.is_empty(), "--secret must not be empty");
    report::check_window(0.0, a.duration)?;
    let before: Vec<u64> = a
        .api
        .iter()
        .map(|&n| health(n).map(|h| health_u64(&h, "/sessions")))
        .collect::<Result<_, _>>()?;
    let phase = Arc::new(Phase::default());
    let next = Arc::new(AtomicU64::new(0));
    let secret: Arc<[u8]> = a.secret.as_bytes().into();
    let mut tasks = Vec::with_capacity(a.clients);
    for c in 0..a.clients {
        tasks.push(tokio::spawn(radius_client(
            a.radius[c % a.radius.len()],
            Arc::clone(&secret),
            a.framed_base,
            a.sims,
            Arc::clone(&next),
            Arc::clone(&phase),
        )));
    }
    let w = report::measure(&phase, &a.cpu, 0.0, a.duration, report::sleep_secs).await?;
    let mut latency_us = report::latency_histogram()?;
    let (mut answered, mut timeouts, mut bad) = (0, 0, 0);
    report::join_all(
        tasks,
        RADIUS_TIMEOUT + Duration::from_secs(5),
        "RADIUS client",
        |t: RadiusTally| {
            latency_us.add(&t.latency_us)?;
            answered += t.answered;
            timeouts += t.timeouts;
            bad += t.bad;
            Ok(())
        },
    )
    .await?;
    // Every task has its last answer: from here, how long until each node
    // holds every session (sessions answered by any node, bound by all).
    let load_end = Instant::now();
    let want: Vec<u64> = before.iter().map(|b| b + answered).collect();
    let mut bound_ms = vec![None; a.api.len()];
    let limit = Duration::from_secs_f64(a.bind_timeout);
    let mut seen = before.clone();
    while bound_ms.iter().any(Option::is_none) && load_end.elapsed() < limit {
        for (i, &node) in a.api.iter().enumerate() {
            if bound_ms[i].is_some() {
                continue;
            }
            seen[i] = health(node).map(|h| health_u64(&h, "/sessions"))?;
            if seen[i] >= want[i] {
                bound_ms[i] = Some(load_end.elapsed().as_secs_f64() * 1e3);
            }
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    let all_bound = bound_ms.iter().all(Option::is_some);
    let max_bound = bound_ms.iter().flatten().fold(0.0_f64, |m, &v| m.max(v));
    let sent = next.load(Ordering::Relaxed);
    let mut j = JsonLine::default();
    j.string("mode", "fleet-radius")
        .raw("nodes", a.api.len())
        .raw("clients", a.clients)
        .raw("window_s", format!("{:.3}", w.secs))
        .raw("sent", sent)
        .raw("answered", answered)
        .raw("timeouts", timeouts)
        .raw("bad", bad)
        .raw("updates_per_s", format!("{:.0}", answered as f64 / w.secs))
        .latencies(&latency_us)
        .raw("all_bound", all_bound)
        .raw(
            "bound_everywhere_ms",
            if all_bound {
                format!("{max_bound:.1}")
            } else {
                "null".to_owned()
            },
        );
    for (i, ms) in bound_ms.iter().enumerate() {
        j.raw(
            &format!("bound_n{}_ms", i + 1),
            ms.map_or_else(|| "null".to_owned(), |v| format!("{v:.1}")),
        );
        j.raw(&format!("sessions_n{}", i + 1), seen[i]);
    }
    j.cpu(&w.cpu, &w.cpu_after, answered);
    println!("{}", j.finish());
    Ok(())
}

/// One UDP socket: an Accounting Start for a new address at a time.
async fn radius_client(
    node: SocketAddr,
    secret: Arc<[u8]>,
    base: Ipv4Addr,
    sims: usize,
    next: Arc<AtomicU64>,
    phase: Arc<Phase>,
) -> anyhow::Result<RadiusTally> {
    let mut t = RadiusTally {
        latency_us: report::latency_histogram()?,
        answered: 0,
        timeouts: 0,
        bad: 0,
    };
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    sock.connect(node).await?;
    let mut id: u8 = 0;
    let mut buf = vec![0u8; 4096];
    while !phase.stop.load(Ordering::Relaxed) {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let framed = u32::from(base)
            .checked_add(u32::try_from(k)?)
            .map(Ipv4Addr::from)
            .context("framed addresses overflow")?;
        let sim = imsi(usize::try_from(k)? % sims);
        let session_id = format!("bench-{k}");
        let attrs = AccountingAttributes {
            status_type: Some(AcctStatusType::Start),
            framed_ip: Some(framed),
            nas_ip: Some(Ipv4Addr::LOCALHOST),
            calling_station_id: None,
            acct_session_id: Some(session_id.as_bytes()),
            imsi: Some(sim.as_bytes()),
            imeisv: None,
        };
        id = id.wrapping_add(1);
        let packet = encode_accounting_request(id, &attrs, &secret)
            .map_err(|e| anyhow::anyhow!("encoding a request: {e}"))?;
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&packet[4..20]);
        let t0 = Instant::now();
        sock.send(&packet).await?;
        let deadline = tokio::time::Instant::now() + RADIUS_TIMEOUT;
        // A late answer to an earlier request (after its timeout) is skipped.
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => match verify_accounting_response(&buf[..n], &authenticator, &secret) {
                    Ok(got) if got == id => {
                        t.answered += 1;
                        report::record_since(&mut t.latency_us, t0);
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        t.bad += 1;
                        break;
                    }
                },
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    t.timeouts += 1;
                    break;
                }
            }
        }
    }
    Ok(t)
}

// ------------------------------------------------------------------ propagation

#[derive(Debug, clap::Args)]
pub(crate) struct PropagationArgs {
    /// Node A's API: where each write goes.
    #[arg(long)]
    write: SocketAddr,
    /// Node C's API: polled until it shows the write.
    #[arg(long)]
    read: SocketAddr,
    #[arg(long)]
    token_file: PathBuf,
    /// Sequential samples (each a write on a SIM of its own).
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// SIMs to write to (sample i writes SIM i mod this).
    #[arg(long, default_value_t = 100_000)]
    sims: usize,
    /// Give up on one sample after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

async fn propagation(a: &PropagationArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=100_000).contains(&a.samples) && a.sims > 0,
        "--samples must be 1..=100000, --sims more than 0"
    );
    ensure!(
        a.timeout > 0.0 && a.timeout <= 3600.0,
        "--timeout must be within 0..3600 s"
    );
    let token = read_token(&a.token_file)?;
    let mut w = connect(a.write).await?;
    let mut r = connect(a.read).await?;
    let (mut wbuf, mut rbuf) = (Vec::new(), Vec::new());
    // From sending the write to C showing it, and from A's answer to that.
    let mut from_send = report::latency_histogram()?;
    let mut from_ack = report::latency_histogram()?;
    let mut write_us = report::latency_histogram()?;
    let mut polls: u64 = 0;
    let run = std::process::id();
    let limit = Duration::from_secs_f64(a.timeout);
    for i in 0..a.samples {
        let sim = imsi(i % a.sims);
        let value = format!("p{run}-{i}");
        let needle = format!("\"{value}\"");
        let write = tags_request(a.write, &token, &sim, &value);
        let read = get_request(a.read, &token, &format!("/v1/subscribers/{sim}"));
        let t0 = Instant::now();
        let (status, body, close) = exchange(&mut w, &write, &mut wbuf).await?;
        ensure!(
            (200..300).contains(&status),
            "write on {}: {status} {}",
            a.write,
            String::from_utf8_lossy(&body)
        );
        let acked = Instant::now();
        report::record_since(&mut write_us, t0);
        if close {
            w = connect(a.write).await?;
            wbuf.clear();
        }
        loop {
            let (status, body, close) = exchange(&mut r, &read, &mut rbuf).await?;
            polls += 1;
            if close {
                r = connect(a.read).await?;
                rbuf.clear();
            }
            if status == 200 && find(&body, needle.as_bytes()) {
                report::record_since(&mut from_send, t0);
                report::record_since(&mut from_ack, acked);
                break;
            }
            ensure!(
                t0.elapsed() < limit,
                "sample {i}: {} did not show {sim}'s tag within {limit:?} (last: {status})",
                a.read
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }
    let mut j = JsonLine::default();
    j.string("mode", "fleet-propagation")
        .raw("samples", a.samples)
        .raw("polls", polls)
        .latencies(&from_send);
    for (key, h) in [("ack", &from_ack), ("write", &write_us)] {
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            j.raw(&format!("{key}_{name}_us"), h.value_at_quantile(q));
        }
        j.raw(&format!("{key}_max_us"), h.max());
    }
    println!("{}", j.finish());
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simgate_accepts_the_configs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = ConfigArgs {
            dir: dir.path().to_owned(),
            nodes: 3,
            etcd: vec![
                "http://127.0.97.1:2379".to_owned(),
                "http://127.0.97.2:2379".to_owned(),
            ],
            prefix: "/bench".to_owned(),
            sims: 10,
            secret: "s3cret".to_owned(),
        };
        let ports = free_ports(3)?;
        let node = |i: usize| NodeConfig {
            name: format!("n{}", i + 1),
            dir: dir.path().join(format!("node-{}", i + 1)),
            api: ports[i].0,
            radius: ports[i].1,
        };
        let first = simgate_control::Config::parse(&render(&a, &node(0), 10)?)?;
        assert_eq!(first.subscribers.len(), 10);
        assert_eq!(first.cluster.etcd.len(), 2);
        assert_eq!(first.cluster.prefix, "/bench");
        assert_eq!(first.radius.listen, ports[0].1);
        assert_eq!(first.listen.api, Some(ports[0].0));
        let second = simgate_control::Config::parse(&render(&a, &node(1), 0)?)?;
        assert!(second.subscribers.is_empty());
        assert_eq!(second.cluster.node.as_deref(), Some("n2"));
        let single = ConfigArgs {
            etcd: Vec::new(),
            nodes: 1,
            ..a
        };
        let alone = simgate_control::Config::parse(&render(&single, &node(0), 3)?)?;
        assert!(!alone.cluster.uses_etcd());
        Ok(())
    }

    #[test]
    fn imsis_are_fifteen_digits() {
        assert_eq!(imsi(0), sims::imsi(0));
        assert_eq!(imsi(99_998), sims::imsi(99_998));
        assert_eq!(imsi(99_999), "001010000100000");
        assert_eq!(imsi(999_999).len(), 15);
    }

    #[test]
    fn requests_are_well_formed() {
        let api: SocketAddr = ([127, 0, 0, 1], 7070).into();
        let r =
            String::from_utf8(tags_request(api, "tok", "001010000000001", "7")).unwrap_or_default();
        let (head, body) = r.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("PUT /v1/subscribers/001010000000001/tags HTTP/1.1\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.contains("Authorization: Bearer tok"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v[0]["tagValue"], "7");
    }
}
