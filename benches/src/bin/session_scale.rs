//! `session_scale`: the session table at carrier scale, behind
//! `scripts/bench.sh sessions` (see benches/README.md).
//!
//! 1. Memory: the process's RSS (`VmRSS` in /proc/self/status) before and
//!    after filling a `SessionTable` with `--sessions` (1,000,000) sessions,
//!    then, each in a fresh process (so that no figure reuses memory the
//!    allocator got back from another structure), a `Snapshot` with as many
//!    subscribers and a table filled the way production fills it — one
//!    RADIUS Accounting-Request Start each, through the sans-IO
//!    `AccountingHandler` (whose own bookkeeping is part of that figure).
//! 2. Latency: reader threads look up random addresses of the first table
//!    for `--seconds` each pass, timing batches of `--batch` lookups (the
//!    mean per lookup: independent back-to-back lookups, which the CPU may
//!    partly overlap, as for a batch of received datagrams) and, in between,
//!    single lookups (the latency of one, with its own two clock reads; the
//!    cost of such a pair is measured and printed first).
//!    Passes: no updates; while an updater sends real Accounting-Requests
//!    (Start/Interim/Stop, a third each) over UDP at `--rate` per second to a
//!    real `radius::server::spawn`ed listener on 127.0.0.1, which binds and
//!    unbinds sessions in that same table; and the data plane's whole
//!    identity step (lookup + snapshot resolve) under the same updates.
//!    The updater checks every Accounting-Response it gets back.
//!
//! Prints PASS/FAIL against the targets (table ≤ 256 MiB, lookup
//! p99 < 1 µs), informative; exits non-zero only when the bench itself
//! broke (a request unanswered or refused, a thread failed).

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;
use hdrhistogram::Histogram;
use simgate_control::model::{
    GroupId, HarvestConfig, Imei, Imsi, Msisdn, OperatorId, Secret, SimId, Subscriber,
    SubscriberStatus,
};
use simgate_control::radius::{
    encode_accounting_request, spawn, verify_accounting_response, AccountingAttributes,
    AccountingHandler, AcctStatusType, ClientSecrets, DuplicateCache, RadiusClient, RadiusConfig,
    RadiusStats, RadiusStatsSnapshot,
};
use simgate_control::snapshot::{Map, SnapshotHandle};
use simgate_control::{Group, Session, SessionTable, Snapshot};
use tokio::sync::watch;

const SECRET: &str = "bench-secret";
const MIB: f64 = 1024.0 * 1024.0;
/// The packet gateway the updater pretends to be (NAS-IP-Address).
const NAS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// How many rounds of 256 Identifiers the updater can still check.
const AUTH_GENERATIONS: usize = 4;

