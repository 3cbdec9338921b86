//! The Beam HTTP benchmark's pieces (`scripts/bench.sh beam-http`).
//!
//! * `http` — a closed-loop HTTP/1.1 load generator: N keep-alive
//!   connections, each bound to its own loopback source address (one
//!   simulated SIM each), each sending a hand-written request, waiting for
//!   the whole response (`Content-Length` or chunked), and sending the next.
//!   After `--warmup`, one window of `--duration` is measured: requests
//!   completed, errors, latency percentiles (HdrHistogram, µs), and the CPU
//!   time of chosen processes (`--cpu NAME=PID`: the process and its direct
//!   children, so an nginx master counts its workers). One JSON line out.
//! * `beam-config` — the simgate configuration for it: one subscriber and
//!   static session per source address, one group whose Beam HTTP entry
//!   (`http://beam.soracom.io:8888/`) forwards to an HTTPS upstream with
//!   `addSubscriberHeader`, plus the same SIM table as nginx and HAProxy
//!   map files, and free loopback ports for every listener of the bench.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::conn::{self, Tally, REQUEST_TIMEOUT};
use crate::report::{self, JsonLine, Phase, Window};
use crate::sims::{self, imsi, BeamBench};

/// Longest response head accepted; a whole response is kept in memory.
const MAX_HEAD: usize = 64 << 10;
const MAX_RESPONSE: usize = 4 << 20;

#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    /// The proxy: a 127.0.0.0/8 address and port.
    #[arg(long)]
    target: SocketAddrV4,
    /// Keep-alive connections, each from its own source address.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Source address of the first connection; connection i binds base + i.
    #[arg(long, default_value_t = crate::DEFAULT_SOURCE_BASE)]
    source_base: Ipv4Addr,
    /// Seconds of load before the measured window starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Length of the measured window in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// `Host` header of every request.
    #[arg(long, default_value = "beam.soracom.io:8888")]
    host: String,
    /// Request target.
    #[arg(long, default_value = "/")]
    path: String,
    /// 0: `GET`; otherwise a `POST` of a JSON body of this many bytes.
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    /// Runtime threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// NAME=PID: report the CPU time (user + system) of PID and its direct
    /// children over the window, as `cpu_NAME_s` and `cpu_NAME_us_per_req`
    /// (`cpu_loadgen_…`, this process's own, is always reported).
    #[arg(long = "cpu", value_parser = report::parse_cpu)]
    cpu: Vec<(String, u32)>,
    /// A `label` field in the JSON line (the side measured).
    #[arg(long, default_value = "")]
    label: String,
}

