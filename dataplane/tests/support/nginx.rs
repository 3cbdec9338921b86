//! nginx as the HTTPS upstream for Beam tests: a TLS server on 127.0.0.1
//! (HTTP/1.1 keep-alive, and HTTP/2 by ALPN) whose every response echoes the
//! request as JSON: method, path and query, every request header in order
//! (duplicates kept), the body, and the connection it came on.
//!
//! nginx runs unprivileged-style from a temporary prefix
//! (`nginx -p DIR -c DIR/nginx.conf -e DIR/error.log`, `daemon off`,
//! `master_process off`: one process, so killing the child stops it all),
//! with the echo written in njs (`libnginx-mod-http-js`). Missing binaries
//! fail the test, naming the package.
//!
//! Echo knobs, per request: header `X-Echo-Status: 503` (or query
//! `echo_status=503`) sets the status; `X-Echo-Delay-Ms: 2000` (or
//! `echo_delay_ms=`) delays the response, for timeout tests. Every response
//! carries `X-Echo-Server: nginx`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::certs::{copy_into, Certs, ServerCert};
use super::process::{binary, free_port, wait_for};

/// Where Debian's libnginx-mod-http-js puts the njs module.
const NJS_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_js_module.so";

/// nginx retries a busy port for about 2.5 s, then exits.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Free ports are picked then released; another process may take one.
const START_ATTEMPTS: usize = 5;

/// How the server is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NginxOptions {
    /// The certificate presented (default: the one valid for localhost and
    /// 127.0.0.1).
    pub(crate) cert: ServerCert,
    /// Require a client certificate signed by the test CA
    /// (`ssl_verify_client on`). nginx completes the handshake without one
    /// and answers `400 No required SSL certificate was sent`.
    pub(crate) require_client_cert: bool,
    /// Offer `h2` by ALPN besides `http/1.1` (default true).
    pub(crate) http2: bool,
}

impl Default for NginxOptions {
    fn default() -> Self {
        Self {
            cert: ServerCert::Localhost,
            require_client_cert: false,
            http2: true,
        }
    }
}

/// A running nginx; killed (and reaped) on drop, its prefix removed.
#[derive(Debug)]
pub(crate) struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `options` on a free port and waits until it
    /// accepts connections.
    ///
    /// # Panics
    /// If nginx or its njs module is missing, or nginx does not come up.
    pub(crate) fn start(certs: &Certs, options: NginxOptions) -> Self {
        let bin = binary("nginx", "nginx-light");
        assert!(
            Path::new(NJS_MODULE).exists(),
            "{NJS_MODULE} is missing (package libnginx-mod-http-js): run scripts/setup.sh"
        );
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin, certs, options, free_port()) {
                Ok(n) => return n,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "nginx ({}) did not start: {}",
            bin.display(),
            failures.join("; ")
        );
    }

    fn try_start(
        bin: &Path,
        certs: &Certs,
        options: NginxOptions,
        port: u16,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let d = dir.path();
        copy_into(d, &certs.server_cert(options.cert), "server.crt");
        copy_into(d, &certs.server_key(options.cert), "server.key");
        copy_into(d, &certs.ca(), "ca.crt");
        std::fs::write(d.join("echo.js"), ECHO_JS).map_err(|e| format!("echo.js: {e}"))?;
        let conf = d.join("nginx.conf");
        std::fs::write(&conf, config(d, port, options)).map_err(|e| format!("conf: {e}"))?;
        let error_log = d.join("error.log");

        let child = Command::new(bin)
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        // The guard exists from here on, so every early return kills it.
        let mut me = Self { child, port, dir };

        // nginx writes its pid file only after it has bound its listeners;
        // if it cannot bind, it exits. Then check it really accepts.
        let pid_file = me.dir.path().join("nginx.pid");
        let up = wait_for(START_TIMEOUT, || {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Some(Err(format!("exited ({status})")));
            }
            pid_file.exists().then_some(Ok(()))
        });
        let failure = match up {
            Some(Ok(())) => match TcpStream::connect(me.addr()) {
                Ok(_) => return Ok(me),
                Err(e) => format!("pid file written but connect failed: {e}"),
            },
            Some(Err(e)) => e,
            None => format!("no pid file after {START_TIMEOUT:?}"),
        };
        Err(format!(
            "port {port}: {failure}; error.log: {}",
            me.error_log()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        ))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `https://localhost:<port><path_and_query>` (the name the good
    /// certificate is for; it is also valid for `https://127.0.0.1:…`).
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("https://localhost:{}{path_and_query}", self.port)
    }

    /// The prefix directory (config, logs, certificate copies).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// nginx's error log so far (startup notices, TLS handshake failures at
    /// `info`).
    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Requests logged so far. nginx logs a request after answering it, so
    /// a client may see its response a moment before the line appears: use
    /// [`Nginx::wait_for_requests`] to count.
    pub(crate) fn access_log(&self) -> Vec<AccessLine> {
        let text = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
        text.lines().filter_map(AccessLine::parse).collect()
    }

    /// Waits until at least `n` requests are logged, and returns them all.
    ///
    /// # Panics
    /// After `timeout`, with what was logged.
    pub(crate) fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<AccessLine> {
        wait_for(timeout, || {
            let lines = self.access_log();
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "nginx logged fewer than {n} requests in {timeout:?}: {:?}",
                self.access_log()
            )
        })
    }

    /// Distinct client connections that carried at least one logged request
    /// (by nginx's `$connection` serial number).
    pub(crate) fn connections(&self) -> usize {
        let mut ids: Vec<u64> = self.access_log().iter().map(|l| l.connection).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // master_process off: the child is the only nginx process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccessLine {
    /// nginx's connection serial number (`$connection`).
    pub(crate) connection: u64,
    /// Requests so far on that connection, this one included.
    pub(crate) connection_requests: u64,
    pub(crate) status: u16,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub(crate) protocol: String,
    pub(crate) method: String,
    /// Path and query as received.
    pub(crate) uri: String,
}

