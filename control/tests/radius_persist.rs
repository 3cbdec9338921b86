//! RADIUS sessions survive a restart (kept in the control store's
//! `radius_sessions` table, written behind), and a RADIUS Start never
//! replaces a static session. In-process: the control plane on a temporary
//! data dir, the accounting listener on an ephemeral port, Accounting-
//! Requests encoded with the crate's own codec and sent over UDP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use simgate_control::radius::{
    self, encode_accounting_request, AccountingAttributes, AcctStatusType, RadiusClient,
    RadiusConfig, RadiusStats,
};
use simgate_control::{Config, ControlPlane, Secret};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SECRET: &str = "persist-s3cret";

const SEED: &str = r#"
[[operators]]
id = "OP0000000001"

[[groups]]
id = "g"

[[subscribers]]
imsi = "001010000000001"
group_id = "g"

[[subscribers]]
imsi = "001010000000002"
group_id = "g"

[[sessions]]
ip = "10.20.0.1"
imsi = "001010000000001"
"#;

struct Gateway {
    plane: Arc<ControlPlane>,
    stats: Arc<RadiusStats>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    next_id: u8,
}

impl Gateway {
    fn start(dir: &Path) -> Self {
        let plane = ControlPlane::open(dir, &Config::parse(SEED).unwrap()).unwrap();
        let stats = Arc::new(RadiusStats::new());
        let config = RadiusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            clients: vec![RadiusClient {
                address: "127.0.0.0/8".parse().unwrap(),
                secret: Secret::new(SECRET),
            }],
            ..Default::default()
        };
        let (stop, shutdown) = watch::channel(false);
        let persistence = plane.radius_persistence(Arc::clone(&stats)).unwrap();
        let (addr, task) = radius::spawn_with(
            config,
            Arc::clone(&plane.sessions),
            Arc::clone(&stats),
            Some(persistence),
            shutdown,
        )
        .unwrap();
        Self {
            plane,
            stats,
            addr,
            stop,
            task,
            next_id: 0,
        }
    }

    /// Stops the listener (which writes what is queued) and closes the store.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("listener stops")
            .unwrap();
        drop(self.plane);
    }

    async fn send(&mut self, status: AcctStatusType, ip: [u8; 4], imsi: &str) {
        self.next_id = self.next_id.wrapping_add(1);
        let attrs = AccountingAttributes {
            status_type: Some(status),
            framed_ip: Some(Ipv4Addr::from(ip)),
            imsi: Some(imsi.as_bytes()),
            ..Default::default()
        };
        let packet = encode_accounting_request(self.next_id, &attrs, SECRET.as_bytes()).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&packet, self.addr).await.unwrap();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("Accounting-Response")
            .unwrap();
    }

    fn imsi_at(&self, ip: [u8; 4]) -> Option<String> {
        self.plane
            .sessions
            .lookup(IpAddr::from(ip))
            .map(|s| s.imsi.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_sessions_survive_a_restart_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path());
    gw.send(AcctStatusType::Start, [10, 20, 1, 1], "001010000000001")
        .await;
    gw.send(AcctStatusType::Start, [10, 20, 1, 2], "001010000000002")
        .await;
    gw.send(AcctStatusType::Start, [10, 20, 1, 3], "001010000000002")
        .await;
    gw.send(AcctStatusType::Stop, [10, 20, 1, 3], "001010000000002")
        .await;
    assert_eq!(
        gw.imsi_at([10, 20, 1, 1]).as_deref(),
        Some("001010000000001")
    );
    gw.stop().await;

    // Restarted: the sessions are back before any accounting arrives.
    let mut gw = Gateway::start(dir.path());
    assert_eq!(
        gw.imsi_at([10, 20, 1, 1]).as_deref(),
        Some("001010000000001")
    );
    assert_eq!(
        gw.imsi_at([10, 20, 1, 2]).as_deref(),
        Some("001010000000002")
    );
    assert_eq!(
        gw.imsi_at([10, 20, 1, 3]),
        None,
        "stopped before the restart"
    );
    assert_eq!(gw.stats.snapshot().restored, 2);
    // The gateway's next Interim-Update replaces a restored session; a Stop
    // removes it, also from the store.
    gw.send(
        AcctStatusType::InterimUpdate,
        [10, 20, 1, 1],
        "001010000000002",
    )
    .await;
    assert_eq!(
        gw.imsi_at([10, 20, 1, 1]).as_deref(),
        Some("001010000000002")
    );
    gw.send(AcctStatusType::Stop, [10, 20, 1, 2], "001010000000002")
        .await;
    assert_eq!(gw.imsi_at([10, 20, 1, 2]), None);
    gw.stop().await;

    let gw = Gateway::start(dir.path());
    assert_eq!(
        gw.imsi_at([10, 20, 1, 1]).as_deref(),
        Some("001010000000002")
    );
    assert_eq!(gw.imsi_at([10, 20, 1, 2]), None);
    assert_eq!(gw.stats.snapshot().restored, 1);
    assert_eq!(gw.stats.snapshot().persist_errors, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_radius_start_does_not_replace_a_static_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path());
    // 10.20.0.1 is the configuration file's static session of ...0001.
    gw.send(AcctStatusType::Start, [10, 20, 0, 1], "001010000000002")
        .await;
    assert_eq!(
        gw.imsi_at([10, 20, 0, 1]).as_deref(),
        Some("001010000000001")
    );
    gw.send(
        AcctStatusType::InterimUpdate,
        [10, 20, 0, 1],
        "001010000000002",
    )
    .await;
    assert_eq!(gw.stats.snapshot().static_kept, 2);
    // Nor does a Stop end it.
    gw.send(AcctStatusType::Stop, [10, 20, 0, 1], "001010000000001")
        .await;
    assert_eq!(
        gw.imsi_at([10, 20, 0, 1]).as_deref(),
        Some("001010000000001")
    );
    gw.stop().await;

    // Nothing of it was kept for the next start either.
    let gw = Gateway::start(dir.path());
    assert_eq!(
        gw.imsi_at([10, 20, 0, 1]).as_deref(),
        Some("001010000000001")
    );
    assert_eq!(gw.stats.snapshot().restored, 0);
    gw.stop().await;
}

/// `DELETE /v1/sessions/{ip}` of a RADIUS session removes it from the
/// store too: it does not come back at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_radius_session_deleted_through_the_plane_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path());
    gw.send(AcctStatusType::Start, [10, 20, 2, 1], "001010000000002")
        .await;
    // Let the write-behind batch land first.
    tokio::time::sleep(radius_batch() * 3).await;
    gw.plane
        .delete_session("10.20.2.1".parse().unwrap())
        .unwrap();
    assert_eq!(gw.imsi_at([10, 20, 2, 1]), None);
    gw.stop().await;
    let gw = Gateway::start(dir.path());
    assert_eq!(gw.imsi_at([10, 20, 2, 1]), None);
    gw.stop().await;
}

fn radius_batch() -> Duration {
    simgate_control::store::RADIUS_SESSIONS_BATCH_WINDOW
}
