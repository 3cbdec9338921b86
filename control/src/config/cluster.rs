//! `[cluster]`: running simgate as one node of a fleet. With `etcd` set, the
//! control state (operators, groups, SIMs, credentials, static sessions,
//! tokens, auth keys) and the sessions RADIUS learns live in etcd instead of
//! `{data_dir}/control.redb`; with `postgres` set, Harvest Data lives in
//! PostgreSQL instead of `{data_dir}/harvest.redb`. Funnel spools, Harvest
//! Files and the Krypton CA stay per node.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The `[cluster]` table. Empty (the default) means a single node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// etcd v3 endpoints (`http://host:2379` or `https://…`), tried in turn.
    pub etcd: Vec<String>,
    /// Every key simgate writes starts with this prefix, so one etcd can
    /// hold several fleets.
    pub prefix: String,
    /// This node's name in logs, `/health` and the keys it writes; defaults
    /// to the host name.
    pub node: Option<String>,
    /// etcd user (etcd's own authentication); needs `password_file`.
    pub username: Option<String>,
    /// File holding the etcd user's password (first line).
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the etcd members' certificates;
    /// the system roots are trusted as well.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A session learned from RADIUS lives this long after its Start or last
    /// Interim-Update, unless a Stop ends it first (an etcd lease). Make it
    /// longer than the gateway's Acct-Interim-Interval.
    pub session_ttl_seconds: u64,
    /// How long an API write waits for etcd (and for this node to catch up
    /// after a conflicting write elsewhere) before it answers 503.
    pub request_timeout_ms: u64,
    /// PostgreSQL URL for Harvest Data (`postgres://user:pass@host:5432/db`);
    /// unset keeps Harvest in the node's own redb file.
    pub postgres: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            prefix: "/simgate".to_owned(),
            node: None,
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            session_ttl_seconds: 3600,
            request_timeout_ms: 5000,
            postgres: None,
        }
    }
}

impl ClusterSettings {
    /// Whether the control state is in etcd.
    pub fn uses_etcd(&self) -> bool {
        !self.etcd.is_empty()
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_seconds)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// This node's name: `node`, else the host name, else `simgate`.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "simgate".to_owned())
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        for e in &self.etcd {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "[cluster] etcd endpoint {e:?} must start with http:// or https://"
                ));
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.len() < 2 {
            return Err(format!(
                "[cluster] prefix {:?} must start with / and not end with one (e.g. \"/simgate\")",
                self.prefix
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err("[cluster] username and password_file go together".to_owned());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("[cluster] cert_file and key_file go together".to_owned());
        }
        if self.session_ttl_seconds < 10 {
            return Err("[cluster] session_ttl_seconds must be at least 10".to_owned());
        }
        if self.request_timeout_ms == 0 {
            return Err("[cluster] request_timeout_ms must be more than 0".to_owned());
        }
        if let Some(url) = &self.postgres {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(
                    "[cluster] postgres must be a URL like postgres://user@host:5432/db".to_owned(),
                );
            }
        }
        Ok(())
    }
}
