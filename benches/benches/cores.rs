//! Micro-benchmarks of simgate's sans-IO cores (`cargo bench -p
//! simgate-benches --bench cores`, about 90 s after the build), each on
//! what a device really sends: a 200-byte JSON sensor reading and a 1 KiB
//! binary frame.
//!
//! * `envelope/encode/*` — Funnel's SORACOM envelope
//!   (`services::funnel::envelope::encode`) into a fresh `Vec`, as the
//!   Funnel service does per record: the JSON reading embedded (`json_200B`,
//!   content type `unspecified`, so its JSON check included), the binary
//!   frame wrapped as base64 (`binary_1KiB`), and the JSON reading with
//!   `payloadsOnly` (`json_200B_payloads_only`). Throughput: payload bytes;
//! * `beam/signature/*` — Beam's `X-Soracom-Signature` (`http_signature`:
//!   SHA-256 over PSK + the four identity headers + timestamp, hex) and the
//!   TCP entry's signed identity line (`tcp_identity_line`);
//! * `mqtt/decode/*` — `beam::mqtt::codec::decode` of a QoS 1 PUBLISH of
//!   the JSON reading and of a CONNECT (client id, username, password,
//!   will), from a receive buffer prepared outside the timing, with the
//!   proxy's `MAX_PACKET`. Throughput: packet bytes;
//! * `batch/assembly/*` — `batch::Batcher` filling Kinesis batches
//!   (`sinks::kinesis::LIMITS`: 500 records, 5 MiB) and handing them out:
//!   500 envelopes of the JSON reading (closed by the record limit), or
//!   12 KiB records (closed by the 5 MiB limit, 426 a batch);
//!   `core_cycle_500` is the whole `DestinationCore` round of one batch:
//!   500 pushes, `poll_batch`, `on_outcome` with every record delivered, and
//!   draining the 501 events. Throughput: records;
//! * `spool/append/*` — the Funnel spool (`spool::Spool`) in a temporary
//!   directory on the real disk (`TMPDIR`, ext4 here; never tmpfs, where
//!   fdatasync is free). The spool has no fsync-off mode: an append's
//!   future resolves only after the writer thread's group commit
//!   (write + fdatasync). `single` appends one record and waits for it (one
//!   commit per record: fdatasync latency); `group_64` appends 64 records,
//!   then waits for all of them (as 64 devices sending at once: few
//!   commits). Records are acked after their commit so the spool deletes
//!   finished segments and the disk use stays flat. `frame_encode` is the
//!   pure part, `spool::format::encode_record` of one frame;
//! * `spool/recover/*` — `Spool::open` of a directory whose newest segment
//!   holds N envelope records (`SIMGATE_BENCH_SPOOL_RECORDS`, default
//!   50,000, 27 MiB), then `close`: recovery's segment scan (the private
//!   `spool::recovery::recover` is reached through `open`, its only public
//!   entry), the ack log replay, and the writer thread's start and join.
//!   The segment stays in the page cache: this is the CPU and syscall cost,
//!   not a cold disk read. `scan_segment` is the pure scan of the same
//!   segment's bytes in memory (`spool::format::Scanner`), CRC32C checks
//!   included. Throughput: records.
//!
//! `cargo test -p simgate-benches --benches` runs each once, unoptimised,
//! with a spool of 1,000 records.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use simgate::batch::{Batcher, CoreConfig, DestinationCore, Event, RetryPolicy};
use simgate::services::beam::mqtt::codec::{self, Connect, Packet, Publish, QoS, Will};
use simgate::services::beam::mqtt::proxy::MAX_PACKET;
use simgate::services::beam::signature::{http_signature, tcp_identity_line, SignedFields};
use simgate::services::funnel::envelope::{self, EnvelopeMeta, PayloadEncoding, SourceProtocol};
use simgate::sinks::{kinesis, BatchOutcome, RecordOutcome, SinkRecord};
use simgate::spool::{format, Spool, SpoolOptions, WhenFull};
use simgate_control::{CredentialId, Destination, Imei, Imsi, OperatorId, SimId, SinkService};

const DEFAULT_SPOOL_RECORDS: u64 = 50_000;

