//! A moto (AWS API emulator, `moto_server`) child process for one test,
//! started through `moto_server.py` beside this file: moto's own server plus
//! a read-back of the messages published to AWS IoT Data.
//!
//! The Python comes from the venv of the moto_server binary, which comes from `$SIMGATE_MOTO_SERVER`, else
//! `.tools/venv/bin/moto_server` under the workspace root (`scripts/setup.sh`
//! installs `moto[server]` there), else `moto_server` on `PATH`. A missing
//! binary fails the test: an end-to-end test that silently skips proves
//! nothing.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to start listening (Python imports).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server; killed (and reaped) on drop.
#[derive(Debug)]
pub(crate) struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Region to sign for (moto keeps state per region).
    pub(crate) const REGION: &'static str = "us-east-1";

    /// Starts moto on a free port of 127.0.0.1 and waits until it answers.
    ///
    /// # Panics
    /// If the binary is missing or moto does not come up.
    pub(crate) fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Self::spawn(free_port()) {
                Ok(me) => return me,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "moto_server ({}) did not start: {}",
            binary().display(),
            failures.join("; ")
        );
    }

    /// Kills moto (an outage: connections are refused) without reaping the
    /// port; [`Moto::restart`] brings a fresh, empty one back on it.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts moto again on the same port (its state starts empty).
    pub(crate) fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match Self::spawn(self.port) {
                Ok(me) => {
                    // The old child is reaped; take over the new one.
                    *self = me;
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("moto restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn spawn(port: u16) -> Result<Self, String> {
        let bin = binary();
        let python = bin
            .parent()
            .map(|d| d.join("python3"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("python3"));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_server.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["127.0.0.1", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        // Drain both pipes for the child's whole life, so that it never
        // blocks on a full pipe (werkzeug logs every request).
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    if line.is_err() {
                        break;
                    }
                }
            });
        }
        // The guard exists from here on, so every failure kills it.
        let mut me = Self { child, port };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if me.answers() {
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(format!("port {port}: exited ({status})"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "port {port}: not answering after {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether moto's own health endpoint answers with 200 (another process
    /// that took the port would not speak moto's API).
    fn answers(&self) -> bool {
        use std::io::Write as _;
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
    }

    /// `http://127.0.0.1:<port>`, the endpoint for every AWS service.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Every message published to AWS IoT Data so far: (region, topic,
    /// payload).
    pub(crate) fn iot_published(&self) -> Vec<(String, String, Vec<u8>)> {
        use base64::Engine as _;
        use std::io::Write as _;
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        s.write_all(
            b"GET /_simgate/iot-published HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .expect("write to moto");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("read from moto");
        let at = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP response");
        assert!(
            resp.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&resp)
        );
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&resp[at + 4..]).expect("JSON list");
        list.into_iter()
            .map(|m| {
                let field = |k: &str| m[k].as_str().expect("string field").to_owned();
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(field("payload"))
                    .expect("base64 payload");
                (field("region"), field("topic"), payload)
            })
            .collect()
    }

    /// Credentials moto accepts (it does not check signatures by default).
    pub(crate) fn credentials() -> simgate_control::AwsCredentials {
        simgate_control::AwsCredentials {
            access_key_id: "AKIDSIMGATETEST".into(),
            secret_access_key: simgate_control::Secret::new("moto-test-secret"),
            session_token: None,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The moto_server binary, or a panic that says how to get it.
pub(crate) fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIMGATE_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "SIMGATE_MOTO_SERVER={} does not exist; unset it or run `scripts/setup.sh`",
            p.display()
        );
        return p;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let venv = root.join(".tools/venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("moto_server"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found at {} nor on PATH (and SIMGATE_MOTO_SERVER is not set): \
                 run `scripts/setup.sh` first",
                venv.display()
            )
        })
}

/// A port that was free a moment ago (bind to port 0, then release it).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}
