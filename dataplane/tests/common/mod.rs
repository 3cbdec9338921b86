//! Shared helpers for end-to-end tests: start a simgate on free ports with a
//! temporary data dir, and talk to it from chosen source addresses.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use simgate::server::{self, Server};
use simgate_control::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

pub struct Running {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl Running {
    /// The API token simgate wrote on first start.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("api.token"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

/// Listener section putting everything on 127.0.0.1 with OS-chosen ports.
pub const LISTEN_ANY_PORT: &str = r#"
[listen]
http = "127.0.0.1:0"
unified = "127.0.0.1:0"
harvest = "127.0.0.1:0"
api = "127.0.0.1:0"
beam_http = "127.0.0.1:0"
beam_website = "127.0.0.1:0"
beam_tcp = "127.0.0.1:0"
beam_mqtt = "127.0.0.1:0"

[radius]
listen = "127.0.0.1:0"
"#;

/// Starts simgate from `body` (TOML without `data_dir` and `[listen]`).
pub async fn start(body: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n{LISTEN_ANY_PORT}\n{body}",
        dir.path().display().to_string()
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = server::start(config).await.unwrap();
    Running { server, dir }
}

/// Sends one datagram from `src` and waits for the reply.
pub async fn udp_request(src: IpAddr, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    sock.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Connects from `src` to `to`.
pub async fn tcp_connect(src: IpAddr, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src, 0)).unwrap();
    sock.connect(to).await.unwrap()
}

/// Writes one message and reads one reply (empty when the peer closed).
pub async fn tcp_exchange(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream.write_all(payload).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("reply within 5 s")
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

/// A minimal HTTP/1.1 request over a fresh connection from `src`; returns
/// (status, headers, body). Hand-written so the test controls the source
/// address and sees exactly what goes on the wire.
pub async fn http_request(
    src: IpAddr,
    to: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tcp_connect(src, to).await;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// GET on the API with the bearer token.
pub async fn api_get(
    run: &Running,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let api = run.server.bound.api.unwrap();
    let auth;
    let mut headers = Vec::new();
    if let Some(t) = token {
        auth = format!("Bearer {t}");
        headers.push(("Authorization", auth.as_str()));
    }
    http_request(
        "127.0.0.1".parse().unwrap(),
        api,
        "GET",
        "localhost",
        path,
        &headers,
        b"",
    )
    .await
}

/// The value of a counter line in the Prometheus text, summed over lines
/// that contain every one of `parts`.
pub async fn metric(run: &Running, name: &str, parts: &[&str]) -> f64 {
    let (_, _, body) = api_get(run, "/metrics", None).await;
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The resource URL of [`funnel_config`]'s destination.
pub const FUNNEL_RESOURCE_URL: &str = "https://kinesis.us-east-1.amazonaws.com/s";

/// One SIM (`001010000000001` at 127.0.0.1) in a group whose Funnel goes to
/// a Kinesis destination, for tests that inject their own sink; fast retries.
/// `extra_funnel` is added to the `[funnel]` table.
pub fn funnel_config(dir: &std::path::Path, extra_funnel: &str) -> Config {
    let text = format!(
        r#"
data_dir = {dir:?}
{LISTEN_ANY_PORT}
[funnel]
linger_ms = 5
retry_base_ms = 5
retry_max_ms = 50
{extra_funnel}

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "c"
type = "aws"
access_key_id = "x"
secret_access_key = "y"

[[groups]]
id = "g"
[groups.funnel]
enabled = true
credentials_id = "c"
destination = {{ service = "kinesis", resource_url = "{FUNNEL_RESOURCE_URL}" }}

[[subscribers]]
imsi = "001010000000001"
group_id = "g"

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"
"#,
        dir = dir.display().to_string(),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// What a run of the built `simgate` CLI printed.
pub struct CliOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    /// Asserts a zero exit status.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.stdout))
    }
}

/// Runs the built `simgate ARGS --api http://API --data-dir DIR` with `env`
/// added and no SIMGATE_* or AWS secret inherited from the test's
/// environment.
pub async fn simgate_cli(
    api: SocketAddr,
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> CliOut {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_simgate"));
    cmd.args(args)
        .arg("--api")
        .arg(format!("http://{api}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SIMGATE_TOKEN")
        .env_remove("SIMGATE_API")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("simgate finished within 60 s")
        .unwrap();
    CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A loopback source address (each SIM of a test sends from its own).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A JSON answer, or a panic showing what came instead.
pub fn json_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(body));
    })
}

/// The Python of the test venv (`scripts/setup.sh` installs PyJWT,
/// Playwright and moto there).
pub fn venv_python() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// Sends one accounting request with radclient (freeradius-utils), the
/// attributes given one per line (`Acct-Status-Type = Start` …); true if it
/// was answered.
pub async fn radclient(radius: SocketAddr, secret: &str, attributes: &str) -> bool {
    let mut child = tokio::process::Command::new("radclient")
        .args([
            "-x",
            "-r",
            "1",
            "-t",
            "2",
            &radius.to_string(),
            "acct",
            secret,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("radclient is not installed (package freeradius-utils): run scripts/setup.sh");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(attributes.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("radclient finished")
        .unwrap();
    out.status.success()
}
