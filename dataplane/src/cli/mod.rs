//! The `simgate sim|group|credential|session|token|authkey|dlq|endorse`
//! commands: a thin client of the control API of a running `simgate serve`.
//!
//! Each command is one or a few API calls; the answer is shown as an
//! aligned table (or `Field  value` lines), or with `--json` as the API
//! sent it. Errors go to stderr as `error: <API message> (<code>, HTTP
//! <status>)` and the exit status is 1. The token comes from
//! `SIMGATE_TOKEN`, else from `{data_dir}/api.token`; it is never taken as a
//! flag, so it does not end up in shell history.
//!
//! One file per resource; [`client`] speaks HTTP, [`table`] and [`time`]
//! format.

pub mod authkey;
pub mod client;
pub mod credential;
pub mod dlq;
pub mod endorse;
pub mod group;
pub mod session;
pub mod sim;
pub mod table;
pub mod time;
pub mod token;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use http::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use client::{CliError, Client, Reply};

/// Where `simgate serve` puts its control API unless told otherwise.
pub const DEFAULT_API: &str = "http://127.0.0.1:7070";
/// The environment variable holding the API token.
pub const TOKEN_ENV: &str = "SIMGATE_TOKEN";
/// The paging header of the API.
pub const NEXT_KEY: &str = "x-soracom-next-key";

/// Options every API command takes (before or after its subcommand).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "API options")]
pub struct ClientOpts {
    /// The control API of the running simgate.
    #[arg(
        long,
        global = true,
        env = "SIMGATE_API",
        default_value = DEFAULT_API,
        value_name = "URL"
    )]
    pub api: String,
    /// simgate's data directory: the API token is read from its api.token
    /// unless SIMGATE_TOKEN is set.
    #[arg(
        long,
        global = true,
        default_value = "./simgate-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The API commands, flattened into `simgate`'s own subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// SIMs: list, register, group, tags, status, IMEI lock, Harvest data.
    Sim(SimArgs),
    /// Groups and their service configuration (SoracomHarvest, SoracomFunnel, …).
    Group(GroupArgs),
    /// Credential sets for Funnel destinations (secrets are write-only).
    Credential(CredentialArgs),
    /// Sessions: which SIM holds which IP address.
    Session(SessionArgs),
    /// API tokens.
    Token(TokenArgs),
    /// SORACOM-style auth keys (for POST /v1/auth → X-Soracom-API-Key/Token).
    Authkey(AuthKeyArgs),
    /// Funnel dead letters: list, summary, replay, purge.
    Dlq(DlqArgs),
    /// Endorse signing keys: show, rotate.
    Endorse(EndorseArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: sim::SimCommand,
}

#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: group::GroupCommand,
}

#[derive(Debug, clap::Args)]
pub struct CredentialArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: credential::CredentialCommand,
}

#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: session::SessionCommand,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: token::TokenCommand,
}

#[derive(Debug, clap::Args)]
pub struct AuthKeyArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: authkey::AuthKeyCommand,
}

#[derive(Debug, clap::Args)]
pub struct EndorseArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: endorse::EndorseCommand,
}

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: dlq::DlqCommand,
}

