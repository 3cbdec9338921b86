//! End to end: FreeRADIUS's `radclient` (package freeradius-utils) talks to
//! the RADIUS accounting listener over UDP on loopback, as a packet gateway
//! would. Needs `radclient` on the PATH: `scripts/setup.sh` installs it; these
//! tests fail (never skip) without it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::net::{IpAddr, SocketAddr};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use simgate_control::radius::{
    self, encode_accounting_request, parse_accounting_request, verify_accounting_response,
    AccountingAttributes, AcctStatusType, DropReason, RadiusClient, RadiusConfig, RadiusStats,
};
use simgate_control::{Secret, SessionTable};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SECRET: &str = "radclient-s3cret";

struct Listener {
    addr: SocketAddr,
    sessions: Arc<SessionTable>,
    stats: Arc<RadiusStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    /// A listener on an ephemeral loopback port that knows `client`.
    fn start(client: &str) -> Self {
        let config = RadiusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            clients: vec![RadiusClient {
                address: client.parse().unwrap(),
                secret: Secret::new(SECRET),
            }],
            ..Default::default()
        };
        let sessions = Arc::new(SessionTable::new());
        let stats = Arc::new(RadiusStats::new());
        let (stop, shutdown) = watch::channel(false);
        let (addr, task) =
            radius::spawn(config, Arc::clone(&sessions), Arc::clone(&stats), shutdown).unwrap();
        Self {
            addr,
            sessions,
            stats,
            stop,
            task,
        }
    }

    async fn shutdown(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("listener did not stop")
            .unwrap();
    }

    fn imsi_imei_msisdn(&self, ip: &str) -> Option<(String, Option<String>, Option<String>)> {
        let s = self.sessions.lookup(ip.parse::<IpAddr>().unwrap())?;
        Some((
            s.imsi.to_string(),
            s.imei.as_ref().map(ToString::to_string),
            s.msisdn.as_ref().map(ToString::to_string),
        ))
    }

    /// Runs `radclient -x [extra] 127.0.0.1:PORT acct SECRET` with the
    /// attribute list on stdin.
    async fn radclient(&self, secret: &str, extra: &[&str], attributes: &str) -> Output {
        let mut child = match Command::new("radclient")
            .arg("-x")
            .args(extra)
            .arg(self.addr.to_string())
            .arg("acct")
            .arg(secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "radclient is not installed (package freeradius-utils): run scripts/setup.sh"
            ),
            Err(e) => panic!("cannot run radclient: {e}"),
        };
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(attributes.as_bytes()).await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("radclient hung")
            .unwrap();
        eprintln!(
            "radclient {extra:?} exit {:?}\n--- stdout\n{}--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

const SESSION: &str = "Framed-IP-Address = 127.0.2.7
3GPP-IMSI = \"001010000000777\"
3GPP-IMEISV = \"3530000000007701\"
Calling-Station-Id = \"818000000777\"
Acct-Session-Id = \"s1\"
NAS-IP-Address = 192.0.2.10
";

fn request(status: &str) -> String {
    format!("Acct-Status-Type = {status}\n{SESSION}")
}

fn answered(out: &Output) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Accounting-Response")
}

