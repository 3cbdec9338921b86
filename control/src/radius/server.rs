//! The UDP listener: receives datagrams, passes them to the
//! [`AccountingHandler`] with the current time, sends back what it returns.
//! All decisions are in the handler; this file only does I/O.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::clients::{ClientSecrets, RadiusClient};
use super::codec::MAX_PACKET_LEN;
use super::dedup::{DuplicateCache, DEFAULT_CAPACITY, DEFAULT_WINDOW};
use super::handler::{AccountingHandler, SessionPersistence};
use super::stats::{Event, RadiusStats};
use crate::model::Secret;
use crate::snapshot::SessionTable;

/// The accounting listener's settings, e.g. as a `[radius]` table:
///
/// ```toml
/// listen = "0.0.0.0:1813"
/// clients = [{ address = "192.0.2.0/24", secret = "s3cret" }]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RadiusConfig {
    /// Whether to run the accounting listener at all.
    pub enabled: bool,
    /// Default 127.0.0.1:1813 (the IANA accounting port, loopback only).
    pub listen: SocketAddr,
    /// Gateways allowed to send accounting, each with its shared secret.
    pub clients: Vec<RadiusClient>,
    /// Secret for any source address no client matches; unset, such
    /// datagrams are dropped (`unknown_client`). For labs.
    pub default_secret: Option<Secret>,
    /// How long a response is kept to answer retransmissions (RFC 5080).
    pub duplicate_window_ms: u64,
    /// Most responses kept for that; 0 turns duplicate detection off.
    pub duplicate_capacity: usize,
}

impl Default for RadiusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 1813)),
            clients: Vec::new(),
            default_secret: None,
            duplicate_window_ms: u64::try_from(DEFAULT_WINDOW.as_millis()).unwrap_or(u64::MAX),
            duplicate_capacity: DEFAULT_CAPACITY,
        }
    }
}

/// After a receive error, wait this long before the next receive so a
/// persistent error does not spin the task.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Binds `config.listen` and starts the listener on the current tokio
/// runtime. Returns the bound address (useful with port 0) and the task,
/// which ends when `shutdown` becomes `true` or its sender is dropped.
///
/// Fails if the address cannot be bound or a configured secret is empty.
pub fn spawn(
    config: RadiusConfig,
    sessions: Arc<SessionTable>,
    stats: Arc<RadiusStats>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    spawn_with(config, sessions, stats, None, shutdown)
}

/// [`spawn`], keeping the sessions RADIUS binds in `persistence` (and
/// binding again, before the first datagram, those it kept).
pub fn spawn_with(
    config: RadiusConfig,
    sessions: Arc<SessionTable>,
    stats: Arc<RadiusStats>,
    persistence: Option<Arc<dyn SessionPersistence>>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let clients = ClientSecrets::new(&config.clients, config.default_secret.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if config.clients.is_empty() && config.default_secret.is_none() {
        tracing::warn!(
            "RADIUS accounting has no clients configured: every request will be dropped"
        );
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(config.listen),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Gateways send accounting in bursts (a restart re-sends every session);
    // the default ~200 KiB buffer overflowed while the task waited for a
    // CPU (`scripts/bench.sh sessions`). The kernel caps it at rmem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&config.listen.into())?;
    let socket = UdpSocket::from_std(socket.into())?;
    let local = socket.local_addr()?;
    let duplicates = DuplicateCache::new(
        Duration::from_millis(config.duplicate_window_ms),
        config.duplicate_capacity,
    );
    let mut handler = AccountingHandler::new(clients, sessions, stats, duplicates);
    if let Some(p) = persistence {
        handler = handler.with_persistence(p);
    }
    tracing::info!(%local, clients = config.clients.len(), "RADIUS accounting listening");
    Ok((local, tokio::spawn(run(socket, handler, shutdown))))
}

async fn run(
    socket: UdpSocket,
    mut handler: AccountingHandler,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                // A datagram longer than 4096 octets is cut to the buffer;
                // the codec reads only up to the packet's Length anyway.
                Ok((n, source)) => {
                    let Some(response) = handler.handle(Instant::now(), source, &buf[..n]) else {
                        continue;
                    };
                    if let Err(e) = socket.send_to(&response, source).await {
                        handler.stats().count(Event::IoError);
                        tracing::warn!(%source, error = %e, "RADIUS: cannot send Accounting-Response");
                    }
                }
                Err(e) => {
                    handler.stats().count(Event::IoError);
                    tracing::warn!(error = %e, "RADIUS: receive failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
    tracing::info!("RADIUS accounting stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::codec::{
        encode_accounting_request, parse_accounting_request, verify_accounting_response,
        AccountingAttributes, AcctStatusType,
    };

    #[test]
    fn config_from_toml() {
        let c: RadiusConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:11813"
            default_secret = "lab"
            clients = [{ address = "192.0.2.0/24", secret = "s3cret" }]
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 11813);
        assert_eq!(c.clients.len(), 1);
        assert_eq!(c.duplicate_capacity, DEFAULT_CAPACITY);
        assert_eq!(c.duplicate_window_ms, 5000);
        assert!(toml::from_str::<RadiusConfig>("bogus = 1").is_err());
        assert_eq!(
            toml::from_str::<RadiusConfig>("").unwrap(),
            RadiusConfig::default()
        );
    }

    #[tokio::test]
    async fn answers_over_udp_and_shuts_down() {
        let config = RadiusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            clients: vec![RadiusClient {
                address: "127.0.0.1".parse().unwrap(),
                secret: Secret::new("s3cret"),
            }],
            ..Default::default()
        };
        let sessions = Arc::new(SessionTable::new());
        let stats = Arc::new(RadiusStats::new());
        let (stop, shutdown) = watch::channel(false);
        let (addr, task) =
            spawn(config, Arc::clone(&sessions), Arc::clone(&stats), shutdown).unwrap();

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let packet = encode_accounting_request(
            7,
            &AccountingAttributes {
                status_type: Some(AcctStatusType::Start),
                framed_ip: Some("10.9.8.7".parse().unwrap()),
                imsi: Some(b"001010000000007"),
                ..Default::default()
            },
            b"s3cret",
        )
        .unwrap();
        client.send_to(&packet, addr).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let request = parse_accounting_request(&packet).unwrap();
        assert_eq!(
            verify_accounting_response(&buf[..n], &request.authenticator, b"s3cret"),
            Ok(7)
        );
        assert!(sessions.lookup("10.9.8.7".parse().unwrap()).is_some());

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stats.snapshot().starts, 1);
    }

    #[tokio::test]
    async fn empty_secret_is_refused() {
        let config = RadiusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            default_secret: Some(Secret::new("")),
            ..Default::default()
        };
        let (_stop, shutdown) = watch::channel(false);
        let err = spawn(
            config,
            Arc::new(SessionTable::new()),
            Arc::new(RadiusStats::new()),
            shutdown,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
