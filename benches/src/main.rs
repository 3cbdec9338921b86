//! `loadgen`: the many-SIM UDP load generator behind `scripts/bench.sh`.
//!
//! * `send` — 100-byte JSON records from many loopback source addresses (one
//!   per simulated SIM), written with `sendmmsg` in batches; replies are read
//!   back and counted. It measures one window and can read counters from a
//!   Prometheus endpoint before and after it, so the receiver's own count
//!   (simgate's or the sink's) is what gets reported, not what was sent.
//! * `sink` — the raw baseline peer: plain UDP sockets read with `recvmmsg`,
//!   counting datagrams and serving the count as `/metrics`.
//! * `simgate-config` — a simgate configuration whose sessions bind every
//!   source address `send` uses to its own SIM, with Funnel to the null sink.
//! * `scrape` — prints one metrics page, or chosen sums from it as one
//!   `key=value` line (readiness checks, sampling during a run, debugging).
//! * `ready` — restart-to-listening time: from a given spawn instant until
//!   `/health` answers and until a UDP record is answered.
//! * `http`, `beam-config` — the Beam HTTP benchmark: closed-loop HTTP/1.1
//!   keep-alive load from many source addresses, and simgate's config for it.
//! * `sink-setup`, `sink-direct`, `sink-peer` — the Funnel sinks benchmark
//!   (see `sinks`).
//! * `tcp`, `mqtt` — one request outstanding per connection (a line, or an
//!   MQTT QoS 1 PUBLISH), closed loop or open loop at a fixed rate (see
//!   `tcp`); `tls-echo` and `beam-tcp-config` — the beam-tcp benchmark;
//!   `harvest-raw` — the harvest-ingest benchmark's baseline.
//! * `fleet` — the fleet benchmark: configs for nodes sharing etcd, API
//!   writes, RADIUS updates and propagation latency across them (see `fleet`).

mod beam_tcp;
mod config;
mod conn;
mod fleet;
mod harvest_raw;
mod http;
mod mqtt;
mod ready;
mod report;
mod scrape;
mod send;
mod sims;
mod sink;
mod sinks;
mod tcp;
mod tls_echo;
mod tls_server;
#[cfg(feature = "io-uring")]
mod uring;

use std::net::Ipv4Addr;

use clap::{Parser, Subcommand};

/// First simulated SIM's source address; SIM `i` sends from `base + i`.
pub(crate) const DEFAULT_SOURCE_BASE: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Many-SIM UDP load generator and raw sink for simgate benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send records from many source addresses with sendmmsg.
    Send(send::SendArgs),
    /// Receive with recvmmsg and count (the raw baseline peer).
    Sink(sink::SinkArgs),
    /// Print a simgate config for `send`'s sources (Funnel → null sink).
    SimgateConfig(config::ConfigArgs),
    /// Print the body of a metrics page (HTTP/1.0 GET).
    Scrape {
        /// e.g. http://127.0.0.1:7070/metrics
        url: String,
        /// KEY=SELECTOR: print one line of `KEY=VALUE` pairs instead of the
        /// page (the sum of the matching series; 0 when none matches).
        #[arg(long = "metric", value_parser = send::parse_metric)]
        metrics: Vec<(String, scrape::Selector)>,
    },
    /// Time until a (re)started simgate answers /health and a UDP record.
    Ready(ready::ReadyArgs),
    /// Closed-loop HTTP/1.1 keep-alive load, one source address per connection.
    Http(http::HttpArgs),
    /// Write a simgate config (Beam HTTP → HTTPS) and SIM maps for `http`.
    BeamConfig(http::BeamConfigArgs),
    /// Create the bench destination's stream at its emulator.
    SinkSetup(sinks::SetupArgs),
    /// Drive the bench destination's sink directly, in a loop (baseline).
    SinkDirect(sinks::DirectArgs),
    /// An HTTPS receiver answering as Event Hubs, Pub/Sub or a webhook does.
    SinkPeer(sinks::PeerArgs),
    /// TCP load, one line outstanding per connection, closed or open loop.
    Tcp(tcp::TcpArgs),
    /// MQTT 3.1.1 load: PUBLISH QoS 1, wait for PUBACK; closed or open loop.
    Mqtt(tcp::MqttArgs),
    /// A TLS echo server (the beam-tcp upstream).
    TlsEcho(tls_echo::TlsEchoArgs),
    /// Write a simgate config (Beam TCP → TLS) for `tcp`.
    BeamTcpConfig(beam_tcp::BeamTcpConfigArgs),
    /// Append to simgate's Harvest store directly (harvest-ingest baseline).
    HarvestRaw(harvest_raw::HarvestRawArgs),
    /// The fleet benchmark: node configs, API writes, RADIUS, propagation.
    Fleet(fleet::FleetArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Send(a) => send::run(&a),
        Command::Sink(a) => sink::run(&a),
        Command::SimgateConfig(a) => config::run(&a),
        Command::Scrape { url, metrics } => {
            let page = scrape::get(&url)?;
            if metrics.is_empty() {
                print!("{page}");
            } else {
                let pairs: Vec<String> = metrics
                    .iter()
                    .map(|(key, sel)| format!("{key}={}", sel.sum(&page).unwrap_or(0.0)))
                    .collect();
                println!("{}", pairs.join(" "));
            }
            Ok(())
        }
        Command::Ready(a) => ready::run(&a),
        Command::Http(a) => http::run(&a),
        Command::BeamConfig(a) => http::run_config(&a),
        Command::SinkSetup(a) => sinks::setup(&a),
        Command::SinkDirect(a) => sinks::direct(&a),
        Command::SinkPeer(a) => sinks::peer(&a),
        Command::Tcp(a) => tcp::run_tcp(&a),
        Command::Mqtt(a) => tcp::run_mqtt(&a),
        Command::TlsEcho(a) => tls_echo::run(&a),
        Command::BeamTcpConfig(a) => beam_tcp::run(&a),
        Command::HarvestRaw(a) => harvest_raw::run(&a),
        Command::Fleet(a) => fleet::run(&a),
    }
}

/// Source address of simulated SIM `i` (0-based).
pub(crate) fn source_addr(base: Ipv4Addr, i: usize) -> anyhow::Result<Ipv4Addr> {
    let n = u32::from(base)
        .checked_add(u32::try_from(i)?)
        .ok_or_else(|| anyhow::anyhow!("source address range overflows"))?;
    let addr = Ipv4Addr::from(n);
    anyhow::ensure!(
        addr.octets()[0] == 127,
        "source {addr} is outside 127.0.0.0/8: traffic stays on loopback"
    );
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_walk_the_loopback_range() {
        let a = |i| source_addr(DEFAULT_SOURCE_BASE, i).ok();
        assert_eq!(a(0), Some(Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(a(999), Some(Ipv4Addr::new(127, 0, 4, 232)));
        assert!(source_addr(Ipv4Addr::new(127, 255, 255, 250), 10).is_err());
    }
}
