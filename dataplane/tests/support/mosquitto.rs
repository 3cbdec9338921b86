//! mosquitto as the MQTTS upstream for Beam tests: one TLS listener on
//! 127.0.0.1 with `require_certificate true` (clients need a certificate
//! from the test CA), plus `mosquitto_pub` / `mosquitto_sub` helpers that
//! speak to it over TLS or to any plain MQTT 3.1.1 endpoint (simgate's
//! :1883).
//!
//! The broker is `mosquitto -c DIR/mosquitto.conf` from a temporary
//! directory, logging to stderr (unbuffered), which the guard watches for
//! `running`. Missing binaries fail the test, naming the package.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::certs::{copy_into, Certs, ServerCert};
use super::process::{binary, forward_lines, free_port, run_with_timeout};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 5;

/// How long one `mosquitto_pub` may take.
pub(crate) const PUB_TIMEOUT: Duration = Duration::from_secs(10);

/// A running broker; killed (and reaped) on drop.
#[derive(Debug)]
pub(crate) struct Mosquitto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    plain_port: Option<u16>,
    credentials: Option<(&'static str, &'static str)>,
}

/// How the broker is set up.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MosquittoOptions {
    /// Also listen for plain MQTT (no TLS) on a second port, e.g. to compare
    /// a client's behaviour directly against the broker with what it sees
    /// through simgate.
    pub(crate) plain_listener: bool,
    /// Require this username and password (`allow_anonymous false`, a
    /// `mosquitto_passwd` file).
    pub(crate) credentials: Option<(&'static str, &'static str)>,
}

impl Mosquitto {
    /// Starts the broker with the good server certificate and a TLS
    /// listener that requires a client certificate, on a free port.
    ///
    /// # Panics
    /// If mosquitto is missing or does not come up.
    pub(crate) fn start(certs: &Certs) -> Self {
        Self::start_with(certs, MosquittoOptions::default())
    }

    /// [`Mosquitto::start`] with `options`.
    pub(crate) fn start_with(certs: &Certs, options: MosquittoOptions) -> Self {
        let bin = binary("mosquitto", "mosquitto");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let plain = options.plain_listener.then(free_port);
            match Self::try_start(&bin, certs, free_port(), plain, options.credentials) {
                Ok(m) => return m,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "mosquitto ({}) did not start: {}",
            bin.display(),
            failures.join("; ")
        );
    }

