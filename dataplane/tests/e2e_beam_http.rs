//! Beam HTTP end to end: a device at 127.0.0.1 speaks plain HTTP to
//! simgate's :8888 (and :18080, and :8080 with Host `beam.*`); a real nginx
//! over TLS (trusted through `[upstream] ca_file`) echoes what it received,
//! so the test checks the identity headers and recomputes the signature on
//! its own. Upstream down, slow, or with a wrong-name certificate, and an
//! unknown source, each get their status and counter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};
use support::certs::{Certs, ServerCert};
use support::nginx::{Echo, Nginx, NginxOptions};
use support::process::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMSI: &str = "001010000000001";
const IMEI: &str = "860000012345678";
const MSISDN: &str = "818000000001";
const SIM_ID: &str = "8942310000000000001";
const PSK: &str = "beam-test-secret";
const DEVICE: &str = "127.0.0.1";

fn device() -> IpAddr {
    DEVICE.parse().unwrap()
}

/// simgate's configuration: one group with HTTP entries for the good nginx
/// (`/in`), a closed port (`/down`), the wrong-name nginx (`/wrong`), a
/// named entry for the slow test (`/slow`), and the website entry.
fn config(certs: &Certs, good: u16, wrong: u16, closed: u16) -> String {
    format!(
        r#"
[upstream]
ca_file = {ca:?}
response_timeout_ms = 1500

[ingress]
beam_max_body = 250000

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "beam-psk"
type = "psk"
key = "{PSK}"

[[groups]]
id = "g"

[groups.beam."http://beam.soracom.io:8888/in"]
destination = "https://localhost:{good}/echo"
enabled = true
addSubscriberHeader = true
addEquipmentHeader = true
addMsisdnHeader = true
addSimIdHeader = true
addSignature = true
psk = {{ "$credentialsId" = "beam-psk" }}
[groups.beam."http://beam.soracom.io:8888/in".customHeaders]
a = {{ action = "append", headerKey = "X-Append", headerValue = "added" }}
r = {{ action = "replace", headerKey = "X-Replace", headerValue = "replaced" }}
d = {{ action = "delete", headerKey = "X-Delete" }}

[groups.beam."http://beam.soracom.io:8888/down"]
destination = "https://localhost:{closed}/"
enabled = true

[groups.beam."http://beam.soracom.io:8888/wrong"]
destination = "https://localhost:{wrong}/"
enabled = true

[groups.beam."http://beam.soracom.io:8888/slow"]
name = "slow-entry"
destination = "https://localhost:{good}/slow"
enabled = true

[groups.beam."http://beam.soracom.io:8888/off"]
destination = "https://localhost:{good}/off"
enabled = false

[groups.beam."http://beam.soracom.io:18080"]
destination = "https://localhost:{good}/site"
enabled = true
addSubscriberHeader = true

[[subscribers]]
imsi = "{IMSI}"
msisdn = "{MSISDN}"
sim_id = "{SIM_ID}"
group_id = "g"

[[sessions]]
ip = "{DEVICE}"
imsi = "{IMSI}"
imei = "{IMEI}"
"#,
        ca = certs.ca().display().to_string(),
    )
}

