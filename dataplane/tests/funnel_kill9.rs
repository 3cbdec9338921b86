//! Issue 7's kill -9 loop: the real `simgate serve` delivers to kinesalite
//! while SIMs send UDP records continuously; every 2–4 s the process is
//! SIGKILLed and started again on the same data dir and ports
//! (`$SIMGATE_KILL_CYCLES` times, 5 unless set). Then the last instance runs
//! until the stream holds every record a device was answered `200` for.
//! A `200` promises the record was committed to the spool, so no kill may
//! lose one. Restart-to-serving time (spawn → first `200`) is printed.
//!
//! `$SIMGATE_DURABILITY` picks `[funnel] durability` (`spool` unless set;
//! `omit` leaves the key out).
//!
//! Run: `cargo test -p simgate --test funnel_kill9 -- --nocapture`
//! (kinesalite from `scripts/kinesalite.sh install`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;
mod support {
    //! `support/mod.rs`'s module plus the durable-delivery helpers.
    #![allow(dead_code)] // each test file uses a different subset
    pub(crate) mod durable;
    pub(crate) mod kinesalite;
}

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use support::durable::{
    self, durability_line, env_u64, explain_missing, payload, push_sim_toml, sim_ip, udp_send,
    Answer, SinkStream, Tracker,
};
use support::kinesalite::Kinesalite;
use tokio::sync::watch;
use tokio::task::JoinSet;

const STREAM: &str = "devices";
/// The SIM whose records probe for a new instance; the load SIMs follow.
const PROBE_SIM: u32 = 30;
const LOAD_SIMS: u32 = 4;
/// Each load SIM sends one record per tick: 100 records/s in all.
const TICK: Duration = Duration::from_millis(40);
/// How long a device waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// A new instance must answer within this long (a hang guard, not a
/// performance target).
const START_GUARD: Duration = Duration::from_secs(5);
/// How long all acknowledged records may take to arrive after the load.
const DRAIN: Duration = Duration::from_secs(60);

fn imsi(sim: u32) -> String {
    format!("0010100000{:05}", 300 + sim)
}

/// The loopback address every incarnation listens on. Its own, not
/// 127.0.0.1: between a kill and the restart the ports are free, and a test
/// running alongside that asks the OS for a port on 127.0.0.1 could be
/// given one of them ("Address already in use" on restart).
const LISTEN_IP: [u8; 4] = [127, 0, 91, 1];

/// The ports every incarnation listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    http: u16,
    /// UDP and TCP.
    unified: u16,
    /// UDP and TCP.
    harvest: u16,
    api: u16,
}

impl Ports {
    /// Ports the OS says are free now (for UDP and TCP where both are
    /// used), all different: each is held until all are chosen.
    fn pick() -> Self {
        let mut held = Vec::new();
        let mut tcp_only = || {
            let l = TcpListener::bind(SocketAddr::from((LISTEN_IP, 0))).unwrap();
            let port = l.local_addr().unwrap().port();
            held.push((l, None));
            port
        };
        let http = tcp_only();
        let api = tcp_only();
        let mut both = || loop {
            let l = TcpListener::bind(SocketAddr::from((LISTEN_IP, 0))).unwrap();
            let port = l.local_addr().unwrap().port();
            if let Ok(u) = UdpSocket::bind(SocketAddr::from((LISTEN_IP, port))) {
                held.push((l, Some(u)));
                return port;
            }
        };
        let unified = both();
        let harvest = both();
        drop(held);
        Self {
            http,
            unified,
            harvest,
            api,
        }
    }

    fn unified_udp(self) -> SocketAddr {
        SocketAddr::from((LISTEN_IP, self.unified))
    }
}

fn config(data_dir: &Path, ports: Ports, endpoint: &str) -> String {
    let creds = Kinesalite::credentials();
    let mut text = format!(
        r#"
data_dir = {data_dir:?}

[listen]
http = "{ip}:{http}"
unified = "{ip}:{unified}"
harvest = "{ip}:{harvest}"
api = "{ip}:{api}"
beam_http = "127.0.0.1:0"
beam_website = "127.0.0.1:0"
beam_tcp = "127.0.0.1:0"
beam_mqtt = "127.0.0.1:0"

[radius]
enabled = false

[funnel]
{durability}
# kinesalite speaks plain HTTP.
allow_insecure_endpoints = true
# Long enough that records wait at every kill: a kill then loses them
# unless they are in the spool.
linger_ms = 200
request_timeout_ms = 2000
retry_max_ms = 1000

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "kinesis-kill9"
type = "aws"
access_key_id = "{key}"
secret_access_key = "{secret}"

[[groups]]
id = "fleet"
[groups.funnel]
enabled = true
credentials_id = "kinesis-kill9"
destination = {{ service = "kinesis", resource_url = "https://kinesis.{region}.amazonaws.com/{STREAM}", endpoint = "{endpoint}" }}
"#,
        data_dir = data_dir.display().to_string(),
        ip = std::net::Ipv4Addr::from(LISTEN_IP),
        http = ports.http,
        unified = ports.unified,
        harvest = ports.harvest,
        api = ports.api,
        durability = durability_line(),
        key = creds.access_key_id,
        secret = creds.secret_access_key.expose(),
        region = Kinesalite::REGION,
    );
    for sim in PROBE_SIM..=PROBE_SIM + LOAD_SIMS {
        push_sim_toml(&mut text, &imsi(sim), sim_ip(sim), "fleet");
    }
    text
}