    fn try_start(
        bin: &Path,
        certs: &Certs,
        port: u16,
        plain_port: Option<u16>,
        credentials: Option<(&'static str, &'static str)>,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let d = dir.path();
        let ca = copy_into(d, &certs.ca(), "ca.crt");
        let cert = copy_into(d, &certs.server_cert(ServerCert::Localhost), "server.crt");
        let key = copy_into(d, &certs.server_key(ServerCert::Localhost), "server.key");
        // Client material for the helpers, so targets outlive `certs`.
        copy_into(d, &certs.client_cert(), "client.crt");
        copy_into(d, &certs.client_key(), "client.key");
        let conf = d.join("mosquitto.conf");
        let mut text = format!(
            "per_listener_settings false\n\
             allow_anonymous {}\n\
             persistence false\n\
             log_dest stderr\n\
             log_type all\n\
             connection_messages true\n\
             # Started as root (a CI container), stay root: the files are in a\n\
             # private tempdir. Ignored when not root.\n\
             user root\n\
             listener {port} 127.0.0.1\n\
             cafile {}\n\
             certfile {}\n\
             keyfile {}\n\
             require_certificate true\n",
            credentials.is_none(),
            ca.display(),
            cert.display(),
            key.display()
        );
        if let Some(plain) = plain_port {
            text.push_str(&format!("listener {plain} 127.0.0.1\n"));
        }
        if let Some((user, password)) = credentials {
            let file = d.join("passwd");
            let out = run_with_timeout(
                Command::new(binary("mosquitto_passwd", "mosquitto"))
                    .args(["-b", "-c"])
                    .arg(&file)
                    .args([user, password]),
                Duration::from_secs(10),
            );
            if !out.status.success() {
                return Err(format!(
                    "mosquitto_passwd: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            text.push_str(&format!("password_file {}\n", file.display()));
        }
        std::fs::write(&conf, text).map_err(|e| format!("conf: {e}"))?;

        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut me = Self {
            child,
            port,
            dir,
            log: log.clone(),
            plain_port,
            credentials,
        };

        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = me.child.stdout.take() {
            forward_lines(stdout, "", tx.clone());
        }
        if let Some(stderr) = me.child.stderr.take() {
            forward_lines(stderr, "", tx);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let failure = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let running = line.contains(" running");
                    push_line(&log, line);
                    if running {
                        // Keep collecting the log for the broker's life.
                        std::thread::spawn(move || {
                            for line in rx {
                                push_line(&log, line);
                            }
                        });
                        return Ok(me);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = me.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    break format!("exited before running ({status})");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break format!("not running after {START_TIMEOUT:?}");
                }
            }
        };
        Err(format!(
            "port {port}: {failure}; log: {}",
            me.log().join(" | ")
        ))
    }

    /// Stops the broker (its clients see the connection drop).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port(s), with a fresh state
    /// (targets made before point at removed files: make new ones).
    ///
    /// # Panics
    /// If it does not come up.
    pub(crate) fn restart(&mut self, certs: &Certs) {
        self.stop();
        let bin = binary("mosquitto", "mosquitto");
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin, certs, self.port, self.plain_port, self.credentials) {
                Ok(m) => {
                    *self = m;
                    return;
                }
                Err(e) => {
                    failures.push(e);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!("mosquitto did not restart: {}", failures.join("; "));
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `mqtts://127.0.0.1:<port>`, a Beam destination.
    pub(crate) fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    /// The plain-MQTT listener, when started with one.
    pub(crate) fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_port
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }

    /// A TLS target for the command-line clients, trusting the test CA,
    /// presenting the client certificate when `with_client_cert`.
    pub(crate) fn tls_target(&self, with_client_cert: bool) -> MqttTarget {
        let d = self.dir.path();
        MqttTarget {
            tls: Some(MqttTls {
                ca: d.join("ca.crt"),
                client: with_client_cert.then(|| (d.join("client.crt"), d.join("client.key"))),
            }),
            ..MqttTarget::plain(self.addr())
        }
    }

    /// The broker's log so far (connections, TLS errors, …).
    pub(crate) fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push_line(log: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut l) = log.lock() {
        if l.len() < 10_000 {
            l.push(line);
        }
    }
}

/// TLS settings for a TLS target.
#[derive(Debug, Clone)]
pub(crate) struct MqttTls {
    /// CA file the client verifies the broker with.
    pub(crate) ca: PathBuf,
    /// Client certificate and key, if any.
    pub(crate) client: Option<(PathBuf, PathBuf)>,
}

/// Where and how `mosquitto_pub` / `mosquitto_sub` connect (MQTT 3.1.1).
#[derive(Debug, Clone)]
pub(crate) struct MqttTarget {
    pub(crate) addr: SocketAddr,
    /// None: plain MQTT (e.g. simgate's :1883).
    pub(crate) tls: Option<MqttTls>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// None: the client picks a random id.
    pub(crate) client_id: Option<String>,
    /// Keepalive in seconds (mosquitto's default is 60).
    pub(crate) keepalive: Option<u16>,
}

impl MqttTarget {
    /// Plain MQTT to `addr`.
    pub(crate) fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            username: None,
            password: None,
            client_id: None,
            keepalive: None,
        }
    }

    pub(crate) fn with_credentials(mut self, username: &str, password: &str) -> Self {
        self.username = Some(username.to_owned());
        self.password = Some(password.to_owned());
        self
    }

    pub(crate) fn with_client_id(mut self, id: &str) -> Self {
        self.client_id = Some(id.to_owned());
        self
    }

    /// Connection arguments shared by both clients.
    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "-V".into(),
            "mqttv311".into(),
            "-h".into(),
            self.addr.ip().to_string().into(),
            "-p".into(),
            self.addr.port().to_string().into(),
        ];
        if let Some(tls) = &self.tls {
            a.extend(["--cafile".into(), tls.ca.clone().into_os_string()]);
            if let Some((cert, key)) = &tls.client {
                a.extend(["--cert".into(), cert.clone().into_os_string()]);
                a.extend(["--key".into(), key.clone().into_os_string()]);
            }
        }
        if let Some(u) = &self.username {
            a.extend(["-u".into(), u.into()]);
        }
        if let Some(p) = &self.password {
            a.extend(["-P".into(), p.into()]);
        }
        if let Some(id) = &self.client_id {
            a.extend(["-i".into(), id.into()]);
        }
        if let Some(k) = self.keepalive {
            a.extend(["-k".into(), k.to_string().into()]);
        }
        a
    }
}

