//! Beam MQTT end to end: the device publishes and subscribes with plain
//! MQTT on simgate's :1883 (`mosquitto_pub` / `mosquitto_sub` from
//! 127.0.0.1); simgate speaks MQTTS to a real mosquitto that requires a
//! client certificate, presenting the group's `x509` credential. A second
//! client connected straight to the broker (over TLS) sees what arrives
//! and publishes what the device should receive. Bad input from the device
//! (keepalive out of range, garbage, QoS 2) gets SORACOM's answer and a
//! counter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::certs::Certs;
use support::mosquitto::{publish, Mosquitto, MosquittoOptions, MqttTarget, Subscriber};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMSI: &str = "001010000000001";
const IMEI: &str = "860000012345678";
const WAIT: Duration = Duration::from_secs(10);

fn config(certs: &Certs, broker: u16) -> String {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
    format!(
        r#"
[upstream]
ca_file = {ca:?}

[[operators]]
id = "OP0000000001"

[[credentials]]
id = "mqtt-cert"
type = "x509"
cert = {cert:?}
key = {key:?}

[[groups]]
id = "g"
[groups.beam."mqtt://beam.soracom.io:1883"]
name = "broker"
destination = "mqtts://localhost:{broker}"
enabled = true
addSubscriberHeader = true
useClientCert = true
clientCerts = {{ default = {{ "$credentialsId" = "mqtt-cert" }} }}

[[groups]]
id = "nocert"
[groups.beam."mqtt://beam.soracom.io:1883"]
name = "nocert"
destination = "mqtts://localhost:{broker}"
enabled = true

[[subscribers]]
imsi = "{IMSI}"
group_id = "g"
[[subscribers]]
imsi = "001010000000002"
group_id = "nocert"

[[sessions]]
ip = "127.0.0.1"
imsi = "{IMSI}"
imei = "{IMEI}"
[[sessions]]
ip = "127.0.0.2"
imsi = "001010000000002"
"#,
        ca = certs.ca().display().to_string(),
        cert = read(certs.client_cert()),
        key = read(certs.client_key()),
    )
}

/// A raw MQTT 3.1.1 CONNECT with `keep_alive` and client id `raw`.
fn connect_packet(keep_alive: u16) -> Vec<u8> {
    let mut p = vec![0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    p.extend_from_slice(&keep_alive.to_be_bytes());
    p.extend_from_slice(&[0, 3, b'r', b'a', b'w']);
    p[1] = (p.len() - 2) as u8;
    p
}

/// Everything the server sends until it closes (or `WAIT`).
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("connection left open");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_publishes_and_subscribes_through_beam_to_mosquitto_with_a_client_cert() {
    let certs = Certs::generate();
    let broker = Mosquitto::start(&certs);
    let run = common::start(&config(&certs, broker.port())).await;
    let beam: SocketAddr = run.server.bound.beam_mqtt.unwrap();
    let device = MqttTarget::plain(beam);
    let direct = broker.tls_target(true);

    // PUBLISH QoS 1 through simgate: mosquitto_pub waits for the PUBACK,
    // which simgate passes on only after the broker's. The topic gains
    // the IMSI ("add IMSI to topic"); placeholders are filled in.
    let mut seen = Subscriber::start(&direct, "sensors/#", 1).unwrap();
    let out = tokio::task::spawn_blocking(move || publish(&device, "sensors/temp", "21.5", 1))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nbroker: {:?}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    let m = seen
        .next_message(WAIT)
        .unwrap_or_else(|| panic!("nothing arrived: {:?} / {:?}", seen.output(), broker.log()));
    assert_eq!(m.topic, format!("sensors/temp/{IMSI}"));
    assert_eq!(m.payload, b"21.5");
    assert_eq!(m.qos, 1);
    let device = MqttTarget::plain(beam);
    let out = tokio::task::spawn_blocking(move || publish(&device, "sensors/{{imei}}/h", "55", 0))
        .await
        .unwrap();
    assert!(out.status.success());
    let m = seen.next_message(WAIT).expect("QoS 0 message");
    assert_eq!(m.topic, format!("sensors/{IMEI}/h/{IMSI}"));

    // SUBSCRIBE through simgate with a placeholder; a message published on
    // the broker reaches the device.
    let device = MqttTarget::plain(beam);
    let mut sub =
        tokio::task::spawn_blocking(move || Subscriber::start(&device, "cmd/{{imsi}}", 1))
            .await
            .unwrap()
            .unwrap();
    let out = publish(&direct, &format!("cmd/{IMSI}"), "reboot", 1);
    assert!(out.status.success());
    let m = sub
        .next_message(WAIT)
        .unwrap_or_else(|| panic!("no command: {:?}", sub.output()));
    assert_eq!(m.topic, format!("cmd/{IMSI}"));
    assert_eq!(m.payload, b"reboot");
    drop(sub);

    // Keepalive 2 s (outside 0 and 5–1200): CONNACK "not authorized".
    let mut s = common::tcp_connect(IpAddr::from([127, 0, 0, 1]), beam).await;
    s.write_all(&connect_packet(2)).await.unwrap();
    assert_eq!(read_to_close(&mut s).await, [0x20, 2, 0, 5]);

    // Garbage: closed, counted.
    let mut s = common::tcp_connect(IpAddr::from([127, 0, 0, 1]), beam).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut s).await.is_empty());

    // QoS 2 is not supported: the connection is closed.
    let device = MqttTarget::plain(beam);
    let out = tokio::task::spawn_blocking(move || publish(&device, "q2", "x", 2))
        .await
        .unwrap();
    assert!(!out.status.success(), "QoS 2 publish succeeded");

    // Without the client certificate the broker refuses simgate: the
    // device hears CONNACK "server unavailable".
    let mut s = common::tcp_connect(IpAddr::from([127, 0, 0, 2]), beam).await;
    s.write_all(&connect_packet(60)).await.unwrap();
    assert_eq!(read_to_close(&mut s).await, [0x20, 2, 0, 3]);

    let metric = |name: &'static str, parts: &'static [&'static str]| {
        let run = &run;
        async move { common::metric(run, name, parts).await }
    };
    for (parts, at_least) in [
        (&["entry=\"none\"", "reason=\"keep_alive\""][..], 1.0),
        // keepalive + garbage
        (&["entry=\"none\""][..], 2.0),
        (&["entry=\"broker\"", "reason=\"qos2\""][..], 1.0),
    ] {
        let got = metric("simgate_beam_device_errors_total", parts).await;
        assert!(got >= at_least, "{parts:?}: {got}");
    }
    assert!(
        metric(
            "simgate_beam_relayed_total",
            &["entry=\"broker\"", "direction=\"up\""]
        )
        .await
            >= 2.0
    );
    assert!(
        metric(
            "simgate_beam_relayed_total",
            &["entry=\"broker\"", "direction=\"down\""]
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            "simgate_beam_requests_total",
            &["entry=\"nocert\"", "status=\"502\""]
        )
        .await
            >= 1.0
    );
    run.server.shutdown().await;
}

