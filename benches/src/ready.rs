//! Restart-to-listening time: how long after its spawn simgate answers its
//! API's `/health`, and (when a UDP target is given) how long until a record
//! sent to it gets a reply — with the spool, the first record is answered
//! only once the spool is recovered and the record committed.
//!
//! The clock starts at `--since-ns` (the script reads `date +%s%N` just
//! before it spawns simgate), so this process's own start-up is counted, as
//! it would be for a device.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _};

use crate::scrape;

/// Health is polled this often.
const HEALTH_POLL: Duration = Duration::from_millis(2);
/// A record is (re)sent this often until one is answered.
const UDP_POLL: Duration = Duration::from_millis(10);
/// Longest wait accepted.
const MAX_TIMEOUT: f64 = 600.0;

#[derive(Debug, clap::Args)]
pub(crate) struct ReadyArgs {
    /// Unix time in nanoseconds the times are measured from (`date +%s%N`
    /// just before the spawn); unset: this process's start.
    #[arg(long)]
    since_ns: Option<u128>,
    /// Polled until it answers HTTP 200, e.g. http://127.0.0.1:7070/health.
    #[arg(long)]
    health: String,
    /// Also send a record to this UDP address every 10 ms until one is
    /// answered (any answer).
    #[arg(long)]
    udp: Option<SocketAddrV4>,
    /// Source address of the UDP record (a SIM with a session).
    #[arg(long, default_value_t = crate::DEFAULT_SOURCE_BASE)]
    source: Ipv4Addr,
    /// Seconds to wait for each before giving up.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// Prints `health_ms=… udp_reply_ms=… udp_reply=…` (`none` when nothing
/// answered in time); fails if `/health` never answered.
pub(crate) fn run(a: &ReadyArgs) -> anyhow::Result<()> {
    ensure!(
        a.timeout > 0.0 && a.timeout <= MAX_TIMEOUT,
        "--timeout must be within 0..{MAX_TIMEOUT} s"
    );
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_nanos();
    let since_ns = a.since_ns.unwrap_or(now_ns);
    ensure!(since_ns <= now_ns, "--since-ns is in the future");
    // Monotonic from here on: the wall clock only places the start.
    let start = Instant::now()
        .checked_sub(Duration::from_nanos(u64::try_from(now_ns - since_ns)?))
        .context("--since-ns is too far in the past")?;
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout);

    let udp = a
        .udp
        .map(|target| {
            let source = a.source;
            thread::spawn(move || probe_udp(source, target, deadline))
        })
        .map(|h| h.join());
    let health = wait_health(&a.health, deadline);

    let ms = |t: Option<Instant>| {
        t.map_or_else(
            || "none".to_owned(),
            |t| format!("{:.1}", t.duration_since(start).as_secs_f64() * 1e3),
        )
    };
    let mut out = vec![format!("health_ms={}", ms(health))];
    if let Some(joined) = udp {
        let (at, reply) = match joined {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("the UDP probe thread panicked"),
        };
        out.push(format!("udp_reply_ms={}", ms(at)));
        out.push(format!("udp_reply={}", reply.as_deref().unwrap_or("none")));
    }
    println!("{}", out.join(" "));
    ensure!(health.is_some(), "{} did not answer in time", a.health);
    Ok(())
}

fn wait_health(url: &str, deadline: Instant) -> Option<Instant> {
    loop {
        if scrape::get(url).is_ok() {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(HEALTH_POLL);
    }
}

/// Sends a record every 10 ms until anything comes back; returns when and
/// the reply's first word (its status).
fn probe_udp(
    source: Ipv4Addr,
    target: SocketAddrV4,
    deadline: Instant,
) -> anyhow::Result<(Option<Instant>, Option<String>)> {
    ensure!(target.ip().is_loopback(), "--udp must be in 127.0.0.0/8");
    let socket = UdpSocket::bind((source, 0)).with_context(|| format!("cannot bind {source}"))?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(UDP_POLL))?;
    let mut record = vec![0u8; 100];
    let mut buf = [0u8; 512];
    let mut seq = 0u64;
    while Instant::now() < deadline {
        crate::send::fill_record(&mut record, 1, seq);
        seq += 1;
        // Nothing bound yet shows up as ECONNREFUSED on the send or on the
        // receive after it: both mean "not yet".
        if socket.send(&record).is_err() {
            thread::sleep(UDP_POLL);
            continue;
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let status = text.split_whitespace().next().unwrap_or("").to_owned();
                return Ok((Some(Instant::now()), Some(status)));
            }
            // The read timed out (no answer yet) or the port was closed.
            Err(_) => {
                if Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    Ok((None, None))
}
