//! An in-process HTTPS server for sink tests whose service has no emulator
//! installable here (Event Hubs, Pub/Sub, a generic webhook): the test gives
//! a handler that checks each request the way the service does and answers
//! with the service's own status and body. Every request is recorded.
//!
//! Presents `server.crt` from [`Certs`] (DNS `localhost`, IP `127.0.0.1`):
//! simgate trusts it through `[upstream] ca_file = certs.ca()`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::certs::{provider, read_certs, read_key, Certs, ServerCert};

/// One request as the peer received it.
#[derive(Debug, Clone)]
pub(crate) struct PeerRequest {
    pub(crate) method: String,
    /// Path and query, e.g. `/hub/messages?timeout=60`.
    pub(crate) target: String,
    /// Header names in lower case, in arrival order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl PeerRequest {
    /// The first header called `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the handler answers.
#[derive(Debug, Clone)]
pub(crate) struct PeerResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl PeerResponse {
    pub(crate) fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A JSON body with `Content-Type: application/json`.
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, serde_json::to_vec(value).unwrap_or_default())
            .with_header("content-type", "application/json")
    }

    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

pub(crate) type Handler = dyn Fn(&PeerRequest) -> PeerResponse + Send + Sync;

/// The running server; stops on drop.
pub(crate) struct HttpsPeer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<PeerRequest>>>,
    handler: Arc<Mutex<Arc<Handler>>>,
    stop: watch::Sender<bool>,
}

impl HttpsPeer {
    /// Starts on 127.0.0.1 with a port from the OS, answering with `handler`.
    /// Must be called inside a tokio runtime.
    pub(crate) async fn start(
        certs: &Certs,
        handler: impl Fn(&PeerRequest) -> PeerResponse + Send + Sync + 'static,
    ) -> Self {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                read_certs(&certs.server_cert(ServerCert::Localhost)),
                read_key(&certs.server_key(ServerCert::Localhost)),
            )
            .expect("server certificate accepted");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Mutex<Arc<Handler>>> = Arc::new(Mutex::new(Arc::new(handler)));
        let (stop, mut stopped) = watch::channel(false);
        let (reqs, h) = (Arc::clone(&requests), Arc::clone(&handler));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let (acceptor, reqs, h) = (acceptor.clone(), Arc::clone(&reqs), Arc::clone(&h));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (reqs, h) = (Arc::clone(&reqs), Arc::clone(&h));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes())?;
                            let request = PeerRequest {
                                method: parts.method.to_string(),
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.as_str().to_owned())
                                    .unwrap_or_default(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.as_str().to_owned(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            let handler = Arc::clone(&h.lock().expect("handler lock"));
                            let answer = handler(&request);
                            reqs.lock().expect("requests lock").push(request);
                            let mut resp = hyper::Response::new(Full::new(answer.body));
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(answer.status).expect("valid status");
                            for (n, v) in answer.headers {
                                resp.headers_mut().append(
                                    hyper::header::HeaderName::from_bytes(n.as_bytes())
                                        .expect("header name"),
                                    hyper::header::HeaderValue::from_str(&v).expect("header value"),
                                );
                            }
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            handler,
            stop,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:{port}`.
    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Every request received so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<PeerRequest> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// Answers from now on with `handler` (an outage, throttling, recovery).
    pub(crate) fn set_handler(
        &self,
        handler: impl Fn(&PeerRequest) -> PeerResponse + Send + Sync + 'static,
    ) {
        *self.handler.lock().expect("handler lock") = Arc::new(handler);
    }
}

impl Drop for HttpsPeer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
