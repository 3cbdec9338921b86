//! A real etcd cluster (Debian's `etcd-server`) of N members on loopback,
//! each member a child process that can be stopped and started again; all
//! are killed when the guard drops.

use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::binary;

struct Member {
    name: String,
    client: String,
    peer: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// The cluster; `endpoints()` for simgate's `[cluster] etcd`.
pub(crate) struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<Tls>,
    _dir: tempfile::TempDir,
}

/// Clients reach the members over TLS with this server certificate (for
/// 127.0.0.1), verified against `ca`.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

/// Two free ports on `ip` (bound at once, so they differ), released.
fn two_ports(ip: IpAddr) -> (u16, u16) {
    let a = std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let b = std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let ports = (
        a.local_addr().map(|a| a.port()).unwrap_or_default(),
        b.local_addr().map(|a| a.port()).unwrap_or_default(),
    );
    drop((a, b));
    ports
}

impl EtcdCluster {
    /// Starts `n` members on `base.1`, `base.2`, … (e.g. `127.0.95`), each on
    /// ports the OS picked, and waits until every one answers.
    pub(crate) fn start(n: usize, base: &str) -> Self {
        Self::start_with(n, base, None)
    }

    /// One member on 127.0.0.1 whose clients must use TLS.
    pub(crate) fn start_tls(tls: Tls) -> Self {
        Self::start_with(1, "127.0.0", Some(tls))
    }

    fn start_with(n: usize, base: &str, tls: Option<Tls>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut members = Vec::new();
        for i in 1..=n {
            let ip: IpAddr = format!("{base}.{i}")
                .parse()
                .unwrap_or_else(|e| panic!("{base}.{i}: {e}"));
            let (c, p) = two_ports(ip);
            let scheme = if tls.is_some() { "https" } else { "http" };
            members.push(Member {
                name: format!("m{i}"),
                client: format!("{scheme}://{ip}:{c}"),
                peer: format!("http://{ip}:{p}"),
                dir: dir.path().join(format!("m{i}")),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            initial_cluster,
            tls,
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_ready(i);
        }
        cluster
    }

    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// TOML for `[cluster] etcd = [...]`.
    pub(crate) fn toml_endpoints(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    fn spawn(&mut self, i: usize) {
        let bin = binary("etcd", "etcd-server");
        let initial = self.initial_cluster.clone();
        let m = &self.members[i];
        let state = if m.dir.exists() { "existing" } else { "new" };
        let log = std::fs::File::create(self._dir.path().join(format!("{}.log", m.name)))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let tls_args: Vec<String> = match &self.tls {
            Some(t) => vec![
                "--cert-file".into(),
                t.cert.display().to_string(),
                "--key-file".into(),
                t.key.display().to_string(),
            ],
            None => Vec::new(),
        };
        let m = &mut self.members[i];
        let child = Command::new(bin)
            .args(&tls_args)
            .args([
                "--name",
                &m.name,
                "--data-dir",
                &m.dir.display().to_string(),
                "--listen-client-urls",
                &m.client,
                "--advertise-client-urls",
                &m.client,
                "--listen-peer-urls",
                &m.peer,
                "--initial-advertise-peer-urls",
                &m.peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "simgate-test",
                // Fast elections for tests of failures.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        m.child = Some(child);
    }

    fn wait_ready(&self, i: usize) {
        let m = &self.members[i];
        let addr = m
            .client
            .split_once("://")
            .map_or(m.client.as_str(), |(_, a)| a)
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(&addr).is_ok() && self.healthy(&m.client) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {} did not become healthy; see its log",
                m.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` (SIGKILL).
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data and ports (the others keep the
    /// quorum), and waits for it.
    pub(crate) fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i);
    }

    /// Compacts the history up to the current revision (through member
    /// `via`), so a watch resuming from before it is refused.
    pub(crate) fn compact(&self, via: usize) -> i64 {
        let endpoint = &self.members[via].client;
        let out = Command::new(binary("etcdctl", "etcd-client"))
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints={endpoint}"),
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .output()
            .unwrap_or_else(|e| panic!("etcdctl: {e}"));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("etcdctl endpoint status: {e}: {out:?}"));
        let revision = status[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in {status}"));
        let out = Command::new(binary("etcdctl", "etcd-client"))
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints={endpoint}"),
                "compact",
                &revision.to_string(),
            ])
            .output()
            .unwrap_or_else(|e| panic!("etcdctl: {e}"));
        assert!(out.status.success(), "etcdctl compact: {out:?}");
        revision
    }

    /// The client endpoint of member `i`.
    pub(crate) fn endpoint(&self, i: usize) -> String {
        self.members[i].client.clone()
    }

    /// Starts every member again on its data and ports (all at once: one
    /// alone has no quorum), and waits for them.
    pub(crate) fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_ready(i);
        }
    }

    /// `/health` of one member says true (it has a leader).
    fn healthy(&self, client: &str) -> bool {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-m", "2", &format!("{client}/health")]);
        if let Some(t) = &self.tls {
            cmd.arg("--cacert").arg(&t.ca);
        }
        matches!(cmd.output(), Ok(o) if String::from_utf8_lossy(&o.stdout).contains("\"true\""))
    }

    /// Runs `etcdctl ARGS` against member `i` (with the CA when TLS).
    pub(crate) fn etcdctl(&self, i: usize, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(binary("etcdctl", "etcd-client"));
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.members[i].client));
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()));
        }
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("etcdctl: {e}"));
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
