//! Micro-benchmarks of the identity path at scale (`cargo bench -p
//! simgate-benches --bench sessions`, about two minutes):
//!
//! * `lookup/hit`, `lookup/miss` — `SessionTable::lookup` in a table of
//!   1,000,000 sessions, random addresses (so mostly cache misses, as on a
//!   busy gateway), the returned `Arc` dropped inside the timing. Lookups
//!   that hit are chained (each address depends on the previous result, see
//!   [`Indices::after`]): that is the latency of one lookup. Independent
//!   back-to-back lookups can overlap their cache misses in the CPU and
//!   measure throughput instead: `lookup/hit_independent`;
//! * `lookup/hit_resolve` — the data plane's per-packet identity lookup:
//!   `lookup` + `SnapshotHandle::load` + `Snapshot::resolve` against a
//!   snapshot of 1,000,000 subscribers;
//! * `update/bind_replace`, `update/unbind_bind` — writes into the full
//!   table (its size stays 1,000,000);
//! * `radius/handle_start`, `radius/handle_interim_same` — the sans-IO
//!   RADIUS path, `AccountingHandler::handle` of one Accounting-Request
//!   (parse, MD5 authenticator check, duplicate cache, bind), with no socket;
//! * `alternatives/*` — prices of the suggestions in benches/README.md:
//!   SipHash (DashMap's default hasher) vs foldhash on an `IpAddr` key; a
//!   plain `DashMap` of the same 1,000,000 sessions (the same `Arc`s) with
//!   either hasher, next to `lookup/hit`; the subscriber probe `resolve`
//!   makes, in the snapshot's persistent map (imbl) vs a std `HashMap`.
//!
//! `SIMGATE_BENCH_SESSIONS` changes the table size (e.g. 100000 for a
//! quick run).

use std::hash::BuildHasher;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use simgate_control::model::{
    GroupId, HarvestConfig, Imei, Imsi, Msisdn, OperatorId, Secret, SimId, Subscriber,
    SubscriberStatus,
};
use simgate_control::radius::{
    encode_accounting_request, AccountingAttributes, AccountingHandler, AcctStatusType,
    ClientSecrets, DuplicateCache, RadiusClient, RadiusStats,
};
use simgate_control::snapshot::{Map, SnapshotHandle};
use simgate_control::{Group, Session, SessionTable, Snapshot};

const DEFAULT_SESSIONS: u32 = 1_000_000;
const SECRET: &str = "bench-secret";

fn sessions_count() -> u32 {
    // `cargo test --all-targets` runs this file once per benchmark, unoptimised,
    // without `--bench`: a small table is enough to check that it works.
    if !std::env::args().any(|a| a == "--bench") {
        return 10_000;
    }
    std::env::var("SIMGATE_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (1..=10_000_000).contains(&n))
        .unwrap_or(DEFAULT_SESSIONS)
}

/// Address of session `i`: 10.0.0.1, 10.0.0.2, …
fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i))
}

/// An address in no session: 11.0.0.1 + i.
fn miss_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(11, 0, 0, 1)) + i))
}

/// 00101 + 10 digits; `generation` makes a different SIM on the same address.
fn imsi_text(i: u32, generation: u32) -> String {
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

fn session(i: u32, generation: u32) -> Session {
    Session::new(
        Imsi::parse(&imsi_text(i, generation)).expect("IMSI"),
        Some(Imei::parse(&imeisv_text(i)).expect("IMEISV")),
        Some(Msisdn::parse(&msisdn_text(i)).expect("MSISDN")),
    )
}

fn filled_table(n: u32) -> Arc<SessionTable> {
    let t = SessionTable::new();
    for i in 0..n {
        t.bind(ip(i), session(i, 0));
    }
    Arc::new(t)
}

fn snapshot(n: u32) -> Snapshot {
    let operator = OperatorId::parse("OP0000000001").expect("operator id");
    let group = GroupId::parse("bench-group").expect("group id");
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
        let imsi = Imsi::parse(&imsi_text(i, 0)).expect("IMSI");
        subscribers.insert(
            imsi.clone(),
            Arc::new(Subscriber {
                imsi,
                imei: Some(Imei::parse(&format!("35{i:013}")).expect("IMEI")),
                msisdn: Some(Msisdn::parse(&msisdn_text(i)).expect("MSISDN")),
                sim_id: Some(SimId::parse(&format!("8981{i:015}")).expect("ICCID")),
                operator_id: Some(operator.clone()),
                group_id: Some(group.clone()),
                tags: Default::default(),
                status: SubscriberStatus::Active,
                imei_lock: None,
            }),
        );
    }
    Snapshot {
        version: 1,
        groups,
        subscribers,
        ..Snapshot::default()
    }
}

