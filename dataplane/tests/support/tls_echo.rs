//! A TLS line/echo server for TCP→TLS tests, in-process with rustls (one
//! thread per connection), on 127.0.0.1 with a port from the OS.
//!
//! Each connection's first line (up to and including `\n`, at most
//! [`MAX_FIRST_LINE`] bytes) is recorded without its line ending and NOT
//! echoed: it is where Beam puts `imsi=… timestamp=…[;signature=…]`.
//! Every byte after it is echoed back. When the client half-closes (TLS
//! close_notify or TCP FIN) the server sends close_notify and closes its side.
//!
//! (`openssl s_server` has no plain echo mode; `-rev` reverses lines, and
//! relaying its stdin/stdout serialises connections, so this is in-process.)

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::certs::{provider, read_certs, read_key, Certs, ServerCert};
use super::process::wait_for;

/// Longest first line kept; a longer one is recorded truncated.
pub(crate) const MAX_FIRST_LINE: usize = 4096;

/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    accepted: AtomicUsize,
    handshake_failures: AtomicUsize,
    first_lines: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
}

/// The running server; stops accepting on drop (open connections end when
/// their client closes or after the idle timeout).
#[derive(Debug)]
pub(crate) struct TlsEcho {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TlsEcho {
    /// Starts the server presenting `cert`; when `require_client_cert`,
    /// clients need a certificate from the test CA.
    pub(crate) fn start(certs: &Certs, cert: ServerCert, require_client_cert: bool) -> Self {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(&certs.ca()) {
                roots.add(c).expect("CA certificate accepted");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = Arc::new(
            builder
                .with_single_cert(
                    read_certs(&certs.server_cert(cert)),
                    read_key(&certs.server_key(cert)),
                )
                .expect("server certificate accepted"),
        );

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS echo");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let (s, config) = (s.clone(), config.clone());
                std::thread::spawn(move || serve(stream, config, &s));
            }
        });
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `tcps://127.0.0.1:<port>`, a Beam TCP→TLS destination.
    pub(crate) fn url(&self) -> String {
        format!("tcps://127.0.0.1:{}", self.port())
    }

    /// TCP connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose TLS handshake failed (e.g. the client rejected the
    /// certificate, or sent none when one is required).
    pub(crate) fn handshake_failures(&self) -> usize {
        self.shared.handshake_failures.load(Ordering::SeqCst)
    }

    /// First lines received so far, in the order they completed.
    pub(crate) fn first_lines(&self) -> Vec<String> {
        self.shared
            .first_lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Waits until `n` first lines were received and returns them.
    ///
    /// # Panics
    /// After `timeout`, with what arrived and the errors seen.
    pub(crate) fn wait_first_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_for(timeout, || {
            let lines = self.first_lines();
            (lines.len() >= n).then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "TLS echo got fewer than {n} first lines in {timeout:?}: {:?}; errors: {:?}",
                self.first_lines(),
                self.errors()
            )
        })
    }

    /// Per-connection errors (handshake failures, resets).
    pub(crate) fn errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>, shared: &Shared) {
    let _ = tcp.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = tcp.set_nodelay(true);
    let conn = match rustls::ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => return record(&shared.errors, format!("new connection: {e}")),
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
        shared.handshake_failures.fetch_add(1, Ordering::SeqCst);
        return record(&shared.errors, format!("handshake: {e}"));
    }

    let mut first: Option<Vec<u8>> = Some(Vec::new());
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match tls.read(&mut buf) {
            Ok(0) => break,
            // A client that closes TCP without close_notify: treat as EOF.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return record(&shared.errors, format!("read: {e}")),
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        if let Some(line) = first.as_mut() {
            let end = data.iter().position(|&b| b == b'\n');
            let take = end.map_or(data.len(), |i| i + 1);
            if line.len() < MAX_FIRST_LINE {
                let room = MAX_FIRST_LINE - line.len();
                line.extend_from_slice(&data[..take.min(room)]);
            }
            data = &data[take..];
            if end.is_some() {
                if let Some(done) = first.take() {
                    let text = String::from_utf8_lossy(&done);
                    record(
                        &shared.first_lines,
                        text.trim_end_matches(['\n', '\r']).to_owned(),
                    );
                }
            }
        }
        if !data.is_empty() {
            if let Err(e) = tls.write_all(data).and_then(|()| tls.flush()) {
                return record(&shared.errors, format!("write: {e}"));
            }
        }
    }
    // A first line without a newline before EOF is still recorded.
    if let Some(line) = first.filter(|l| !l.is_empty()) {
        record(
            &shared.first_lines,
            String::from_utf8_lossy(&line).into_owned(),
        );
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Write);
}

fn record(list: &Mutex<Vec<String>>, item: String) {
    if let Ok(mut l) = list.lock() {
        l.push(item);
    }
}
