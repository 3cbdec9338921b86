//! `loadgen harvest-raw`: the baseline of the harvest-ingest benchmark.
//! simgate's own Harvest store (`services::harvest::HarvestStore`: redb,
//! one writer thread, group commit, a durable commit before an append
//! returns), opened with simgate's default settings as `serve` opens it,
//! and appended to by `--writers` tasks in a closed loop, each with one
//! append outstanding: what the store can take with no network, no
//! parsing and no session lookup in front of it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use simgate::services::harvest::{
    Category, HarvestError, HarvestStore, NewEntry, DEFAULT_CONTENT_TYPE,
};
use simgate_control::config::HarvestSettings;
use simgate_control::Imsi;

use crate::report::{self, JsonLine, Phase};

/// Pause after a `Busy` before the writer tries again (the store's queue is
/// full; simgate's ingress would answer 503).
const BUSY_PAUSE: Duration = Duration::from_millis(1);

#[derive(Debug, clap::Args)]
pub(crate) struct HarvestRawArgs {
    /// Directory for the store (`DIR/harvest.redb`, created).
    #[arg(long)]
    dir: PathBuf,
    /// Concurrent writers, each a SIM of its own (match the connections of
    /// the simgate side).
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Entry bytes (a JSON record padded to this size).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of appends before the measured window starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Length of the measured window in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Runtime threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A `label` field in the JSON line.
    #[arg(long, default_value = "raw")]
    label: String,
}

struct Tally {
    latency_us: Histogram<u64>,
    ok: u64,
    busy: u64,
    failed: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: report::latency_histogram()?,
            ok: 0,
            busy: 0,
            failed: 0,
        })
    }
}

pub(crate) fn run(a: &HarvestRawArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=10_000).contains(&a.writers),
        "--writers must be 1..=10000"
    );
    report::check_window(a.warmup, a.duration)?;
    let settings = HarvestSettings::default();
    ensure!(
        (2..=settings.max_entry_bytes).contains(&a.size),
        "--size must be 2..={}",
        settings.max_entry_bytes
    );
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let path = a.dir.join("harvest.redb");
    let store = HarvestStore::open(&path, settings)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let result = report::runtime(a.threads)?.block_on(drive(a, &store));
    // Dropping the last handle joins the writer thread.
    drop(store);
    result
}

async fn drive(a: &HarvestRawArgs, store: &Arc<HarvestStore>) -> anyhow::Result<()> {
    let phase = Arc::new(Phase::default());
    let mut tasks = Vec::with_capacity(a.writers);
    for i in 0..a.writers {
        let imsi = Imsi::parse(&crate::sims::imsi(i)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut record = vec![0u8; a.size];
        crate::send::fill_record(&mut record, u32::try_from(i + 1)?, 0);
        tasks.push(tokio::spawn(writer(
            Arc::clone(store),
            imsi,
            Bytes::from(record),
            Arc::clone(&phase),
        )));
    }
    let w = report::measure(&phase, &[], a.warmup, a.duration, report::sleep_secs).await?;
    let mut total = Tally::new()?;
    report::join_all(tasks, Duration::from_secs(30), "writer", |t| {
        total.latency_us.add(&t.latency_us)?;
        total.ok += t.ok;
        total.busy += t.busy;
        total.failed += t.failed;
        Ok(())
    })
    .await?;
    let secs = w.secs;
    let mut j = JsonLine::default();
    j.string("mode", "harvest-raw")
        .string("label", &a.label)
        .raw("connections", a.writers)
        .raw("size", a.size)
        .raw("window_s", format!("{secs:.3}"))
        .raw("requests", total.ok)
        .raw("errors", total.busy + total.failed)
        .raw("busy", total.busy)
        .raw("failed", total.failed)
        .raw("req_per_s", format!("{:.0}", total.ok as f64 / secs))
        .latencies(&total.latency_us)
        .cpu(&w.cpu, &w.cpu_after, total.ok);
    println!("{}", j.finish());
    Ok(())
}

/// One SIM's appends, one at a time, until told to stop.
async fn writer(
    store: Arc<HarvestStore>,
    imsi: Imsi,
    content: Bytes,
    phase: Arc<Phase>,
) -> anyhow::Result<Tally> {
    let mut t = Tally::new()?;
    while !phase.stop.load(Ordering::Relaxed) {
        // As simgate's ingress builds it: arrival time, default content
        // type, the source protocol.
        let entry = NewEntry {
            imsi: imsi.clone(),
            time: simgate_control::clock::now_ms(),
            content_type: DEFAULT_CONTENT_TYPE.to_owned(),
            category: Category::Tcp,
            content: content.clone(),
        };
        let started = Instant::now();
        let r = store.append(entry).await;
        let measuring = phase.measuring.load(Ordering::Relaxed);
        match r {
            Ok(()) if measuring => {
                t.ok += 1;
                report::record_since(&mut t.latency_us, started);
            }
            Ok(()) => {}
            Err(HarvestError::Busy) => {
                if measuring {
                    t.busy += 1;
                }
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            Err(e) if e.is_retryable() => {
                if measuring {
                    t.failed += 1;
                }
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            Err(e) => return Err(e).context("Harvest append failed"),
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_land_in_the_store() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let a = HarvestRawArgs {
            dir: dir.path().to_owned(),
            writers: 4,
            size: 100,
            warmup: 0.0,
            duration: 0.3,
            threads: 1,
            label: "t".to_owned(),
        };
        run(&a)?;
        let store =
            HarvestStore::open(dir.path().join("harvest.redb"), HarvestSettings::default())?;
        let imsi = Imsi::parse("001010000000001").map_err(|e| anyhow::anyhow!("{e}"))?;
        let page = store.query(&imsi, &simgate::services::harvest::Query::all_ascending(10))?;
        assert!(!page.entries.is_empty());
        assert_eq!(page.entries[0].content.len(), 100);
        Ok(())
    }
}
