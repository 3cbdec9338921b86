//! SORACOM Air Metadata end to end, over the real devices' HTTP listener
//! (Host `metadata.soracom.io`): a SIM reads its record, a field, a tag and
//! its group's userdata, changes its own tags (seen afterwards by the
//! operator API and by Metadata), and is refused whatever it must not do:
//! metadata disabled, read-only writes, another SIM's IMSI, an unknown
//! source address. The group's `allowOrigin` comes back on answers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;
mod support;

use std::net::{IpAddr, SocketAddr};

use common::*;

const HOST: &str = "metadata.soracom.io";
const ORIGIN: &str = "https://app.example";
/// In `meta-on`, at 127.0.0.1.
const SIM1: &str = "001010000000001";
/// In `meta-on`, at 127.0.6.2.
const SIM2: &str = "001010000000002";
/// In `meta-off`, at 127.0.6.3.
const SIM3: &str = "001010000000003";
/// In `meta-ro`, at 127.0.6.4.
const SIM4: &str = "001010000000004";

const BODY: &str = r#"
[[operators]]
id = "OP0000000001"

[[groups]]
id = "meta-on"
[groups.configuration.SoracomAir]
metadata = { enabled = true, readonly = false, allowOrigin = "https://app.example" }
userdata = "{\"interval\":60}"

[[groups]]
id = "meta-off"
[groups.configuration.SoracomAir]
metadata = { enabled = false }
userdata = "served once enabled"

[[groups]]
id = "meta-ro"
[groups.configuration.SoracomAir]
metadata = { enabled = true, readonly = true }

[[subscribers]]
imsi = "001010000000001"
msisdn = "819000000001"
group_id = "meta-on"
tags = { name = "sensor-1", "room a" = "kitchen" }

[[subscribers]]
imsi = "001010000000002"
group_id = "meta-on"

[[subscribers]]
imsi = "001010000000003"
group_id = "meta-off"

[[subscribers]]
imsi = "001010000000004"
group_id = "meta-ro"
tags = { name = "ro" }

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"
imei = "353000000000001"

[[sessions]]
ip = "127.0.6.2"
imsi = "001010000000002"

[[sessions]]
ip = "127.0.6.3"
imsi = "001010000000003"

[[sessions]]
ip = "127.0.6.4"
imsi = "001010000000004"
"#;

struct Device {
    src: IpAddr,
    to: SocketAddr,
}

