//! Wires the control snapshot, services and listeners together, and shuts
//! them down in order: listeners first, then Funnel drains its queues.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use simgate_control::radius::{IpNet, RadiusClient, RadiusStats};
use simgate_control::{Config, ControlPlane, Secret};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, ApiState};
use crate::ingress::http::{HttpLimits, HttpListener};
use crate::ingress::tcp::{Handoff, TcpLimits};
use crate::ingress::{self, udp::UdpOptions};
use crate::metrics::Metrics;
use crate::services::beam::Beam;
use crate::services::endorse::Endorse;
use crate::services::funk::Funk;
use crate::services::funnel::Funnel;
use crate::services::harvest::{self, HarvestStore};
use crate::services::harvest_files::HarvestFiles;
use crate::services::krypton::Krypton;
use crate::services::metadata::Metadata;
use crate::services::{Entry, Services};
use crate::sinks::factory::{DefaultSinkFactory, SinkFactory};
use crate::upstream::Upstream;

/// Addresses actually bound (ports resolved when the config said 0).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub http: Option<SocketAddr>,
    pub unified_udp: Option<SocketAddr>,
    pub unified_tcp: Option<SocketAddr>,
    pub harvest_udp: Option<SocketAddr>,
    pub harvest_tcp: Option<SocketAddr>,
    pub api: Option<SocketAddr>,
    pub radius: Option<SocketAddr>,
    /// Beam HTTP entry (:8888).
    pub beam_http: Option<SocketAddr>,
    /// Beam website entry (:18080).
    pub beam_website: Option<SocketAddr>,
    /// Beam TCP → TCP(S) entry (:8023).
    pub beam_tcp: Option<SocketAddr>,
    /// Beam MQTT entry (:1883).
    pub beam_mqtt: Option<SocketAddr>,
}

/// A running simgate.
pub struct Server {
    pub bound: Bound,
    /// The API token created by this start (first start only; it is also in
    /// `{data_dir}/api.token`).
    pub created_token: Option<String>,
    pub plane: Arc<ControlPlane>,
    pub services: Arc<Services>,
    shutdown: watch::Sender<bool>,
    listeners: JoinSet<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

/// The control plane: the fleet's etcd with `[cluster] etcd`, else
/// `{data_dir}/control.redb`. Blocks (reads files, may write).
fn open_control(config: &Config) -> anyhow::Result<Arc<ControlPlane>> {
    let cluster = &config.cluster;
    if !cluster.uses_etcd() {
        return ControlPlane::open(&config.data_dir, config).with_context(|| {
            format!(
                "cannot open the control store in {}",
                config.data_dir.display()
            )
        });
    }
    let tls = if cluster.etcd.iter().any(|e| e.starts_with("https://")) {
        let settings = simgate_control::config::UpstreamSettings {
            ca_file: cluster.ca_file.clone(),
            ..config.upstream.clone()
        };
        let upstream = Upstream::new(&settings).context("[cluster] ca_file")?;
        let identity = match (&cluster.cert_file, &cluster.key_file) {
            (Some(cert), Some(key)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("[cluster] cannot read {}", p.display()))
                };
                Some(
                    crate::upstream::ClientIdentity::from_pem("etcd", &read(cert)?, &read(key)?)
                        .context("[cluster] cert_file / key_file")?,
                )
            }
            _ => None,
        };
        Some(upstream.stream_tls_config(identity.as_ref())?)
    } else {
        None
    };
    ControlPlane::open_cluster(&config.data_dir, config, cluster, tls).with_context(|| {
        format!(
            "cannot open the fleet's control state in etcd {:?}",
            cluster.etcd
        )
    })
}

/// Starts simgate with the real sinks.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    // Reads the system roots and the CA files: off the async workers.
    let settings = config.upstream.clone();
    let upstream = tokio::task::spawn_blocking(move || Upstream::new(&settings))
        .await?
        .context("cannot set up outbound TLS ([upstream])")?;
    let factory = Arc::new(DefaultSinkFactory::new(upstream.clone()));
    start_inner(config, factory, Some(upstream)).await
}

/// Starts simgate with the given sink factory (tests inject faults here).
/// Beam sets up its outbound TLS on first use.
pub async fn start_with(config: Config, factory: Arc<dyn SinkFactory>) -> anyhow::Result<Server> {
    start_inner(config, factory, None).await
}

