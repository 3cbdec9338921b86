//! The `simgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use simgate::{cli, server};
use simgate_control::Config;

#[derive(Debug, Parser)]
#[command(
    name = "simgate",
    version,
    about = "Carrier-edge gateway for cellular IoT: SIM identity, Funnel, Harvest"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (with no --config: the embedded demo default).
    Serve {
        /// TOML configuration file.
        #[arg(long, short, env = "SIMGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit.
    CheckConfig { file: PathBuf },
    /// Print the embedded default configuration (a starting point).
    DefaultConfig,
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let file = config.clone();
            let (config, source) = match config {
                Some(path) => (load(&path)?, path.display().to_string()),
                None => (Config::embedded_default(), "embedded default".to_owned()),
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(config, source, file))?;
        }
        Command::CheckConfig { file } => {
            let c = load(&file)?;
            println!(
                "{}: ok ({} operators, {} groups, {} subscribers, {} credentials, {} sessions)",
                file.display(),
                c.operators.len(),
                c.groups.len(),
                c.subscribers.len(),
                c.credentials.len(),
                c.sessions.len()
            );
        }
        Command::DefaultConfig => {
            print!("{}", simgate_control::config::EMBEDDED_DEFAULT);
        }
        // The API commands print their own errors and choose the status.
        Command::Client(command) => return Ok(cli::run(command)),
    }
    Ok(ExitCode::SUCCESS)
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Config::parse(&text).with_context(|| format!("invalid configuration {}", path.display()))
}

async fn serve(config: Config, source: String, file: Option<PathBuf>) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let server = server::start(config).await?;
    let b = &server.bound;
    tracing::info!(config = %source, data_dir = %data_dir.display(), "simgate started");
    let show =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    println!("simgate {} ({source})", env!("CARGO_PKG_VERSION"));
    for (what, addr) in [
        ("HTTP entry (services by Host; any other: Unified)", b.http),
        (
            "UDP/TCP entry (Unified: Beam, Funnel, Funk, Harvest)",
            b.unified_udp,
        ),
        ("Harvest UDP/TCP", b.harvest_udp),
        ("Beam HTTP entry", b.beam_http),
        ("Beam website entry", b.beam_website),
        ("Beam TCP -> TLS", b.beam_tcp),
        ("Beam MQTT -> MQTTS", b.beam_mqtt),
        ("API, /metrics, console at /console/", b.api),
        ("RADIUS accounting", b.radius),
    ] {
        println!("  {what:<48} {}", show(addr));
    }
    let token_file = data_dir.join("api.token");
    // Never the token itself: stdout ends up in terminals' scrollback,
    // journald and CI logs. It is in the file (mode 0600).
    if server.created_token.is_some() {
        println!(
            "  {:<48} created, stored in {} (mode 0600)",
            "API token",
            token_file.display()
        );
    } else {
        println!("  {:<48} stored in {}", "API token", token_file.display());
    }
    if let (Some(http), Some(api), Some(udp)) = (b.http, b.api, b.harvest_udp) {
        println!();
        println!("Try it (the demo SIM 001010000000001 is bound to 127.0.0.1):");
        println!("  curl -i -H 'Host: harvest.localhost' -H 'Content-Type: application/json' -d '{{\"temp\":21}}' http://{http}/");
        println!("  echo -n 'hello' | nc -u -w1 {} {}", udp.ip(), udp.port());
        println!(
            "  curl -s -H \"Authorization: Bearer $(cat {})\" 'http://{api}/v1/data/Subscriber/001010000000001?sort=asc'",
            token_file.display()
        );
        println!("  curl -s http://{api}/metrics | grep simgate_");
        println!(
            "  open http://{api}/console/ and log in with the contents of {}",
            token_file.display()
        );
    }
    wait_for_stop(&server, file.as_deref()).await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGINT or SIGTERM. SIGHUP re-applies the configuration file's
/// operators, groups, subscribers, credentials and sessions to the store
/// (what the API added is kept); listener and tuning changes need a restart.
async fn wait_for_stop(
    server: &server::Server,
    file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.context("cannot watch SIGINT"),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => reload(server, file).await,
        }
    }
}

async fn reload(server: &server::Server, file: Option<&std::path::Path>) {
    let config = match file {
        Some(path) => match load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: configuration not reloaded"
                );
                return;
            }
        },
        None => Config::embedded_default(),
    };
    let plane = std::sync::Arc::clone(&server.plane);
    match tokio::task::spawn_blocking(move || plane.apply_config(&config)).await {
        Ok(Ok(())) => tracing::info!("SIGHUP: configuration re-applied"),
        Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: configuration not applied"),
        Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
    }
}