/// A raw QoS 1 PUBLISH (retained, so a subscriber that comes later sees it).
fn publish_packet(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    let mut p = vec![0x33, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

/// Reads exactly `n` bytes.
async fn read_n(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .expect("nothing within the wait")
        .unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_nothing_the_device_was_told_was_delivered() {
    let certs = Certs::generate();
    let mut broker = Mosquitto::start(&certs);
    let run = common::start(&config(&certs, broker.port())).await;
    let beam: SocketAddr = run.server.bound.beam_mqtt.unwrap();

    // A device subscribed through simgate, and one that publishes.
    let device = MqttTarget::plain(beam);
    let mut sub = tokio::task::spawn_blocking(move || Subscriber::start(&device, "cmd/#", 1))
        .await
        .unwrap()
        .unwrap();
    let mut publisher = common::tcp_connect(IpAddr::from([127, 0, 0, 1]), beam).await;
    publisher.write_all(&connect_packet(60)).await.unwrap();
    assert_eq!(read_n(&mut publisher, 4).await, [0x20, 2, 0, 0]);

    // The broker goes away; the device publishes meanwhile. No PUBACK
    // while the broker is down.
    broker.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher
        .write_all(&publish_packet("up/x", 7, b"during-outage"))
        .await
        .unwrap();
    let mut early = [0u8; 4];
    let none = tokio::time::timeout(Duration::from_millis(500), publisher.read(&mut early)).await;
    assert!(
        none.is_err(),
        "answered while the broker was down: {early:?}"
    );

    // Back: simgate reconnects, sends the message again, and only then
    // acknowledges it to the device.
    broker.restart(&certs);
    assert_eq!(read_n(&mut publisher, 4).await, [0x40, 2, 0, 7]);
    let direct = broker.tls_target(true);
    let mut seen = Subscriber::start(&direct, "up/#", 1).unwrap();
    let m = seen
        .next_message(WAIT)
        .unwrap_or_else(|| panic!("message lost: {:?}", broker.log()));
    assert_eq!(m.topic, format!("up/x/{IMSI}"));
    assert_eq!(m.payload, b"during-outage");

    // The subscription made before the outage is made again once that
    // device's session has reconnected too (each backs off on its own):
    // publish until it arrives.
    let deadline = std::time::Instant::now() + WAIT;
    let m = loop {
        let out = publish(&direct, "cmd/after", "hello", 1);
        assert!(out.status.success());
        if let Some(m) = sub.next_message(Duration::from_millis(500)) {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "subscription lost: {:?}",
            sub.output()
        );
    };
    assert_eq!(m.topic, "cmd/after");
    assert_eq!(m.payload, b"hello");
    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_username_and_password_log_the_device_in() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_with(
        &certs,
        MosquittoOptions {
            credentials: Some(("beam-user", "beam-pass")),
            ..MosquittoOptions::default()
        },
    );
    let text = config(&certs, broker.port()).replacen(
        "addSubscriberHeader = true\n",
        "addSubscriberHeader = true\nusername = \"beam-user\"\npassword = \"beam-pass\"\n",
        1,
    );
    let run = common::start(&text).await;
    let beam: SocketAddr = run.server.bound.beam_mqtt.unwrap();
    let direct = broker
        .tls_target(true)
        .with_credentials("beam-user", "beam-pass");
    let mut seen = Subscriber::start(&direct, "t/#", 1).unwrap();

    // The device sends no credentials; simgate logs in with the entry's.
    let device = MqttTarget::plain(beam);
    let out = tokio::task::spawn_blocking(move || publish(&device, "t", "x", 1))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{} / {:?}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    let m = seen.next_message(WAIT).expect("message");
    assert_eq!(m.topic, format!("t/{IMSI}"));

    // The broker's refusal (no password for the other group's entry) is
    // relayed as its CONNACK code.
    let mut s = common::tcp_connect(IpAddr::from([127, 0, 0, 2]), beam).await;
    s.write_all(&connect_packet(60)).await.unwrap();
    let answer = read_to_close(&mut s).await;
    assert_eq!(answer.len(), 4, "{answer:?}");
    assert_ne!(answer[3], 0, "{answer:?}");
    run.server.shutdown().await;
}
