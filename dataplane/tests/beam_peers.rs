//! The real peers Beam's end-to-end tests use (nginx HTTPS echo, mosquitto
//! with required client certificates, the TLS line/echo server) work — and
//! fail when they should: a wrong-name certificate is rejected, a missing
//! client certificate is refused. Clients here are independent of simgate:
//! curl, the mosquitto command-line clients and a plain rustls client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use support::certs::{Certs, ServerCert};
use support::mosquitto::{publish, Mosquitto, MosquittoOptions, MqttTarget, Subscriber};
use support::nginx::{Echo, Nginx, NginxOptions};
use support::process::{binary, run_with_timeout};
use support::tls_echo::TlsEcho;

const IMSI: &str = "001010000000001";
const WAIT: Duration = Duration::from_secs(10);

/// curl with the test CA; returns (exit code, stdout).
fn curl(certs: &Certs, args: &[&str]) -> (i32, String) {
    let out = run_with_timeout(
        Command::new(binary("curl", "curl"))
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(certs.ca())
            .args(args),
        Duration::from_secs(15),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A rustls TLS connection to `addr` verifying the server as `name`.
fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

#[test]
fn nginx_echoes_request_headers_and_body_with_keep_alive() {
    let certs = Certs::generate();
    let nginx = Nginx::start(&certs, NginxOptions::default());

    // Two requests on one HTTP/1.1 connection (curl reuses it).
    let (code, out) = curl(
        &certs,
        &[
            "--http1.1",
            "-H",
            &format!("X-Soracom-IMSI: {IMSI}"),
            "-H",
            "X-Soracom-Signature: abc",
            "--data-binary",
            "{\"payload\":\"aGVsbG8=\"}",
            "-w",
            "\n",
            &nginx.url("/in/put?x=1&y=%20z"),
            &nginx.url("/second"),
        ],
    );
    assert_eq!(code, 0, "curl failed: {out}");
    let echoes: Vec<Echo> = out.lines().map(|l| Echo::parse(l.as_bytes())).collect();
    assert_eq!(echoes.len(), 2, "{out}");
    let e = &echoes[0];
    assert_eq!(e.method, "POST");
    assert_eq!(e.uri, "/in/put?x=1&y=%20z");
    assert_eq!(e.path, "/in/put");
    assert_eq!(e.args, "x=1&y=%20z");
    assert_eq!(e.protocol, "HTTP/1.1");
    assert_eq!(e.header("x-soracom-imsi"), Some(IMSI));
    assert_eq!(
        e.soracom_headers(),
        vec![
            ("x-soracom-imsi".to_owned(), IMSI.to_owned()),
            ("x-soracom-signature".to_owned(), "abc".to_owned()),
        ]
    );
    assert_eq!(e.body(), b"{\"payload\":\"aGVsbG8=\"}");
    assert_eq!(e.body_len, 22);
    assert_eq!(e.ssl_server_name.as_deref(), Some("localhost"));
    // curl sends the POST body with the second URL too.
    assert_eq!(echoes[1].uri, "/second");
    assert_eq!(echoes[1].connection, e.connection, "keep-alive reused");
    assert_eq!(echoes[1].connection_requests, 2);

    // HTTP/2 by ALPN, on the same port; duplicate headers are kept; a
    // larger binary body arrives byte for byte.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let big_file = certs.dir().join("big.bin");
    std::fs::write(&big_file, &big).unwrap();
    let (code, out) = curl(
        &certs,
        &[
            "--http2",
            "--data-binary",
            &format!("@{}", big_file.display()),
            "-H",
            "X-Soracom-Custom: one",
            "-H",
            "X-Soracom-Custom: two",
            &format!("https://127.0.0.1:{}/h2", nginx.port()),
        ],
    );
    assert_eq!(code, 0, "curl failed: {out}");
    let e = Echo::parse(out.as_bytes());
    assert_eq!(e.protocol, "HTTP/2.0");
    assert_eq!(e.method, "POST");
    assert_eq!(e.header_all("X-Soracom-Custom"), vec!["one", "two"]);
    assert_eq!(e.body_len, big.len());
    assert!(e.body() == big, "HTTP/2 body differs");

    let log = nginx.wait_for_requests(3, WAIT);
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(nginx.connections(), 2, "{log:?}");
    assert_eq!(log[2].protocol, "HTTP/2.0");
    assert_eq!(log[0].status, 200);
}

#[test]
fn nginx_status_and_delay_knobs() {
    let certs = Certs::generate();
    let nginx = Nginx::start(&certs, NginxOptions::default());
    let (code, out) = curl(
        &certs,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "X-Echo-Status: 503",
            &nginx.url("/x"),
        ],
    );
    assert_eq!((code, out.as_str()), (0, "503"));
    // A delay longer than the client's limit times the client out (28).
    let (code, _) = curl(
        &certs,
        &["--max-time", "0.5", &nginx.url("/slow?echo_delay_ms=3000")],
    );
    assert_eq!(code, 28, "curl should time out on a delayed response");
}

#[test]
fn wrong_name_certificate_is_rejected_by_verifying_clients() {
    let certs = Certs::generate();
    let nginx = Nginx::start(
        &certs,
        NginxOptions {
            cert: ServerCert::WrongName,
            ..NginxOptions::default()
        },
    );
    // curl: 60 = peer certificate cannot be authenticated.
    let (code, out) = curl(&certs, &[&nginx.url("/")]);
    assert_eq!(code, 60, "curl accepted a wrong-name certificate: {out}");
    let (code, _) = curl(&certs, &[&format!("https://127.0.0.1:{}/", nginx.port())]);
    assert_eq!(code, 60);
    // The certificate is otherwise good: for its own name it verifies.
    let port = nginx.port();
    let (code, out) = curl(
        &certs,
        &[
            "--resolve",
            &format!("wrong.example:{port}:127.0.0.1"),
            &format!("https://wrong.example:{port}/ok"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(Echo::parse(out.as_bytes()).path, "/ok");

    // rustls (what simgate uses) says why.
    let err = tls_connect(certs.rustls_client(false), nginx.addr(), "localhost")
        .expect_err("rustls accepted a wrong-name certificate");
    assert!(err.contains("not valid for name"), "{err}");
    assert!(tls_connect(certs.rustls_client(false), nginx.addr(), "wrong.example").is_ok());
}

#[test]
fn nginx_can_require_a_client_certificate() {
    let certs = Certs::generate();
    let nginx = Nginx::start(
        &certs,
        NginxOptions {
            require_client_cert: true,
            ..NginxOptions::default()
        },
    );
    let (code, out) = curl(&certs, &["-w", "\n%{http_code}", &nginx.url("/")]);
    assert_eq!(code, 0);
    assert!(out.ends_with("\n400"), "no client certificate: {out}");

    let cert = certs.client_cert();
    let key = certs.client_key();
    let (code, out) = curl(
        &certs,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            &nginx.url("/mtls"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let e = Echo::parse(out.as_bytes());
    assert_eq!(e.ssl_client_verify.as_deref(), Some("SUCCESS"));
    assert!(
        e.ssl_client_s_dn
            .as_deref()
            .is_some_and(|dn| dn.contains("simgate-test-client")),
        "{e:?}"
    );
}

#[test]
fn mosquitto_delivers_between_clients_with_certificates() {
    let certs = Certs::generate();
    let broker = Mosquitto::start(&certs);
    let target = broker.tls_target(true);
    let mut sub = Subscriber::start(&target, "devices/#", 1)
        .unwrap_or_else(|e| panic!("{e}; broker log: {:?}", broker.log()));
    let out = publish(
        &target.clone().with_client_id("pub-1"),
        "devices/001010000000001/up",
        "hello beam",
        1,
    );
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = sub
        .next_message(WAIT)
        .unwrap_or_else(|| panic!("no message; sub output: {:?}", sub.output()));
    assert_eq!(msg.topic, "devices/001010000000001/up");
    assert_eq!(msg.payload, b"hello beam");
    assert_eq!(msg.qos, 1);
}

#[test]
fn mosquitto_plain_listener_serves_plain_targets() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_with(
        &certs,
        MosquittoOptions {
            plain_listener: true,
            ..MosquittoOptions::default()
        },
    );
    // The helpers' plain path, as tests through simgate's :1883 use it.
    let plain = MqttTarget::plain(broker.plain_addr().unwrap())
        .with_credentials("device", "secret")
        .with_client_id("plain-sub");
    let mut sub = Subscriber::start(&plain, "plain/+", 0)
        .unwrap_or_else(|e| panic!("{e}; broker log: {:?}", broker.log()));
    // Published over TLS, received over plain: one broker.
    let out = publish(&broker.tls_target(true), "plain/x", "two listeners", 0);
    assert!(out.status.success(), "{out:?}");
    let msg = sub
        .next_message(WAIT)
        .expect("message over the plain listener");
    assert_eq!(
        (msg.topic.as_str(), msg.payload.as_slice(), msg.qos),
        ("plain/x", &b"two listeners"[..], 0)
    );
    // Nothing more arrives.
    assert_eq!(sub.next_message(Duration::from_millis(200)), None);
}

#[test]
fn mosquitto_refuses_clients_without_a_certificate() {
    let certs = Certs::generate();
    let broker = Mosquitto::start(&certs);
    let out = publish(&broker.tls_target(false), "t", "x", 1);
    assert!(
        !out.status.success(),
        "published without a client certificate"
    );
    let err = Subscriber::start(&broker.tls_target(false), "t", 0)
        .expect_err("subscribed without a client certificate");
    assert!(!err.is_empty());
    let log = broker.log().join("\n");
    assert!(
        log.contains("did not return a certificate") || log.contains("certificate required"),
        "{log}"
    );
}

#[test]
fn tls_echo_records_the_first_line_and_echoes_the_rest() {
    let certs = Certs::generate();
    let echo = TlsEcho::start(&certs, ServerCert::Localhost, false);
    let mut tls = tls_connect(certs.rustls_client(false), echo.addr(), "localhost").unwrap();
    let first = format!("imsi={IMSI} timestamp=1700000000000;signature=abc");
    tls.write_all(format!("{first}\nhello\n").as_bytes())
        .unwrap();
    tls.flush().unwrap();
    let mut got = [0u8; 6];
    tls.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello\n");
    tls.write_all(b"more bytes").unwrap();
    tls.flush().unwrap();
    // Half-close: the server echoes what is left, then closes its side.
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    tls.sock.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"more bytes");
    assert_eq!(echo.wait_first_lines(1, WAIT), vec![first]);
    assert_eq!(echo.accepted(), 1);

    // A verifying client rejects the wrong-name variant; the server sees it.
    let wrong = TlsEcho::start(&certs, ServerCert::WrongName, false);
    let err = tls_connect(certs.rustls_client(false), wrong.addr(), "localhost")
        .expect_err("wrong-name certificate accepted");
    assert!(err.contains("not valid for name"), "{err}");
    assert!(
        support::process::wait_for(WAIT, || (wrong.handshake_failures() == 1).then_some(()))
            .is_some()
    );
    assert!(wrong.first_lines().is_empty());
}

#[test]
fn tls_echo_can_require_a_client_certificate() {
    let certs = Certs::generate();
    let echo = TlsEcho::start(&certs, ServerCert::Localhost, true);
    let mut tls = tls_connect(certs.rustls_client(true), echo.addr(), "localhost").unwrap();
    tls.write_all(b"line\nping").unwrap();
    tls.flush().unwrap();
    let mut got = [0u8; 4];
    tls.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(echo.wait_first_lines(1, WAIT), vec!["line".to_owned()]);

    // Without one, TLS 1.3 clients finish their side of the handshake and
    // learn of the refusal on the first read.
    let refused =
        tls_connect(certs.rustls_client(false), echo.addr(), "localhost").and_then(|mut tls| {
            tls.write_all(b"x\n").map_err(|e| e.to_string())?;
            tls.flush().map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            match tls.read(&mut b) {
                Ok(0) => Err("closed".to_owned()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
    assert!(refused.is_err(), "served a client without a certificate");
    assert!(
        support::process::wait_for(WAIT, || (echo.handshake_failures() == 1).then_some(()))
            .is_some(),
        "{:?}",
        echo.errors()
    );
}