/// Publishes one message with `mosquitto_pub` and returns its output (at
/// QoS 1 it waits for the PUBACK); a refused connection shows as a failed
/// status and an error on stderr.
pub(crate) fn publish(target: &MqttTarget, topic: &str, message: &str, qos: u8) -> Output {
    let bin = binary("mosquitto_pub", "mosquitto-clients");
    run_with_timeout(
        Command::new(bin).args(target.args()).args([
            "-t",
            topic,
            "-m",
            message,
            "-q",
            &qos.to_string(),
        ]),
        PUB_TIMEOUT,
    )
}

/// One message `mosquitto_sub` received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MqttMessage {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: u8,
}

/// Marks message lines in `mosquitto_sub -d` output (debug lines start with
/// `Client `). Payload in hex, topic last so it may contain spaces.
const MSG_FORMAT: &str = "=MSG= %q %x %t";
const MSG_PREFIX: &str = "=MSG= ";

/// A `mosquitto_sub` that is subscribed; killed on drop.
#[derive(Debug)]
pub(crate) struct Subscriber {
    child: Child,
    rx: mpsc::Receiver<String>,
    /// Non-message output seen so far (debug lines, errors).
    output: Vec<String>,
}

impl Subscriber {
    /// Starts `mosquitto_sub` on `topic` at `qos` and waits (up to 10 s)
    /// until the SUBACK arrived.
    ///
    /// # Errors
    /// What the client printed, if it exited or was not subscribed in time
    /// (for instance a broker that refuses it).
    pub(crate) fn start(target: &MqttTarget, topic: &str, qos: u8) -> Result<Self, String> {
        let bin = binary("mosquitto_sub", "mosquitto-clients");
        // Its debug lines (SUBACK) are block-buffered on a pipe: line-buffer
        // them with coreutils' stdbuf.
        let child = Command::new(binary("stdbuf", "coreutils"))
            .arg("-oL")
            .arg(bin)
            .args(target.args())
            .args(["-d", "-t", topic, "-q", &qos.to_string(), "-F", MSG_FORMAT])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mosquitto_sub: {e}"));
        let (tx, rx) = mpsc::channel();
        let mut me = Self {
            child,
            rx,
            output: Vec::new(),
        };
        if let Some(stdout) = me.child.stdout.take() {
            forward_lines(stdout, "", tx.clone());
        }
        if let Some(stderr) = me.child.stderr.take() {
            forward_lines(stderr, "stderr: ", tx);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match me.rx.recv_timeout(left) {
                Ok(line) => {
                    let subscribed = line.starts_with("Subscribed (mid");
                    me.output.push(line);
                    if subscribed {
                        return Ok(me);
                    }
                }
                Err(e) => {
                    let status = match e {
                        mpsc::RecvTimeoutError::Timeout => {
                            format!("no SUBACK in {START_TIMEOUT:?}")
                        }
                        mpsc::RecvTimeoutError::Disconnected => {
                            let s = me.child.wait().map(|s| s.to_string()).unwrap_or_default();
                            format!("exited ({s})")
                        }
                    };
                    return Err(format!("mosquitto_sub {status}: {}", me.output.join(" | ")));
                }
            }
        }
    }

    /// The next message, or None after `timeout`.
    pub(crate) fn next_message(&mut self, timeout: Duration) -> Option<MqttMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            match line.strip_prefix(MSG_PREFIX).and_then(parse_message) {
                Some(m) => return Some(m),
                None => self.output.push(line),
            }
        }
    }

    /// Debug and error lines seen so far.
    pub(crate) fn output(&self) -> &[String] {
        &self.output
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<qos> <hex payload> <topic>`.
fn parse_message(rest: &str) -> Option<MqttMessage> {
    let mut f = rest.splitn(3, ' ');
    let qos = f.next()?.parse().ok()?;
    let payload = hex::decode(f.next()?).ok()?;
    let topic = f.next()?.to_owned();
    Some(MqttMessage {
        topic,
        payload,
        qos,
    })
}
