//! Beam UDP/TCP → HTTPS (:23080) and TCP → TLS (:8023) end to end, with
//! real peers: nginx over TLS echoes what each forwarded message became
//! (method, headers, body), and a rustls line/echo server records the
//! identity line Beam sends first and echoes the bytes after it. The test
//! recomputes both signatures itself (SHA-256, written out here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use support::certs::{Certs, ServerCert};
use support::nginx::{Echo, Nginx, NginxOptions};
use support::process::free_port;
use support::tls_echo::TlsEcho;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const IMSI: &str = "001010000000001";
const IMEI: &str = "860000012345678";
const PSK: &str = "beam-stream-secret";
const WAIT: Duration = Duration::from_secs(10);

/// SIM 1 (127.0.0.1): Beam UDP and TCP → nginx, TCP → TLS echo.
/// SIM 2 (127.0.0.2): entries towards a wrong-name certificate and a
/// closed port. SIM 3 (127.0.0.3): Beam UDP plus Harvest (unified answer).
fn config(nginx: u16, echo: u16, wrong: u16, closed: u16) -> String {
    format!(
        r#"
[upstream]
ca_file = "{{CA}}"
response_timeout_ms = 3000

[ingress]
tcp_idle_timeout_ms = 2000

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "stream-psk"
type = "psk"
key = "{PSK}"

[[groups]]
id = "g"
[groups.beam."udp://beam.soracom.io:23080"]
destination = "https://localhost:{nginx}/udp"
enabled = true
addSubscriberHeader = true
addEquipmentHeader = true
addSignature = true
psk = {{ "$credentialsId" = "stream-psk" }}
[groups.beam."tcp://beam.soracom.io:23080"]
destination = "https://localhost:{nginx}/tcp?from=beam"
enabled = true
addSubscriberHeader = true
[groups.beam."tcp://beam.soracom.io:8023"]
name = "tls-echo"
destination = "tcps://localhost:{echo}"
enabled = true
addSubscriberHeader = true
addEquipmentHeader = true
addSignature = true
psk = {{ "$credentialsId" = "stream-psk" }}

[[groups]]
id = "broken"
[groups.beam."tcp://beam.soracom.io:8023"]
name = "wrong-name"
destination = "tcps://localhost:{wrong}"
enabled = true
[groups.beam."udp://beam.soracom.io:23080"]
name = "closed"
destination = "https://localhost:{closed}/"
enabled = true

[[groups]]
id = "both"
harvest = {{ enabled = true }}
[groups.beam."udp://beam.soracom.io:23080"]
destination = "https://localhost:{nginx}/both"
enabled = true
skipStatusCode = true

[[subscribers]]
imsi = "{IMSI}"
group_id = "g"
[[subscribers]]
imsi = "001010000000002"
group_id = "broken"
[[subscribers]]
imsi = "001010000000003"
group_id = "both"

[[sessions]]
ip = "127.0.0.1"
imsi = "{IMSI}"
imei = "{IMEI}"
[[sessions]]
ip = "127.0.0.2"
imsi = "001010000000002"
[[sessions]]
ip = "127.0.0.3"
imsi = "001010000000003"
"#
    )
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// One datagram from `src`, one reply (up to 64 KiB).
async fn udp(src: IpAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    sock.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("no UDP reply")
        .unwrap();
    buf.truncate(n);
    buf
}

/// `{status} {body}` → (status, body).
fn split_line(reply: &[u8]) -> (u16, &[u8]) {
    let text_end = reply.iter().position(|&b| b == b' ').unwrap_or(reply.len());
    let status = std::str::from_utf8(&reply[..text_end])
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no status: {}", String::from_utf8_lossy(reply)));
    (status, reply.get(text_end + 1..).unwrap_or_default())
}

fn payload_of(e: &Echo) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["payload"].as_str().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_tcp_reach_https_and_tls_with_verifiable_identity() {
    let certs = Certs::generate();
    let nginx = Nginx::start(&certs, NginxOptions::default());
    let echo = TlsEcho::start(&certs, ServerCert::Localhost, false);
    let wrong = TlsEcho::start(&certs, ServerCert::WrongName, false);
    let closed = free_port();
    let text = config(nginx.port(), echo.port(), wrong.port(), closed)
        .replace("{CA}", &certs.ca().display().to_string());
    let run = common::start(&text).await;
    let bound = &run.server.bound;
    let (uni_udp, uni_tcp) = (bound.unified_udp.unwrap(), bound.unified_tcp.unwrap());
    let beam_tcp = bound.beam_tcp.unwrap();

    // UDP → HTTPS: one datagram, one POST; `{status} {body}` back.
    let reply = udp(ip(1), uni_udp, b"hello\x00\xff").await;
    let (status, body) = split_line(&reply);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let e = Echo::parse(body);
    assert_eq!(e.method, "POST");
    assert_eq!(e.path, "/udp");
    assert_eq!(e.header("user-agent"), Some("SORACOM Beam"));
    assert_eq!(e.header("content-type"), Some("application/json"));
    assert_eq!(payload_of(&e), b"hello\x00\xff");
    assert_eq!(e.header("x-soracom-imsi"), Some(IMSI));
    assert_eq!(e.header("x-soracom-imei"), Some(IMEI));
    assert_eq!(e.header("x-soracom-signature-version"), Some("20151001"));
    let ts = e.header("x-soracom-timestamp").unwrap();
    assert_eq!(
        e.header("x-soracom-signature").unwrap(),
        sha256_hex(&format!(
            "{PSK}x-soracom-imei={IMEI}x-soracom-imsi={IMSI}x-soracom-timestamp={ts}"
        ))
    );

    // TCP → HTTPS: each message on the connection is one POST.
    let mut tcp = common::tcp_connect(ip(1), uni_tcp).await;
    for msg in [&b"first"[..], b"second"] {
        tcp.write_all(msg).await.unwrap();
        let reply = read_reply(&mut tcp).await;
        let (status, body) = split_line(&reply);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        let e = Echo::parse(body);
        assert_eq!(e.path, "/tcp");
        assert_eq!(e.args, "from=beam");
        assert_eq!(payload_of(&e), msg);
        assert_eq!(e.header("x-soracom-imsi"), Some(IMSI));
        assert_eq!(e.header("x-soracom-signature"), None);
    }
    drop(tcp);

    // Beam and Harvest both on: the unified answer, each service's status
    // in its detail.
    let reply = udp(ip(3), uni_udp, b"{\"t\":1}").await;
    let (status, body) = split_line(&reply);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["body"]["result"], "ok", "{v}");
    assert_eq!(v["body"]["detail"]["beam"]["statusCode"], 200);
    assert_eq!(v["body"]["detail"]["harvest"]["statusCode"], 201);

    // Upstream down: a 502 line, counted.
    let reply = udp(ip(2), uni_udp, b"x").await;
    let (status, body) = split_line(&reply);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&reply));
    assert!(
        String::from_utf8_lossy(body).contains("connect_refused"),
        "{}",
        String::from_utf8_lossy(body)
    );

    // TCP → TLS: the identity line first, then bytes both ways.
    let mut s = common::tcp_connect(ip(1), beam_tcp).await;
    s.write_all(b"ping 1\n").await.unwrap();
    let mut got = vec![0u8; 7];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(got, b"ping 1\n");
    let lines = echo.wait_first_lines(1, WAIT);
    let line = &lines[0];
    let (signed, sig) = line.split_once(";signature=").expect(line);
    let ts = signed
        .strip_prefix(&format!("imei={IMEI} imsi={IMSI} timestamp="))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(ts.parse::<u64>().is_ok(), "{line}");
    assert_eq!(sig, sha256_hex(&format!("{PSK}{signed}")));
    // Half-close: the device's FIN reaches the server, which closes too.
    s.write_all(b"last").await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("no close after half-close")
        .unwrap();
    assert_eq!(rest, b"last");

    // A certificate for the wrong name: the device's connection closes.
    let mut s = common::tcp_connect(ip(2), beam_tcp).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("connection left open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(wrong.first_lines().len(), 0);

    // Idle: closed after tcp_idle_timeout_ms (2 s).
    let mut s = common::tcp_connect(ip(1), beam_tcp).await;
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("idle connection left open")
        .unwrap_or(0);
    assert_eq!(n, 0);

    let m = |name: &'static str, parts: &'static [&'static str]| {
        let run = &run;
        async move { common::metric(run, name, parts).await }
    };
    assert_eq!(
        m(
            "simgate_beam_upstream_errors_total",
            &["entry=\"wrong-name\"", "reason=\"tls\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_beam_upstream_errors_total",
            &["entry=\"closed\"", "reason=\"connect_refused\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_beam_device_errors_total",
            &["entry=\"tls-echo\"", "reason=\"idle_timeout\""]
        )
        .await,
        1.0
    );
    assert!(
        m(
            "simgate_beam_relayed_total",
            &["entry=\"tls-echo\"", "direction=\"up\""]
        )
        .await
            >= 11.0
    );
    assert_eq!(
        m("simgate_beam_streams_open", &["entry=\"tls-echo\""]).await,
        0.0
    );
    run.server.shutdown().await;
}

/// Reads until the reply is a whole `{status} {json}` (or times out).
async fn read_reply(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("no TCP reply")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let (_, body) = split_line(&buf);
        if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
            return buf;
        }
    }
}