impl Device {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json")]
        };
        http_request(self.src, self.to, method, HOST, path, headers, body).await
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.call("GET", path, b"").await;
        (status, String::from_utf8(body).unwrap())
    }
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(body));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reads_updates_and_refuses() {
    let run = start(BODY).await;
    let to = run.server.bound.http.unwrap();
    let token = run.token();
    let sim1 = Device {
        src: ip("127.0.0.1"),
        to,
    };
    let sim2 = Device {
        src: ip("127.0.6.2"),
        to,
    };
    let off = Device {
        src: ip("127.0.6.3"),
        to,
    };
    let ro = Device {
        src: ip("127.0.6.4"),
        to,
    };
    let stranger = Device {
        src: ip("127.0.6.9"),
        to,
    };

    // The whole record, as the operator API renders it, plus the session.
    let (status, headers, body) = sim1.call("GET", "/v1/subscriber", b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let v = json(&body);
    assert_eq!(v["imsi"], SIM1);
    assert_eq!(v["msisdn"], "819000000001");
    assert_eq!(v["groupId"], "meta-on");
    assert_eq!(v["operatorId"], "OP0000000001");
    assert_eq!(v["status"], "active");
    assert_eq!(v["tags"]["name"], "sensor-1");
    assert_eq!(v["ipAddress"], "127.0.0.1");
    assert_eq!(v["sessionStatus"]["online"], true);
    assert_eq!(v["sessionStatus"]["imei"], "353000000000001");
    assert!(v["createdAt"].as_u64().unwrap() > 0);
    let (_, _, api_body) = api_get(&run, &format!("/v1/subscribers/{SIM1}"), Some(&token)).await;
    let api = json(&api_body);
    for key in ["imsi", "msisdn", "groupId", "status", "tags", "createdAt"] {
        assert_eq!(v[key], api[key], "{key} as the API renders it");
    }

    // Raw values.
    assert_eq!(
        sim1.get("/v1/subscriber.imsi").await,
        (200, SIM1.to_owned())
    );
    assert_eq!(
        sim1.get("/v1/subscriber.groupId").await,
        (200, "meta-on".to_owned())
    );
    assert_eq!(
        sim1.get("/v1/subscriber.tags.name").await,
        (200, "sensor-1".to_owned())
    );
    assert_eq!(
        sim1.get("/v1/subscriber.tags.room%20a").await,
        (200, "kitchen".to_owned())
    );
    let (status, body) = sim1.get("/v1/subscriber.tags.nothing").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json(body.as_bytes())["code"], "not_found");
    // SIM2 has no MSISDN: absent, not "null".
    assert_eq!(sim2.get("/v1/subscriber.msisdn").await.0, 404);

    // Userdata, as is.
    let (status, headers, body) = sim1.call("GET", "/v1/userdata", b"").await;
    assert_eq!(status, 200);
    assert_eq!(body, br#"{"interval":60}"#);
    assert!(header(&headers, "content-type")
        .unwrap()
        .starts_with("text/plain"));

    // Its own IMSI through the /v1/subscribers form.
    let (status, body) = sim1.get(&format!("/v1/subscribers/{SIM1}")).await;
    assert_eq!(status, 200);
    assert_eq!(json(body.as_bytes())["imsi"], SIM1);

    // A tag update: 200 with the subscriber, then visible everywhere.
    let (status, _, body) = sim1
        .call(
            "PUT",
            "/v1/subscriber/tags",
            br#"[{"tagName":"fw","tagValue":"1.2.3"}]"#,
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["tags"]["fw"], "1.2.3");
    assert_eq!(v["tags"]["name"], "sensor-1", "other tags are kept");
    let (status, _, api_body) =
        api_get(&run, &format!("/v1/subscribers/{SIM1}"), Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(json(&api_body)["tags"]["fw"], "1.2.3");
    assert_eq!(
        sim1.get("/v1/subscriber.tags.fw").await,
        (200, "1.2.3".to_owned())
    );
    // The same through /v1/subscribers/{own imsi}/tags, then removed.
    let (status, _, _) = sim1
        .call(
            "PUT",
            &format!("/v1/subscribers/{SIM1}/tags"),
            br#"[{"tagName":"fw","tagValue":"1.2.4"}]"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        sim1.get("/v1/subscriber.tags.fw").await,
        (200, "1.2.4".to_owned())
    );
    let (status, _, _) = sim1.call("DELETE", "/v1/subscriber/tags/fw", b"").await;
    assert_eq!(status, 204);
    assert_eq!(sim1.get("/v1/subscriber.tags.fw").await.0, 404);
    let (_, _, api_body) = api_get(&run, &format!("/v1/subscribers/{SIM1}"), Some(&token)).await;
    assert!(json(&api_body)["tags"].get("fw").is_none());
    // A bad body is refused with the API's checks.
    let (status, _, body) = sim1.call("PUT", "/v1/subscriber/tags", b"{}").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // Another SIM's IMSI: refused, whatever the call; nothing changed.
    for (method, path, body) in [
        ("GET", format!("/v1/subscribers/{SIM2}"), &b""[..]),
        (
            "PUT",
            format!("/v1/subscribers/{SIM2}/tags"),
            &br#"[{"tagName":"x","tagValue":"y"}]"#[..],
        ),
        (
            "DELETE",
            format!("/v1/subscribers/{SIM4}/tags/name"),
            &b""[..],
        ),
    ] {
        let (status, _, reply) = sim1.call(method, &path, body).await;
        assert_eq!(status, 403, "{method} {path}");
        assert_eq!(json(&reply)["code"], "forbidden");
    }
    let (_, _, api_body) = api_get(&run, &format!("/v1/subscribers/{SIM2}"), Some(&token)).await;
    assert!(json(&api_body)["tags"].get("x").is_none());
    let (_, _, api_body) = api_get(&run, &format!("/v1/subscribers/{SIM4}"), Some(&token)).await;
    assert_eq!(json(&api_body)["tags"]["name"], "ro");
    // Calls the service does not offer: 404 / 405 with a JSON error.
    let (status, _, reply) = sim1
        .call("POST", &format!("/v1/subscribers/{SIM1}/terminate"), b"")
        .await;
    assert_eq!(status, 404);
    assert_eq!(json(&reply)["code"], "not_mapped");
    let (status, headers, _) = sim1.call("POST", "/v1/subscriber", b"").await;
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, OPTIONS"));

    // Metadata disabled for the group.
    let (status, body) = off.get("/v1/subscriber").await;
    assert_eq!(status, 403);
    assert_eq!(json(body.as_bytes())["code"], "metadata_disabled");
    assert_eq!(off.get("/v1/userdata").await.0, 403);
    assert_eq!(off.get(&format!("/v1/subscribers/{SIM3}")).await.0, 403);
    // Enabled through the operator API (SORACOM's configuration call): at
    // once, no restart.
    let auth = format!("Bearer {token}");
    let (status, _, body) = http_request(
        ip("127.0.0.1"),
        run.server.bound.api.unwrap(),
        "PUT",
        "localhost",
        "/v1/groups/meta-off/configuration/SoracomAir",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        br#"[{"key":"metadata","value":{"enabled":true}}]"#,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        off.get("/v1/userdata").await,
        (200, "served once enabled".to_owned())
    );

    // Read-only: reads work, writes are refused and change nothing.
    assert_eq!(ro.get("/v1/subscriber.imsi").await, (200, SIM4.to_owned()));
    let (status, _, body) = ro
        .call(
            "PUT",
            "/v1/subscriber/tags",
            br#"[{"tagName":"name","tagValue":"changed"}]"#,
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(json(&body)["code"], "metadata_readonly");
    let (status, _, _) = ro.call("DELETE", "/v1/subscriber/tags/name", b"").await;
    assert_eq!(status, 403);
    assert_eq!(
        ro.get("/v1/subscriber.tags.name").await,
        (200, "ro".to_owned())
    );
    // No userdata in that group: 404 with a JSON error.
    let (status, body) = ro.get("/v1/userdata").await;
    assert_eq!(status, 404);
    assert_eq!(json(body.as_bytes())["code"], "not_found");

    // CORS: the preflight, and no header where the group sets no origin.
    let (status, headers, _) = sim1.call("OPTIONS", "/v1/subscriber/tags", b"").await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert!(header(&headers, "access-control-allow-methods")
        .unwrap()
        .contains("PUT"));
    let (_, headers, _) = ro.call("GET", "/v1/subscriber", b"").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);

    // An unknown source: 403, connection closed, counted as the others are.
    let rejected_before = metric(
        &run,
        "simgate_ingress_rejected",
        &["reason=\"unknown_source\""],
    )
    .await;
    let (status, headers, _) = stranger.call("GET", "/v1/subscriber", b"").await;
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "connection"), Some("close"));
    let rejected_after = metric(
        &run,
        "simgate_ingress_rejected",
        &["reason=\"unknown_source\""],
    )
    .await;
    assert_eq!(rejected_after, rejected_before + 1.0);

    // Served requests are counted per service.
    let served = metric(
        &run,
        "simgate_service_requests",
        &["service=\"metadata\"", "status=\"200\""],
    )
    .await;
    assert!(served >= 10.0, "metadata 200s counted: {served}");
    let refused = metric(
        &run,
        "simgate_service_requests",
        &["service=\"metadata\"", "status=\"403\""],
    )
    .await;
    assert!(refused >= 5.0, "metadata 403s counted: {refused}");
}
