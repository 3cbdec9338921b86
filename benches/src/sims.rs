//! What the generated simgate configurations share (`simgate-config`,
//! `beam-config`, `beam-tcp-config`): the simulated SIMs as subscribers
//! with static sessions, free loopback ports, and, for the two Beam
//! benches, the whole file around one Beam entry.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;

use anyhow::{ensure, Context as _};

/// IMSI of SIM `i`: test network 001-01, 0010100000NNNNN.
pub(crate) fn imsi(i: usize) -> String {
    format!("0010100000{:05}", i + 1)
}

/// A path as a TOML string; paths that would need escaping are refused.
pub(crate) fn toml_path(p: &Path) -> anyhow::Result<String> {
    let s = p.to_str().context("paths must be UTF-8")?;
    ensure!(
        !s.contains(['"', '\\']) && !s.chars().any(char::is_control),
        "unusual characters in {s:?}"
    );
    Ok(format!("\"{s}\""))
}

/// `sims` subscribers in group `bench`, then a static session binding SIM
/// `i`'s source address (`source_base + i`) to its IMSI.
pub(crate) fn write_sims(t: &mut String, sims: usize, source_base: Ipv4Addr) -> anyhow::Result<()> {
    for i in 0..sims {
        writeln!(
            t,
            "\n[[subscribers]]\nimsi = \"{}\"\ngroup_id = \"bench\"",
            imsi(i)
        )?;
    }
    for i in 0..sims {
        let ip = crate::source_addr(source_base, i)?;
        writeln!(t, "\n[[sessions]]\nip = \"{ip}\"\nimsi = \"{}\"", imsi(i))?;
    }
    Ok(())
}

/// `N` distinct loopback TCP ports, free right now (held until all are
/// found; another process could still take one before it is bound again).
pub(crate) fn free_tcp_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let held = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addrs = held
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    addrs
        .try_into()
        .map_err(|_| anyhow::anyhow!("cannot find {N} free ports"))
}

/// Writes `text` to `dir/name`, creating `dir`.
pub(crate) fn write_in(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A Beam bench's simgate.toml: the listed listeners, RADIUS off, the test
/// CA for the upstream, one group `bench` whose one Beam entry forwards to
/// `destination` with `addSubscriberHeader`, and the SIMs in that group.
pub(crate) struct BeamBench<'a> {
    /// The first line's comment.
    pub(crate) generated_by: &'a str,
    pub(crate) data_dir: &'a Path,
    /// `[listen]` lines in order: key and address.
    pub(crate) listen: Vec<(String, String)>,
    pub(crate) ca_file: &'a Path,
    pub(crate) group_name: &'a str,
    /// The entry point, e.g. `http://beam.soracom.io:8888/`.
    pub(crate) entry: &'a str,
    pub(crate) destination: String,
    pub(crate) sims: usize,
    pub(crate) source_base: Ipv4Addr,
}

impl BeamBench<'_> {
    pub(crate) fn render(&self) -> anyhow::Result<String> {
        let mut t = String::new();
        writeln!(t, "{}", self.generated_by)?;
        writeln!(t, "data_dir = {}", toml_path(self.data_dir)?)?;
        writeln!(t, "\n[listen]")?;
        for (key, addr) in &self.listen {
            writeln!(t, "{key} = \"{addr}\"")?;
        }
        // Sessions are static; RADIUS's fixed port would only collide.
        writeln!(t, "\n[radius]\nenabled = false")?;
        writeln!(t, "\n[upstream]\nca_file = {}", toml_path(self.ca_file)?)?;
        write!(
            t,
            "\n[[operators]]\nid = \"OP0000000001\"\nname = \"bench\"\n\n[[groups]]\nid = \"bench\"\nname = \"{}\"\n\n[groups.beam.\"{}\"]\n",
            self.group_name, self.entry
        )?;
        writeln!(t, "destination = \"{}\"", self.destination)?;
        writeln!(t, "enabled = true\naddSubscriberHeader = true")?;
        write_sims(&mut t, self.sims, self.source_base)?;
        Ok(t)
    }
}

/// Listeners a bench does not measure: any free port, so nothing collides.
pub(crate) fn any_port(keys: &[&str]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| ((*k).to_owned(), "127.0.0.1:0".to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imsis_paths_and_ports() -> anyhow::Result<()> {
        assert_eq!(imsi(0), "001010000000001");
        assert_eq!(imsi(999), "001010000001000");
        assert_eq!(toml_path(Path::new("/tmp/a b"))?, "\"/tmp/a b\"");
        assert!(toml_path(Path::new("/tmp/a\"b")).is_err());
        let ports = free_tcp_ports::<3>()?;
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        Ok(())
    }
}