async fn start_inner(
    config: Config,
    factory: Arc<dyn SinkFactory>,
    upstream: Option<Upstream>,
) -> anyhow::Result<Server> {
    simgate_control::secret_file::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    // Opening the store may write (first start: seed, token); keep it off
    // the async workers.
    let plane = {
        let seed = config.clone();
        tokio::task::spawn_blocking(move || open_control(&seed)).await??
    };
    let created_token = plane.take_created_token();

    let harvest = match config.cluster.postgres.clone() {
        // A fleet shares Harvest Data in PostgreSQL. Connecting blocks: off
        // the async workers. The URL may hold a password: not in the error.
        Some(url) => {
            let settings = config.harvest.clone();
            tokio::task::spawn_blocking(move || HarvestStore::open_postgres(&url, settings))
                .await?
                .context("cannot open the Harvest store in PostgreSQL ([cluster] postgres)")?
        }
        None => {
            let harvest_path = config.data_dir.join("harvest.redb");
            HarvestStore::open(&harvest_path, config.harvest.clone())
                .with_context(|| format!("cannot open Harvest store {}", harvest_path.display()))?
        }
    };
    let mut metrics = Metrics::new();
    let radius_stats = Arc::new(RadiusStats::new());
    metrics.register_radius(Arc::clone(&radius_stats));
    metrics.register_cluster(&plane);
    metrics.register_harvest(&harvest);
    // Walks the stored files to count their bytes: off the async workers.
    let harvest_files = {
        let (dir, settings) = (config.data_dir.clone(), config.harvest_files.clone());
        tokio::task::spawn_blocking(move || HarvestFiles::open(&dir, &settings))
            .await?
            .context("cannot open the Harvest Files store")?
    };
    harvest_files.metrics.register(&mut metrics.registry);
    // Reads a configured CA now (a generated one is made on first use).
    let krypton = Krypton::open(&config.data_dir, &config.krypton)
        .context("cannot load the Krypton CA ([krypton] ca_cert, ca_key)")?;
    metrics.register_krypton(&krypton.metrics);
    let metrics = Arc::new(metrics);
    let sessions = Arc::clone(&plane.sessions);
    let snapshot = Arc::clone(&plane.snapshot);

    let (shutdown_tx, shutdown) = watch::channel(false);
    let funnel = Funnel::new(
        factory,
        config.funnel.clone(),
        &config.data_dir,
        Arc::clone(&metrics),
        shutdown.clone(),
    );
    // Before the listeners open: what an earlier run acknowledged goes out
    // first, and opening a spool only checks its newest segment (fast).
    let recovered = funnel
        .recover(&plane.snapshot.load())
        .context("cannot recover the Funnel spools")?;
    if recovered > 0 {
        tracing::info!(destinations = recovered, "Funnel spools recovered");
    }
    // Reads (or, first start, generates) the signing key: off the async workers.
    let endorse = {
        let (dir, issuer) = (config.data_dir.clone(), config.endorse.issuer.clone());
        let algorithm = config.endorse.algorithm;
        tokio::task::spawn_blocking(move || Endorse::open(&dir, issuer, algorithm))
            .await?
            .context("cannot load the Endorse keys")?
    };
    let endorse = Arc::new(endorse);
    let funk = Funk::new(
        upstream.clone(),
        config.upstream.clone(),
        config.funk.clone(),
        Arc::clone(&endorse),
        Arc::clone(&metrics),
    );
    let services = Arc::new(Services {
        sessions: Arc::clone(&sessions),
        snapshot,
        funnel,
        harvest: Arc::clone(&harvest),
        metrics: Arc::clone(&metrics),
        beam: Arc::new(Beam::new(
            upstream,
            config.upstream.clone(),
            config.ingress.beam_max_body,
            Arc::clone(&metrics),
        )),
        metadata: Metadata::new(Arc::clone(&plane)),
        endorse,
        funk,
        krypton: Arc::new(krypton),
        harvest_files: Arc::new(harvest_files),
    });

    let mut listeners = JoinSet::new();
    let mut bound = Bound::default();
    let ing = &config.ingress;
    let workers = if ing.udp_workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        ing.udp_workers
    };
    let tcp_limits = TcpLimits {
        max_message: ing.tcp_max_message,
        idle_timeout: Duration::from_millis(ing.tcp_idle_timeout_ms),
        max_connections: ing.tcp_max_connections,
    };
    if let Some(addr) = config.listen.unified {
        let s = Arc::clone(&services);
        bound.unified_udp = Some(
            ingress::udp::spawn(
                addr,
                UdpOptions {
                    entry: Entry::Unified,
                    name: "unified",
                    workers,
                    reply: ing.udp_reply,
                },
                s,
                shutdown.clone(),
                &mut listeners,
            )
            .with_context(|| format!("cannot bind UDP {addr}"))?,
        );
        // Same port as UDP when configured; with port 0 each picks its own
        // (reusing UDP's number for TCP could collide with another socket).
        bound.unified_tcp = Some(
            ingress::tcp::spawn(
                addr,
                Handoff::Messages(Entry::Unified),
                "unified",
                tcp_limits,
                Arc::clone(&services),
                shutdown.clone(),
                &mut listeners,
            )
            .with_context(|| format!("cannot bind TCP {addr}"))?,
        );
    }
    if let Some(addr) = config.listen.harvest {
        bound.harvest_udp = Some(
            ingress::udp::spawn(
                addr,
                UdpOptions {
                    entry: Entry::Harvest,
                    name: "harvest",
                    workers,
                    reply: ing.udp_reply,
                },
                Arc::clone(&services),
                shutdown.clone(),
                &mut listeners,
            )
            .with_context(|| format!("cannot bind UDP {addr}"))?,
        );
        bound.harvest_tcp = Some(
            ingress::tcp::spawn(
                addr,
                Handoff::Messages(Entry::Harvest),
                "harvest",
                tcp_limits,
                Arc::clone(&services),
                shutdown.clone(),
                &mut listeners,
            )
            .with_context(|| format!("cannot bind TCP {addr}"))?,
        );
    }
    for (addr, handoff, name, slot) in [
        (
            config.listen.beam_tcp,
            Handoff::BeamTcp,
            "beam_tcp",
            &mut bound.beam_tcp,
        ),
        (
            config.listen.beam_mqtt,
            Handoff::BeamMqtt,
            "beam_mqtt",
            &mut bound.beam_mqtt,
        ),
    ] {
        let Some(addr) = addr else { continue };
        *slot = Some(
            ingress::tcp::spawn(
                addr,
                handoff,
                name,
                tcp_limits,
                Arc::clone(&services),
                shutdown.clone(),
                &mut listeners,
            )
            .with_context(|| format!("cannot bind {name} {addr}"))?,
        );
    }
    let http_limits = HttpLimits {
        max_body: ing.http_max_body,
        max_connections: ing.tcp_max_connections,
        header_timeout: Duration::from_millis(ing.http_header_timeout_ms),
        body_timeout: Duration::from_millis(ing.http_body_timeout_ms),
    };
    for (addr, listener, slot) in [
        (config.listen.http, HttpListener::Devices, &mut bound.http),
        (
            config.listen.beam_http,
            HttpListener::BeamHttp,
            &mut bound.beam_http,
        ),
        (
            config.listen.beam_website,
            HttpListener::BeamWebsite,
            &mut bound.beam_website,
        ),
    ] {
        let Some(addr) = addr else { continue };
        *slot = Some(
            ingress::http::spawn(
                addr,
                listener,
                http_limits,
                Arc::clone(&services),
                shutdown.clone(),
                &mut listeners,
            )
            .with_context(|| format!("cannot bind {} {addr}", listener.name()))?,
        );
    }
    if let Some(addr) = config.listen.api {
        let state = ApiState {
            metrics: Arc::clone(&metrics),
            plane: Arc::clone(&plane),
            dead_letters: Arc::clone(&services.funnel.dead_letters),
        };
        let app = api::router(state, Arc::clone(&services));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind API {addr}"))?;
        bound.api = Some(listener.local_addr()?);
        // hyper with header/body timeouts and a connection limit, as the
        // device listeners (axum::serve has none of them).
        let limits = ingress::http::ApiLimits {
            max_connections: ing.api_max_connections,
            header_timeout: Duration::from_millis(ing.http_header_timeout_ms),
            body_timeout: Duration::from_millis(ing.http_body_timeout_ms),
        };
        listeners.spawn(ingress::http::serve_api(
            listener,
            app,
            limits,
            Arc::clone(&metrics),
            shutdown.clone(),
        ));
    }
    if config.radius.enabled {
        let mut radius = config.radius.clone();
        if radius.clients.is_empty() && radius.default_secret.is_none() {
            // Out of the box: gateways on this host, with a secret generated
            // on first start (like the API token).
            let path = config.data_dir.join("radius.secret");
            let secret = simgate_control::secret_file::load_or_create(&path, || {
                let mut raw = [0u8; 18];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
                hex::encode(raw)
            })
            .with_context(|| format!("cannot read or create {}", path.display()))?;
            radius.clients.push(RadiusClient {
                address: "127.0.0.0/8"
                    .parse::<IpNet>()
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                secret: Secret::new(secret),
            });
        }
        let listen = radius.listen;
        // RADIUS sessions survive restarts: kept in the control store,
        // written behind (see `store::radius_sessions`).
        let persistence = plane
            .radius_persistence(Arc::clone(&radius_stats))
            .context("cannot keep RADIUS sessions in the control store")?;
        let (addr, task) = simgate_control::radius::spawn_with(
            radius,
            Arc::clone(&sessions),
            radius_stats,
            Some(persistence),
            shutdown.clone(),
        )
        .with_context(|| format!("cannot start RADIUS accounting on {listen}"))?;
        bound.radius = Some(addr);
        listeners.spawn(async move {
            let _ = task.await;
        });
    }
    listeners.spawn(harvest::retention_task(
        harvest,
        Duration::from_secs(3600),
        shutdown.clone(),
    ));

    Ok(Server {
        bound,
        created_token,
        plane,
        services,
        shutdown: shutdown_tx,
        listeners,
    })
}

impl Server {
    /// Stops accepting, lets queued Funnel records drain (up to
    /// `funnel.shutdown_grace_ms`), and returns when everything has stopped.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.listeners.join_next().await.is_some() {}
        self.services.funnel.join().await;
    }
}