impl AccessLine {
    fn parse(line: &str) -> Option<Self> {
        let mut f = line.splitn(6, ' ');
        Some(Self {
            connection: f.next()?.parse().ok()?,
            connection_requests: f.next()?.parse().ok()?,
            status: f.next()?.parse().ok()?,
            protocol: f.next()?.to_owned(),
            method: f.next()?.to_owned(),
            uri: f.next()?.to_owned(),
        })
    }
}

/// What nginx echoed: the request as it arrived there.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Echo {
    pub(crate) method: String,
    /// Path and query as sent (`$request_uri`).
    pub(crate) uri: String,
    /// Decoded path without the query.
    pub(crate) path: String,
    /// The query (without `?`), empty when none.
    pub(crate) args: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub(crate) protocol: String,
    /// Every request header in arrival order, duplicates kept; names as
    /// sent for HTTP/1.1, lower case for HTTP/2.
    pub(crate) headers: Vec<(String, String)>,
    body_base64: Option<String>,
    pub(crate) body_len: usize,
    pub(crate) connection: u64,
    pub(crate) connection_requests: u64,
    pub(crate) ssl_protocol: Option<String>,
    /// SNI the client sent, if any.
    pub(crate) ssl_server_name: Option<String>,
    /// Subject DN of the client certificate, if one was sent.
    pub(crate) ssl_client_s_dn: Option<String>,
    /// `SUCCESS`, `NONE` or `FAILED:…`.
    pub(crate) ssl_client_verify: Option<String>,
}

impl Echo {
    /// Parses a response body from this nginx.
    ///
    /// # Panics
    /// If `body` is not an echo (shows the body).
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!("not an nginx echo ({e}): {}", String::from_utf8_lossy(body))
        })
    }

    /// The first value of header `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case), in order.
    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `X-Soracom-*` headers, names lower-cased, in order.
    pub(crate) fn soracom_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-soracom-"))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect()
    }

    /// The request body, byte for byte.
    pub(crate) fn body(&self) -> Vec<u8> {
        self.body_base64
            .as_deref()
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .expect("echo body_base64 decodes")
            })
            .unwrap_or_default()
    }
}

fn config(d: &Path, port: u16, o: NginxOptions) -> String {
    let d = d.display();
    let http2 = if o.http2 { " http2" } else { "" };
    let client_cert = if o.require_client_cert {
        format!("ssl_client_certificate {d}/ca.crt;\n        ssl_verify_client on;")
    } else {
        // Still ask (optionally) so the echo can report a certificate sent
        // by a client that has one.
        format!("ssl_client_certificate {d}/ca.crt;\n        ssl_verify_client optional;")
    };
    format!(
        r#"load_module {NJS_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 4096; }}
http {{
    log_format echo '$connection $connection_requests $status $server_protocol $request_method $request_uri';
    access_log {d}/access.log echo;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    js_path {d};
    js_import main from echo.js;
    # Bodies stay in memory so njs sees them (larger ones get 413).
    client_max_body_size 16m;
    client_body_buffer_size 16m;
    client_body_in_single_buffer on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} ssl{http2};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        {client_cert}
        location / {{ js_content main.echo; }}
    }}
}}
"#
    )
}

/// The njs handler (njs 0.7.9 in Debian 12).
const ECHO_JS: &str = r#"
function echo(r) {
    var raw = r.rawHeadersIn;
    var headers = [];
    for (var i = 0; i < raw.length; i++) {
        headers.push([raw[i][0], raw[i][1]]);
    }
    // An empty HTTP/2 body (`content-length: 0`) reaches njs 0.7.9 as a
    // detached buffer, which throws when read: treat it as no body.
    var body;
    try {
        body = r.requestBuffer;
        if (body !== undefined) { body = Buffer.from(body); }
    } catch (e) {
        body = undefined;
    }
    var v = r.variables;
    var out = {
        method: r.method,
        uri: v.request_uri,
        path: r.uri,
        args: v.args || '',
        protocol: v.server_protocol,
        headers: headers,
        body_base64: body === undefined ? null : body.toString('base64'),
        body_len: body === undefined ? 0 : body.length,
        connection: Number(v.connection),
        connection_requests: Number(v.connection_requests),
        ssl_protocol: v.ssl_protocol || null,
        ssl_server_name: v.ssl_server_name || null,
        ssl_client_s_dn: v.ssl_client_s_dn || null,
        ssl_client_verify: v.ssl_client_verify || null
    };
    var status = Number(r.headersIn['X-Echo-Status'] || r.args.echo_status || 200);
    var delay = Number(r.headersIn['X-Echo-Delay-Ms'] || r.args.echo_delay_ms || 0);
    var json = JSON.stringify(out);
    r.headersOut['Content-Type'] = 'application/json';
    r.headersOut['X-Echo-Server'] = 'nginx';
    if (delay > 0) {
        setTimeout(function () { r.return(status, json); }, delay);
    } else {
        r.return(status, json);
    }
}
export default { echo };
"#;