/// Runs one API command to the end: prints its output, or the error, and
/// returns the exit status (0 done, 1 failed).
pub fn run(command: ClientCommand) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Transport(format!("cannot start the async runtime: {e}")))
        .and_then(|rt| rt.block_on(execute(command)));
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // `simgate sim list | head`: the reader had enough.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    note(&format!("error: cannot write the output: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            note(&format!("error: {e}"));
            if let Some(h) = e.hint() {
                note(&format!("hint: {h}"));
            }
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: ClientCommand) -> Result<String, CliError> {
    let opts = match &command {
        ClientCommand::Sim(a) => &a.opts,
        ClientCommand::Group(a) => &a.opts,
        ClientCommand::Credential(a) => &a.opts,
        ClientCommand::Session(a) => &a.opts,
        ClientCommand::Token(a) => &a.opts,
        ClientCommand::Authkey(a) => &a.opts,
        ClientCommand::Dlq(a) => &a.opts,
        ClientCommand::Endorse(a) => &a.opts,
    };
    let (token, source) = load_token(&opts.data_dir)?;
    let ctx = Ctx {
        client: Client::new(&opts.api, &token)?,
        json: opts.json,
    };
    let result = match command {
        ClientCommand::Sim(a) => sim::run(&ctx, a.command).await,
        ClientCommand::Group(a) => group::run(&ctx, a.command).await,
        ClientCommand::Credential(a) => credential::run(&ctx, a.command).await,
        ClientCommand::Session(a) => session::run(&ctx, a.command).await,
        ClientCommand::Token(a) => token::run(&ctx, a.command).await,
        ClientCommand::Authkey(a) => authkey::run(&ctx, a.command).await,
        ClientCommand::Dlq(a) => dlq::run(&ctx, a.command).await,
        ClientCommand::Endorse(a) => endorse::run(&ctx, a.command).await,
    };
    result.map_err(|e| match e {
        CliError::Api {
            status: 401,
            code,
            message,
            hint: None,
        } => CliError::Api {
            status: 401,
            code,
            message,
            hint: Some(format!(
                "the token came from {source}; is it a current token of the simgate at {}?",
                ctx.client.base()
            )),
        },
        other => other,
    })
}

/// The API token and where it came from: `SIMGATE_TOKEN`, else
/// `{data_dir}/api.token`.
fn load_token(data_dir: &Path) -> Result<(String, String), CliError> {
    if let Some(t) = std::env::var_os(TOKEN_ENV) {
        let t = t
            .into_string()
            .map_err(|_| CliError::usage(format!("{TOKEN_ENV} is not valid UTF-8")))?;
        let t = t.trim();
        if !t.is_empty() {
            return Ok((t.to_owned(), TOKEN_ENV.to_owned()));
        }
    }
    let path = data_dir.join("api.token");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::usage(format!(
            "no API token: cannot read {}: {e}; set {TOKEN_ENV}, or pass --data-dir with \
             the data_dir of simgate serve",
            path.display()
        ))
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(CliError::usage(format!(
            "no API token: {} is empty; set {TOKEN_ENV}",
            path.display()
        )));
    }
    Ok((t.to_owned(), path.display().to_string()))
}

/// What a command runs with.
pub struct Ctx {
    pub client: Client,
    /// Print JSON answers as sent instead of tables.
    pub json: bool,
}

impl Ctx {
    pub async fn get(&self, path: &str) -> Result<Reply, CliError> {
        self.client.call(Method::GET, path, None).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, CliError> {
        self.client.call(method, path, body).await
    }

    /// The answer shown: with `--json` the body as sent, else `render` of
    /// it decoded as `T` (`what` names `T` in the error if it is not).
    pub fn show<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        what: &str,
        render: impl FnOnce(&T) -> String,
    ) -> Result<String, CliError> {
        if self.json {
            Ok(raw(reply))
        } else {
            Ok(render(&reply.json::<T>(what)?))
        }
    }

    /// For answers without a body (204): `message` unless `--json`.
    pub fn done(&self, message: String) -> String {
        if self.json {
            String::new()
        } else {
            message + "\n"
        }
    }

    /// Every page of a listing that pages with `last_evaluated_key` and
    /// `x-soracom-next-key`, up to `max` items (`None`: all), `page` per
    /// request.
    pub async fn all_pages(
        &self,
        path: &str,
        filters: &[(&str, Option<&str>)],
        page: usize,
        max: Option<usize>,
        what: &str,
    ) -> Result<Pages, CliError> {
        let mut items: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        let mut bodies = Vec::new();
        loop {
            let want = max.map_or(page, |m| page.min(m.saturating_sub(items.len())));
            if want == 0 {
                break;
            }
            let limit = want.to_string();
            let mut pairs = filters.to_vec();
            pairs.push(("limit", Some(&limit)));
            pairs.push(("last_evaluated_key", after.as_deref()));
            let reply = self
                .get(&client::with_query(path.to_owned(), &pairs))
                .await?;
            let got: Vec<Value> = reply.json(what)?;
            let next = reply.header(NEXT_KEY).map(str::to_owned);
            let empty = got.is_empty();
            items.extend(got);
            bodies.push(reply);
            match next {
                // A key that does not move on would loop for ever.
                Some(k) if !empty && after.as_deref() != Some(k.as_str()) => after = Some(k),
                _ => break,
            }
        }
        let single = match bodies.as_slice() {
            [only] => Some(raw(only)),
            _ => None,
        };
        Ok(Pages { items, single })
    }
}

