//! Small helpers for peers run as child processes: finding a Debian-packaged
//! binary (failing loudly, naming the package), picking a port, running a
//! command with a deadline.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `name` from `$PATH`, `/usr/sbin` or `/usr/bin`.
///
/// # Panics
/// If it is nowhere, naming the Debian `package` and `scripts/setup.sh`: an
/// end-to-end test that silently skips proves nothing.
pub(crate) fn binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed (package {package}): run scripts/setup.sh");
}

/// A port that was free a moment ago (bind to port 0, then release it).
/// Another process may take it before the peer binds it: callers retry.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

/// Runs `cmd` with stdin closed, collecting its output; kills it after
/// `timeout` (the output then has a failed status and what it printed).
pub(crate) fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                break child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
            }
        }
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Sends each line of `pipe` (with `prefix`) to `tx` from a thread that
/// keeps reading until the pipe closes, even after `tx`'s receiver is gone.
pub(crate) fn forward_lines(
    pipe: impl Read + Send + 'static,
    prefix: &'static str,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            // A send error only means nobody waits for output any more.
            let _ = tx.send(format!("{prefix}{line}"));
        }
    });
}

/// Polls `check` every 10 ms until it returns `Some` or `timeout` passes.
pub(crate) fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
