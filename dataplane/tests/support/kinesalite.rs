//! A kinesalite (Kinesis API emulator) child process for one test.
//!
//! The binary comes from `$SIMGATE_KINESALITE`, else
//! `.tools/kinesalite/node_modules/.bin/kinesalite` under the workspace root
//! (`scripts/kinesalite.sh install` puts it there). A missing binary fails
//! the test: an end-to-end test that silently skips proves nothing.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long kinesalite may take to start listening (node startup).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Ports are picked by binding port 0 and releasing it, so another process
/// can take one before kinesalite binds it; try again on a new port.
const START_ATTEMPTS: usize = 5;

/// A running kinesalite; killed (and reaped) on drop.
#[derive(Debug)]
pub(crate) struct Kinesalite {
    child: Child,
    port: u16,
}

impl Kinesalite {
    /// Region to sign for; kinesalite accepts any.
    pub(crate) const REGION: &'static str = "us-east-1";

    /// Starts kinesalite on a free port with streams that become ACTIVE
    /// immediately, and waits until it listens.
    ///
    /// # Panics
    /// If the binary is missing or kinesalite does not come up.
    pub(crate) fn start() -> Self {
        let bin = binary();
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin, free_port()) {
                Ok(k) => return k,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "kinesalite ({}) did not start: {}",
            bin.display(),
            failures.join("; ")
        );
    }

    fn try_start(bin: &Path, port: u16) -> Result<Self, String> {
        let child = Command::new(bin)
            .args(["--port", &port.to_string()])
            .args([
                "--createStreamMs",
                "0",
                "--deleteStreamMs",
                "0",
                "--updateStreamMs",
                "0",
            ])
            .args(["--shardLimit", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        // The guard exists from here on, so every early return kills it.
        let mut me = Self { child, port };

        // kinesalite prints `Listening at http://:::<port>` once it has
        // bound its port. Waiting for that line (rather than for a TCP
        // connect to succeed) cannot be fooled by another process on the
        // port, or by a TCP self-connect to a port nobody listens on yet.
        // Both pipes are drained for the child's whole life, so it never
        // blocks on a full pipe; stderr is kept to explain a failure.
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = me.child.stdout.take() {
            forward_lines(stdout, "", tx.clone());
        }
        if let Some(stderr) = me.child.stderr.take() {
            forward_lines(stderr, "stderr: ", tx);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut output = Vec::new();
        let failure = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("Listening at") => return Ok(me),
                Ok(line) => {
                    if output.len() < 20 {
                        output.push(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = me.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    break format!("exited before listening ({status})");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    break format!("not listening after {START_TIMEOUT:?}");
                }
            }
        };
        Err(format!(
            "port {port}: {failure}; output: {}",
            output.join(" | ")
        ))
    }

    /// `http://127.0.0.1:<port>`, the endpoint to give the Kinesis client.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Credentials kinesalite accepts (it checks that a signature is
    /// present, not that it is right).
    pub(crate) fn credentials() -> simgate_control::AwsCredentials {
        simgate_control::AwsCredentials {
            access_key_id: "AKIDSIMGATETEST".into(),
            secret_access_key: simgate_control::Secret::new("kinesalite-test-secret"),
            session_token: None,
        }
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        // The child is node itself (the bin is a `#!/usr/bin/env node`
        // script), so killing it leaves nothing behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line of `pipe` (with `prefix`) to `tx` from a thread that
/// keeps reading until the pipe closes, even after `tx`'s receiver is gone.
fn forward_lines(pipe: impl Read + Send + 'static, prefix: &'static str, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            // A send error only means nobody waits for output any more.
            let _ = tx.send(format!("{prefix}{line}"));
        }
    });
}

/// The kinesalite binary, or a panic that says how to get it.
pub(crate) fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIMGATE_KINESALITE") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "SIMGATE_KINESALITE={} does not exist; unset it or run `scripts/kinesalite.sh install`",
            p.display()
        );
        return p;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = root.join(".tools/kinesalite/node_modules/.bin/kinesalite");
    assert!(
        p.exists(),
        "kinesalite not found at {} (and SIMGATE_KINESALITE is not set): \
         run `scripts/kinesalite.sh install` first",
        p.display()
    );
    p
}

/// A port that was free a moment ago (bind to port 0, then release it).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}