/// A 200-byte JSON sensor reading, as a device would POST or send over UDP.
const JSON_READING: &[u8] = br#"{"deviceId":"env-sensor-0042","ts":1764748800123,"temperature":21.37,"humidity":48.2,"pressure":1013.25,"co2":612,"battery":3.71,"rssi":-87,"lat":35.681236,"lon":139.767125,"seq":18233,"status":"ok"}"#;

fn binary_frame() -> Vec<u8> {
    (0..1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn is_bench_run() -> bool {
    // `cargo test --benches` runs this file once per benchmark, unoptimised,
    // without `--bench`: a small spool is enough to check that it works.
    std::env::args().any(|a| a == "--bench")
}

fn spool_records() -> u64 {
    if !is_bench_run() {
        return 1_000;
    }
    std::env::var("SIMGATE_BENCH_SPOOL_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (1..=10_000_000).contains(&n))
        .unwrap_or(DEFAULT_SPOOL_RECORDS)
}

fn criterion_config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

/// The identity and destination of the SORACOM documentation's example.
struct Fixture {
    op: OperatorId,
    cred: CredentialId,
    dest: Destination,
    imsi: Imsi,
    imei: Imei,
    sim_id: SimId,
}

impl Fixture {
    fn new() -> Self {
        Self {
            op: OperatorId::parse("OP0000000001").expect("operator id"),
            cred: CredentialId::parse("kinesis-demo").expect("credentials id"),
            dest: Destination::new(
                SinkService::Kinesis,
                "https://kinesis.ap-northeast-1.amazonaws.com/devices",
            ),
            imsi: Imsi::parse("001010000000001").expect("IMSI"),
            imei: Imei::parse("3530000000000012").expect("IMEISV"),
            sim_id: SimId::parse("8942310000000000001").expect("ICCID"),
        }
    }

    fn meta(&self) -> EnvelopeMeta<'_> {
        EnvelopeMeta {
            operator_id: &self.op,
            credentials_id: &self.cred,
            destination: &self.dest,
            source_protocol: SourceProtocol::Udp,
            timestamp_ms: 1_764_748_800_123,
            imsi: &self.imsi,
            imei: Some(&self.imei),
            sim_id: Some(Some(&self.sim_id)),
        }
    }

    /// The envelope Funnel makes for the JSON reading: what a sink and the
    /// spool carry.
    fn envelope(&self) -> Vec<u8> {
        let mut out = Vec::new();
        envelope::encode(
            &self.meta(),
            JSON_READING,
            PayloadEncoding::Unspecified,
            false,
            &mut out,
        )
        .expect("envelope");
        out
    }
}

fn envelope_benches(c: &mut Criterion) {
    let f = Fixture::new();
    let meta = f.meta();
    let binary = binary_frame();
    let mut g = c.benchmark_group("envelope/encode");
    let cases: [(&str, &[u8], PayloadEncoding, bool); 3] = [
        (
            "json_200B",
            JSON_READING,
            PayloadEncoding::Unspecified,
            false,
        ),
        ("binary_1KiB", &binary, PayloadEncoding::Wrapped, false),
        (
            "json_200B_payloads_only",
            JSON_READING,
            PayloadEncoding::Unspecified,
            true,
        ),
    ];
    for (name, payload, encoding, payloads_only) in cases {
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut out = Vec::new();
                envelope::encode(
                    black_box(&meta),
                    black_box(payload),
                    encoding,
                    payloads_only,
                    &mut out,
                )
                .expect("envelope");
                out
            })
        });
    }
    g.finish();
}

fn beam_benches(c: &mut Criterion) {
    let psk = b"beam-bench-pre-shared-key-32byte";
    let fields = SignedFields {
        imei: Some("353000000000001"),
        imsi: Some("001010000000001"),
        msisdn: Some("818012345678"),
        sim_id: Some("8942310000000000001"),
        timestamp_ms: 1_764_748_800_123,
    };
    let mut g = c.benchmark_group("beam/signature");
    g.bench_function("http", |b| {
        b.iter(|| http_signature(black_box(psk), black_box(&fields)))
    });
    g.bench_function("tcp_identity_line", |b| {
        b.iter(|| tcp_identity_line(black_box(&fields), Some(black_box(psk))))
    });
    g.finish();
}

fn encoded(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    codec::encode(packet, &mut out).expect("encode");
    out.to_vec()
}