/// One `simgate serve` process; SIGKILLed (and reaped) on drop.
struct Instance {
    child: Child,
    log: PathBuf,
    spawned: Instant,
}

impl Instance {
    fn spawn(config: &Path, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let spawned = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_simgate"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env_remove("SIMGATE_CONFIG")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // A start failure is then its error chain, not 30 lines of
            // backtrace frames hiding it in `log_tail`.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            spawned,
        }
    }

    /// `kill -9` and reap.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The end of the instance's log, to explain a failure.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends probe records until one is answered `200`; the time since
    /// spawn. Probes answered `200` are acknowledged records like any.
    async fn wait_serving(&mut self, to: SocketAddr, tracker: &Tracker) -> Duration {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "simgate exited ({status}) before serving; {}:\n{}",
                    self.log.display(),
                    self.log_tail()
                );
            }
            assert!(
                self.spawned.elapsed() < START_GUARD,
                "simgate not serving {START_GUARD:?} after spawn; {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
            let id = tracker.next_id();
            let p = payload(id, PROBE_SIM, "udp");
            // Short: while nothing listens the answer is an immediate ICMP
            // refusal, unless the kernel rate-limits those.
            let answer = udp_send(
                sim_ip(PROBE_SIM),
                to,
                p.as_bytes(),
                Duration::from_millis(200),
            )
            .await;
            tracker.record(id, "udp", &answer);
            match answer {
                Answer::Acked => return self.spawned.elapsed(),
                Answer::Silent("refused") => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => {}
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIMs sending one UDP record per tick each until stopped, whatever the
/// state of the server.
fn start_load(to: SocketAddr, tracker: &Arc<Tracker>) -> (watch::Sender<bool>, JoinSet<()>) {
    let (stop, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for sim in PROBE_SIM + 1..=PROBE_SIM + LOAD_SIMS {
        let tracker = Arc::clone(tracker);
        let mut rx = rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rx.changed() => return,
                }
                if *rx.borrow() {
                    return;
                }
                let id = tracker.next_id();
                let p = payload(id, sim, "udp");
                let answer = udp_send(sim_ip(sim), to, p.as_bytes(), ANSWER_WAIT).await;
                tracker.record(id, "udp", &answer);
            }
        });
    }
    (stop, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_loses_no_acknowledged_record() {
    let cycles = env_u64("SIMGATE_KILL_CYCLES", 5);
    let kinesalite = Kinesalite::start();
    let mut stream = SinkStream::create(&kinesalite, STREAM, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let ports = Ports::pick();
    let config_path = dir.path().join("simgate.toml");
    std::fs::write(
        &config_path,
        config(&data_dir, ports, &kinesalite.endpoint()),
    )
    .unwrap();
    let to = ports.unified_udp();
    let tracker = Arc::new(Tracker::default());
    let mut restarts = Vec::new();

    let mut instance = Instance::spawn(&config_path, dir.path().join("serve-0.log"));
    let first_start = instance.wait_serving(to, &tracker).await;
    let (stop, mut load) = start_load(to, &tracker);
    let mut rng = rand::thread_rng();
    for cycle in 1..=u32::try_from(cycles).unwrap() {
        let acked_before = tracker.acked_count();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2000..=4000))).await;
        assert!(
            tracker.acked_count() > acked_before,
            "instance {} acknowledged nothing: {}\n{}",
            cycle - 1,
            tracker.summary(),
            instance.log_tail()
        );
        instance.kill9();
        tracker.set_phase(cycle);
        instance = Instance::spawn(&config_path, dir.path().join(format!("serve-{cycle}.log")));
        restarts.push(instance.wait_serving(to, &tracker).await);
    }
    // The last instance serves the load for a while, then delivers the rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send_replace(true);
    while let Some(r) = load.join_next().await {
        r.unwrap();
    }

    let acked = tracker.acked();
    let delivery = stream.wait_for(&acked, DRAIN).await;
    let token = std::fs::read_to_string(data_dir.join("api.token")).unwrap();
    let api = SocketAddr::from((LISTEN_IP, ports.api));
    let metrics = durable::scrape(api, token.trim()).await;
    let given_up = durable::given_up(&metrics);
    let mut sorted = restarts.clone();
    sorted.sort();
    let ms = |d: Option<&Duration>| d.map_or(0, Duration::as_millis);
    eprintln!(
        "{cycles} kill -9 cycles: {}\nacknowledged by incarnation: {:?}\n{delivery}\nduplicates: {}\n\
         first start to serving: {} ms; restart to serving (ms): {:?} (min {}, median {}, max {})\n\
         last instance:\n{}",
        tracker.summary(),
        tracker.acked_by_phase(),
        delivery.duplicates,
        first_start.as_millis(),
        restarts.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        ms(sorted.first()),
        ms(sorted.get(sorted.len() / 2)),
        ms(sorted.last()),
        durable::funnel_lines(&metrics)
    );
    assert!(
        delivery.missing.is_empty(),
        "{} of {} acknowledged records never arrived ({}); last instance log:\n{}",
        delivery.missing.len(),
        delivery.acked,
        explain_missing(&delivery.missing, &acked),
        instance.log_tail()
    );
    assert!(given_up.is_empty(), "records given up: {given_up:#?}");
    drop(instance);
}