#[derive(Debug, Parser)]
#[command(
    name = "session_scale",
    about = "Memory and lookup latency of the session table under RADIUS updates"
)]
struct Args {
    /// Sessions in the table (and subscribers in the snapshot).
    #[arg(long, default_value_t = 1_000_000)]
    sessions: u32,
    /// Length of each latency pass.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// RADIUS Accounting-Requests per second during the update passes.
    #[arg(long, default_value_t = 5_000)]
    rate: u32,
    /// Lookups per timed batch.
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Reader threads (the updater needs a core too: 1 on a 2-core machine).
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Skip the snapshot (its memory figure and the resolve pass).
    #[arg(long)]
    no_snapshot: bool,
    /// Leave threads where the scheduler puts them. By default, when there
    /// are more CPUs than readers, each reader gets a CPU of its own and the
    /// updater and the listener share the rest, so that updates compete
    /// with lookups through the table, not for a core.
    #[arg(long)]
    no_pin: bool,
    /// Internal: measure one structure's memory, print it and exit (the
    /// parent runs each in a fresh process).
    #[arg(long, value_enum, hide = true)]
    measure: Option<Measure>,
    /// Target for the table's RSS, MiB.
    #[arg(long, default_value_t = 256.0)]
    target_mib: f64,
    /// Target for the lookup p99, nanoseconds.
    #[arg(long, default_value_t = 1_000)]
    target_p99_ns: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(what) = a.measure {
        return measure_only(what, a.sessions);
    }
    ensure!(
        (1..=10_000_000).contains(&a.sessions),
        "--sessions must be 1..=10000000"
    );
    ensure!(a.seconds >= 1, "--seconds must be at least 1");
    ensure!(a.rate >= 1, "--rate must be at least 1");
    ensure!((1..=4096).contains(&a.batch), "--batch must be 1..=4096");
    ensure!((1..=64).contains(&a.readers), "--readers must be 1..=64");

    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "session_scale: {} sessions, {} core(s), Linux {}, load average {}, clocksource {}",
        grouped(u64::from(a.sessions)),
        cores,
        read_trimmed("/proc/sys/kernel/osrelease"),
        load_average(),
        read_trimmed("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    );

    // ---- memory
    println!(
        "\n== memory (RSS = VmRSS of this process; addresses 10.0.0.1…, IMSI 00101+10 digits, \
         IMEISV 16 digits, MSISDN 12 digits)"
    );
    let table_mem = measure("session table", a.sessions, || {
        let t = SessionTable::new();
        for i in 0..a.sessions {
            t.bind(ip(i), session(i, 0));
        }
        Ok(Arc::new(t))
    })?;
    let table = table_mem.value;
    print_table_breakdown(a.sessions, cores);
    // The informative figures come from fresh processes: here, memory the
    // allocator got back from one structure would be reused by the next.
    if !a.no_snapshot {
        measure_in_child(Measure::Snapshot, a.sessions)?;
    }
    measure_in_child(Measure::Radius, a.sessions)?;
    let handle = if a.no_snapshot {
        None
    } else {
        Some(SnapshotHandle::new(snapshot(a.sessions)?))
    };

    // ---- latency
    let clock = clock_pair_cost();
    println!(
        "\n== clock: Instant::now() pair (what a single timed lookup also pays), {} samples: \
         min {} ns, p50 {} ns, p99 {} ns",
        grouped(clock.len()),
        clock.min(),
        clock.value_at_quantile(0.5),
        clock.value_at_quantile(0.99),
    );
    let clock_p50 = clock.value_at_quantile(0.5);

    let placement = Placement::new(&a);
    println!("\n== threads: {}", placement.describe());
    let server = Server::start(Arc::clone(&table), placement.updater.clone())?;
    println!(
        "\n== lookup latency: {} reader thread(s) (random addresses of the {}), batches of {} \
         timed as one and divided, single lookups timed in between; updates: a UDP client \
         thread sending Accounting-Requests to the RADIUS listener on {} (its own thread, a \
         tokio current-thread runtime), {}/s, Start/Interim/Stop a third each; {} s per pass",
        a.readers,
        grouped(u64::from(a.sessions)),
        a.batch,
        server.addr,
        grouped(u64::from(a.rate)),
        a.seconds,
    );
    let mut updater = UpdaterState::new(a.sessions);
    let mut broken = Vec::new();
    let idle = run_pass(
        &a,
        &placement,
        "lookup, no updates",
        Op::Lookup,
        &table,
        None,
        None,
        &mut updater,
    )?;
    let loaded = run_pass(
        &a,
        &placement,
        "lookup, RADIUS updates",
        Op::Lookup,
        &table,
        None,
        Some(&server),
        &mut updater,
    )?;
    broken.extend(loaded.problems.iter().cloned());
    let resolved = match &handle {
        Some(h) => {
            let p = run_pass(
                &a,
                &placement,
                "lookup + resolve, RADIUS updates",
                Op::Resolve,
                &table,
                Some(h),
                Some(&server),
                &mut updater,
            )?;
            broken.extend(p.problems.iter().cloned());
            Some(p)
        }
        None => None,
    };
    server.stop()?;

    // ---- summary
    println!(
        "\n== summary, nanoseconds per lookup ({} reader(s) on {} core(s))",
        a.readers, cores
    );
    println!(
        "{:<50} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10}",
        "pass / timing", "p50", "p90", "p99", "p99.9", "max", "updates/s", "preempted"
    );
    let mut passes = vec![&idle, &loaded];
    passes.extend(resolved.as_ref());
    for p in &passes {
        for (how, h) in [("batch mean", &p.batch), ("single (+clock)", &p.single)] {
            println!(
                "{:<50} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10}",
                format!("{}: {how}", p.name),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                p.updates
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |u| format!("{:.0}", u.answered_rate())),
                p.preempted.map_or_else(|| "?".to_owned(), grouped),
            );
        }
    }
    println!(
        "(single timings include one clock pair: p50 {clock_p50} ns; batch means do not, but a \
         batch lasts 64 lookups, so it is {}x likelier to contain a preemption of the reader \
         — the tails of the batch means are mostly that; preempted: involuntary context \
         switches of the reader threads)",
        a.batch
    );

