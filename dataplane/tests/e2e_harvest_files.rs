//! SORACOM Harvest Files end to end, over the real listeners: devices
//! (Host `harvest-files.soracom.io` on the devices' HTTP listener) put,
//! get, list and delete files under their group's prefix (`/:imsi/` by
//! default, the IMSI expanded), `PUT /` writes the group's `defaultPath`;
//! the operator reads, writes, lists (with paging) and deletes them on the
//! control API's `/v1/files/{scope}/{path}` with its token. Refusals: path
//! escapes (`..`, `%2e%2e`), the size limit (declared and streamed), the
//! disk budget, Harvest Files off for the group, an unknown source address,
//! another SIM's files, the read-only `public` scope.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "harvest-files.soracom.io";
const SIM1: &str = "001010000000001";
const SIM2: &str = "001010000000002";

const BODY: &str = r#"
[harvest_files]
max_file_bytes = 1000
budget_bytes = 8000

[[operators]]
id = "OP0000000001"

[[groups]]
id = "files-on"
[groups.configuration.SoracomHarvestFiles]
enabled = true
defaultPath = "/default/:time.txt"

[[groups]]
id = "files-off"
[groups.configuration.SoracomHarvestFiles]
enabled = false

[[subscribers]]
imsi = "001010000000001"
group_id = "files-on"

[[subscribers]]
imsi = "001010000000002"
group_id = "files-on"

[[subscribers]]
imsi = "001010000000003"
group_id = "files-off"

[[sessions]]
ip = "127.0.0.1"
imsi = "001010000000001"

[[sessions]]
ip = "127.0.9.2"
imsi = "001010000000002"

[[sessions]]
ip = "127.0.9.3"
imsi = "001010000000003"
"#;

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A device request from `src`.
async fn device(
    src: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    http_request(ip(src), to, method, HOST, path, headers, body).await
}

/// An API request with the run's token.
async fn api(
    run: &Running,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let auth = format!("Bearer {}", run.token());
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http_request(
        ip("127.0.0.1"),
        run.server.bound.api.unwrap(),
        method,
        "localhost",
        path,
        &all,
        body,
    )
    .await
}