/// xorshift32: a uniform index in `0..n` per call, ~1 ns.
struct Indices {
    state: u32,
    n: u32,
}

impl Indices {
    fn new(n: u32) -> Self {
        Self {
            state: 0x9E37_79B9,
            n,
        }
    }

    fn next(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        // Multiply-shift: unbiased enough, no division.
        ((u64::from(x) * u64::from(self.n)) >> 32) as u32
    }

    /// The next index, made to depend on `carry` — 0 at run time, derived
    /// from the previous lookup's result — so that lookups run one after
    /// the other, as on the packet path, and the CPU cannot overlap their
    /// cache misses (which would measure throughput, not latency).
    fn after(&mut self, carry: u32) -> u32 {
        self.state ^= carry;
        self.next()
    }
}

/// 0 for every session here (15-digit IMSIs), unknown to the compiler.
fn carry(imsi: Option<&Imsi>) -> u32 {
    imsi.map_or(0, |i| i.as_str().len() as u32 ^ 15)
}

fn criterion_config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

fn table_benches(c: &mut Criterion) {
    let n = sessions_count();
    let t0 = Instant::now();
    let table = filled_table(n);
    let handle = SnapshotHandle::new(snapshot(n));
    eprintln!(
        "sessions bench: table of {} sessions and snapshot of {n} subscribers built in {:.1} s",
        table.len(),
        t0.elapsed().as_secs_f64()
    );

    let mut g = c.benchmark_group("lookup");
    let mut idx = Indices::new(n);
    let mut chain = 0;
    g.bench_function("hit", |b| {
        b.iter(|| {
            let s = table.lookup(ip(idx.after(chain)));
            chain = carry(s.as_ref().map(|s| &s.imsi));
            s
        })
    });
    g.bench_function("hit_independent", |b| {
        b.iter(|| black_box(table.lookup(black_box(ip(idx.next())))).is_some())
    });
    g.bench_function("miss", |b| {
        b.iter(|| black_box(table.lookup(black_box(miss_ip(idx.next())))).is_some())
    });
    g.bench_function("hit_resolve", |b| {
        b.iter(|| {
            let session = table.lookup(ip(idx.after(chain)));
            let snapshot = handle.load();
            let identity = session.and_then(|s| snapshot.resolve(&s).ok());
            chain = carry(identity.as_ref().map(|i| &i.subscriber.imsi));
            identity
        })
    });
    g.finish();

    let mut g = c.benchmark_group("update");
    // Replaces the binding of a bound address (two sessions alternate, so
    // the old `Arc` is freed each time, as when a SIM takes over an address).
    let pool: Vec<Session> = (0..4096).map(|i| session(i, 1)).collect();
    let mut k = 0usize;
    g.bench_function("bind_replace", |b| {
        b.iter(|| {
            k = (k + 1) % pool.len();
            let i = idx.next();
            black_box(table.bind(ip(i), pool[k].clone()))
        })
    });
    g.bench_function("unbind_bind", |b| {
        b.iter(|| {
            k = (k + 1) % pool.len();
            let i = idx.next();
            let old = table.unbind(ip(i));
            black_box(table.bind(ip(i), pool[k].clone()));
            old
        })
    });
    g.finish();
    assert_eq!(table.len(), n as usize, "the table kept its size");

    radius_benches(c, &table, n);
    alternatives(c, &table, &handle.load(), n);
}

