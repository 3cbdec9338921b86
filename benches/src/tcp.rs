//! `loadgen tcp` and `loadgen mqtt`: N connections, each bound to its own
//! loopback source address (one simulated SIM each), each with one request
//! outstanding at a time.
//!
//! * `tcp` writes a message (a JSON record padded to `--size` bytes, the
//!   last one a newline) and reads the reply: up to a newline
//!   (`--reply line`, an echo server or simgate's `201\n`) or whatever one
//!   read returns (`--reply any`, for servers that answer without a line
//!   end).
//! * `mqtt` connects (MQTT 3.1.1, clean session), then publishes at QoS 1
//!   and waits for the PUBACK of that packet id.
//!
//! Closed loop (default): the next request goes out as soon as the reply
//! is in; latency is from write to reply. Open loop (`--rate R`): every
//! connection offers R/N requests a second, spread over the connections,
//! and a request that goes out late because the connection was still
//! waiting for the previous reply is timed from when it *should* have gone
//! out, so a server stall is charged to every request that waited behind it
//! (coordinated omission; as wrk2 does). A request sent on time is timed
//! from its write: tokio's timer wakes up to a millisecond late, and that
//! delay is the generator's. A connection still waiting when its next
//! request is due sends that one late rather than piling up more.
//!
//! After `--warmup`, one `--duration` window (cut short when `--count`
//! requests are done in all) is reported as one JSON line.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::conn::{self, Tally, RECONNECT_PAUSE, REQUEST_TIMEOUT};
use crate::mqtt::{self, Incoming};
use crate::report::{self, JsonLine, Phase};

/// Longest reply kept (a longer one is an error).
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// The server: a 127.0.0.0/8 address and port.
    #[arg(long)]
    target: SocketAddrV4,
    /// Connections, each from its own source address.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Source address of the first connection; connection i binds base + i.
    #[arg(long, default_value_t = crate::DEFAULT_SOURCE_BASE)]
    source_base: Ipv4Addr,
    /// Seconds of load before the measured window starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Length of the measured window in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests in all, warm-up included (the window
    /// then ends early).
    #[arg(long)]
    count: Option<u64>,
    /// Open loop: requests per second over all connections; unset = closed
    /// loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Message (tcp) or payload (mqtt) bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Runtime threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// NAME=PID: report the CPU time of PID and its direct children over
    /// the window as `cpu_NAME_s` and `cpu_NAME_us_per_req`.
    #[arg(long = "cpu", value_parser = report::parse_cpu)]
    cpu: Vec<(String, u32)>,
    /// A `label` field in the JSON line (the side measured).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Framing {
    /// A reply ends with a newline.
    Line,
    /// A reply is whatever one read returns.
    Any,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TcpArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// How a reply ends.
    #[arg(long, value_enum, default_value_t = Framing::Line)]
    reply: Framing,
    /// A reply must start with this to count as a success (e.g. `201`).
    #[arg(long, conflicts_with = "expect_echo")]
    expect_prefix: Option<String>,
    /// A reply must be the message itself (an echo server behind a proxy).
    #[arg(long)]
    expect_echo: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct MqttArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Topic of every PUBLISH; `{sim}` becomes the connection's number.
    #[arg(long, default_value = "bench/{sim}")]
    topic: String,
    /// Client id prefix; the connection's number is appended.
    #[arg(long, default_value = "loadgen-")]
    client_id: String,
}

/// What a connection speaks.
#[derive(Debug, Clone)]
enum Proto {
    Tcp { framing: Framing, check: Check },
    Mqtt { topic: String, client_id: String },
}

/// What a successful TCP reply looks like.
#[derive(Debug, Clone)]
enum Check {
    Any,
    Prefix(Arc<[u8]>),
    Echo,
}

/// What the connections read.
#[derive(Default)]
struct Shared {
    phase: Phase,
    /// Requests started, all connections (for `--count`).
    started: AtomicU64,
}

pub(crate) fn run_tcp(a: &TcpArgs) -> anyhow::Result<()> {
    let check = match (&a.expect_prefix, a.expect_echo) {
        (Some(p), _) => Check::Prefix(p.as_bytes().into()),
        (None, true) => Check::Echo,
        (None, false) => Check::Any,
    };
    run(
        &a.load,
        "tcp",
        &Proto::Tcp {
            framing: a.reply,
            check,
        },
    )
}

pub(crate) fn run_mqtt(a: &MqttArgs) -> anyhow::Result<()> {
    ensure!(
        !a.topic.is_empty() && !a.topic.contains(['+', '#']),
        "--topic must be a topic name, not a filter"
    );
    run(
        &a.load,
        "mqtt",
        &Proto::Mqtt {
            topic: a.topic.clone(),
            client_id: a.client_id.clone(),
        },
    )
}