/// A device PUT with a chunked body (no Content-Length: the limit is
/// enforced while the bytes arrive).
async fn put_chunked(src: &str, to: SocketAddr, path: &str, body: &[u8]) -> u16 {
    let mut stream = tcp_connect(ip(src), to).await;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(100) {
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(chunk);
        c.extend_from_slice(b"\r\n");
        // The server may answer and close before everything is sent.
        if stream.write_all(&c).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn names(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["filename"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_operators_share_files_within_limits() {
    let run = start(BODY).await;
    let to = run.server.bound.http.unwrap();
    let text = [("Content-Type", "text/plain")];

    // A device stores a file: created, then replaced.
    let (status, _, _) = device("127.0.0.1", to, "PUT", "/logs/a.txt", &text, b"hello").await;
    assert_eq!(status, 201);
    let (status, _, _) = device("127.0.0.1", to, "PUT", "/logs/a.txt", &text, b"hello!").await;
    assert_eq!(status, 200, "replaced");
    assert!(
        run.dir
            .path()
            .join(format!("harvest-files/private/{SIM1}/logs/a.txt"))
            .is_file(),
        "stored under the SIM's own directory"
    );

    // It reads it back, with its content type and an ETag.
    let (status, headers, body) = device("127.0.0.1", to, "GET", "/logs/a.txt", &[], b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"hello!"[..]));
    assert_eq!(header(&headers, "content-type"), Some("text/plain"));
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(b"hello!")));
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    let (status, headers, body) = device("127.0.0.1", to, "HEAD", "/logs/a.txt", &[], b"").await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(header(&headers, "content-length"), Some("6"));

    // The operator finds it where `:imsi` put it.
    let path = format!("/v1/files/private/{SIM1}/logs/a.txt");
    let (status, headers, body) = api(&run, "GET", &path, &[], b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"hello!"[..]));
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    let (status, _, _) = api(&run, "HEAD", &path, &[], b"").await;
    assert_eq!(status, 200);
    let (status, _, _) = http_request(
        ip("127.0.0.1"),
        run.server.bound.api.unwrap(),
        "GET",
        "localhost",
        &path,
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 401, "the API needs its token");

    // Another SIM of the same group sees only its own directory, and no
    // spelling of `..` gets it out.
    let (status, _, _) = device("127.0.9.2", to, "GET", "/logs/a.txt", &[], b"").await;
    assert_eq!(status, 404);
    for escape in [
        format!("/../{SIM1}/logs/a.txt"),
        format!("/%2e%2e/{SIM1}/logs/a.txt"),
        format!("/logs/%2E%2E/%2e%2e/{SIM1}/logs/a.txt"),
        format!("/x/..%2f..%2f{SIM1}/logs/a.txt"),
    ] {
        let (status, _, body) = device("127.0.9.2", to, "GET", &escape, &[], b"").await;
        assert_eq!(
            (status, json_of(&body)["code"].as_str()),
            (400, Some("path_escape")),
            "{escape}"
        );
    }
    let (status, _, body) = device("127.0.9.2", to, "PUT", "/a%00b", &text, b"x").await;
    assert_eq!(
        (status, json_of(&body)["code"].as_str()),
        (400, Some("bad_char"))
    );
    // A percent-escape is decoded once: `%252e%252e` is a name, not `..`.
    let (status, _, _) = device("127.0.9.2", to, "PUT", "/%252e%252e", &text, b"x").await;
    assert_eq!(status, 201);
    assert!(run
        .dir
        .path()
        .join(format!("harvest-files/private/{SIM2}/%2e%2e"))
        .is_file());

    // Listing a directory, paged by filename.
    for name in ["c.txt", "b.txt", "sub/d.txt"] {
        let (status, _, _) = device(
            "127.0.0.1",
            to,
            "PUT",
            &format!("/logs/{name}"),
            &text,
            b"1",
        )
        .await;
        assert_eq!(status, 201, "{name}");
    }
    let dir = format!("/v1/files/private/{SIM1}/logs/");
    let (status, headers, body) = api(&run, "GET", &format!("{dir}?limit=2"), &[], b"").await;
    assert_eq!(status, 200);
    let page = json_of(&body);
    assert_eq!(names(&page), ["a.txt", "b.txt"]);
    assert_eq!(header(&headers, "x-soracom-next-key"), Some("b.txt"));
    let a = &page[0];
    assert_eq!(a["filePath"], format!("/{SIM1}/logs/a.txt"));
    assert_eq!(a["directory"], format!("/{SIM1}/logs/"));
    assert_eq!(a["isDirectory"], false);
    assert_eq!(a["contentLength"], 6);
    assert_eq!(a["contentType"], "text/plain");
    assert_eq!(format!("\"{}\"", a["etag"].as_str().unwrap()), etag);
    assert!(a["createdTime"].as_u64().unwrap() <= a["lastModifiedTime"].as_u64().unwrap());
    let (status, headers, body) = api(
        &run,
        "GET",
        &format!("{dir}?limit=2&last_evaluated_key=b.txt"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let page = json_of(&body);
    assert_eq!(names(&page), ["c.txt", "sub"]);
    assert_eq!(page[1]["isDirectory"], true);
    assert_eq!(page[1]["filePath"], format!("/{SIM1}/logs/sub/"));
    assert_eq!(header(&headers, "x-soracom-next-key"), None, "last page");
    let (status, _, body) = api(&run, "GET", &format!("{dir}?limit=0"), &[], b"").await;
    assert_eq!(
        (status, json_of(&body)["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, _, body) = api(&run, "GET", "/v1/files/private/", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(names(&json_of(&body)), [SIM1, SIM2]);
    let (status, _, _) = api(&run, "GET", "/v1/files/private/nowhere/", &[], b"").await;
    assert_eq!(status, 404);
    // A device lists its own directory, paths shown under its prefix.
    let (status, _, body) = device("127.0.0.1", to, "GET", "/logs/?limit=1", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)[0]["filePath"], "/logs/a.txt");

    // PUT with no file name writes the group's defaultPath (`:time` expanded).
    let (status, _, _) = device("127.0.0.1", to, "PUT", "/", &text, b"default").await;
    assert_eq!(status, 201);
    let (_, _, body) = api(
        &run,
        "GET",
        &format!("/v1/files/private/{SIM1}/default/"),
        &[],
        b"",
    )
    .await;
    let listed = names(&json_of(&body));
    assert_eq!(listed.len(), 1, "{listed:?}");
    let stem = listed[0].strip_suffix(".txt").unwrap();
    assert!(
        stem.len() >= 13 && stem.bytes().all(|b| b.is_ascii_digit()),
        "{stem}"
    );

    // The operator hands a file to a device.
    let (status, _, _) = api(
        &run,
        "PUT",
        &format!("/v1/files/private/{SIM2}/config.json"),
        &[("Content-Type", "application/json")],
        br#"{"interval":60}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, headers, body) = device("127.0.9.2", to, "GET", "/config.json", &[], b"").await;
    assert_eq!((status, body.as_slice()), (200, &br#"{"interval":60}"#[..]));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let (status, _, _) = api(&run, "PUT", "/v1/files/public/x", &[], b"x").await;
    assert_eq!(status, 400, "public is read-only");
    let (status, _, _) = api(&run, "GET", "/v1/files/secret/x", &[], b"").await;
    assert_eq!(status, 404, "no such scope");

    // Deleting: a non-empty directory is refused (SORACOM: 400).
    let (status, _, body) = api(&run, "DELETE", &dir, &[], b"").await;
    assert_eq!(
        (status, json_of(&body)["code"].as_str()),
        (400, Some("not_empty"))
    );
    let (status, _, _) = device("127.0.0.1", to, "DELETE", "/logs/sub/d.txt", &[], b"").await;
    assert_eq!(status, 204);
    let (status, _, _) = api(&run, "DELETE", &format!("{dir}b.txt"), &[], b"").await;
    assert_eq!(status, 204);
    let (status, _, _) = device("127.0.0.1", to, "GET", "/logs/b.txt", &[], b"").await;
    assert_eq!(status, 404);
    let (status, _, _) = device("127.0.0.1", to, "DELETE", "/logs/b.txt", &[], b"").await;
    assert_eq!(status, 404);

    // The size limit: declared, and counted while a chunked body arrives.
    let big = vec![b'x'; 1001];
    let (status, _, body) = device("127.0.0.1", to, "PUT", "/big", &text, &big).await;
    assert_eq!(
        (status, json_of(&body)["code"].as_str()),
        (413, Some("too_large"))
    );
    assert_eq!(put_chunked("127.0.0.1", to, "/big", &big).await, 413);
    assert_eq!(put_chunked("127.0.0.1", to, "/ok", &big[..1000]).await, 201);
    let (status, _, _) = device("127.0.0.1", to, "GET", "/big", &[], b"").await;
    assert_eq!(status, 404, "nothing of a refused upload is kept");

    // The disk budget: uploads are refused once it is used up, and
    // accepted again when files are deleted.
    let mut stored = Vec::new();
    let refused = loop {
        let path = format!("/fill/{}", stored.len());
        let (status, _, body) = device("127.0.0.1", to, "PUT", &path, &text, &big[..900]).await;
        if status != 201 {
            break (status, json_of(&body));
        }
        stored.push(path);
        assert!(stored.len() < 10, "budget never reached");
    };
    assert_eq!(refused.0, 507);
    assert_eq!(refused.1["code"], "budget_exceeded");
    assert!(!stored.is_empty());
    let (status, _, _) = device("127.0.0.1", to, "DELETE", &stored[0], &[], b"").await;
    assert_eq!(status, 204);
    let (status, _, _) = device("127.0.0.1", to, "PUT", "/fill/again", &text, &big[..900]).await;
    assert_eq!(status, 201);
    assert!(
        metric(&run, "simgate_harvest_files_stored_bytes", &[]).await <= 8000.0,
        "within the budget"
    );

    // Refusals: Harvest Files off for the group; an unknown source.
    let (status, _, body) = device("127.0.9.3", to, "PUT", "/x", &text, b"x").await;
    assert_eq!(
        (status, json_of(&body)["code"].as_str()),
        (403, Some("harvest_files_disabled"))
    );
    let (status, headers, body) = device("127.0.9.9", to, "PUT", "/x", &text, b"x").await;
    assert_eq!(
        (status, json_of(&body)["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(header(&headers, "connection"), Some("close"));
    let (status, headers, _) = device("127.0.0.1", to, "PATCH", "/x", &text, b"x").await;
    assert_eq!(status, 405);
    assert!(header(&headers, "allow").unwrap().contains("PUT"));

    // Counted by side, method and status.
    let created = metric(
        &run,
        "simgate_harvest_files_requests_total",
        &["side=\"device\"", "method=\"PUT\"", "status=\"201\""],
    )
    .await;
    assert!(created >= 8.0, "{created}");
    let escapes = metric(
        &run,
        "simgate_harvest_files_refused_total",
        &["side=\"device\"", "reason=\"path_escape\""],
    )
    .await;
    assert_eq!(escapes, 4.0);
    let op_deletes = metric(
        &run,
        "simgate_harvest_files_requests_total",
        &["side=\"operator\"", "method=\"DELETE\"", "status=\"204\""],
    )
    .await;
    assert_eq!(op_deletes, 1.0);

    // Nothing was written outside the store's directory.
    let mut top: Vec<String> = std::fs::read_dir(run.dir.path().join("harvest-files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, [".tmp", "private", "public"]);
    assert!(std::fs::read_dir(run.dir.path().join("harvest-files/.tmp"))
        .unwrap()
        .next()
        .is_none());
}

/// Files survive a restart: the store is on disk, and its byte count is
/// taken again at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_survive_a_restart() {
    let run = start(BODY).await;
    let to = run.server.bound.http.unwrap();
    let (status, _, _) = device("127.0.0.1", to, "PUT", "/keep.bin", &[], &[0, 1, 2, 255]).await;
    assert_eq!(status, 201);
    let stored = metric(&run, "simgate_harvest_files_stored_bytes", &[]).await;
    assert!(stored > 4.0);
    let Running { server, dir } = run;
    server.shutdown().await;
    let text = format!(
        "data_dir = {:?}\n{LISTEN_ANY_PORT}\n{BODY}",
        dir.path().display().to_string()
    );
    let config = simgate_control::Config::parse(&text).unwrap();
    let run = Running {
        server: simgate::server::start(config).await.unwrap(),
        dir,
    };
    let to = run.server.bound.http.unwrap();
    let (status, headers, body) = device("127.0.0.1", to, "GET", "/keep.bin", &[], b"").await;
    assert_eq!((status, body.as_slice()), (200, &[0u8, 1, 2, 255][..]));
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        metric(&run, "simgate_harvest_files_stored_bytes", &[]).await,
        stored
    );
}