    println!("\n== verdicts (targets from the issue; informative, the exit status ignores them)");
    let mib = table_mem.delta as f64 / MIB;
    verdict(
        mib <= a.target_mib,
        &format!(
            "memory: table of {} sessions RSS +{mib:.1} MiB ({:.0} B/session), target <= {} MiB",
            grouped(u64::from(a.sessions)),
            table_mem.delta as f64 / f64::from(a.sessions),
            a.target_mib
        ),
    );
    let rate = loaded.updates.as_ref().map_or(0.0, Updates::answered_rate);
    for (how, h) in [
        ("batch means", &loaded.batch),
        ("single lookups, clock included", &loaded.single),
    ] {
        let p99 = h.value_at_quantile(0.99);
        verdict(
            p99 < a.target_p99_ns,
            &format!(
                "latency: lookup p99 {p99} ns ({how}) with {rate:.0} RADIUS updates/s, \
                 target < {} ns (reader preempted {} times)",
                a.target_p99_ns,
                loaded.preempted.map_or_else(|| "?".to_owned(), grouped),
            ),
        );
    }
    verdict(
        rate >= 0.95 * f64::from(a.rate),
        &format!(
            "update rate: {rate:.0}/s answered, offered {}/s",
            grouped(u64::from(a.rate))
        ),
    );
    if !broken.is_empty() {
        for b in &broken {
            eprintln!("session_scale: BROKEN: {b}");
        }
        bail!("the bench did not run as intended");
    }
    Ok(())
}

fn verdict(pass: bool, text: &str) {
    println!("{} {text}", if pass { "PASS" } else { "FAIL" });
}

// ---------------------------------------------------------------- data

/// Address of session `i`: 10.0.0.1, 10.0.0.2, …
fn ipv4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i)
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(ipv4(i))
}

/// 00101 + 10 digits; each `generation` is another SIM for address `i`.
fn imsi_text(i: u32, generation: u8) -> String {
    format!(
        "00101{:010}",
        u64::from(generation) * 10_000_000 + u64::from(i)
    )
}

fn imeisv_text(i: u32) -> String {
    format!("35{i:014}")
}

fn msisdn_text(i: u32) -> String {
    format!("8180{i:08}")
}

fn session(i: u32, generation: u8) -> Session {
    // The formats above are valid by construction.
    Session::new(
        Imsi::parse(&imsi_text(i, generation)).expect("IMSI"),
        Some(Imei::parse(&imeisv_text(i)).expect("IMEISV")),
        Some(Msisdn::parse(&msisdn_text(i)).expect("MSISDN")),
    )
}

fn snapshot(n: u32) -> anyhow::Result<Snapshot> {
    let operator = OperatorId::parse("OP0000000001")?;
    let group = GroupId::parse("bench-group")?;
    let mut groups = Map::new();
    groups.insert(
        group.clone(),
        Arc::new(Group {
            id: group.clone(),
            operator_id: Some(operator.clone()),
            name: "bench".into(),
            funnel: None,
            harvest: HarvestConfig::default(),
            beam: Default::default(),
            tags: Default::default(),
            configuration: Default::default(),
        }),
    );
    let mut subscribers = Map::new();
    for i in 0..n {
        let imsi = Imsi::parse(&imsi_text(i, 0))?;
        subscribers.insert(
            imsi.clone(),
            Arc::new(Subscriber {
                imsi,
                imei: Some(Imei::parse(&format!("35{i:013}"))?),
                msisdn: Some(Msisdn::parse(&msisdn_text(i))?),
                sim_id: Some(SimId::parse(&format!("8981{i:015}"))?),
                operator_id: Some(operator.clone()),
                group_id: Some(group.clone()),
                tags: Default::default(),
                status: SubscriberStatus::Active,
                imei_lock: None,
            }),
        );
    }
    Ok(Snapshot {
        version: 1,
        groups,
        subscribers,
        ..Snapshot::default()
    })
}

/// An Accounting-Request as a packet gateway sends it.
fn request(
    identifier: u8,
    status: AcctStatusType,
    i: u32,
    generation: u8,
) -> anyhow::Result<Vec<u8>> {
    let imsi = imsi_text(i, generation);
    let imeisv = imeisv_text(i);
    let msisdn = msisdn_text(i);
    let session_id = format!("{:08x}{i:08x}", u32::from(generation));
    let attributes = AccountingAttributes {
        status_type: Some(status),
        framed_ip: Some(ipv4(i)),
        nas_ip: Some(NAS),
        calling_station_id: Some(msisdn.as_bytes()),
        acct_session_id: Some(session_id.as_bytes()),
        imsi: Some(imsi.as_bytes()),
        imeisv: Some(imeisv.as_bytes()),
    };
    Ok(encode_accounting_request(
        identifier,
        &attributes,
        SECRET.as_bytes(),
    )?)
}