fn mqtt_benches(c: &mut Criterion) {
    let publish = encoded(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/env-sensor-0042/telemetry".into(),
        pkid: 4242,
        payload: Bytes::from_static(JSON_READING),
    }));
    let connect = encoded(&Packet::Connect(Connect {
        protocol_level: 4,
        clean_session: true,
        keep_alive: 60,
        client_id: "env-sensor-0042".into(),
        will: Some(Will {
            topic: "devices/env-sensor-0042/status".into(),
            payload: Bytes::from_static(b"{\"status\":\"offline\"}"),
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        username: Some("sensor".into()),
        password: Some(Bytes::from_static(b"s3cret-device-token")),
    }));
    let mut g = c.benchmark_group("mqtt/decode");
    for (name, wire, expect) in [
        ("publish_json_200B", &publish, "publish"),
        ("connect", &connect, "connect"),
    ] {
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let packet = codec::decode(buf, black_box(MAX_PACKET))
                        .expect("decodes")
                        .expect("complete");
                    debug_assert_eq!(packet.name(), expect);
                    packet
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn record(data: &Bytes, key: &Arc<str>) -> SinkRecord {
    SinkRecord {
        partition_key: Arc::clone(key),
        data: data.clone(),
    }
}

/// Pushes records of `data` until a batch is ready and takes it: one
/// Kinesis PutRecords' worth.
fn fill_batch(data: &Bytes, key: &Arc<str>, now: Instant) -> Vec<SinkRecord> {
    let mut batcher = Batcher::new(kinesis::LIMITS, Duration::from_millis(50));
    let size = data.len() + key.len();
    while !batcher.has_ready() {
        batcher
            .push(record(data, key), black_box(size), now)
            .expect("fits");
    }
    batcher.pop_ready().expect("a batch")
}

fn batch_benches(c: &mut Criterion) {
    let f = Fixture::new();
    let key: Arc<str> = f.imsi.as_str().into();
    let small = Bytes::from(f.envelope());
    let large = Bytes::from(vec![b'x'; 12 * 1024]);
    let now = Instant::now();
    let per_batch = |data: &Bytes| fill_batch(data, &key, now).len();
    let (small_n, large_n) = (per_batch(&small), per_batch(&large));
    assert_eq!(
        small_n,
        kinesis::LIMITS.max_records,
        "closed by the record limit"
    );
    assert!(
        large_n < kinesis::LIMITS.max_records,
        "closed by the byte limit"
    );

    let mut g = c.benchmark_group("batch/assembly");
    g.throughput(Throughput::Elements(small_n as u64));
    g.bench_function("batcher_500_envelopes", |b| {
        b.iter(|| fill_batch(black_box(&small), &key, now))
    });
    g.throughput(Throughput::Elements(large_n as u64));
    g.bench_function("batcher_12KiB_to_5MiB", |b| {
        b.iter(|| fill_batch(black_box(&large), &key, now))
    });

    let config = CoreConfig {
        limits: kinesis::LIMITS,
        linger: Duration::from_millis(50),
        max_in_flight: 4,
        retry: RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        },
        max_record_age: Duration::from_secs(3600),
    };
    let mut core = DestinationCore::new(config, 7);
    let delivered = BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; small_n]);
    let size = small.len() + key.len();
    g.throughput(Throughput::Elements(small_n as u64));
    g.bench_function("core_cycle_500", |b| {
        b.iter(|| {
            for _ in 0..small_n {
                core.push(record(&small, &key), size, 1, now, now);
            }
            let batch = core.poll_batch(now).expect("a full batch");
            core.on_outcome(now, batch, black_box(&delivered));
            let mut done = 0;
            while let Some(event) = core.poll_event() {
                if let Event::Delivered(entry) = event {
                    black_box(entry);
                    done += 1;
                }
            }
            assert_eq!(done, small_n, "every record delivered");
        })
    });
    g.finish();
    assert!(core.is_idle(), "the core holds nothing after the bench");
}

fn spool_options() -> SpoolOptions {
    SpoolOptions {
        max_bytes: 256 << 20,
        segment_bytes: 4 << 20,
        when_full: WhenFull::Refuse,
    }
}