fn run(a: &LoadArgs, mode: &'static str, proto: &Proto) -> anyhow::Result<()> {
    ensure!(a.target.ip().is_loopback(), "target must be in 127.0.0.0/8");
    ensure!(
        (1..=10_000).contains(&a.connections),
        "--connections must be 1..=10000"
    );
    ensure!((2..=65_000).contains(&a.size), "--size must be 2..=65000");
    ensure!(
        a.rate.is_none_or(|r| r.is_finite() && r > 0.0),
        "--rate must be positive"
    );
    ensure!(a.count.is_none_or(|c| c > 0), "--count must be positive");
    report::check_window(a.warmup, a.duration)?;
    let sources = (0..a.connections)
        .map(|i| crate::source_addr(a.source_base, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let line = report::runtime(a.threads)?.block_on(drive(a, mode, proto, sources))?;
    println!("{line}");
    Ok(())
}

/// Connection `i`'s request bytes.
fn message(proto: &Proto, i: usize, size: usize) -> anyhow::Result<Vec<u8>> {
    let sim = u32::try_from(i + 1)?;
    let mut record = vec![0u8; size];
    match proto {
        Proto::Tcp { .. } => {
            // A line: the record, then the newline in its last byte.
            crate::send::fill_record(&mut record[..size - 1], sim, 0);
            record[size - 1] = b'\n';
            Ok(record)
        }
        Proto::Mqtt { .. } => {
            crate::send::fill_record(&mut record, sim, 0);
            Ok(record)
        }
    }
}

async fn drive(
    a: &LoadArgs,
    mode: &'static str,
    proto: &Proto,
    sources: Vec<Ipv4Addr>,
) -> anyhow::Result<String> {
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let n = sources.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, src) in sources.into_iter().enumerate() {
        let plan = Plan {
            src,
            target: a.target,
            index: i,
            message: message(proto, i, a.size)?.into(),
            proto: proto.clone(),
            // Each connection takes its share, the connections' send times
            // interleaved over the first interval.
            pace: a.rate.map(|r| {
                let per_conn = r / n as f64;
                (start + Duration::from_secs_f64(i as f64 / r), per_conn)
            }),
            count: a.count,
        };
        tasks.push(tokio::spawn(connection(plan, Arc::clone(&shared))));
    }

    let all_done = || tasks.iter().all(tokio::task::JoinHandle::is_finished);
    let sleep = |secs: f64| {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        async move {
            while Instant::now() < end && !all_done() {
                tokio::time::sleep((end - Instant::now()).min(Duration::from_millis(10))).await;
            }
        }
    };
    let w = report::measure(&shared.phase, &a.cpu, a.warmup, a.duration, sleep).await?;
    let total = conn::join_tallies(tasks).await?;
    let mut j = JsonLine::default();
    j.string("mode", mode)
        .string("label", &a.label)
        .string("target", &a.target.to_string())
        .raw("connections", a.connections)
        .string("loop", if a.rate.is_some() { "open" } else { "closed" })
        .raw("offered_per_s", a.rate.map_or(0.0, |r| r.round()))
        .raw("size", a.size)
        .raw("window_s", format!("{:.3}", w.secs));
    total.fields(&mut j, "bad_replies", w.secs);
    j.cpu(&w.cpu, &w.cpu_after, total.ok);
    Ok(j.finish())
}

/// One connection's job.
struct Plan {
    src: Ipv4Addr,
    target: SocketAddrV4,
    index: usize,
    message: Arc<[u8]>,
    proto: Proto,
    /// Open loop: this connection's first send time and its rate.
    pace: Option<(Instant, f64)>,
    count: Option<u64>,
}

/// How one request ended.
enum Outcome {
    Ok,
    BadReply,
}

/// A connection and what the protocol keeps on it.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// MQTT: the last packet id used.
    packet_id: u16,
}

async fn dial(p: &Plan) -> anyhow::Result<Conn> {
    let mut stream = crate::http::open(p.src, p.target).await?;
    let mut buf = Vec::with_capacity(4096);
    if let Proto::Mqtt { client_id, .. } = &p.proto {
        stream
            .write_all(&mqtt::connect(&format!("{client_id}{}", p.index + 1), 300)?)
            .await?;
        loop {
            if let Some(n) = mqtt::connack(&buf)? {
                buf.drain(..n);
                break;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("connection closed before CONNACK");
            }
        }
    }
    Ok(Conn {
        stream,
        buf,
        packet_id: 0,
    })
}

