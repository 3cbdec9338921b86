//! What the connection-per-SIM modes (`http`, `tcp`, `mqtt`) share: one
//! connection's counts, its (re)connect, and the join of all of them.

use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::report::{self, JsonLine};

/// A request with no complete reply after this long is an error (and its
/// connection is dropped); a connect is bounded the same way.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed connect or an error before reconnecting.
pub(crate) const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// One connection's counts inside the window.
pub(crate) struct Tally {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) ok: u64,
    /// A reply that came but is no success (HTTP: not 2xx; tcp, mqtt: not
    /// the expected reply).
    pub(crate) bad: u64,
    pub(crate) io_errors: u64,
    pub(crate) timeouts: u64,
    pub(crate) connects: u64,
    pub(crate) connect_errors: u64,
}

impl Tally {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: report::latency_histogram()?,
            ok: 0,
            bad: 0,
            io_errors: 0,
            timeouts: 0,
            connects: 0,
            connect_errors: 0,
        })
    }

    fn add(&mut self, o: &Self) -> anyhow::Result<()> {
        self.latency_us.add(&o.latency_us)?;
        self.ok += o.ok;
        self.bad += o.bad;
        self.io_errors += o.io_errors;
        self.timeouts += o.timeouts;
        self.connects += o.connects;
        self.connect_errors += o.connect_errors;
        Ok(())
    }

    fn errors(&self) -> u64 {
        self.bad + self.io_errors + self.timeouts + self.connect_errors
    }

    /// `requests` … `req_per_s` and the latencies, `bad` named `bad_key`.
    pub(crate) fn fields(&self, j: &mut JsonLine, bad_key: &str, secs: f64) {
        j.raw("requests", self.ok)
            .raw("errors", self.errors())
            .raw(bad_key, self.bad)
            .raw("io_errors", self.io_errors)
            .raw("timeouts", self.timeouts)
            .raw("connect_errors", self.connect_errors)
            .raw("connects", self.connects)
            .raw("req_per_s", format!("{:.0}", self.ok as f64 / secs))
            .latencies(&self.latency_us);
    }
}

/// The connection in `slot`, dialled first if there is none; `None` after
/// a failed or timed-out dial (counted when `measuring`, and paused after).
pub(crate) async fn connected<'a, C, E, Fut>(
    slot: &'a mut Option<C>,
    tally: &mut Tally,
    measuring: bool,
    dial: impl FnOnce() -> Fut,
) -> Option<&'a mut C>
where
    Fut: Future<Output = Result<C, E>>,
{
    if slot.is_none() {
        match tokio::time::timeout(REQUEST_TIMEOUT, dial()).await {
            Ok(Ok(c)) => {
                if measuring {
                    tally.connects += 1;
                }
                *slot = Some(c);
            }
            Ok(Err(_)) | Err(_) => {
                if measuring {
                    tally.connect_errors += 1;
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                return None;
            }
        }
    }
    slot.as_mut()
}

/// Every connection's tally, summed (each exchange is bounded by
/// REQUEST_TIMEOUT, so a connection stops within it).
pub(crate) async fn join_tallies(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Tally>>>,
) -> anyhow::Result<Tally> {
    let mut total = Tally::new()?;
    report::join_all(
        tasks,
        REQUEST_TIMEOUT + Duration::from_secs(5),
        "connection",
        |t| total.add(&t),
    )
    .await?;
    Ok(total)
}