fn spool_append_benches(c: &mut Criterion) {
    let f = Fixture::new();
    let key: Arc<str> = f.imsi.as_str().into();
    let data = Bytes::from(f.envelope());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, report) = Spool::open(dir.path(), spool_options()).expect("open");
    assert_eq!(report.unacked_estimate, 0, "a new spool");

    let mut g = c.benchmark_group("spool/append");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| {
            let ack = spool
                .append(Arc::clone(&key), data.clone(), 1_764_748_800_123)
                .expect("append");
            let seq = rt.block_on(ack).expect("committed");
            spool.ack(seq);
        })
    });
    const GROUP: usize = 64;
    let mut seqs = Vec::with_capacity(GROUP);
    g.throughput(Throughput::Elements(GROUP as u64));
    g.bench_function("group_64", |b| {
        b.iter(|| {
            let acks: Vec<_> = (0..GROUP)
                .map(|_| {
                    spool
                        .append(Arc::clone(&key), data.clone(), 1_764_748_800_123)
                        .expect("append")
                })
                .collect();
            seqs.clear();
            for ack in acks {
                seqs.push(rt.block_on(ack).expect("committed"));
            }
            spool.ack_many(&seqs);
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("frame_encode", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            format::encode_record(
                &mut out,
                black_box(42),
                1_764_748_800_123,
                black_box(&key),
                black_box(&data),
            )
            .expect("fits");
            out
        })
    });
    g.finish();
    let stats = spool.stats();
    eprintln!(
        "spool/append: {} commits so far, {} segment(s), {} bytes on disk",
        stats.commits, stats.segments, stats.bytes
    );
    spool.close();
}

/// Fills a spool in `dir` with `n` envelope records in one segment, and
/// closes it. Returns the segment's path.
fn filled_spool(dir: &Path, n: u64, data: &Bytes, key: &Arc<str>) -> std::path::PathBuf {
    let frame = format::frame_len(key.len(), data.len()).expect("fits") as u64;
    let opts = SpoolOptions {
        // One segment however many records: open scans only the newest.
        max_bytes: 4 * (n * frame + (64 << 10)),
        segment_bytes: n * frame + (64 << 10),
        when_full: WhenFull::Refuse,
    };
    let (spool, _) = Spool::open(dir, opts).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut acks = Vec::with_capacity(4096);
    for i in 0..n {
        acks.push(
            spool
                .append(Arc::clone(key), data.clone(), 1_764_748_800_000 + i)
                .expect("append"),
        );
        if acks.len() == acks.capacity() || i + 1 == n {
            for ack in acks.drain(..) {
                rt.block_on(ack).expect("committed");
            }
        }
    }
    assert_eq!(spool.stats().segments, 1, "one segment");
    spool.close();
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "one segment file");
    segments.pop().expect("a segment")
}

fn spool_recover_benches(c: &mut Criterion) {
    let f = Fixture::new();
    let key: Arc<str> = f.imsi.as_str().into();
    let data = Bytes::from(f.envelope());
    let n = spool_records();
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let segment = filled_spool(dir.path(), n, &data, &key);
    let bytes = std::fs::read(&segment).expect("segment");
    eprintln!(
        "spool/recover: segment of {n} records, {} bytes, written in {:.1} s",
        bytes.len(),
        t0.elapsed().as_secs_f64()
    );

    let mut g = c.benchmark_group("spool/recover");
    // Tens of ms an iteration at the default size.
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("open_close", |b| {
        b.iter(|| {
            let (spool, report) = Spool::open(dir.path(), spool_options()).expect("open");
            assert_eq!(report.unacked_estimate, n, "every record recovered");
            assert_eq!(report.truncated_bytes, 0, "nothing torn");
            spool.close();
        })
    });
    g.bench_function("scan_segment", |b| {
        b.iter(|| {
            let (_, mut scanner) = format::Scanner::segment(black_box(&bytes)).expect("header");
            let count = scanner.by_ref().count() as u64;
            assert_eq!(count, n, "every record scanned");
            assert_eq!(scanner.stop(), None, "to the end");
            count
        })
    });
    g.finish();
    assert_eq!(
        std::fs::metadata(&segment).expect("segment").len(),
        bytes.len() as u64,
        "opening left the segment as it was"
    );
}

criterion_group! {
    name = cores;
    config = criterion_config();
    targets = envelope_benches, beam_benches, mqtt_benches, batch_benches,
        spool_append_benches, spool_recover_benches
}
criterion_main!(cores);