fn radius_benches(c: &mut Criterion, table: &Arc<SessionTable>, n: u32) {
    let clients = ClientSecrets::new(
        &[RadiusClient {
            address: "127.0.0.1".parse().expect("client"),
            secret: Secret::new(SECRET),
        }],
        None,
    )
    .expect("clients");
    let mut handler = AccountingHandler::new(
        clients,
        Arc::clone(table),
        Arc::new(RadiusStats::new()),
        DuplicateCache::default(),
    );
    let source: SocketAddr = "127.0.0.1:1813".parse().expect("source");
    let packet = |status, i: u32, generation: u32| {
        let imsi = imsi_text(i, generation);
        let imeisv = imeisv_text(i);
        let msisdn = msisdn_text(i);
        let session_id = format!("{i:016x}");
        let attributes = AccountingAttributes {
            status_type: Some(status),
            framed_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i)),
            nas_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
            calling_station_id: Some(msisdn.as_bytes()),
            acct_session_id: Some(session_id.as_bytes()),
            imsi: Some(imsi.as_bytes()),
            imeisv: Some(imeisv.as_bytes()),
        };
        encode_accounting_request((i % 256) as u8, &attributes, SECRET.as_bytes()).expect("encode")
    };
    // Two SIMs alternate on each of 8,192 addresses: every Start rebinds.
    // Time advances 1 ms a call, so a packet comes back after 16 s, outside
    // the 5 s duplicate window: each call is a new request.
    let mut idx = Indices::new(n);
    let addresses: Vec<u32> = (0..8192).map(|_| idx.next()).collect();
    let starts: Vec<Vec<u8>> = [1, 2]
        .into_iter()
        .flat_map(|generation| {
            addresses
                .iter()
                .map(move |&i| (i, generation))
                .collect::<Vec<_>>()
        })
        .map(|(i, generation)| packet(AcctStatusType::Start, i, generation))
        .collect();
    // An Interim repeating what is bound (the common case): no write.
    let interims: Vec<Vec<u8>> = addresses
        .iter()
        .map(|&i| packet(AcctStatusType::InterimUpdate, i, 0))
        .collect();
    for &i in &addresses {
        table.bind(ip(i), session(i, 0));
    }
    let mut now = Instant::now();
    let mut k = 0usize;
    let mut g = c.benchmark_group("radius");
    g.bench_function("handle_interim_same", |b| {
        b.iter(|| {
            k = (k + 1) % interims.len();
            now += Duration::from_millis(1);
            black_box(handler.handle(now, source, &interims[k])).expect("answered")
        })
    });
    g.bench_function("handle_start", |b| {
        b.iter(|| {
            k = (k + 1) % starts.len();
            now += Duration::from_millis(1);
            black_box(handler.handle(now, source, &starts[k])).expect("answered")
        })
    });
    g.finish();
    let stats = handler.stats().snapshot();
    assert_eq!(stats.dropped_total(), 0, "no request was refused");
}

fn alternatives(c: &mut Criterion, table: &SessionTable, snapshot: &Snapshot, n: u32) {
    let mut g = c.benchmark_group("alternatives");
    let mut idx = Indices::new(n);
    let sip = std::collections::hash_map::RandomState::new();
    let fold = foldhash::fast::RandomState::default();
    g.bench_function("hash_ipaddr_siphash", |b| {
        b.iter(|| sip.hash_one(black_box(ip(idx.next()))))
    });
    g.bench_function("hash_ipaddr_foldhash", |b| {
        b.iter(|| fold.hash_one(black_box(ip(idx.next()))))
    });
    // The same sessions (shared `Arc`s) in a DashMap hashed with foldhash.
    let folded: DashMap<IpAddr, Arc<Session>, foldhash::fast::RandomState> =
        DashMap::with_hasher(fold);
    for (ip, s) in table.entries() {
        folded.insert(ip, s);
    }
    let mut chain = 0;
    g.bench_function("lookup_hit_dashmap_foldhash", |b| {
        b.iter(|| {
            let s = folded
                .get(&ip(idx.after(chain)))
                .map(|e| Arc::clone(e.value()));
            chain = carry(s.as_ref().map(|s| &s.imsi));
            s
        })
    });
    drop(folded);
    // And with DashMap's default hasher, SipHash-1-3.
    let sipped: DashMap<IpAddr, Arc<Session>> = DashMap::with_hasher(sip);
    for (ip, s) in table.entries() {
        sipped.insert(ip, s);
    }
    g.bench_function("lookup_hit_dashmap_siphash", |b| {
        b.iter(|| {
            let s = sipped
                .get(&ip(idx.after(chain)))
                .map(|e| Arc::clone(e.value()));
            chain = carry(s.as_ref().map(|s| &s.imsi));
            s
        })
    });
    drop(sipped);
    // Where resolve's time goes: the subscriber probe in the persistent
    // (imbl) map against the same entries in a std HashMap.
    // Random keys out of all of them: the key's text is as cold as a
    // session's is.
    let imsis: Vec<Imsi> = snapshot.subscribers.keys().cloned().collect();
    let mut idx = Indices::new(u32::try_from(imsis.len()).expect("fits"));
    g.bench_function("subscriber_get_imbl", |b| {
        b.iter(|| {
            let s = snapshot
                .subscribers
                .get(&imsis[idx.after(chain) as usize])
                .map(Arc::clone);
            chain = carry(s.as_ref().map(|s| &s.imsi));
            s
        })
    });
    let flat: std::collections::HashMap<Imsi, Arc<Subscriber>> = snapshot
        .subscribers
        .iter()
        .map(|(imsi, s)| (imsi.clone(), Arc::clone(s)))
        .collect();
    g.bench_function("subscriber_get_std_hashmap", |b| {
        b.iter(|| {
            let s = flat.get(&imsis[idx.after(chain) as usize]).map(Arc::clone);
            chain = carry(s.as_ref().map(|s| &s.imsi));
            s
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = criterion_config();
    targets = table_benches
}
criterion_main!(benches);
