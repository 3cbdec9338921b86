//! What every closed- or open-loop mode (`http`, `tcp`, `mqtt`,
//! `harvest-raw`) shares: the latency histogram, the measured window, the
//! CPU time of watched processes, and the one JSON line of results.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use hdrhistogram::Histogram;

/// Longest window or warm-up accepted: runs stay bounded.
pub(crate) const MAX_SECONDS: f64 = 3600.0;

/// A latency histogram in microseconds: 1 µs … 60 s, 3 significant digits.
pub(crate) fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Records the time from `since` to now, in µs (at least 1).
pub(crate) fn record_since(h: &mut Histogram<u64>, since: Instant) {
    let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.max(1));
}

/// `--warmup` and `--duration` within bounds.
pub(crate) fn check_window(warmup: f64, duration: f64) -> anyhow::Result<()> {
    ensure!(
        (0.0..=MAX_SECONDS).contains(&warmup) && duration > 0.0 && duration <= MAX_SECONDS,
        "--warmup and --duration must be within 0..{MAX_SECONDS} s"
    );
    Ok(())
}

/// A current-thread runtime for 1 thread, else a multi-thread one.
pub(crate) fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    ensure!((1..=64).contains(&threads), "--threads must be 1..=64");
    Ok(if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    })
}

/// Flags the load tasks read.
#[derive(Debug, Default)]
pub(crate) struct Phase {
    /// Inside the measured window: only then is anything counted.
    pub(crate) measuring: AtomicBool,
    pub(crate) stop: AtomicBool,
}

/// A measured window: its length and the watched processes' CPU times.
pub(crate) struct Window {
    /// Seconds, never 0 (rates divide by it).
    pub(crate) secs: f64,
    pub(crate) cpu: CpuWatch,
    pub(crate) cpu_after: Vec<f64>,
}

/// Lets the load run through `warmup`, measures one `duration` window
/// (`sleep(secs)` waits that long, or less when the load is done early),
/// then tells the tasks to stop.
pub(crate) async fn measure<F, Fut>(
    phase: &Phase,
    cpu: &[(String, u32)],
    warmup: f64,
    duration: f64,
    sleep: F,
) -> anyhow::Result<Window>
where
    F: Fn(f64) -> Fut,
    Fut: Future<Output = ()>,
{
    sleep(warmup).await;
    let cpu = CpuWatch::start(cpu)?;
    let t0 = Instant::now();
    phase.measuring.store(true, Ordering::SeqCst);
    sleep(duration).await;
    phase.measuring.store(false, Ordering::SeqCst);
    let window = t0.elapsed();
    let cpu_after = cpu.now()?;
    phase.stop.store(true, Ordering::SeqCst);
    Ok(Window {
        secs: window.as_secs_f64().max(1e-9),
        cpu,
        cpu_after,
    })
}

/// [`measure`]'s plain sleep.
pub(crate) async fn sleep_secs(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

/// Waits for every load task (each up to `limit`, after the stop) and hands
/// each one's result to `each`; `what` names a task in errors.
pub(crate) async fn join_all<T>(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<T>>>,
    limit: Duration,
    what: &str,
    mut each: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for t in tasks {
        match tokio::time::timeout(limit, t).await {
            Ok(Ok(Ok(v))) => each(v)?,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => bail!("a {what} task failed: {e}"),
            Err(_) => bail!("a {what} did not stop"),
        }
    }
    Ok(())
}

/// Open loop: when operation `k` (0-based) of a sender offering `rate`/s
/// should start. An operation that starts late because the server was slow
/// is timed from this instant, not from when the sender got round to it,
/// so a stalled server is charged for the operations that waited behind it
/// (coordinated omission).
pub(crate) fn intended(start: Instant, rate: f64, k: u64) -> Instant {
    start + Duration::from_secs_f64(k as f64 / rate)
}

/// One flat JSON object on one line.
#[derive(Debug, Default)]
pub(crate) struct JsonLine(String);

impl JsonLine {
    /// A field whose value is already JSON (a number).
    pub(crate) fn raw(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        let _ = write!(self.0, "\"{key}\":{value}");
        self
    }

    pub(crate) fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.raw(key, json_string(value))
    }

    /// `p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us`, `mean_us`.
    pub(crate) fn latencies(&mut self, h: &Histogram<u64>) -> &mut Self {
        for (key, q) in [
            ("p50_us", 0.5),
            ("p90_us", 0.9),
            ("p99_us", 0.99),
            ("p999_us", 0.999),
        ] {
            // An empty histogram answers its lowest bound; 0 says "none".
            let v = if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            };
            self.raw(key, v);
        }
        self.raw("max_us", h.max());
        self.raw("mean_us", format!("{:.1}", h.mean()))
    }

    /// `cpu_NAME_s` and `cpu_NAME_us_per_req` (per `ops`) for each process.
    pub(crate) fn cpu(&mut self, w: &CpuWatch, after: &[f64], ops: u64) -> &mut Self {
        for (i, (name, _)) in w.pids.iter().enumerate() {
            let s = after[i] - w.before[i];
            self.raw(&format!("cpu_{name}_s"), format!("{s:.3}"));
            let per = if ops > 0 { s * 1e6 / ops as f64 } else { 0.0 };
            self.raw(&format!("cpu_{name}_us_per_req"), format!("{per:.2}"));
        }
        self
    }

    pub(crate) fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `--cpu NAME=PID`.