pub(crate) fn run(a: &HttpArgs) -> anyhow::Result<()> {
    ensure!(a.target.ip().is_loopback(), "target must be in 127.0.0.0/8");
    ensure!(
        (1..=10_000).contains(&a.connections),
        "--connections must be 1..=10000"
    );
    report::check_window(a.warmup, a.duration)?;
    ensure!(
        a.path.starts_with('/') && !a.path.contains(char::is_whitespace),
        "--path must start with / and hold no spaces"
    );
    let sources = (0..a.connections)
        .map(|i| crate::source_addr(a.source_base, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request: Arc<[u8]> = build_request(&a.host, &a.path, a.body_size).into();
    report::runtime(a.threads)?.block_on(drive(a, sources, request))
}

/// `GET`, or a `POST` of a JSON object padded to `body_size` bytes.
fn build_request(host: &str, path: &str, body_size: usize) -> Vec<u8> {
    if body_size == 0 {
        return format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadgen\r\n\r\n")
            .into_bytes();
    }
    let mut body = String::from("{\"pad\":\"");
    while body.len() + 2 < body_size {
        body.push('x');
    }
    body.push_str("\"}");
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: loadgen\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

async fn drive(a: &HttpArgs, sources: Vec<Ipv4Addr>, request: Arc<[u8]>) -> anyhow::Result<()> {
    let phase = Arc::new(Phase::default());
    let tasks: Vec<_> = sources
        .into_iter()
        .map(|src| {
            let phase = Arc::clone(&phase);
            let request = Arc::clone(&request);
            tokio::spawn(connection(src, a.target, request, phase))
        })
        .collect();
    let w = report::measure(&phase, &a.cpu, a.warmup, a.duration, report::sleep_secs).await?;
    let total = conn::join_tallies(tasks).await?;
    println!("{}", result_line(a, &total, &w));
    Ok(())
}

/// One JSON object, flat, on one line.
fn result_line(a: &HttpArgs, t: &Tally, w: &Window) -> String {
    let mut j = JsonLine::default();
    j.string("label", &a.label)
        .string("target", &a.target.to_string())
        .raw("connections", a.connections)
        .raw("window_s", format!("{:.3}", w.secs));
    t.fields(&mut j, "non_2xx", w.secs);
    j.cpu(&w.cpu, &w.cpu_after, t.ok);
    j.finish()
}

pub(crate) async fn open(src: Ipv4Addr, target: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((src, 0)))?;
    let stream = socket.connect(SocketAddr::V4(target)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One keep-alive connection, closed loop, until told to stop; reconnects
/// (from the same source) after an error or a `Connection: close`.
async fn connection(
    src: Ipv4Addr,
    target: SocketAddrV4,
    request: Arc<[u8]>,
    phase: Arc<Phase>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut stream: Option<TcpStream> = None;
    while !phase.stop.load(Ordering::Relaxed) {
        let measuring = phase.measuring.load(Ordering::Relaxed);
        let dial = || {
            // What a dropped connection left unread is not this one's.
            buf.clear();
            open(src, target)
        };
        let Some(s) = conn::connected(&mut stream, &mut tally, measuring, dial).await else {
            continue;
        };
        let t0 = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange(s, &request, &mut buf)).await;
        let measuring = phase.measuring.load(Ordering::Relaxed);
        match result {
            Ok(Ok(r)) => {
                if measuring {
                    if (200..300).contains(&r.status) {
                        tally.ok += 1;
                        report::record_since(&mut tally.latency_us, t0);
                    } else {
                        tally.bad += 1;
                    }
                }
                if r.close {
                    stream = None;
                }
            }
            Ok(Err(_)) => {
                if measuring {
                    tally.io_errors += 1;
                }
                stream = None;
            }
            Err(_) => {
                if measuring {
                    tally.timeouts += 1;
                }
                stream = None;
            }
        }
    }
    Ok(tally)
}

/// Writes the request and reads one whole response; `buf` keeps whatever
/// came after it (nothing, from a well-behaved server).
async fn exchange(s: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> anyhow::Result<Parsed> {
    s.write_all(request).await?;
    loop {
        if let Some(p) = parse_response(buf)? {
            buf.drain(..p.len);
            return Ok(p);
        }
        ensure!(
            buf.len() < MAX_RESPONSE,
            "response longer than {MAX_RESPONSE} bytes"
        );
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed mid-response");
        }
    }
}

/// A complete response at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) status: u16,
    /// Bytes of the buffer it took, head and body.
    pub(crate) len: usize,
    /// The server closes the connection after it.
    pub(crate) close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses the response at the start of `buf`: `Ok(None)` while incomplete.
/// Bodies framed by `Content-Length` or chunked transfer coding; none for
/// `204`, `304` and `1xx` (a `1xx` is then returned as a response of its
/// own, which the caller counts as a non-2xx). A body delimited by the end
/// of the connection is an error: the benchmark needs keep-alive.
pub(crate) fn parse_response(buf: &[u8]) -> anyhow::Result<Option<Parsed>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        ensure!(
            buf.len() <= MAX_HEAD,
            "response head longer than {MAX_HEAD} bytes"
        );
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => bail!("not an HTTP/1.x status line: {status_line:?}"),
    };
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = http10;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .with_context(|| format!("bad Content-Length {value:?}"))?;
            ensure!(
                content_length.is_none_or(|c| c == n),
                "conflicting Content-Length"
            );
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
            ensure!(chunked, "unsupported Transfer-Encoding {value:?}");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    let body = head_end + 4;
    let len = if status < 200 || status == 204 || status == 304 {
        Some(body)
    } else if chunked {
        chunked_end(buf, body)?
    } else if let Some(n) = content_length {
        let end = body.checked_add(n).context("Content-Length overflows")?;
        (buf.len() >= end).then_some(end)
    } else {
        bail!("response {status} has no Content-Length and is not chunked")
    };
    Ok(len.map(|len| Parsed { status, len, close }))
}

/// End of a chunked body starting at `at` (after the trailers), or `None`
/// while incomplete.
fn chunked_end(buf: &[u8], mut at: usize) -> anyhow::Result<Option<usize>> {
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[at..at + eol]).context("chunk size is not UTF-8")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailers, each ending in CRLF, then an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        let end = at.checked_add(size).context("chunk size overflows")?;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        ensure!(&buf[end..end + 2] == b"\r\n", "chunk not followed by CRLF");
        at = end + 2;
    }
}

