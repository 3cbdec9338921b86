//! SORACOM Krypton end to end, over the real devices' HTTP listener (Host
//! `krypton.soracom.io`): a SIM with no credentials asks for some and gets
//! a certificate and key from simgate's CA, bound to its IMSI; `openssl
//! verify` chains it to the CA; a real mosquitto with `require_certificate
//! true` and `use_identity_as_username true` accepts it, and its ACL
//! (`pattern readwrite krypton/%u/#`) lets the SIM use its own topic, so
//! the broker saw the IMSI as the certificate's identity. The registration
//! record is on the operator API. Refusals: Krypton disabled for the
//! group, an unknown source address, another SIM's operation, a bad body,
//! a provider simgate does not provision, and a certificate from another
//! CA at the broker. A configured CA made by `openssl` (not rcgen) signs
//! certificates `openssl verify` chains to it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use support::certs::{copy_into, Certs, ServerCert};
use support::mosquitto::{publish, MqttTarget, MqttTls, Subscriber};
use support::process::{binary, forward_lines, free_port, run_with_timeout, wait_for};

const HOST: &str = "krypton.soracom.io";
const SIM1: &str = "001010000000001";
const SIM2: &str = "001010000000002";
const BOOTSTRAP: &str = "/v1/provisioning/x509/bootstrap";
const REGISTER: &str = "/v1/provisioning/x509/register";

const BODY: &str = r#"
[[operators]]
id = "OP0000000001"

[[groups]]
id = "krypton-on"
[groups.configuration.SoracomKrypton]
enabled = true
x509 = { host = "localhost", validityDays = 30 }

[[groups]]
id = "krypton-rsa"
[groups.configuration.SoracomKrypton]
enabled = true
x509 = { keyAlgorithm = "RSA_2048" }

[[groups]]
id = "krypton-off"
[groups.configuration.SoracomKrypton]
enabled = false

[[subscribers]]
imsi = "001010000000001"
group_id = "krypton-on"

[[subscribers]]
imsi = "001010000000002"
group_id = "krypton-rsa"

[[subscribers]]
imsi = "001010000000003"
group_id = "krypton-off"

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"

[[sessions]]
ip = "127.0.7.2"
imsi = "001010000000002"

[[sessions]]
ip = "127.0.7.3"
imsi = "001010000000003"
"#;

async fn call(src: &str, to: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, _, body) = http_request(ip(src), to, method, HOST, path, &[], body).await;
    (status, json_of(&body))
}

/// The credentials of one answer, as files a client can use.
struct Creds {
    dir: tempfile::TempDir,
}

