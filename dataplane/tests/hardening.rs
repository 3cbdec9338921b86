//! Hardening found in review (issue 9, item 6), end to end: a private data
//! dir, connections closed after a refusal, body/header timeouts and a
//! connection limit on the HTTP listeners (devices and API), Harvest's time
//! window and disk budget, and no API token on stdout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use simgate::server;
use simgate_control::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SIM: &str = r#"
[[operators]]
id = "OP0000000001"

[[groups]]
id = "h"
harvest = { enabled = true }

[[subscribers]]
imsi = "001010000000001"
group_id = "h"

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"
"#;

fn local() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Reads until the peer closes, or `None` if it has not closed within `wait`.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => Some(raw),
        // A reset is a close too.
        Ok(Err(_)) => Some(raw),
        Err(_) => None,
    }
}

fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_0700_and_stores_and_secrets_are_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    // Not created yet: simgate creates it.
    let data = root.path().join("simgate-data");
    let text = format!(
        "data_dir = {:?}\n{LISTEN_ANY_PORT}\n{SIM}",
        data.display().to_string()
    );
    let server = server::start(Config::parse(&text).unwrap()).await.unwrap();
    let mode = |name: &str| {
        std::fs::metadata(data.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(""), 0o700, "data dir");
    for f in ["control.redb", "harvest.redb", "api.token", "radius.secret"] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_source_gets_403_and_the_connection_is_closed() {
    let run = start(SIM).await;
    let http = run.server.bound.http.unwrap();
    // Keep-alive request from an address with no session.
    let mut s = tcp_connect("127.0.0.9".parse().unwrap(), http).await;
    s.write_all(b"POST / HTTP/1.1\r\nHost: harvest.localhost\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let raw = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("connection closed after the 403");
    assert_eq!(status_of(&raw), 403);
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.contains("connection: close"), "{text}");
    // The same on Beam's entry.
    let mut s = tcp_connect(
        "127.0.0.9".parse().unwrap(),
        run.server.bound.beam_http.unwrap(),
    )
    .await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let raw = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("connection closed after the 403");
    assert_eq!(status_of(&raw), 403);
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_is_counted() {
    let run = start(&format!("[ingress]\nhttp_body_timeout_ms = 300\n{SIM}")).await;
    let http = run.server.bound.http.unwrap();
    let mut s = tcp_connect(local(), http).await;
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: harvest.localhost\r\nContent-Length: 100\r\n\r\nonly-ten!!",
    )
    .await
    .unwrap();
    let raw = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("answered and closed, not held");
    assert_eq!(status_of(&raw), 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(
        metric(
            &run,
            "simgate_ingress_rejected_total",
            &["reason=\"body_timeout\""]
        )
        .await,
        1.0
    );
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_times_out_slow_headers_and_bodies() {
    let run = start(&format!(
        "[ingress]\nhttp_header_timeout_ms = 300\nhttp_body_timeout_ms = 300\n{SIM}"
    ))
    .await;
    let api = run.server.bound.api.unwrap();
    // Headers that never end.
    let mut s = tcp_connect(local(), api).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .is_some(),
        "slow headers are cut off"
    );
    // A body that stops: answered (4xx), not held.
    let token = run.token();
    let mut s = tcp_connect(local(), api).await;
    let head = format!(
        "POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"group"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the API answers a stalled body")
        .unwrap();
    let status = status_of(&buf[..n]);
    assert!((400..500).contains(&status), "{status}");
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_limits_its_connections() {
    let run = start(&format!("[ingress]\napi_max_connections = 2\n{SIM}")).await;
    let api = run.server.bound.api.unwrap();
    let idle1 = tcp_connect(local(), api).await;
    let idle2 = tcp_connect(local(), api).await;
    // Let the listener accept both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tcp_connect(local(), api).await;
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let raw = read_until_closed(&mut third, Duration::from_secs(3))
        .await
        .expect("over the limit: closed at once");
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    drop((idle1, idle2));
    // Permits come back once those connections end.
    let mut counted = 0.0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = TcpStream::connect(api).await.unwrap();
        drop(s);
        counted = metric(
            &run,
            "simgate_ingress_rejected_total",
            &["protocol=\"api\"", "reason=\"too_many_connections\""],
        )
        .await;
        if counted >= 1.0 {
            break;
        }
    }
    assert!(counted >= 1.0);
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvest_refuses_timestamps_outside_retention_and_skew() {
    let run = start(SIM).await;
    let http = run.server.bound.http.unwrap();
    let post = |ts: String| async move {
        http_request(
            local(),
            http,
            "POST",
            "harvest.localhost",
            "/",
            &[("X-Soracom-Timestamp", ts.as_str())],
            b"x",
        )
        .await
        .0
    };
    let now = now_ms();
    let day = 86_400_000;
    assert_eq!(
        post("1700000000000".into()).await,
        400,
        "older than 40 days"
    );
    assert_eq!(post((now - 41 * day).to_string()).await, 400);
    assert_eq!(
        post((now + 3_600_000).to_string()).await,
        400,
        "an hour ahead"
    );
    assert_eq!(post((now - day).to_string()).await, 201);
    assert_eq!(
        post((now + 60_000).to_string()).await,
        201,
        "within the skew"
    );
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvest_full_is_507_on_http_and_udp_and_counted() {
    // A budget of a few entries.
    let run = start(&format!("[harvest]\nmax_bytes = 400\n{SIM}")).await;
    let b = run.server.bound.clone();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (status, _, _) = http_request(
            local(),
            b.http.unwrap(),
            "POST",
            "harvest.localhost",
            "/",
            &[],
            b"0123456789",
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses[0], 201);
    assert_eq!(*statuses.last().unwrap(), 507, "{statuses:?}");
    let reply = udp_request(local(), b.harvest_udp.unwrap(), b"more")
        .await
        .unwrap();
    assert!(
        reply.starts_with(b"507 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let mut tcp = tcp_connect(local(), b.harvest_tcp.unwrap()).await;
    assert!(tcp_exchange(&mut tcp, b"more").await.starts_with(b"507 "));
    let full = metric(&run, "simgate_harvest_refused_total", &["reason=\"full\""]).await;
    assert!(full >= 3.0, "{full}");
    assert!(metric(&run, "simgate_harvest_stored_bytes", &[]).await > 0.0);
    run.server.shutdown().await;
}

/// `simgate serve` says where the new API token is, never the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_does_not_print_the_api_token() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("simgate.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{LISTEN_ANY_PORT}\n{SIM}",
            data.display().to_string()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let token_line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            out.push_str(&l);
            out.push('\n');
            if l.contains("API token") {
                return l;
            }
        }
        panic!("no API token line:\n{out}");
    })
    .await
    .expect("simgate serve starts");
    let _ = child.start_kill();
    let _ = child.wait().await;
    let token = std::fs::read_to_string(data.join("api.token")).unwrap();
    let token = token.trim();
    assert!(token.starts_with("sgt_"), "{token}");
    assert!(!token_line.contains(token), "{token_line}");
    assert!(!out.contains(token), "{out}");
    assert!(
        token_line.contains(&data.join("api.token").display().to_string()),
        "{token_line}"
    );
}