// ---------------------------------------------------------------- config

#[derive(Debug, clap::Args)]
pub(crate) struct BeamConfigArgs {
    /// Directory for simgate.toml, the map files and simgate's data.
    #[arg(long)]
    dir: PathBuf,
    /// Simulated SIMs (must match `http --connections`).
    #[arg(long, default_value_t = 64)]
    sims: usize,
    /// Source address of the first SIM (must match `http --source-base`).
    #[arg(long, default_value_t = crate::DEFAULT_SOURCE_BASE)]
    source_base: Ipv4Addr,
    /// The test CA trusted for the upstream (`[upstream] ca_file`).
    #[arg(long)]
    ca_file: PathBuf,
    /// KEY=ADDR: one more `[listen]` line, e.g. `beam_mqtt=127.0.0.1:0` (for
    /// listeners this simgate has that would otherwise take a fixed port).
    #[arg(long = "listen", value_parser = parse_listen)]
    listen: Vec<(String, SocketAddr)>,
}

pub(crate) fn parse_listen(s: &str) -> Result<(String, SocketAddr), String> {
    let (key, addr) = s.split_once('=').ok_or("expected KEY=ADDR")?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return Err(format!("bad key {key:?}"));
    }
    Ok((
        key.to_owned(),
        addr.parse().map_err(|e| format!("{addr}: {e}"))?,
    ))
}

/// The bench's loopback ports, all distinct and free when picked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    beam_http: SocketAddr,
    api: SocketAddr,
    /// The TLS upstream (nginx).
    upstream: SocketAddr,
    /// The upstream's plain-HTTP stub_status.
    status: SocketAddr,
    /// nginx and HAProxy as proxies.
    nginx: SocketAddr,
    haproxy: SocketAddr,
}

/// Writes DIR/simgate.toml, DIR/imsi.nginx.map (`map $remote_addr`
/// entries) and DIR/imsi.haproxy.map (for `map_ip`), and prints the ports as
/// `beam_http=ADDR api=ADDR upstream=ADDR status=ADDR nginx=ADDR haproxy=ADDR`.
pub(crate) fn run_config(a: &BeamConfigArgs) -> anyhow::Result<()> {
    ensure!((1..=10_000).contains(&a.sims), "--sims must be 1..=10000");
    let ports = free_ports()?;
    sims::write_in(
        &a.dir,
        "simgate.toml",
        &render(a, &a.dir.join("data"), &ports)?,
    )?;
    let (nginx, haproxy) = maps(a)?;
    sims::write_in(&a.dir, "imsi.nginx.map", &nginx)?;
    sims::write_in(&a.dir, "imsi.haproxy.map", &haproxy)?;
    println!(
        "beam_http={} api={} upstream={} status={} nginx={} haproxy={}",
        ports.beam_http, ports.api, ports.upstream, ports.status, ports.nginx, ports.haproxy
    );
    Ok(())
}

fn maps(a: &BeamConfigArgs) -> anyhow::Result<(String, String)> {
    let (mut nginx, mut haproxy) = (String::new(), String::new());
    for i in 0..a.sims {
        let ip = crate::source_addr(a.source_base, i)?;
        writeln!(nginx, "{ip} {};", imsi(i))?;
        writeln!(haproxy, "{ip} {}", imsi(i))?;
    }
    Ok((nginx, haproxy))
}

fn render(a: &BeamConfigArgs, data_dir: &Path, p: &Ports) -> anyhow::Result<String> {
    let mut listen = sims::any_port(&["http", "unified", "harvest"]);
    listen.push(("api".to_owned(), p.api.to_string()));
    listen.push(("beam_http".to_owned(), p.beam_http.to_string()));
    listen.extend(sims::any_port(&["beam_website"]));
    listen.extend(
        a.listen
            .iter()
            .map(|(k, addr)| (k.clone(), addr.to_string())),
    );
    BeamBench {
        generated_by: "# Generated by `loadgen beam-config` for scripts/bench.sh beam-http.",
        data_dir,
        listen,
        ca_file: &a.ca_file,
        group_name: "beam-http benchmark",
        entry: "http://beam.soracom.io:8888/",
        destination: format!("https://localhost:{}/", p.upstream.port()),
        sims: a.sims,
        source_base: a.source_base,
    }
    .render()
}