/// What [`Ctx::all_pages`] fetched.
pub struct Pages {
    pub items: Vec<Value>,
    /// The body as sent, when one page held everything.
    single: Option<String>,
}

impl Pages {
    /// For `--json`: the API's answer as sent when there was one page,
    /// else the pages joined into one array.
    pub fn json(&self) -> String {
        self.single
            .clone()
            .unwrap_or_else(|| json_array(&self.items))
    }
}

/// A body as sent, ending in a newline; nothing for an empty body.
pub fn raw(reply: &Reply) -> String {
    let mut s = String::from_utf8_lossy(&reply.body).into_owned();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// `items` as one JSON array (pages joined), for `--json`.
pub fn json_array(items: &[Value]) -> String {
    let mut s = Value::Array(items.to_vec()).to_string();
    s.push('\n');
    s
}

/// Decodes listed items one by one.
pub fn decode<T: DeserializeOwned>(items: Vec<Value>, what: &str) -> Result<Vec<T>, CliError> {
    items
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                CliError::Transport(format!("the API listed something that is not {what}: {e}"))
            })
        })
        .collect()
}

/// A line on stderr (failures to write it are ignored: nowhere to report).
pub fn note(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// `KEY=VALUE` (split at the first `=`; the key may not be empty).
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `KEY=VALUE` where VALUE is JSON when it parses as JSON, else a string:
/// `enabled=true` is the boolean, `name=demo` the string `"demo"`, and
/// `name='"123"'` the string `"123"`.
pub fn parse_setting(s: &str) -> Result<(String, Value), String> {
    let (k, v) = parse_pair(s)?;
    let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
    Ok((k, value))
}

/// Unix ms as shown in tables, [`table::NONE`] when absent.
pub fn when(ms: Option<u64>) -> String {
    ms.map_or_else(|| table::NONE.to_owned(), time::format_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_pair("a="), Ok(("a".into(), String::new())));
        assert!(parse_pair("=b").is_err());
        assert!(parse_pair("ab").is_err());
    }

    #[test]
    fn settings_are_json_when_they_parse_else_strings() {
        assert_eq!(
            parse_setting("enabled=true"),
            Ok(("enabled".into(), json!(true)))
        );
        assert_eq!(parse_setting("n=5"), Ok(("n".into(), json!(5))));
        assert_eq!(
            parse_setting("id=kinesis-demo"),
            Ok(("id".into(), json!("kinesis-demo")))
        );
        assert_eq!(parse_setting(r#"s="5""#), Ok(("s".into(), json!("5"))));
        assert_eq!(
            parse_setting(r#"destination={"service":"kinesis","resourceUrl":"https://k"}"#),
            Ok((
                "destination".into(),
                json!({"service":"kinesis","resourceUrl":"https://k"})
            ))
        );
        assert_eq!(parse_setting("x="), Ok(("x".into(), json!(""))));
    }

    #[test]
    fn tokens_come_from_the_data_dir_file_trimmed() {
        // SIMGATE_TOKEN is not touched here (tests share the environment);
        // the file path is what a plain run uses.
        if std::env::var_os(TOKEN_ENV).is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(load_token(dir.path()).is_err());
        std::fs::write(dir.path().join("api.token"), "  \n").unwrap();
        assert!(load_token(dir.path()).is_err());
        std::fs::write(dir.path().join("api.token"), "sgt_abc\n").unwrap();
        let (t, from) = load_token(dir.path()).unwrap();
        assert_eq!(t, "sgt_abc");
        assert!(from.ends_with("api.token"), "{from}");
    }
}