impl Creds {
    fn save(answer: &Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (field, file) in [
            ("certificate", "cert.pem"),
            ("privateKey", "key.pem"),
            ("rootCaCertificate", "ca.pem"),
        ] {
            let text = answer[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} missing: {answer}"));
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        Self { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

fn openssl(args: &[&str], files: &[&Path]) -> (bool, String) {
    let mut cmd = Command::new(binary("openssl", "openssl"));
    cmd.args(args).args(files);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `openssl verify` as a TLS client certificate, chained to `ca`.
fn verify(ca: &Path, cert: &Path) -> (bool, String) {
    let ca = ca.to_str().unwrap();
    openssl(&["verify", "-purpose", "sslclient", "-CAfile", ca], &[cert])
}

/// Subject and SAN as openssl prints them.
fn describe(cert: &Path) -> String {
    let (ok, text) = openssl(
        &[
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ],
        &[cert],
    );
    assert!(ok, "{text}");
    text
}

/// A mosquitto that trusts only the Krypton CA for clients, requires a
/// certificate, takes its CN as the username, and lets each user use
/// `krypton/{username}/#` only. Killed on drop.
struct Broker {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    fn start(krypton_ca: &Path, certs: &Certs) -> Self {
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Self::try_start(krypton_ca, certs, free_port()) {
                Ok(b) => return b,
                Err(e) => failures.push(e),
            }
        }
        panic!("mosquitto did not start: {}", failures.join("; "));
    }

    fn try_start(krypton_ca: &Path, certs: &Certs, port: u16) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = copy_into(d, krypton_ca, "krypton-ca.pem");
        // The broker's own certificate is from the test CA (what clients
        // verify the broker with), unrelated to Krypton's.
        copy_into(d, &certs.ca(), "server-ca.crt");
        let cert = copy_into(d, &certs.server_cert(ServerCert::Localhost), "server.crt");
        let key = copy_into(d, &certs.server_key(ServerCert::Localhost), "server.key");
        let acl = d.join("acl");
        std::fs::write(&acl, "pattern readwrite krypton/%u/#\n").unwrap();
        let conf = d.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\n\
                 allow_anonymous false\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type all\n\
                 connection_messages true\n\
                 user root\n\
                 acl_file {}\n\
                 listener {port} 127.0.0.1\n\
                 cafile {}\n\
                 certfile {}\n\
                 keyfile {}\n\
                 require_certificate true\n\
                 use_identity_as_username true\n",
                acl.display(),
                ca.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(binary("mosquitto", "mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            forward_lines(out, "", tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(err, "", tx);
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let running = line.contains(" running");
                    log.lock().unwrap().push(line);
                    if running {
                        let keep = Arc::clone(&log);
                        std::thread::spawn(move || {
                            for line in rx {
                                keep.lock().unwrap().push(line);
                            }
                        });
                        return Ok(Self {
                            child,
                            port,
                            dir,
                            log,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("port {port}: {}", log.lock().unwrap().join(" | ")));
                }
            }
        }
    }

    /// A TLS target verifying the broker with the test CA, presenting
    /// `cert` and `key`.
    fn target(&self, cert: &Path, key: &Path) -> MqttTarget {
        MqttTarget {
            tls: Some(MqttTls {
                ca: self.dir.path().join("server-ca.crt"),
                client: Some((cert.to_owned(), key.to_owned())),
            }),
            ..MqttTarget::plain(SocketAddr::from(([127, 0, 0, 1], self.port)))
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the log shows `text` within 10 s.
    fn log_shows(&self, text: &str) -> bool {
        wait_for(Duration::from_secs(10), || {
            self.log().contains(text).then_some(())
        })
        .is_some()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_provisions_a_certificate_that_mosquitto_accepts_as_its_imsi() {
    let run = start(BODY).await;
    let to = run.server.bound.http.unwrap();
    let token = run.token();

    // Bootstrap: credentials at once.
    let (status, a) = call("127.0.0.1", to, "POST", BOOTSTRAP, b"").await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["clientId"], SIM1);
    assert_eq!(a["deviceId"], SIM1);
    assert_eq!(a["host"], "localhost");
    assert_eq!(a["status"], "assigned");
    assert_eq!(a["keyAlgorithm"], "ECDSA_P256");
    let (before, after) = (
        a["notBefore"].as_u64().unwrap(),
        a["notAfter"].as_u64().unwrap(),
    );
    assert_eq!(after - before, (30 * 86_400 + 300) * 1000);
    let creds = Creds::save(&a);

    // The certificate names the SIM and chains to the CA it came with,
    // which is the CA the operator API publishes.
    let (ok, text) = verify(&creds.ca(), &creds.cert());
    assert!(ok, "openssl verify: {text}");
    let shown = describe(&creds.cert());
    assert!(shown.contains(&format!("CN = {SIM1}")), "{shown}");
    assert!(shown.contains(&format!("URI:urn:imsi:{SIM1}")), "{shown}");
    let (status, _, ca_pem) = api_get(&run, "/v1/krypton/ca", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(ca_pem).unwrap(), a["rootCaCertificate"]);
    let key_text = std::fs::read_to_string(creds.key()).unwrap();
    assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"));

    // mosquitto with require_certificate + use_identity_as_username: the
    // SIM publishes to and receives from its own topic, which the ACL
    // allows only to the user named like the IMSI.
    let certs = Certs::generate();
    let broker = Broker::start(&creds.ca(), &certs);
    let target = broker.target(&creds.cert(), &creds.key());
    let topic = format!("krypton/{SIM1}/data");
    let mut sub = Subscriber::start(&target.clone().with_client_id("sim1-sub"), &topic, 1)
        .unwrap_or_else(|e| panic!("{e}\nbroker: {}", broker.log()));
    let out = publish(
        &target.clone().with_client_id("sim1-pub"),
        &topic,
        "hello",
        1,
    );
    assert!(
        out.status.success(),
        "mosquitto_pub refused: {}\nbroker: {}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    let m = sub
        .next_message(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no message; broker: {}", broker.log()));
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (topic.as_str(), &b"hello"[..])
    );
    // The broker's log reaches us through a reader thread: wait for it.
    assert!(
        broker.log_shows(&format!("u'{SIM1}'")),
        "the broker did not take the IMSI as the username:\n{}",
        broker.log()
    );

    // A certificate from another CA: the broker refuses the handshake.
    let stranger = broker.target(&certs.client_cert(), &certs.client_key());
    let out = publish(&stranger.with_client_id("stranger"), &topic, "x", 1);
    assert!(
        !out.status.success(),
        "a certificate from another CA was accepted: {}",
        broker.log()
    );
    assert!(
        broker.log_shows("certificate verify failed"),
        "refused, but not for its certificate: {}",
        broker.log()
    );

    // Register, then poll the operation (SORACOM's Azure flow); an RSA key
    // as the group says; the broker accepts it too.
    let (status, r) = call(
        "127.0.7.2",
        to,
        "POST",
        REGISTER,
        br#"{"requestParameters":{"validityDays":7}}"#,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "assigned");
    assert!(r.get("privateKey").is_none(), "{r}");
    let op = r["operationId"].as_str().unwrap().to_owned();
    let poll = format!("/v1/provisioning/x509/registrations/{op}");
    let (status, b) = call("127.0.7.2", to, "GET", &poll, b"").await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["operationId"], op.as_str());
    assert_eq!(b["clientId"], SIM2);
    assert_eq!(b["keyAlgorithm"], "RSA_2048");
    assert!(b.get("host").is_none());
    let (before, after) = (
        b["notBefore"].as_u64().unwrap(),
        b["notAfter"].as_u64().unwrap(),
    );
    assert_eq!(after - before, (7 * 86_400 + 300) * 1000);
    let creds2 = Creds::save(&b);
    let (ok, text) = verify(&creds.ca(), &creds2.cert());
    assert!(ok, "openssl verify: {text}");
    let rsa_target = broker.target(&creds2.cert(), &creds2.key());
    let own = format!("krypton/{SIM2}/data");
    let out = publish(&rsa_target.with_client_id("sim2-pub"), &own, "rsa", 1);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    // Another SIM cannot fetch it.
    let (status, e) = call("127.0.0.1", to, "GET", &poll, b"").await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );

    // Refusals.
    let (status, e) = call("127.0.7.3", to, "POST", BOOTSTRAP, b"").await;
    assert_eq!(
        (status, e["code"].as_str()),
        (403, Some("krypton_disabled")),
        "{e}"
    );
    let (status, headers, _) =
        http_request(ip("127.0.9.9"), to, "POST", HOST, BOOTSTRAP, &[], b"").await;
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "connection"), Some("close"));
    let (status, e) = call("127.0.0.1", to, "POST", BOOTSTRAP, b"[1]").await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );
    let (status, e) = call(
        "127.0.0.1",
        to,
        "POST",
        "/v1/provisioning/aws/iot/bootstrap",
        b"",
    )
    .await;
    assert_eq!(status, 501, "{e}");
    let (status, _) = call("127.0.0.1", to, "GET", BOOTSTRAP, b"").await;
    assert_eq!(status, 405);

    // The records, on the operator API (token required).
    let (status, _, body) = api_get(&run, "/v1/krypton/registrations", Some(&token)).await;
    assert_eq!(status, 200);
    let list = json_of(&body);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["imsi"], SIM1);
    assert_eq!(list[0]["serialNumber"], a["serialNumber"]);
    assert_eq!(list[0]["notAfter"], a["notAfter"]);
    assert_eq!(list[0]["operationId"], a["operationId"]);
    assert_eq!(list[0]["issuedCount"], 1);
    assert_eq!(list[1]["imsi"], SIM2);
    assert_eq!(list[1]["serialNumber"], b["serialNumber"]);
    assert!(!String::from_utf8_lossy(&body).contains("PRIVATE KEY"));
    let (ok, serial) = openssl(&["x509", "-noout", "-serial", "-in"], &[&creds.cert()]);
    assert!(ok);
    assert_eq!(
        serial
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase(),
        a["serialNumber"].as_str().unwrap()
    );
    let (status, _, body) = api_get(
        &run,
        &format!("/v1/krypton/registrations/{SIM2}"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["operationId"], op.as_str());
    let (status, _, _) = api_get(
        &run,
        "/v1/krypton/registrations/001010000000003",
        Some(&token),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = api_get(&run, "/v1/krypton/registrations", None).await;
    assert_eq!(status, 401);

    // Counted.
    assert_eq!(metric(&run, "simgate_krypton_issued_total", &[]).await, 2.0);
    for reason in [
        "disabled",
        "forbidden",
        "bad_request",
        "provider_not_available",
        "method_not_allowed",
        "unknown_operation",
    ] {
        let r = format!("reason=\"{reason}\"");
        assert_eq!(
            metric(&run, "simgate_krypton_refused_total", &[&r]).await,
            1.0,
            "{reason}"
        );
    }
    drop(sub);
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_openssl_ca_signs_certificates_that_chain_to_it() {
    let certs = Certs::generate();
    let body = format!(
        "[krypton]\nca_cert = {:?}\nca_key = {:?}\n{BODY}",
        certs.ca().display().to_string(),
        certs.dir().join("ca.key").display().to_string()
    );
    let run = start(&body).await;
    let to = run.server.bound.http.unwrap();
    let (status, a) = call("127.0.0.1", to, "POST", BOOTSTRAP, b"").await;
    assert_eq!(status, 200, "{a}");
    let creds = Creds::save(&a);
    // The CA as configured, byte for byte (as PEM).
    let (_, ca_text) = openssl(&["x509", "-noout", "-fingerprint", "-in"], &[&certs.ca()]);
    let (_, given) = openssl(&["x509", "-noout", "-fingerprint", "-in"], &[&creds.ca()]);
    assert_eq!(ca_text, given);
    let (ok, text) = verify(&certs.ca(), &creds.cert());
    assert!(ok, "openssl verify against the configured CA: {text}");
    // Not by the generated one: nothing was generated.
    assert!(!run.dir.path().join("krypton/ca.pem").exists());
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_configured_ca_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n{LISTEN_ANY_PORT}\n[krypton]\nca_cert = \"/nonexistent.pem\"\n",
        dir.path().display().to_string()
    );
    let config = simgate_control::Config::parse(&text).unwrap();
    let err = simgate::server::start(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("ca_cert and ca_key"), "{err:#}");
}