async fn exchange(c: &mut Conn, p: &Plan) -> anyhow::Result<Outcome> {
    match &p.proto {
        Proto::Tcp { framing, check } => {
            c.stream.write_all(&p.message).await?;
            let reply_len = loop {
                match framing {
                    Framing::Line => {
                        if let Some(i) = c.buf.iter().position(|&b| b == b'\n') {
                            break i + 1;
                        }
                    }
                    Framing::Any => {
                        if !c.buf.is_empty() {
                            break c.buf.len();
                        }
                    }
                }
                ensure!(
                    c.buf.len() < MAX_REPLY,
                    "reply longer than {MAX_REPLY} bytes"
                );
                if c.stream.read_buf(&mut c.buf).await? == 0 {
                    bail!("connection closed before the reply");
                }
            };
            let good = reply_ok(check, &c.buf[..reply_len], &p.message);
            c.buf.drain(..reply_len);
            Ok(if good { Outcome::Ok } else { Outcome::BadReply })
        }
        Proto::Mqtt { topic, .. } => {
            c.packet_id = c.packet_id.checked_add(1).unwrap_or(1);
            let id = c.packet_id;
            let topic = topic.replace("{sim}", &(p.index + 1).to_string());
            c.stream
                .write_all(&mqtt::publish_qos1(&topic, id, &p.message)?)
                .await?;
            loop {
                while let Some((packet, n)) = mqtt::incoming(&c.buf)? {
                    c.buf.drain(..n);
                    match packet {
                        Incoming::Puback(got) if got == id => return Ok(Outcome::Ok),
                        // One request is outstanding: any other id is wrong.
                        Incoming::Puback(_) => return Ok(Outcome::BadReply),
                        Incoming::Other => {}
                    }
                }
                if c.stream.read_buf(&mut c.buf).await? == 0 {
                    bail!("connection closed before PUBACK");
                }
            }
        }
    }
}

fn reply_ok(check: &Check, reply: &[u8], message: &[u8]) -> bool {
    match check {
        Check::Any => true,
        Check::Prefix(p) => reply.starts_with(p),
        Check::Echo => reply == message,
    }
}

