//! `upstream/` against real TLS servers in-process: a throwaway CA and
//! server/client certificates generated per test run (rcgen), rustls and
//! hyper servers on 127.0.0.1:0.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use simgate::upstream::{full_body, ClientIdentity, RootSources, Upstream, UpstreamErrorKind};
use simgate_control::config::UpstreamSettings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses).
    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }

    fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server configuration presenting a certificate for `names` from `ca`;
/// with `client_ca`, a client certificate from it is required.
fn server_config(
    ca: &Ca,
    names: &[&str],
    client_ca: Option<&Ca>,
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let (cert, key) = ca.issue(names, ExtendedKeyUsagePurpose::ServerAuth);
    let chain = vec![cert.der().clone(), ca.cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(client_ca.cert.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An HTTPS server (HTTP/1.1 and HTTP/2) that counts accepted TCP
/// connections. `/slow` answers after 10 s; everything else answers the
/// protocol version it was asked with.
struct HttpsServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{:?}",
        req.version()
    )))))
}

async fn https_server(config: Arc<ServerConfig>) -> HttpsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service_fn(handle))
                    .await;
            });
        }
    });
    HttpsServer {
        addr,
        accepted,
        task,
    }
}

/// A TLS server that writes `hello\n` after the handshake, then echoes.
async fn tls_echo_server(config: Arc<ServerConfig>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.write_all(b"hello\n").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

fn settings() -> UpstreamSettings {
    UpstreamSettings {
        connect_timeout_ms: 2_000,
        tls_timeout_ms: 2_000,
        response_timeout_ms: 5_000,
        ..UpstreamSettings::default()
    }
}

/// System roots plus `ca_file`, as `[upstream] ca_file` configures it.
fn upstream_trusting(ca_file: &Path, settings: &UpstreamSettings) -> Upstream {
    let roots = RootSources {
        system: true,
        ssl_cert_file: None,
        ca_file: Some(ca_file.to_owned()),
    };
    Upstream::with_roots(settings, &roots).unwrap()
}

async fn get(
    client: &simgate::upstream::HttpClient,
    url: &str,
) -> Result<(Version, String), simgate::upstream::UpstreamError> {
    let req = Request::get(url).body(full_body(Bytes::new())).unwrap();
    let resp = client.request(req).await?;
    assert_eq!(resp.status(), 200);
    let version = resp.version();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((version, String::from_utf8(body.to_vec()).unwrap()))
}

#[tokio::test]
async fn verified_https_with_ca_file_reuses_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("simgate test CA");
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let server = https_server(server_config(
        &ca,
        &["localhost", "127.0.0.1"],
        None,
        &[b"http/1.1"],
    ))
    .await;
    let upstream = upstream_trusting(&ca_file, &settings());
    let url = format!("https://localhost:{}/", server.addr.port());
    for _ in 0..5 {
        let (version, body) = get(upstream.http(), &url).await.unwrap();
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(body, "HTTP/1.1");
    }
    // An IP address is verified against the certificate's IP SAN.
    let (_, body) = get(
        upstream.http(),
        &format!("https://127.0.0.1:{}/", server.addr.port()),
    )
    .await
    .unwrap();
    assert_eq!(body, "HTTP/1.1");
    // Five sequential requests to one host: one TCP connection, kept alive.
    // (127.0.0.1 is another pool key: a second connection.)
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_multiplexed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("simgate test CA");
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let server = https_server(server_config(
        &ca,
        &["localhost"],
        None,
        &[b"h2", b"http/1.1"],
    ))
    .await;
    let upstream = upstream_trusting(&ca_file, &settings());
    let url = format!("https://localhost:{}/", server.addr.port());
    let (version, body) = get(upstream.http(), &url).await.unwrap();
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(body, "HTTP/2.0");
    let concurrent = (0..8).map(|_| get(upstream.http(), &url));
    for r in futures_util::future::join_all(concurrent).await {
        assert_eq!(r.unwrap().1, "HTTP/2.0");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ssl_cert_file_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("simgate test CA");
    let bundle = ca.write_pem(dir.path(), "bundle.pem");
    let server = https_server(server_config(&ca, &["localhost"], None, &[])).await;
    let roots = RootSources {
        system: false,
        ssl_cert_file: Some(bundle),
        ca_file: None,
    };
    let upstream = Upstream::with_roots(&settings(), &roots).unwrap();
    let url = format!("https://localhost:{}/", server.addr.port());
    get(upstream.http(), &url).await.unwrap();
}

#[tokio::test]
async fn wrong_name_and_untrusted_ca_are_tls_failures() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("simgate test CA");
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let other_ca = Ca::new("someone else's CA");
    let other_file = other_ca.write_pem(dir.path(), "other.pem");

    let server = https_server(server_config(&ca, &["upstream.example"], None, &[])).await;
    let url = format!("https://localhost:{}/", server.addr.port());

    let upstream = upstream_trusting(&ca_file, &settings());
    let e = get(upstream.http(), &url).await.unwrap_err();
    assert_eq!(e.kind(), UpstreamErrorKind::Tls, "{e}");
    assert_eq!(e.label(), "tls");
    assert!(!e.is_retryable());
    assert!(e.message().contains("not valid for name"), "{e}");
    let e = upstream
        .connect_tls("localhost", server.addr.port(), None)
        .await
        .unwrap_err();
    assert_eq!(e.label(), "tls", "{e}");

    let untrusting = upstream_trusting(&other_file, &settings());
    let good = https_server(server_config(&ca, &["localhost"], None, &[])).await;
    let e = get(
        untrusting.http(),
        &format!("https://localhost:{}/", good.addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.label(), "tls", "{e}");
    assert!(e.message().contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn mtls_server_accepts_our_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("simgate test CA");
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let device_ca = Ca::new("device CA");
    let (client_cert, client_key) = device_ca.issue(
        &["sim-001010000000001"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let chain_pem = format!("{}{}", client_cert.pem(), device_ca.cert.pem());
    let identity =
        ClientIdentity::from_pem("cred-x509", &chain_pem, &client_key.serialize_pem()).unwrap();

    let upstream = upstream_trusting(&ca_file, &settings());
    let server = https_server(server_config(
        &ca,
        &["localhost"],
        Some(&device_ca),
        &[b"h2", b"http/1.1"],
    ))
    .await;
    let url = format!("https://localhost:{}/", server.addr.port());

    let client = upstream.http_for(Some(&identity)).unwrap();
    get(&client, &url).await.unwrap();
    // The same credential again: the cached pool, no new connection.
    let again = upstream.http_for(Some(&identity)).unwrap();
    get(&again, &url).await.unwrap();
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);

    // Without a certificate the server refuses us.
    let e = get(upstream.http(), &url).await.unwrap_err();
    assert_eq!(e.label(), "tls", "{e}");

    // Raw TLS stream with the same identity.
    let (addr, echo) =
        tls_echo_server(server_config(&ca, &["localhost"], Some(&device_ca), &[])).await;
    let mut stream = upstream
        .connect_tls("localhost", addr.port(), Some(&identity))
        .await
        .unwrap();
    let mut hello = [0u8; 6];
    stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    stream.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    // No ALPN on raw streams.
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    echo.abort();
}

/// An `x509` credential's own `ca` verifies its broker for connections
/// presenting it, and only those.
#[tokio::test]
async fn credential_ca_is_trusted_with_its_identity_only() {
    let ca = Ca::new("private broker CA");
    let device_ca = Ca::new("device CA");
    let (client_cert, client_key) =
        device_ca.issue(&["sim-1"], ExtendedKeyUsagePurpose::ClientAuth);
    let plain =
        ClientIdentity::from_pem("cred", &client_cert.pem(), &client_key.serialize_pem()).unwrap();
    let with_ca = plain.clone().with_ca_pem(&ca.cert.pem()).unwrap();

    let roots = RootSources {
        system: false,
        ssl_cert_file: None,
        ca_file: None,
    };
    let upstream = Upstream::with_roots(&settings(), &roots).unwrap();
    let (addr, echo) =
        tls_echo_server(server_config(&ca, &["localhost"], Some(&device_ca), &[])).await;
    let e = upstream
        .connect_tls("localhost", addr.port(), Some(&plain))
        .await
        .unwrap_err();
    assert_eq!(e.label(), "tls", "{e}");
    let mut stream = upstream
        .connect_tls("localhost", addr.port(), Some(&with_ca))
        .await
        .unwrap();
    let mut hello = [0u8; 6];
    stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    // The anonymous profile still does not trust it.
    let e = upstream
        .connect_tls("localhost", addr.port(), None)
        .await
        .unwrap_err();
    assert_eq!(e.label(), "tls", "{e}");
    echo.abort();
}

#[tokio::test]
async fn refused_and_timeouts_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("simgate test CA");
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let settings = UpstreamSettings {
        tls_timeout_ms: 300,
        response_timeout_ms: 300,
        ..settings()
    };
    let upstream = upstream_trusting(&ca_file, &settings);

    // Bind and drop: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = get(upstream.http(), &format!("https://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), UpstreamErrorKind::ConnectRefused, "{e}");
    assert_eq!(e.label(), "connect_refused");
    assert!(!e.is_timeout());
    let e = get(upstream.http(), &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert_eq!(e.label(), "connect_refused", "{e}");
    let e = upstream
        .connect_tls("127.0.0.1", port, None)
        .await
        .unwrap_err();
    assert_eq!(e.label(), "connect_refused", "{e}");

    // The kernel accepts the TCP connection, nobody speaks TLS.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let e = upstream
        .connect_tls("localhost", silent_port, None)
        .await
        .unwrap_err();
    assert_eq!(e.label(), "tls_timeout", "{e}");
    assert!(e.is_timeout());
    // Over HTTP the TLS timeout fires first as well.
    let e = get(
        upstream.http(),
        &format!("https://localhost:{silent_port}/"),
    )
    .await
    .unwrap_err();
    assert!(e.is_timeout(), "{e}");

    // Connected and verified, but the response does not come.
    let server = https_server(server_config(&ca, &["localhost"], None, &[])).await;
    let started = std::time::Instant::now();
    let e = get(
        upstream.http(),
        &format!("https://localhost:{}/slow", server.addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), UpstreamErrorKind::ResponseTimeout, "{e}");
    assert_eq!(e.label(), "response_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}