/// SORACOM's HTTP signature, written out independently of simgate.
fn expected_signature(timestamp: &str) -> String {
    let text = format!(
        "{PSK}x-soracom-imei={IMEI}x-soracom-imsi={IMSI}x-soracom-msisdn={MSISDN}\
         x-soracom-sim-id={SIM_ID}x-soracom-timestamp={timestamp}"
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn request(
    to: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    common::http_request(device(), to, method, host, path, headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reaches_https_server_through_beam_http_and_website() {
    let certs = Certs::generate();
    let nginx = Nginx::start(&certs, NginxOptions::default());
    let wrong = Nginx::start(
        &certs,
        NginxOptions {
            cert: ServerCert::WrongName,
            ..NginxOptions::default()
        },
    );
    let closed = free_port();
    let run = common::start(&config(&certs, nginx.port(), wrong.port(), closed)).await;
    let beam = run.server.bound.beam_http.unwrap();
    let website = run.server.bound.beam_website.unwrap();

    // POST with a body, query, hop-by-hop headers, forged identity and
    // headers the entry's customHeaders act on.
    let body = br#"{"temperature":21.5}"#;
    let (status, headers, out) = request(
        beam,
        "POST",
        "beam.soracom.io:8888",
        "/in/foo?x=1",
        &[
            ("Content-Type", "application/json"),
            ("X-Soracom-IMSI", "999999999999999"),
            ("X-Soracom-Signature", "forged"),
            ("X-Append", "device"),
            ("X-Replace", "device"),
            ("X-Delete", "device"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("X-Device", "kept"),
        ],
        body,
    )
    .await;
    assert_eq!(
        status,
        200,
        "{} {}",
        String::from_utf8_lossy(&out),
        nginx.error_log()
    );
    assert_eq!(common::header(&headers, "x-echo-server"), Some("nginx"));
    assert_eq!(
        common::header(&headers, "content-type"),
        Some("application/json")
    );
    let e = Echo::parse(&out);
    assert_eq!(e.method, "POST");
    assert_eq!(e.path, "/echo/foo");
    assert_eq!(e.args, "x=1");
    assert_eq!(e.body(), body);
    assert_eq!(e.ssl_server_name.as_deref(), Some("localhost"));
    assert_eq!(e.header("x-device"), Some("kept"));
    assert_eq!(e.header("content-type"), Some("application/json"));
    for hop in ["connection", "keep-alive", "proxy-authorization"] {
        assert_eq!(e.header(hop), None, "{hop} forwarded: {:?}", e.headers);
    }
    if let Some(host) = e.header("host") {
        assert_eq!(host, format!("localhost:{}", nginx.port()));
    }
    assert_eq!(e.header_all("x-append"), ["device", "added"]);
    assert_eq!(e.header_all("x-replace"), ["replaced"]);
    assert!(e.header_all("x-delete").is_empty());

    let soracom = e.soracom_headers();
    let get = |name: &str| {
        let all: Vec<&str> = soracom
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(all.len(), 1, "{name}: {soracom:?}");
        all[0].to_owned()
    };
    assert_eq!(get("x-soracom-imsi"), IMSI, "forged IMSI passed through");
    assert_eq!(get("x-soracom-imei"), IMEI);
    assert_eq!(get("x-soracom-msisdn"), MSISDN);
    assert_eq!(get("x-soracom-sim-id"), SIM_ID);
    assert_eq!(get("x-soracom-signature-version"), "20151001");
    let ts = get("x-soracom-timestamp");
    let ts_ms: u64 = ts.parse().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now_ms.abs_diff(ts_ms) < 60_000,
        "timestamp {ts} vs {now_ms}"
    );
    assert_eq!(get("x-soracom-signature"), expected_signature(&ts));

    // A larger body sent chunked arrives byte for byte.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (status, out) = chunked_post(beam, "/in/big", &big).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    let e = Echo::parse(&out);
    assert_eq!(e.path, "/echo/big");
    assert!(
        e.body() == big,
        "chunked body differs ({} bytes)",
        e.body_len
    );

    // Over `beam_max_body`: 413, announced or streamed.
    let over: Vec<u8> = vec![b'x'; 300_000];
    let (status, out) = chunked_post(beam, "/in/big", &over).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&out));
    let (status, _, _) = request(beam, "POST", "beam.soracom.io", "/in/x", &[], &over).await;
    assert_eq!(status, 413);

    // Any method; the upstream's status comes back unchanged.
    let (status, headers, out) = request(
        beam,
        "GET",
        "beam.soracom.io",
        "/in?echo_status=503",
        &[],
        b"",
    )
    .await;
    assert_eq!(
        status,
        503,
        "{} {}",
        String::from_utf8_lossy(&out),
        nginx.error_log()
    );
    assert_eq!(common::header(&headers, "x-echo-server"), Some("nginx"));
    assert_eq!(Echo::parse(&out).method, "GET");

    // Host beam.* on the :8080 HTTP listener is the same entry.
    let http = run.server.bound.http.unwrap();
    let (status, _, out) = request(http, "PUT", "beam.soracom.io", "/in/via-8080", &[], b"x").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    let e = Echo::parse(&out);
    assert_eq!(
        (e.method.as_str(), e.path.as_str()),
        ("PUT", "/echo/via-8080")
    );
    assert_eq!(e.header("x-soracom-imsi"), Some(IMSI));

    // Website entry: the whole path appended to the destination.
    let (status, _, out) = request(
        website,
        "GET",
        "beam.soracom.io:18080",
        "/index.html?a=1",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    let e = Echo::parse(&out);
    assert_eq!(e.path, "/site/index.html");
    assert_eq!(e.args, "a=1");
    assert_eq!(e.header("x-soracom-imsi"), Some(IMSI));
    assert_eq!(e.header("x-soracom-signature"), None);

    // No enabled entry for the path (a disabled one does not count).
    for path in ["/other", "/off/x"] {
        let (status, _, out) = request(beam, "GET", "beam.soracom.io", path, &[], b"").await;
        assert_eq!(status, 404, "{path}");
        assert!(
            String::from_utf8_lossy(&out).contains("no enabled Beam HTTP entry"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    // Upstream down: 502, counted with its reason.
    let (status, _, out) = request(beam, "POST", "beam.soracom.io", "/down", &[], b"x").await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&out));
    // Wrong-name certificate: 502, reason tls.
    let (status, _, out) = request(beam, "GET", "beam.soracom.io", "/wrong", &[], b"").await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&out));
    assert!(String::from_utf8_lossy(&out).contains("tls"));
    assert_eq!(
        wrong.access_log().len(),
        0,
        "a request reached the wrong-name server"
    );
    // Upstream slower than response_timeout_ms: 504.
    let started = std::time::Instant::now();
    let (status, _, out) = request(
        beam,
        "GET",
        "beam.soracom.io",
        "/slow",
        &[("X-Echo-Delay-Ms", "5000")],
        b"",
    )
    .await;
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(4000),
        "{:?}",
        started.elapsed()
    );

    // Unknown source: 403 before anything goes upstream.
    let (status, _, _) = common::http_request(
        "127.0.0.9".parse().unwrap(),
        beam,
        "POST",
        "beam.soracom.io",
        "/in/x",
        &[],
        b"x",
    )
    .await;
    assert_eq!(status, 403);

    let m = |name: &'static str, parts: &'static [&'static str]| {
        let run = &run;
        async move { common::metric(run, name, parts).await }
    };
    const IN: &str = "entry=\"http://beam.soracom.io:8888/in\"";
    assert_eq!(
        m("simgate_beam_requests_total", &[IN, "status=\"200\""]).await,
        3.0
    );
    assert_eq!(
        m("simgate_beam_requests_total", &[IN, "status=\"503\""]).await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_beam_requests_total",
            &["entry=\"http://beam.soracom.io:18080\"", "status=\"200\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_beam_requests_total",
            &["entry=\"none\"", "status=\"404\""]
        )
        .await,
        2.0
    );
    assert_eq!(
        m(
            "simgate_beam_upstream_errors_total",
            &[
                "entry=\"http://beam.soracom.io:8888/down\"",
                "reason=\"connect_refused\""
            ]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_beam_upstream_errors_total",
            &[
                "entry=\"http://beam.soracom.io:8888/wrong\"",
                "reason=\"tls\""
            ]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_beam_upstream_errors_total",
            &["entry=\"slow-entry\"", "reason=\"response_timeout\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_beam_requests_total",
            &["entry=\"slow-entry\"", "status=\"504\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        m(
            "simgate_ingress_rejected_total",
            &["protocol=\"http\"", "reason=\"unknown_source\""]
        )
        .await,
        1.0
    );
    assert!(m("simgate_beam_request_seconds_count", &[IN]).await >= 4.0);

    // nginx stopped (simgate still holds pooled connections to it): 502,
    // never a hang.
    drop(nginx);
    for _ in 0..2 {
        let (status, _, out) = request(beam, "POST", "beam.soracom.io", "/in/x", &[], b"x").await;
        assert_eq!(status, 502, "{}", String::from_utf8_lossy(&out));
    }
    assert_eq!(
        m(
            "simgate_beam_upstream_errors_total",
            &["entry=\"http://beam.soracom.io:8888/in\""]
        )
        .await,
        2.0
    );
    run.server.shutdown().await;
}

/// A `Transfer-Encoding: chunked` POST from the device; returns (status, body).
async fn chunked_post(to: SocketAddr, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = common::tcp_connect(device(), to).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: beam.soracom.io\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(16_384) {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut rest = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest = dechunk(&rest);
    }
    (status, rest)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// Reads from `s` into `buf` until `needle` has arrived (10 s at most).
async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>, needle: &[u8]) {
    let found = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        while !found(buf) {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(needle));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {:?} within 10 s; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(buf)
        )
    });
}