fn clients() -> anyhow::Result<Vec<RadiusClient>> {
    Ok(vec![RadiusClient {
        address: "127.0.0.1"
            .parse()
            .map_err(|e| anyhow::anyhow!("client address: {e:?}"))?,
        secret: Secret::new(SECRET),
    }])
}

/// xorshift32 mapped onto `0..n`: ~1 ns a draw.
struct Indices {
    state: u32,
    n: u32,
}

impl Indices {
    fn new(n: u32, seed: u32) -> Self {
        Self { state: seed | 1, n }
    }

    fn next(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        ((u64::from(x) * u64::from(self.n)) >> 32) as u32
    }
}

// ---------------------------------------------------------------- memory

fn rss_bytes() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS in /proc/self/status")?
        .parse()?;
    Ok(kib * 1024)
}

struct Measured<T> {
    value: T,
    delta: u64,
}

fn measure<T>(
    label: &str,
    n: u32,
    build: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<Measured<T>> {
    let before = rss_bytes()?;
    let t0 = Instant::now();
    let value = build()?;
    let took = t0.elapsed();
    let after = rss_bytes()?;
    let delta = after.saturating_sub(before);
    println!(
        "{label:<40} RSS +{:>7.1} MiB = {:>4.0} B/entry  (RSS {:.1} → {:.1} MiB, built in {:.1} s)",
        delta as f64 / MIB,
        delta as f64 / f64::from(n),
        before as f64 / MIB,
        after as f64 / MIB,
        took.as_secs_f64(),
    );
    Ok(Measured { value, delta })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Measure {
    Snapshot,
    Radius,
}

fn measure_only(what: Measure, n: u32) -> anyhow::Result<()> {
    match what {
        Measure::Snapshot => {
            measure("snapshot (informative)", n, || snapshot(n))?;
        }
        Measure::Radius => {
            let m = measure("table filled via RADIUS (informative)", n, || {
                fill_via_radius(n)
            })?;
            let (t, stats, handle_time) = &m.value;
            println!(
                "  {} Starts through AccountingHandler::handle (sans-IO): {:.0}/s on one \
                 thread; the figure adds the handler's own per-address map and its duplicate \
                 cache",
                grouped(stats.starts),
                stats.starts as f64 / handle_time.as_secs_f64(),
            );
            ensure!(
                t.len() == n as usize,
                "RADIUS fill left {} sessions",
                t.len()
            );
            ensure!(stats.dropped_total() == 0, "RADIUS fill: requests dropped");
        }
    }
    Ok(())
}

/// Runs `measure_only` in a fresh copy of this program.
fn measure_in_child(what: Measure, n: u32) -> anyhow::Result<()> {
    use clap::ValueEnum as _;
    let name = what
        .to_possible_value()
        .context("measure name")?
        .get_name()
        .to_owned();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["--sessions", &n.to_string(), "--measure", &name])
        .status()?;
    ensure!(status.success(), "measuring {name} failed: {status}");
    Ok(())
}

/// What the table's figure is made of, from the types' sizes: the map's
/// buckets (hashbrown keeps at most 7/8 of a power of two full, in each of
/// DashMap's shards) and four heap blocks per session.
fn print_table_breakdown(n: u32, cores: usize) {
    let shards = (cores * 4).next_power_of_two();
    let per_shard = u64::from(n).div_ceil(shards as u64);
    let buckets_per_shard = (per_shard * 8).div_ceil(7).next_power_of_two();
    let entry = size_of::<(IpAddr, Arc<Session>)>() as u64;
    let table = shards as u64 * buckets_per_shard * (entry + 1);
    // glibc: 8 bytes of header, 16-byte granules, 32 bytes at least.
    let chunk = |bytes: u64| (bytes + 8).div_ceil(16).max(2) * 16;
    let arc_header = 2 * size_of::<usize>() as u64;
    let blocks = [
        ("Arc<Session>", arc_header + size_of::<Session>() as u64),
        ("IMSI", arc_header + 15),
        ("IMEISV", arc_header + 16),
        ("MSISDN", arc_header + 12),
    ];
    let heap: u64 = blocks.iter().map(|&(_, b)| chunk(b)).sum();
    let listed: Vec<String> = blocks
        .iter()
        .map(|&(name, b)| format!("{name} {b}→{}", chunk(b)))
        .collect();
    println!(
        "  estimate: DashMap {shards} shards (4 × cores, rounded up to a power of two) × {} \
         buckets × {} B (entry {entry} B + 1 control byte) = {:.1} MiB, {:.0}% full; heap per \
         session {} B in glibc blocks ({}) = {:.1} MiB; total {:.1} MiB",
        grouped(buckets_per_shard),
        entry + 1,
        table as f64 / MIB,
        100.0 * per_shard as f64 / buckets_per_shard as f64,
        heap,
        listed.join(", "),
        (heap * u64::from(n)) as f64 / MIB,
        (table + heap * u64::from(n)) as f64 / MIB,
    );
}

/// A fresh table filled by one Start each through the sans-IO handler.
fn fill_via_radius(n: u32) -> anyhow::Result<(Arc<SessionTable>, RadiusStatsSnapshot, Duration)> {
    let table = Arc::new(SessionTable::new());
    let stats = Arc::new(RadiusStats::new());
    let mut handler = AccountingHandler::new(
        ClientSecrets::new(&clients()?, None)?,
        Arc::clone(&table),
        Arc::clone(&stats),
        DuplicateCache::default(),
    );
    let source = SocketAddr::from((Ipv4Addr::LOCALHOST, 1813));
    let mut in_handle = Duration::ZERO;
    for i in 0..n {
        let packet = request((i % 256) as u8, AcctStatusType::Start, i, 0)?;
        let t0 = Instant::now();
        let answered = handler.handle(t0, source, &packet).is_some();
        in_handle += t0.elapsed();
        ensure!(answered, "Start {i} was not answered");
    }
    Ok((table, stats.snapshot(), in_handle))
}

// ---------------------------------------------------------------- latency

fn histogram() -> Histogram<u64> {
    // 1 ns … 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn clock_pair_cost() -> Histogram<u64> {
    let mut h = histogram();
    for _ in 0..1_000_000 {
        let t0 = Instant::now();
        let t1 = Instant::now();
        h.saturating_record(nanos(t1 - t0));
    }
    h
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// `SessionTable::lookup`, the `Arc` dropped again.
    Lookup,
    /// What the data plane does per packet: lookup, load the snapshot,
    /// resolve the session to subscriber and group.
    Resolve,
}

struct ReaderResult {
    batch: Histogram<u64>,
    single: Histogram<u64>,
    lookups: u64,
    hits: u64,
    resolved: u64,
    /// Times the scheduler took the core from this reader during the pass.
    preempted: Option<u64>,
}

fn reader(
    table: &SessionTable,
    handle: Option<&SnapshotHandle>,
    op: Op,
    n: u32,
    batch: u32,
    seed: u32,
    stop: &AtomicBool,
) -> ReaderResult {
    let mut idx = Indices::new(n, seed);
    let mut r = ReaderResult {
        batch: histogram(),
        single: histogram(),
        lookups: 0,
        hits: 0,
        resolved: 0,
        preempted: None,
    };
    let preempted_before = involuntary_switches();
    // One identity step; returns (session found, identity resolved).
    let step = |i: u32| -> (bool, bool) {
        let session = table.lookup(black_box(ip(i)));
        match (op, handle, session) {
            (Op::Resolve, Some(h), Some(s)) => {
                let snapshot = h.load();
                (true, black_box(snapshot.resolve(&s)).is_ok())
            }
            (_, _, s) => (black_box(s).is_some(), false),
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        for _ in 0..batch {
            let (hit, ok) = step(idx.next());
            r.hits += u64::from(hit);
            r.resolved += u64::from(ok);
        }
        let took = nanos(t0.elapsed());
        r.batch
            .saturating_record((took + u64::from(batch) / 2) / u64::from(batch));

        let i = idx.next();
        let t0 = Instant::now();
        let (hit, ok) = step(i);
        let took = nanos(t0.elapsed());
        r.single.saturating_record(took);
        r.hits += u64::from(hit);
        r.resolved += u64::from(ok);
        r.lookups += u64::from(batch) + 1;
    }
    r.preempted = involuntary_switches()
        .zip(preempted_before)
        .map(|(after, before)| after - before);
    r
}

/// This thread's involuntary context switches so far (Linux).
fn involuntary_switches() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

struct Pass {
    name: &'static str,
    batch: Histogram<u64>,
    single: Histogram<u64>,
    updates: Option<Updates>,
    problems: Vec<String>,
    preempted: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn run_pass(
    a: &Args,
    placement: &Placement,
    name: &'static str,
    op: Op,
    table: &SessionTable,
    handle: Option<&SnapshotHandle>,
    server: Option<&Server>,
    updater: &mut UpdaterState,
) -> anyhow::Result<Pass> {
    println!("\n-- {name}");
    let stop = AtomicBool::new(false);
    let stats_before = server.map(|s| s.stats.snapshot());
    let rcvbuf_errors_before = udp_rcvbuf_errors();
    let window = Duration::from_secs(a.seconds);
    let (readers, updates) = thread::scope(|scope| -> anyhow::Result<_> {
        let readers: Vec<_> = (0..a.readers)
            .map(|k| {
                let stop = &stop;
                thread::Builder::new()
                    .name(format!("reader-{k}"))
                    .spawn_scoped(scope, move || {
                        pin(placement.readers.get(k).map(std::slice::from_ref));
                        reader(
                            table,
                            handle,
                            op,
                            a.sessions,
                            a.batch,
                            0x9E37_79B9 ^ (k as u32).wrapping_mul(0x85EB_CA6B),
                            stop,
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let updates = server
            .map(|s| {
                let stop = &stop;
                let addr = s.addr;
                let state = &mut *updater;
                thread::Builder::new()
                    .name("radius-client".into())
                    .spawn_scoped(scope, move || {
                        pin(Some(&placement.updater));
                        state.run(addr, a.rate, stop)
                    })
            })
            .transpose()?;
        thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let readers = readers
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a reader panicked")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let updates = updates
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the updater panicked"))?
            })
            .transpose()?;
        Ok((readers, updates))
    })?;

    let mut pass = Pass {
        name,
        batch: histogram(),
        single: histogram(),
        updates,
        problems: Vec::new(),
        preempted: None,
    };
    let (mut lookups, mut hits, mut resolved) = (0u64, 0u64, 0u64);
    let mut preempted = Some(0u64);
    for r in &readers {
        pass.batch.add(&r.batch)?;
        pass.single.add(&r.single)?;
        lookups += r.lookups;
        hits += r.hits;
        resolved += r.resolved;
        preempted = preempted.zip(r.preempted).map(|(a, b)| a + b);
    }
    pass.preempted = preempted;
    println!(
        "   load average after: {}; reader preempted {} times; lookups {} ({:.1} M/s over {} \
         reader(s)), found {:.3}%{}",
        load_average(),
        preempted.map_or_else(|| "?".to_owned(), grouped),
        grouped(lookups),
        lookups as f64 / window.as_secs_f64() / 1e6,
        a.readers,
        100.0 * hits as f64 / lookups.max(1) as f64,
        match op {
            Op::Resolve => format!(
                ", resolved {:.3}% (an address re-assigned to a new SIM has no subscriber)",
                100.0 * resolved as f64 / lookups.max(1) as f64
            ),
            Op::Lookup => String::new(),
        }
    );
    for (how, h) in [
        (
            format!("batches of {}, mean per lookup", a.batch),
            &pass.batch,
        ),
        (
            "single lookups, clock pair included".to_owned(),
            &pass.single,
        ),
    ] {
        println!(
            "   {how:<38} ns: p50 {} p90 {} p99 {} p99.9 {} max {}  ({} samples)",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            grouped(h.len()),
        );
    }
    if let (Some(u), Some(server), Some(before)) = (&pass.updates, server, stats_before) {
        let after = server.stats.snapshot();
        let d = |f: fn(&RadiusStatsSnapshot) -> u64| f(&after) - f(&before);
        let dropped = after.dropped_total() - before.dropped_total();
        println!(
            "   RADIUS client: sent {} ({:.0}/s), answered {} ({:.0}/s), verified {}, \
             send would-block {}, max lag behind the pace {:.1} ms",
            grouped(u.sent),
            u.sent_rate(),
            grouped(u.answered),
            u.answered_rate(),
            grouped(u.verified),
            u.would_block,
            u.max_lag.as_secs_f64() * 1e3,
        );
        println!(
            "   RADIUS listener: received {}, answered {}, starts {}, interims {}, stops {} \
             (stale {}), duplicates {}, dropped {}, I/O errors {}; table now {} sessions",
            grouped(d(|s| s.received)),
            grouped(d(|s| s.answered)),
            grouped(d(|s| s.starts)),
            grouped(d(|s| s.interims)),
            grouped(d(|s| s.stops)),
            d(|s| s.stale_stops),
            d(|s| s.duplicates),
            dropped,
            d(|s| s.io_errors),
            grouped(table.len() as u64),
        );
        let lost = u.sent.saturating_sub(d(|s| s.received));
        if lost > 0 {
            println!(
                "   WARNING: {lost} requests never reached the listener ({:.2}%); the kernel \
                 counted {} UDP receive-buffer overflows meanwhile (system-wide \
                 RcvbufErrors): the listener's socket has the default receive buffer and its \
                 thread did not run for a while. A gateway would retransmit.",
                100.0 * lost as f64 / u.sent.max(1) as f64,
                udp_rcvbuf_errors()
                    .zip(rcvbuf_errors_before)
                    .map_or_else(|| "?".to_owned(), |(a, b)| (a - b).to_string()),
            );
        }
        // Loss on a loaded 2-core machine is reported, not fatal; a
        // listener that answers almost nothing, or refuses the generator's
        // requests, means the bench is wrong.
        if (u.verified as f64) < 0.99 * u.sent as f64 || dropped != 0 {
            pass.problems.push(format!(
                "{name}: {} requests sent, {} verified responses, {dropped} refused",
                u.sent, u.verified
            ));
        }
    }
    Ok(pass)
}

/// Which CPUs the readers, and the updater with the listener, run on.
#[derive(Debug, Default)]
struct Placement {
    /// One CPU per reader, or none (unpinned).
    readers: Vec<usize>,
    /// The rest (empty: unpinned).
    updater: Vec<usize>,
}

impl Placement {
    fn new(a: &Args) -> Self {
        let cpus = allowed_cpus();
        if a.no_pin || cpus.len() <= a.readers {
            return Self::default();
        }
        let (readers, updater) = cpus.split_at(a.readers);
        Self {
            readers: readers.to_vec(),
            updater: updater.to_vec(),
        }
    }

    fn describe(&self) -> String {
        if self.readers.is_empty() {
            "not pinned (--no-pin, or no more CPUs than readers)".to_owned()
        } else {
            format!(
                "reader(s) pinned to CPU {:?}, RADIUS client and listener to CPU {:?} \
                 (other processes on the machine still share them)",
                self.readers, self.updater
            )
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    sched_getaffinity(Pid::from_raw(0)).map_or_else(
        |_| Vec::new(),
        |set| {
            (0..CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        },
    )
}

/// Pins the calling thread to `cpus`; does nothing for `None` or none.
fn pin(cpus: Option<&[usize]>) {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let Some(cpus) = cpus.filter(|c| !c.is_empty()) else {
        return;
    };
    let mut set = CpuSet::new();
    for &c in cpus {
        let _ = set.set(c);
    }
    if let Err(e) = sched_setaffinity(Pid::from_raw(0), &set) {
        eprintln!("session_scale: cannot pin a thread to CPU {cpus:?}: {e}");
    }
}

// ---------------------------------------------------------------- RADIUS

/// The listener, on its own thread with a current-thread tokio runtime.
struct Server {
    addr: SocketAddr,
    stats: Arc<RadiusStats>,
    stop: watch::Sender<bool>,
    thread: thread::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    fn start(table: Arc<SessionTable>, cpus: Vec<usize>) -> anyhow::Result<Self> {
        let stats = Arc::new(RadiusStats::new());
        let (stop, shutdown) = watch::channel(false);
        let config = RadiusConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            clients: clients()?,
            ..RadiusConfig::default()
        };
        let (tx, rx) = mpsc::channel();
        let server_stats = Arc::clone(&stats);
        let thread = thread::Builder::new()
            .name("radius-listener".into())
            .spawn(move || -> anyhow::Result<()> {
                pin(Some(&cpus));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let (addr, task) = match spawn(config, table, server_stats, shutdown) {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = tx.send(Ok(addr));
                    task.await?;
                    Ok(())
                })
            })?;
        let addr = rx
            .recv()
            .context("the RADIUS listener thread ended at start")??;
        Ok(Self {
            addr,
            stats,
            stop,
            thread,
        })
    }

    fn stop(self) -> anyhow::Result<()> {
        self.stop.send(true)?;
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the RADIUS listener panicked"))?
    }
}

/// What one update pass did, seen from the client.
struct Updates {
    sent: u64,
    answered: u64,
    verified: u64,
    would_block: u64,
    max_lag: Duration,
    window: Duration,
}

impl Updates {
    fn sent_rate(&self) -> f64 {
        self.sent as f64 / self.window.as_secs_f64()
    }

    fn answered_rate(&self) -> f64 {
        self.answered as f64 / self.window.as_secs_f64()
    }
}

/// The simulated gateway's view of the sessions, kept across passes so its
/// requests stay consistent with the table: which SIM (generation) holds
/// each address, which addresses are free.
struct UpdaterState {
    generation: Vec<u8>,
    bound: Vec<bool>,
    free: VecDeque<u32>,
    idx: Indices,
    next_id: u8,
}

impl UpdaterState {
    fn new(n: u32) -> Self {
        Self {
            generation: vec![0; n as usize],
            bound: vec![true; n as usize],
            free: VecDeque::new(),
            idx: Indices::new(n, 0x2545_F491),
            next_id: 0,
        }
    }

    fn random_bound(&mut self) -> u32 {
        loop {
            let i = self.idx.next();
            if self.bound[i as usize] {
                return i;
            }
        }
    }

    /// The next request of the mix: Start, Interim-Update, Stop in turn.
    /// A Stop frees a random bound address; a Start gives the oldest free
    /// address to a new SIM (or, if none is free, a bound one to a new SIM);
    /// an Interim repeats a bound session as it is.
    fn next_request(&mut self, k: u64) -> anyhow::Result<(u8, Vec<u8>)> {
        let (status, i) = match k % 3 {
            0 => {
                let i = match self.free.pop_front() {
                    Some(i) => i,
                    None => self.random_bound(),
                };
                let g = &mut self.generation[i as usize];
                // At most 255 SIMs per address: IMSIs stay within 10 digits.
                *g = g.checked_add(1).unwrap_or(1);
                self.bound[i as usize] = true;
                (AcctStatusType::Start, i)
            }
            1 => (AcctStatusType::InterimUpdate, self.random_bound()),
            _ => {
                let i = self.random_bound();
                self.bound[i as usize] = false;
                self.free.push_back(i);
                (AcctStatusType::Stop, i)
            }
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let packet = request(id, status, i, self.generation[i as usize])?;
        Ok((id, packet))
    }

    /// Sends at `rate` per second until `stop`, reading and verifying the
    /// responses as they come; then waits up to 2 s for the last ones.
    fn run(&mut self, server: SocketAddr, rate: u32, stop: &AtomicBool) -> anyhow::Result<Updates> {
        let mut client = Client {
            socket: UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?,
            authenticators: [[[0; 16]; AUTH_GENERATIONS]; 256],
            buf: [0; 4096],
            u: Updates {
                sent: 0,
                answered: 0,
                verified: 0,
                would_block: 0,
                max_lag: Duration::ZERO,
                window: Duration::ZERO,
            },
        };
        client.socket.connect(server)?;
        client.socket.set_nonblocking(true)?;
        let mut pending: Option<(u8, Vec<u8>)> = None;
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let elapsed = start.elapsed();
            let due = (elapsed.as_secs_f64() * f64::from(rate)) as u64;
            if due > client.u.sent + 1 {
                let on_time = Duration::from_secs_f64((client.u.sent + 1) as f64 / f64::from(rate));
                client.u.max_lag = client.u.max_lag.max(elapsed.saturating_sub(on_time));
            }
            while client.u.sent < due {
                let (id, packet) = match pending.take() {
                    Some(p) => p,
                    None => self.next_request(client.u.sent)?,
                };
                if !client.send(id, &packet)? {
                    pending = Some((id, packet));
                    break;
                }
                client.receive()?;
            }
            client.receive()?;
            thread::sleep(Duration::from_micros(500));
        }
        client.u.window = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(2);
        while client.u.answered < client.u.sent && Instant::now() < deadline {
            client.receive()?;
            thread::sleep(Duration::from_millis(1));
        }
        Ok(client.u)
    }
}

/// The updater's socket and what it needs to check responses.
struct Client {
    socket: UdpSocket,
    /// Request Authenticators of the last requests sent with each
    /// Identifier, by the request's sequence number / 256: a response up to
    /// 1,024 requests late (~200 ms at 5,000/s) is still checked.
    authenticators: [[[u8; 16]; AUTH_GENERATIONS]; 256],
    buf: [u8; 4096],
    u: Updates,
}

impl Client {
    /// Sends one request; `false` if the socket buffer is full (retry later).
    fn send(&mut self, id: u8, packet: &[u8]) -> anyhow::Result<bool> {
        match self.socket.send(packet) {
            Ok(_) => {
                let generation = (self.u.sent / 256) as usize % AUTH_GENERATIONS;
                self.authenticators[usize::from(id)][generation].copy_from_slice(&packet[4..20]);
                self.u.sent += 1;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.u.would_block += 1;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads every response waiting, checking each Response Authenticator.
    fn receive(&mut self) -> anyhow::Result<()> {
        loop {
            match self.socket.recv(&mut self.buf) {
                Ok(len) => {
                    self.u.answered += 1;
                    let response = &self.buf[..len];
                    let id = response.get(1).copied().unwrap_or(0);
                    if self.authenticators[usize::from(id)].iter().any(|request| {
                        verify_accounting_response(response, request, SECRET.as_bytes()) == Ok(id)
                    }) {
                        self.u.verified += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// ---------------------------------------------------------------- output

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The kernel's count of UDP datagrams dropped for a full receive buffer.
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

fn load_average() -> String {
    let text = read_trimmed("/proc/loadavg");
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
}