/// One connection until told to stop; reconnects (from the same source)
/// after an error.
async fn connection(p: Plan, shared: Arc<Shared>) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut live: Option<Conn> = None;
    let mut k: u64 = 0;
    while !shared.phase.stop.load(Ordering::Relaxed) {
        let measuring = shared.phase.measuring.load(Ordering::Relaxed);
        let Some(c) = conn::connected(&mut live, &mut tally, measuring, || dial(&p)).await else {
            continue;
        };
        if let Some(limit) = p.count {
            if shared.started.fetch_add(1, Ordering::Relaxed) >= limit {
                break;
            }
        }
        let due = match p.pace {
            Some((first, rate)) => {
                let due = report::intended(first, rate, k);
                if Instant::now() < due {
                    // On time: the timer wakes up to a millisecond late,
                    // which is the generator's delay, not the server's, so
                    // the clock starts at the actual send.
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    // Behind: the previous reply came after this request
                    // was due; the server's delay counts.
                    due
                }
            }
            None => Instant::now(),
        };
        k += 1;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange(c, &p)).await;
        if !shared.phase.measuring.load(Ordering::Relaxed) {
            if !matches!(result, Ok(Ok(_))) {
                live = None;
            }
            continue;
        }
        match result {
            Ok(Ok(Outcome::Ok)) => {
                tally.ok += 1;
                report::record_since(&mut tally.latency_us, due);
            }
            Ok(Ok(Outcome::BadReply)) => tally.bad += 1,
            Ok(Err(_)) => {
                tally.io_errors += 1;
                live = None;
            }
            Err(_) => {
                tally.timeouts += 1;
                live = None;
            }
        }
        if live.is_none() {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
    if let (Some(c), Proto::Mqtt { .. }) = (live.as_mut(), &p.proto) {
        // A clean goodbye, so the broker logs no abnormal disconnect.
        let _ = c.stream.write_all(&mqtt::DISCONNECT).await;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lines_of_the_exact_size() -> anyhow::Result<()> {
        let tcp = Proto::Tcp {
            framing: Framing::Line,
            check: Check::Echo,
        };
        let m = message(&tcp, 16, 100)?;
        assert_eq!(m.len(), 100);
        assert!(m.starts_with(b"{\"sim\":17,\"seq\":0,\"pad\":\"x"));
        assert!(m.ends_with(b"\"}\n"));
        assert_eq!(m.iter().filter(|&&b| b == b'\n').count(), 1);
        let mqtt = Proto::Mqtt {
            topic: "t".into(),
            client_id: "c".into(),
        };
        let m = message(&mqtt, 0, 50)?;
        assert_eq!(m.len(), 50);
        assert!(m.ends_with(b"\"}"));
        Ok(())
    }

    fn load(target: SocketAddrV4, rate: Option<f64>) -> LoadArgs {
        LoadArgs {
            target,
            connections: 4,
            source_base: crate::DEFAULT_SOURCE_BASE,
            warmup: 0.0,
            duration: 5.0,
            count: Some(200),
            rate,
            size: 64,
            threads: 1,
            cpu: Vec::new(),
            label: "t".to_owned(),
        }
    }

    fn sources(n: usize) -> Vec<Ipv4Addr> {
        (0..n)
            .map(|i| crate::source_addr(crate::DEFAULT_SOURCE_BASE, i))
            .collect::<anyhow::Result<_>>()
            .unwrap()
    }

    /// A TCP echo server; every connection's peer address is sent on `peers`.
    async fn echo_server(
        peers: tokio::sync::mpsc::UnboundedSender<std::net::SocketAddr>,
    ) -> SocketAddrV4 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            while let Ok((mut s, peer)) = l.accept().await {
                let _ = peers.send(peer);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn closed_and_open_loop_against_an_echo() -> anyhow::Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let target = echo_server(tx).await;
        let echo = Proto::Tcp {
            framing: Framing::Line,
            check: Check::Echo,
        };
        let line = drive(&load(target, None), "tcp", &echo, sources(4)).await?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        // --count bounds the whole run (warm-up 0: all of it measured).
        assert_eq!(v["requests"], 200, "{line}");
        assert_eq!(v["errors"], 0, "{line}");
        assert_eq!(v["loop"], "closed");
        let mut seen = Vec::new();
        while let Ok(peer) = rx.try_recv() {
            seen.push(peer.ip());
        }
        seen.sort();
        let want: Vec<std::net::IpAddr> = sources(4).into_iter().map(Into::into).collect();
        assert_eq!(seen, want, "one connection from each SIM address");

        // Open loop: 200 requests at 2,000/s take about 0.1 s.
        let line = drive(&load(target, Some(2000.0)), "tcp", &echo, sources(4)).await?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["requests"], 200, "{line}");
        assert_eq!(v["loop"], "open");

        // A prefix the echo never starts with: every reply is wrong.
        let wrong = Proto::Tcp {
            framing: Framing::Line,
            check: Check::Prefix(b"201".as_slice().into()),
        };
        let line = drive(&load(target, None), "tcp", &wrong, sources(4)).await?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["requests"], 0, "{line}");
        assert_eq!(v["bad_replies"], 200, "{line}");
        Ok(())
    }

    /// A broker that accepts one CONNECT and acknowledges every QoS 1
    /// PUBLISH, decoding what the client sent.
    async fn puback_broker() -> SocketAddrV4 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        while let Ok(Some((first, end, start))) = mqtt_split(&buf) {
                            let reply: Vec<u8> = match first {
                                0x10 => vec![0x20, 2, 0, 0],
                                0x32 => {
                                    let body = &buf[start..end];
                                    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                                    vec![0x40, 2, body[2 + tlen], body[3 + tlen]]
                                }
                                _ => Vec::new(),
                            };
                            buf.drain(..end);
                            if s.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                        match s.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        addr
    }

    fn mqtt_split(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, ()> {
        // The test broker reads single-byte lengths only (payloads < 128).
        if buf.len() < 2 {
            return Ok(None);
        }
        let end = 2 + usize::from(buf[1]);
        Ok((buf.len() >= end).then_some((buf[0], end, 2)))
    }

    #[tokio::test]
    async fn mqtt_publishes_wait_for_their_puback() -> anyhow::Result<()> {
        let target = puback_broker().await;
        let proto = Proto::Mqtt {
            topic: "bench/{sim}".to_owned(),
            client_id: "t-".to_owned(),
        };
        let line = drive(&load(target, None), "mqtt", &proto, sources(4)).await?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["requests"], 200, "{line}");
        assert_eq!(v["errors"], 0, "{line}");
        assert_eq!(v["connects"], 4, "{line}");
        Ok(())
    }

    #[test]
    fn reply_checks() {
        assert!(reply_ok(&Check::Any, b"x", b"m\n"));
        assert!(reply_ok(
            &Check::Prefix(b"201".as_slice().into()),
            b"201\n",
            b""
        ));
        assert!(!reply_ok(
            &Check::Prefix(b"201".as_slice().into()),
            b"503 busy",
            b""
        ));
        assert!(reply_ok(&Check::Echo, b"m\n", b"m\n"));
        assert!(!reply_ok(&Check::Echo, b"imsi=1\r\n", b"m\n"));
    }
}