/// Neither body is buffered whole: the upstream answers after the first
/// part of the request body, and the device sends the rest only once that
/// answer has reached it. A proxy that collected the body first would
/// never get there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_are_streamed() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut seen = Vec::new();
        read_until(&mut s, &mut seen, b"first-part").await;
        s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n9\r\ngot-first\r\n",
        )
        .await
        .unwrap();
        read_until(&mut s, &mut seen, b"0\r\n\r\n").await;
        s.write_all(b"8\r\ngot-last\r\n0\r\n\r\n").await.unwrap();
        seen
    });
    let run = common::start(&format!(
        r#"
[[operators]]
id = "OP0000000001"

[[groups]]
id = "g"
[groups.beam."http://beam.soracom.io:8888/stream"]
destination = "http://127.0.0.1:{port}/up"
enabled = true
addSubscriberHeader = true

[[subscribers]]
imsi = "{IMSI}"
group_id = "g"

[[sessions]]
ip = "{DEVICE}"
imsi = "{IMSI}"
"#
    ))
    .await;
    let beam = run.server.bound.beam_http.unwrap();
    let mut s = common::tcp_connect(device(), beam).await;
    s.write_all(
        b"POST /stream/s HTTP/1.1\r\nHost: beam.soracom.io\r\nTransfer-Encoding: chunked\r\n\r\n\
          a\r\nfirst-part\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"got-first").await;
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-up: 1"), "{head}");
    s.write_all(b"9\r\nlast-part\r\n0\r\n\r\n").await.unwrap();
    read_until(&mut s, &mut got, b"got-last").await;

    let seen = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(seen.starts_with("POST /up/s HTTP/1.1\r\n"), "{seen}");
    let lower = seen.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{seen}"
    );
    assert!(
        lower.contains(&format!("x-soracom-imsi: {IMSI}\r\n")),
        "{seen}"
    );
    assert!(seen.contains("last-part"), "{seen}");

    // This group has no website entry: 400, counted.
    let website = run.server.bound.beam_website.unwrap();
    let (status, _, out) = request(website, "GET", "beam.soracom.io", "/", &[], b"").await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&out).contains("website entry is not enabled"));
    let none_400 = common::metric(
        &run,
        "simgate_beam_requests_total",
        &["entry=\"none\"", "status=\"400\""],
    )
    .await;
    assert_eq!(none_400, 1.0);
    run.server.shutdown().await;
}