fn free_ports() -> anyhow::Result<Ports> {
    let [beam_http, api, upstream, status, nginx, haproxy] = sims::free_tcp_ports()?;
    Ok(Ports {
        beam_http,
        api,
        upstream,
        status,
        nginx,
        haproxy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Option<Parsed> {
        parse_response(s.as_bytes()).unwrap()
    }

    #[test]
    fn content_length_responses() {
        let r = "HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(
            parsed(r),
            Some(Parsed {
                status: 200,
                len: r.len(),
                close: false
            })
        );
        // Incomplete head, incomplete body.
        assert_eq!(parsed("HTTP/1.1 200 OK\r\nContent-Len"), None);
        assert_eq!(
            parsed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no"),
            None
        );
        // A pipelined response after it is left alone.
        let two = format!("{r}{r}");
        assert_eq!(parsed(&two).map(|p| p.len), Some(r.len()));
        // Connection: close, and HTTP/1.0 defaults.
        let c = "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parsed(c),
            Some(Parsed {
                status: 502,
                len: c.len(),
                close: true
            })
        );
        let old = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parsed(old).unwrap().close);
        let old_ka = "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!parsed(old_ka).unwrap().close);
        let none = "HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parsed(none).map(|p| p.len), Some(none.len()));
    }

    #[test]
    fn chunked_responses() {
        let r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\na;x=y\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(parsed(r).map(|p| p.len), Some(r.len()));
        for cut in 1..r.len() {
            if let Some(p) = parse_response(&r.as_bytes()[..cut]).unwrap() {
                panic!("complete at {cut} of {}: {p:?}", r.len());
            }
        }
        let trailers = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(parsed(trailers).map(|p| p.len), Some(trailers.len()));
    }

    #[test]
    fn malformed_responses_are_errors() {
        for bad in [
            "HTTP/2 200\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\nbody until close",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_response(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests() {
        let get = String::from_utf8(build_request("h:1", "/x", 0)).unwrap();
        assert_eq!(
            get,
            "GET /x HTTP/1.1\r\nHost: h:1\r\nUser-Agent: loadgen\r\n\r\n"
        );
        let post = build_request("h", "/", 100);
        let text = String::from_utf8(post).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Length: 100"), "{head}");
        assert_eq!(body.len(), 100);
        assert!(body.starts_with("{\"pad\":\"x") && body.ends_with("\"}"));
    }

    #[test]
    fn simgate_accepts_the_config() -> anyhow::Result<()> {
        let a = BeamConfigArgs {
            dir: PathBuf::from("/tmp/beam bench"),
            sims: 64,
            source_base: crate::DEFAULT_SOURCE_BASE,
            ca_file: PathBuf::from("/tmp/certs/ca.crt"),
            listen: Vec::new(),
        };
        let ports = free_ports()?;
        let text = render(&a, &a.dir.join("data"), &ports)?;
        let config = simgate_control::Config::parse(&text)?;
        assert_eq!(config.listen.beam_http, Some(ports.beam_http));
        assert_eq!(config.listen.api, Some(ports.api));
        assert!(!config.radius.enabled);
        assert_eq!(
            config.upstream.ca_file.as_deref(),
            Some(Path::new("/tmp/certs/ca.crt"))
        );
        assert_eq!(config.sessions.len(), 64);
        assert_eq!(config.static_sessions().count(), 64);
        let last = config
            .sessions
            .last()
            .map(|s| (s.ip.to_string(), s.imsi.as_str().to_owned()));
        assert_eq!(
            last,
            Some(("127.0.1.64".to_owned(), "001010000000064".to_owned()))
        );
        let group = &config.groups[0];
        let entries: Vec<_> = group.beam.http_entries().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].1.destination,
            format!("https://localhost:{}/", ports.upstream.port())
        );
        assert!(entries[0].1.add_subscriber_header);
        let (nginx, haproxy) = maps(&a)?;
        assert_eq!(nginx.lines().next(), Some("127.0.1.1 001010000000001;"));
        assert_eq!(haproxy.lines().nth(63), Some("127.0.1.64 001010000000064"));
        Ok(())
    }

    #[test]
    fn extra_listeners_and_cpu_args() {
        assert_eq!(
            parse_listen("beam_mqtt=127.0.0.1:0"),
            Ok(("beam_mqtt".to_owned(), "127.0.0.1:0".parse().unwrap()))
        );
        assert!(parse_listen("x\"=127.0.0.1:0").is_err());
        assert!(parse_listen("beam_mqtt=nowhere").is_err());
    }
}