pub(crate) fn parse_cpu(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("bad name {name:?}"));
    }
    Ok((
        name.to_owned(),
        pid.parse().map_err(|e| format!("bad pid {pid:?}: {e}"))?,
    ))
}

/// The processes whose CPU time a window reports (`--cpu`, plus this
/// process as `loadgen`), and their CPU seconds at its start.
pub(crate) struct CpuWatch {
    pids: Vec<(String, u32)>,
    before: Vec<f64>,
}

impl CpuWatch {
    /// Reads the starting CPU times now.
    pub(crate) fn start(cpu: &[(String, u32)]) -> anyhow::Result<Self> {
        let mut pids = cpu.to_vec();
        pids.push(("loadgen".to_owned(), std::process::id()));
        let before = cpu_snapshot(&pids)?;
        Ok(Self { pids, before })
    }

    /// The CPU seconds now, to pass to [`JsonLine::cpu`].
    pub(crate) fn now(&self) -> anyhow::Result<Vec<f64>> {
        cpu_snapshot(&self.pids)
    }
}

/// User + system CPU seconds of each process and its direct children (an
/// nginx master counts its workers).
pub(crate) fn cpu_snapshot(pids: &[(String, u32)]) -> anyhow::Result<Vec<f64>> {
    if pids.is_empty() {
        return Ok(Vec::new());
    }
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .filter(|&t| t > 0)
        .context("sysconf(CLK_TCK) gave no value")?;
    // Every process's parent and ticks, read once.
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end while the directory is walked.
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
            if let Some((ppid, ticks)) = parse_stat(&stat) {
                all.push((pid, ppid, ticks));
            }
        }
    }
    pids.iter()
        .map(|(name, pid)| {
            ensure!(
                all.iter().any(|&(p, _, _)| p == *pid),
                "--cpu {name}={pid}: no such process"
            );
            let ticks: u64 = all
                .iter()
                .filter(|&&(p, pp, _)| p == *pid || pp == *pid)
                .map(|&(_, _, t)| t)
                .sum();
            Ok(ticks as f64 / per_second as f64)
        })
        .collect()
}

/// Parent pid and utime + stime (clock ticks) from a /proc/PID/stat line.
pub(crate) fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from after its closing one (field 3 is the state).
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines() {
        let line = "1234 (nginx: worker (x)) S 1200 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 1 0 100 1000 100";
        assert_eq!(parse_stat(line), Some((1200, 325)));
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&me).is_some());
        let cpu = cpu_snapshot(&[("me".to_owned(), std::process::id())]).unwrap();
        assert!(cpu[0] >= 0.0);
        assert!(cpu_snapshot(&[("none".to_owned(), u32::MAX)]).is_err());
    }

    #[test]
    fn cpu_args() {
        assert_eq!(parse_cpu("proxy=42"), Ok(("proxy".to_owned(), 42)));
        assert!(parse_cpu("proxy=x").is_err());
        assert!(parse_cpu("a b=1").is_err());
    }

    #[test]
    fn json_lines() -> anyhow::Result<()> {
        let mut h = latency_histogram()?;
        for v in [100, 200, 300, 400] {
            h.record(v)?;
        }
        let mut j = JsonLine::default();
        j.string("label", "a\"b\n").raw("n", 3).latencies(&h);
        let line = j.finish();
        let v: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(v["label"], "a\"b\n");
        assert_eq!(v["n"], 3);
        assert_eq!(v["p50_us"], 200);
        assert_eq!(v["max_us"], 400);
        let mut j = JsonLine::default();
        j.latencies(&latency_histogram()?);
        let v: serde_json::Value = serde_json::from_str(&j.finish())?;
        assert_eq!(v["p99_us"], 0);
        assert_eq!(JsonLine::default().finish(), "{}");
        Ok(())
    }

    #[test]
    fn intended_send_times_follow_the_rate() {
        let t0 = Instant::now();
        assert_eq!(intended(t0, 1000.0, 0), t0);
        assert_eq!(intended(t0, 1000.0, 250), t0 + Duration::from_millis(250));
        assert!(check_window(0.0, 1.0).is_ok());
        assert!(check_window(1.0, 0.0).is_err());
        assert!(check_window(-1.0, 1.0).is_err());
    }
}
