//! The `simgate sim|group|credential|session|token` commands against a real
//! simgate: the server runs in-process on free ports, the commands are the
//! built binary, run the way a person would (`--api`, `--data-dir`), and
//! their effects are checked where they matter (a device's traffic).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use tokio::process::Command;

const BODY: &str = r#"
[[operators]]
id = "OP0000000001"
"#;

const IMSI: &str = "001010000000555";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

use common::CliOut as Out;

/// Runs `simgate ARGS` against this run's API and data dir, with `env` added.
async fn simgate_env(run: &Running, args: &[&str], env: &[(&str, &str)]) -> Out {
    simgate_cli(run.server.bound.api.unwrap(), run.dir.path(), args, env).await
}

async fn simgate(run: &Running, args: &[&str]) -> Out {
    simgate_env(run, args, &[]).await
}

/// One Harvest upload from 127.0.0.1 over the HTTP entry; the status.
async fn harvest_post(run: &Running, body: &str) -> u16 {
    let (status, _, _) = http_request(
        LOCALHOST,
        run.server.bound.http.unwrap(),
        "POST",
        "harvest.localhost",
        "/",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    status
}

/// The data row of a one-SIM table, split on blanks.
fn row(out: &Out) -> Vec<String> {
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("IMSI"), "{}", out.stdout);
    lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_sets_up_a_sim_and_reads_its_data() {
    let run = start(BODY).await;

    // A group with Harvest on.
    let out = simgate(&run, &["group", "create", "demo", "--name", "Demo"])
        .await
        .ok();
    assert!(out.stdout.contains("Group"), "{}", out.stdout);
    assert!(out.stdout.contains("demo"), "{}", out.stdout);
    let out = simgate(
        &run,
        &["group", "set", "demo", "SoracomHarvest", "enabled=true"],
    )
    .await
    .ok();
    assert!(
        out.stdout.contains("  SoracomHarvest.enabled = true"),
        "{}",
        out.stdout
    );
    let out = simgate(&run, &["group", "list"]).await.ok();
    assert!(out.stdout.starts_with("GROUP"), "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("demo ") && l.contains("Demo") && l.contains("SoracomHarvest")),
        "{}",
        out.stdout
    );

    // A SIM, put in the group.
    let out = simgate(
        &run,
        &[
            "sim",
            "register",
            IMSI,
            "--imei",
            "353000000000555",
            "--tag",
            "name=sensor",
        ],
    )
    .await
    .ok();
    assert_eq!(
        row(&out),
        [
            IMSI,
            "active",
            "-",
            "353000000000555",
            "-",
            "-",
            "name=sensor"
        ]
    );
    let out = simgate(&run, &["sim", "set-group", IMSI, "demo"])
        .await
        .ok();
    assert_eq!(row(&out)[2], "demo");

    // Before its session, its traffic is refused.
    assert_eq!(harvest_post(&run, r#"{"early":1}"#).await, 403);
    let out = simgate(&run, &["session", "bind", "127.0.0.1", IMSI])
        .await
        .ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("127.0.0.1") && l.contains(IMSI) && l.ends_with("static")),
        "{}",
        out.stdout
    );
    let out = simgate(&run, &["session", "list", "--json"]).await.ok();
    assert_eq!(out.json()[0]["imsi"], IMSI);

    // Listing: a table with the SIM, and JSON that parses.
    let out = simgate(&run, &["sim", "list"]).await.ok();
    let header: Vec<&str> = out.stdout.lines().next().unwrap().split("  ").collect();
    assert_eq!(header[0], "IMSI", "{}", out.stdout);
    assert!(out.stdout.contains(IMSI), "{}", out.stdout);
    let out = simgate(&run, &["sim", "list", "--group", "demo", "--json"])
        .await
        .ok();
    let sims = out.json();
    assert_eq!(sims.as_array().unwrap().len(), 1, "{sims}");
    assert_eq!(sims[0]["imsi"], IMSI);
    assert_eq!(sims[0]["groupId"], "demo");
    let out = simgate(&run, &["sim", "list", "--status", "suspended", "--json"])
        .await
        .ok();
    assert_eq!(out.json(), serde_json::json!([]));

    // Tags: add two, remove one.
    let out = simgate(&run, &["sim", "tag", IMSI, "site=tokyo", "floor=3"])
        .await
        .ok();
    assert_eq!(row(&out)[6], "floor=3,name=sensor,site=tokyo");
    simgate(&run, &["sim", "untag", IMSI, "floor"]).await.ok();
    let out = simgate(&run, &["sim", "show", IMSI, "--json"]).await.ok();
    assert_eq!(
        out.json()["tags"],
        serde_json::json!({"name": "sensor", "site": "tokyo"})
    );
    let out = simgate(&run, &["sim", "show", IMSI]).await.ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("Group") && l.ends_with("demo")),
        "{}",
        out.stdout
    );

    // Data from the device, read back with the CLI.
    for i in 0..3 {
        assert_eq!(
            harvest_post(&run, &format!(r#"{{"temp":{}}}"#, 20 + i)).await,
            201
        );
    }
    let out = simgate(&run, &["sim", "data", IMSI, "--sort", "asc"])
        .await
        .ok();
    assert!(out.stdout.starts_with("TIME"), "{}", out.stdout);
    assert!(out.stdout.contains(r#"{"temp":20}"#), "{}", out.stdout);
    assert!(out.stdout.contains("application/json"), "{}", out.stdout);
    // One entry per page, every page followed.
    let out = simgate(
        &run,
        &[
            "sim", "data", IMSI, "--sort", "asc", "--limit", "1", "--all", "--json",
        ],
    )
    .await
    .ok();
    let entries = out.json();
    let contents: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [r#"{"temp":20}"#, r#"{"temp":21}"#, r#"{"temp":22}"#]
    );
    // One page only: the rest is announced on stderr.
    let out = simgate(&run, &["sim", "data", IMSI, "--limit", "1"])
        .await
        .ok();
    assert!(out.stdout.contains(r#"{"temp":22}"#), "{}", out.stdout);
    assert!(out.stderr.contains("--all"), "{}", out.stderr);
    let out = simgate(
        &run,
        &[
            "sim",
            "data",
            IMSI,
            "--from",
            "2000-01-01",
            "--to",
            "2000-01-02",
        ],
    )
    .await
    .ok();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);

    // Suspending takes effect at once; activating restores it.
    let out = simgate(&run, &["sim", "suspend", IMSI]).await.ok();
    assert_eq!(row(&out)[1], "suspended");
    assert_eq!(harvest_post(&run, r#"{"late":1}"#).await, 403);
    let out = simgate(&run, &["sim", "activate", IMSI]).await.ok();
    assert_eq!(row(&out)[1], "active");
    assert_eq!(harvest_post(&run, r#"{"back":1}"#).await, 201);

    // IMEI lock to the registered IMEI, then off again.
    let out = simgate(&run, &["sim", "imei-lock", IMSI]).await.ok();
    assert_eq!(row(&out)[5], "353000000000555");
    let out = simgate(&run, &["sim", "imei-unlock", IMSI]).await.ok();
    assert_eq!(row(&out)[5], "-");

    // A group with SIMs cannot go: the API's refusal, exit 1.
    let out = simgate(&run, &["group", "delete", "demo"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("(conflict, HTTP 409)"),
        "{}",
        out.stderr
    );

    // Unwinding.
    let out = simgate(&run, &["session", "unbind", "127.0.0.1"])
        .await
        .ok();
    assert_eq!(out.stdout, "unbound 127.0.0.1\n");
    assert_eq!(harvest_post(&run, r#"{"gone":1}"#).await, 403);
    let out = simgate(&run, &["sim", "unset-group", IMSI]).await.ok();
    assert_eq!(row(&out)[2], "-");
    simgate(
        &run,
        &["group", "unset", "demo", "SoracomHarvest", "enabled"],
    )
    .await
    .ok();
    let out = simgate(&run, &["group", "show", "demo", "--json"])
        .await
        .ok();
    assert!(
        out.json()["configuration"]["SoracomHarvest"]
            .get("enabled")
            .is_none_or(|v| v == false),
        "{}",
        out.stdout
    );
    let out = simgate(&run, &["group", "delete", "demo"]).await.ok();
    assert_eq!(out.stdout, "deleted group demo\n");
    let out = simgate(&run, &["sim", "terminate", IMSI]).await.ok();
    assert_eq!(row(&out)[1], "terminated");

    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_print_the_api_message_and_exit_1() {
    let run = start(BODY).await;

    let out = simgate(&run, &["sim", "show", "001010000000999"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr.trim_end(),
        "error: subscriber 001010000000999 does not exist (not_found, HTTP 404)"
    );
    let out = simgate(&run, &["sim", "suspend", "001010000000999", "--json"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HTTP 404"), "{}", out.stderr);

    // Input the API rejects.
    let out = simgate(&run, &["sim", "register", "12"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HTTP 400"), "{}", out.stderr);
    let out = simgate(&run, &["group", "set", "nope", "NoSuchNamespace", "a=1"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);

    // Input caught before anything is sent: clap's usage error, status 2.
    let out = simgate(&run, &["group", "set", "demo", "SoracomHarvest"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = simgate(&run, &["sim", "tag", IMSI, "no-equals-sign"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = simgate(&run, &["sim", "data", IMSI, "--from", "yesterday"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    // A wrong token: the API's 401 and where the token came from.
    let out = simgate_env(&run, &["sim", "list"], &[("SIMGATE_TOKEN", "sgt_wrong")]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: the bearer token is not valid (invalid_token, HTTP 401)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("SIMGATE_TOKEN"), "{}", out.stderr);

    // No token at all: neither SIMGATE_TOKEN nor {data_dir}/api.token.
    std::fs::remove_file(run.dir.path().join("api.token")).unwrap();
    let out = simgate(&run, &["sim", "list"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("api.token"), "{}", out.stderr);
    assert!(out.stderr.contains("SIMGATE_TOKEN"), "{}", out.stderr);

    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_says_so() {
    let run = start(BODY).await;
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_simgate"));
    let out = cmd
        .args(["sim", "list", "--api", &dead, "--data-dir"])
        .arg(run.dir.path())
        .env_remove("SIMGATE_TOKEN")
        .env_remove("SIMGATE_API")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: cannot reach"), "{stderr}");
    assert!(stderr.contains(&dead), "{stderr}");
    assert!(stderr.contains("is simgate serve running?"), "{stderr}");
    assert!(stderr.contains("--api"), "{stderr}");

    // SIMGATE_API is the default for --api.
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["token", "list", "--data-dir"])
        .arg(run.dir.path())
        .env_remove("SIMGATE_TOKEN")
        .env(
            "SIMGATE_API",
            format!("http://{}", run.server.bound.api.unwrap()),
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8(out.stdout).unwrap().contains("default"));

    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_made_used_and_revoked() {
    let run = start(BODY).await;

    let out = simgate(&run, &["token", "create", "ci"]).await.ok();
    let ci = out.stdout.trim().to_owned();
    assert!(ci.starts_with("sgt_"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1, "only the token on stdout");
    assert!(out.stderr.contains("only this once"), "{}", out.stderr);

    // The new token works (SIMGATE_TOKEN wins over api.token).
    let out = simgate_env(&run, &["token", "list"], &[("SIMGATE_TOKEN", &ci)])
        .await
        .ok();
    let names: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["ci", "default"], "{}", out.stdout);
    assert!(!out.stdout.contains("sgt_"));
    let out = simgate(&run, &["token", "list", "--json"]).await.ok();
    assert_eq!(out.json().as_array().unwrap().len(), 2);

    // Same name again: refused.
    let out = simgate(&run, &["token", "create", "ci"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HTTP 409"), "{}", out.stderr);

    // Revoked: it stops working.
    let out = simgate(&run, &["token", "revoke", "ci"]).await.ok();
    assert_eq!(out.stdout, "revoked token ci\n");
    let out = simgate_env(&run, &["token", "list"], &[("SIMGATE_TOKEN", &ci)]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);

    // The last token stays.
    let out = simgate(&run, &["token", "revoke", "default"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("(last_token, HTTP 409)"),
        "{}",
        out.stderr
    );

    // --json shows the API's answer.
    let out = simgate(&run, &["token", "create", "ops", "--json"])
        .await
        .ok();
    let v = out.json();
    assert_eq!(v["name"], "ops");
    assert!(v["token"].as_str().unwrap().starts_with("sgt_"));

    run.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_take_the_secret_from_the_environment_and_never_show_it() {
    let run = start(BODY).await;
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    let out = simgate_env(
        &run,
        &[
            "credential",
            "set-aws",
            "kinesis-demo",
            "--access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
        ],
        &[("AWS_SECRET_ACCESS_KEY", secret)],
    )
    .await
    .ok();
    assert!(
        out.stdout.contains("AKIAIOSFODNN7EXAMPLE"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("created"), "{}", out.stderr);
    let cred = run
        .server
        .plane
        .credential(&simgate_control::CredentialId::parse("kinesis-demo").unwrap())
        .unwrap();
    let simgate_control::CredentialKind::Aws(aws) = &cred.value.kind else {
        panic!("{cred:?}")
    };
    assert_eq!(aws.secret_access_key.expose(), secret);

    // Without the flag or the variable: a usage error, nothing sent.
    let out = simgate(
        &run,
        &["credential", "set-aws", "x", "--access-key-id", "AKIA"],
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    for args in [
        &["credential", "list"][..],
        &["credential", "show", "kinesis-demo"],
        &["credential", "list", "--json"],
    ] {
        let out = simgate(&run, args).await.ok();
        assert!(out.stdout.contains("kinesis-demo"), "{}", out.stdout);
        assert!(!out.stdout.contains(secret), "{}", out.stdout);
    }

    // A Funnel destination using them, set with JSON values.
    simgate(&run, &["group", "create", "funnel"]).await.ok();
    let out = simgate(
        &run,
        &[
            "group",
            "set",
            "funnel",
            "SoracomFunnel",
            r#"destination={"provider":"aws","service":"kinesis","resourceUrl":"https://kinesis.ap-northeast-1.amazonaws.com/demo"}"#,
            "credentialsId=kinesis-demo",
            "enabled=true",
        ],
    )
    .await
    .ok();
    assert!(
        out.stdout
            .contains(r#"SoracomFunnel.credentialsId = "kinesis-demo""#),
        "{}",
        out.stdout
    );
    let out = simgate(&run, &["credential", "delete", "kinesis-demo"]).await;
    assert_eq!(out.code, 1, "in use: {}", out.stderr);
    assert!(out.stderr.contains("HTTP 409"), "{}", out.stderr);

    run.server.shutdown().await;
}