#[tokio::test]
async fn start_interim_stop_from_radclient() {
    let l = Listener::start("127.0.0.1");
    let out = l.radclient(SECRET, &[], &request("Start")).await;
    assert!(answered(&out), "Start not acknowledged");
    assert_eq!(
        l.imsi_imei_msisdn("127.0.2.7"),
        Some((
            "001010000000777".into(),
            Some("3530000000007701".into()),
            Some("818000000777".into())
        ))
    );

    let interim = format!("{}Acct-Session-Time = 60\n", request("Interim-Update"));
    assert!(answered(&l.radclient(SECRET, &[], &interim).await));
    assert!(l.imsi_imei_msisdn("127.0.2.7").is_some());

    let stop = format!("{}Acct-Terminate-Cause = User-Request\n", request("Stop"));
    assert!(answered(&l.radclient(SECRET, &[], &stop).await));
    assert_eq!(l.imsi_imei_msisdn("127.0.2.7"), None);

    let s = l.stats.snapshot();
    assert_eq!((s.starts, s.interims, s.stops, s.stale_stops), (1, 1, 1, 0));
    assert_eq!(s.dropped_total(), 0);
    l.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_gets_no_response_and_binds_nothing() {
    let l = Listener::start("127.0.0.1");
    let out = l
        .radclient("not-the-secret", &["-r", "1", "-t", "1"], &request("Start"))
        .await;
    assert!(!out.status.success(), "radclient got an answer");
    assert!(l.sessions.is_empty());
    let s = l.stats.snapshot();
    assert!(s.dropped(DropReason::BadAuthenticator) >= 1);
    assert_eq!((s.answered, s.starts), (0, 0));
    l.shutdown().await;
}

#[tokio::test]
async fn unknown_client_gets_no_response() {
    // radclient sends from 127.0.0.1; only 127.0.0.2 is a client.
    let l = Listener::start("127.0.0.2/32");
    let out = l
        .radclient(SECRET, &["-r", "1", "-t", "1"], &request("Start"))
        .await;
    assert!(!out.status.success());
    assert!(l.sessions.is_empty());
    assert!(l.stats.snapshot().dropped(DropReason::UnknownClient) >= 1);
    l.shutdown().await;
}

#[tokio::test]
async fn start_without_imsi_is_not_acknowledged() {
    let l = Listener::start("127.0.0.1");
    let attrs = "Acct-Status-Type = Start\nFramed-IP-Address = 127.0.2.8\n";
    let out = l.radclient(SECRET, &["-r", "1", "-t", "1"], attrs).await;
    assert!(!out.status.success());
    assert!(l.sessions.is_empty());
    assert!(l.stats.snapshot().dropped(DropReason::MissingImsi) >= 1);
    l.shutdown().await;
}

#[tokio::test]
async fn accounting_on_from_radclient_ends_that_gateways_sessions() {
    let l = Listener::start("127.0.0.1");
    assert!(answered(&l.radclient(SECRET, &[], &request("Start")).await));
    assert!(l.imsi_imei_msisdn("127.0.2.7").is_some());
    let on = "Acct-Status-Type = Accounting-On\nNAS-IP-Address = 192.0.2.10\n";
    assert!(answered(&l.radclient(SECRET, &[], on).await));
    assert_eq!(l.imsi_imei_msisdn("127.0.2.7"), None);
    assert_eq!(l.stats.snapshot().sessions_cleared, 1);
    l.shutdown().await;
}

#[tokio::test]
async fn duplicate_is_answered_twice_applied_once() {
    let l = Listener::start("127.0.0.1");
    let packet = encode_accounting_request(
        42,
        &AccountingAttributes {
            status_type: Some(AcctStatusType::Start),
            framed_ip: Some("127.0.2.9".parse().unwrap()),
            imsi: Some(b"001010000000999"),
            imeisv: Some(b"3530000000009901"),
            ..Default::default()
        },
        SECRET.as_bytes(),
    )
    .unwrap();
    let request = parse_accounting_request(&packet).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut responses = Vec::new();
    for _ in 0..2 {
        socket.send_to(&packet, l.addr).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("no Accounting-Response")
            .unwrap();
        assert_eq!(from, l.addr);
        assert_eq!(
            verify_accounting_response(&buf[..n], &request.authenticator, SECRET.as_bytes()),
            Ok(42)
        );
        responses.push(buf[..n].to_vec());
        // Ended in between (as by a Stop or the API): the retransmission
        // must not bring the session back.
        l.sessions.unbind("127.0.2.9".parse().unwrap());
    }
    assert_eq!(responses[0], responses[1]);
    assert!(l.sessions.is_empty());
    let s = l.stats.snapshot();
    assert_eq!((s.starts, s.duplicates, s.answered), (1, 1, 2));
    l.shutdown().await;
}
