//! A moto (AWS API emulator, `moto_server`) child process for one test.
//!
//! The binary comes from `$SIMGATE_MOTO_SERVER`, else
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
        let bin = binary();
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
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
            let failure = loop {
                if me.answers() {
                    return me;
                }
                if let Ok(Some(status)) = me.child.try_wait() {
                    break format!("port {port}: exited ({status})");
                }
                if Instant::now() > deadline {
                    break format!("port {port}: not answering after {START_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            failures.push(failure);
        }
        panic!(
            "moto_server ({}) did not start: {}",
            bin.display(),
            failures.join("; ")
        );
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
