//! SORACOM Beam through the control API: the `SoracomBeam` namespace (typed,
//! validated, reaching the data plane's snapshot) and the `psk` / `x509`
//! credential types, whose secrets never come back.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use axum::http::{Method, StatusCode};
use serde_json::json;
use simgate_control::snapshot::{resolve_psk, resolve_x509};
use simgate_control::{BeamEntryPoint, Config, CredentialKind, GroupId, Imsi, Session};

mod common;

use common::{assert_error, open};

const DEMO_IMSI: &str = "001010000000001";
const PSK: &str = "psk-material-d41d8cd98f00b204";
const KEY_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lC\n-----END PRIVATE KEY-----\n";
const CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nTUlJQnN6Q0NBVmlnQXdJQkFnSVVjZXJ0\n-----END CERTIFICATE-----\n";
const BEAM_HTTP: &str = "http://beam.soracom.io:8888/api";

#[tokio::test]
async fn psk_and_x509_credentials_are_write_only() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());

    let psk_id = format!("beam-psk-{DEMO_IMSI}");
    let r = gw
        .call(
            Method::PUT,
            &format!("/v1/credentials/{psk_id}"),
            Some(json!({"type": "psk", "description": "Beam",
                "credentials": {"key": PSK}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["type"], "psk");
    assert!(!r.text.contains(PSK), "{}", r.text);
    let r = gw
        .call(
            Method::PUT,
            "/v1/credentials/mqtt-cert",
            Some(json!({"type": "x509",
                "credentials": {"ca": CERT_PEM, "cert": CERT_PEM, "key": KEY_PEM}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["type"], "x509");
    for uri in [
        "/v1/credentials".to_owned(),
        format!("/v1/credentials/{psk_id}"),
        "/v1/credentials/mqtt-cert".to_owned(),
    ] {
        let r = gw.call(Method::GET, &uri, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.text.contains(PSK), "{}", r.text);
        assert!(!r.text.contains("TUlJRXZR"), "{}", r.text);
    }
    // Bad bodies: wrong fields for the type, not PEM, empty key.
    for bad in [
        json!({"type": "psk", "credentials": {"accessKeyId": "a", "secretAccessKey": "b"}}),
        json!({"type": "psk", "credentials": {"key": ""}}),
        json!({"type": "x509", "credentials": {"cert": "not pem", "key": KEY_PEM}}),
        json!({"type": "x509", "credentials": {"cert": CERT_PEM, "key": CERT_PEM}}),
        json!({"type": "x509", "credentials": {"cert": CERT_PEM}}),
        json!({"type": "x509", "credentials": KEY_PEM}),
        json!({"type": "psk", "credentials": {"key": ["TUlJRXZR"]}}),
    ] {
        let r = gw
            .call(Method::PUT, "/v1/credentials/bad", Some(bad.clone()))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(!r.text.contains("TUlJRXZR"), "{bad}: {}", r.text);
    }

    // The data plane resolves them, `#{imsi}` included.
    let snap = gw.plane.snapshot.load();
    let imsi = Imsi::parse(DEMO_IMSI).unwrap();
    let r = simgate_control::CredentialsRef::parse("beam-psk-#{imsi}").unwrap();
    assert_eq!(resolve_psk(&snap, &r, &imsi).unwrap().expose(), PSK);
    let cert = simgate_control::CredentialsRef::parse("mqtt-cert").unwrap();
    let (_, x509) = resolve_x509(&snap, &cert, &imsi).unwrap();
    assert_eq!(x509.key.expose(), KEY_PEM);
    assert_eq!(x509.ca.as_deref(), Some(CERT_PEM));
    assert!(!format!("{:?}", snap.credentials).contains(PSK));
    drop(snap);

    // Restart: the secrets were stored, and come back typed.
    drop(gw);
    let gw = open(dir.path(), &Config::parse("").unwrap());
    let snap = gw.plane.snapshot.load();
    let c = &snap.credentials[&psk_id.parse::<simgate_control::CredentialId>().unwrap()];
    let CredentialKind::Psk(p) = &c.kind else {
        panic!("{c:?}")
    };
    assert_eq!(p.key.expose(), PSK);
}

#[tokio::test]
async fn soracom_beam_configuration_is_typed_and_reaches_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let gw = open(dir.path(), &Config::embedded_default());
    for (id, body) in [
        (
            "beam-psk",
            json!({"type": "psk", "credentials": {"key": PSK}}),
        ),
        (
            "mqtt-cert",
            json!({"type": "x509", "credentials": {"cert": CERT_PEM, "key": KEY_PEM}}),
        ),
    ] {
        let r = gw
            .call(Method::PUT, &format!("/v1/credentials/{id}"), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    // Unknown credentials, wrong destination schemes, unknown fields: 400.
    for bad in [
        json!([{"key": BEAM_HTTP, "value": {"destination": "https://x/", "addSignature": true,
            "psk": {"$credentialsId": "nope"}}}]),
        json!([{"key": BEAM_HTTP, "value": {"destination": "tcps://x:1"}}]),
        json!([{"key": "tcp://beam.soracom.io:8023", "value": {"destination": "https://x/"}}]),
        json!([{"key": "mqtt://beam.soracom.io:1883", "value": {"destination": "https://x/"}}]),
        json!([{"key": BEAM_HTTP, "value": {"destination": "https://x/", "surprise": true}}]),
        json!([{"key": "http://beam.example:8888/", "value": {"destination": "https://x/"}}]),
        // A psk where a certificate is needed, and the other way round.
        json!([{"key": "mqtt://beam.soracom.io:1883", "value": {"destination": "mqtts://b",
            "useClientCert": true, "clientCerts": {"default": {"$credentialsId": "beam-psk"}}}}]),
        json!([{"key": BEAM_HTTP, "value": {"destination": "https://x/", "addSignature": true,
            "psk": {"$credentialsId": "mqtt-cert"}}}]),
    ] {
        let r = gw
            .call(
                Method::PUT,
                "/v1/groups/demo/configuration/SoracomBeam",
                Some(bad.clone()),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }

    let r = gw
        .call(
            Method::PUT,
            "/v1/groups/demo/configuration/SoracomBeam",
            Some(json!([
                {"key": BEAM_HTTP, "value": {"name": "api", "destination": "https://api.example/v1",
                    "enabled": true, "addSubscriberHeader": true, "addEquipmentHeader": true,
                    "addSignature": true, "psk": {"$credentialsId": "beam-psk"},
                    "customHeaders": {"X-Api-Key": {"action": "replace",
                        "headerKey": "X-Api-Key", "headerValue": "k"}}}},
                {"key": "tcp://beam.soracom.io:8023", "value": {"destination": "tcps://tcp.example:9000",
                    "enabled": true, "addSubscriberHeader": true}},
                {"key": "mqtt://beam.soracom.io:1883", "value": {"destination": "mqtts://broker.example:8883",
                    "enabled": true, "username": "u", "password": "mqtt-password-x",
                    "useClientCert": true, "clientCerts": {"default": {"$credentialsId": "mqtt-cert"}}}},
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let beam = &r.body["configuration"]["SoracomBeam"];
    assert_eq!(beam[BEAM_HTTP]["psk"]["$credentialsId"], "beam-psk");
    assert_eq!(
        beam["tcp://beam.soracom.io:8023"]["destination"],
        "tcps://tcp.example:9000"
    );
    assert!(!r.text.contains("mqtt-password-x"), "{}", r.text);
    let r = gw.call(Method::GET, "/v1/groups/demo", None).await;
    assert!(!r.text.contains("mqtt-password-x"), "{}", r.text);
    assert_eq!(
        r.body["configuration"]["SoracomBeam"]["mqtt://beam.soracom.io:1883"]["username"],
        "u"
    );

    // The data plane sees it on the identity, as `group.beam`.
    let id = gw
        .plane
        .snapshot
        .load()
        .resolve(&Session::new(Imsi::parse(DEMO_IMSI).unwrap(), None, None))
        .unwrap();
    let group = id.group.unwrap();
    let (prefix, entry) = group.beam.http_entries().next().unwrap();
    assert_eq!(prefix, "/api");
    assert!(entry.add_signature && entry.add_equipment_header);
    let mqtt = group.beam.enabled(&BeamEntryPoint::Mqtt).unwrap();
    assert_eq!(mqtt.password.as_ref().unwrap().expose(), "mqtt-password-x");
    assert_eq!(mqtt.client_cert().unwrap().as_str(), "mqtt-cert");

    // Credentials a group's Beam names cannot be deleted.
    for id in ["beam-psk", "mqtt-cert"] {
        let r = gw
            .call(Method::DELETE, &format!("/v1/credentials/{id}"), None)
            .await;
        assert_error(&r, StatusCode::CONFLICT, "conflict");
    }

    // One entry removed by its (percent-encoded) key.
    let r = gw
        .call(
            Method::DELETE,
            "/v1/groups/demo/configuration/SoracomBeam/mqtt%3A%2F%2Fbeam.soracom.io%3A1883",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = gw
        .call(Method::DELETE, "/v1/credentials/mqtt-cert", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    // Survives a restart, the MQTT-less configuration included.
    drop(gw);
    let gw = open(dir.path(), &Config::parse("").unwrap());
    let snap = gw.plane.snapshot.load();
    let g = &snap.groups[&GroupId::parse("demo").unwrap()];
    assert_eq!(g.beam.entries.len(), 2);
    assert!(g.beam.enabled(&BeamEntryPoint::TcpToTcp).is_some());
}
