//! `simgate authkey …`: `/v1/operators/{operator_id}/auth_keys`, the
//! SORACOM-style auth keys a SORACOM client exchanges at `POST /v1/auth`
//! for an API key and token.

use http::Method;
use serde::Deserialize;

use super::client::path;
use super::table::{clean, fields, Table};
use super::{note, raw, when, CliError, Ctx};

/// The operator of the embedded default configuration.
pub const DEFAULT_OPERATOR: &str = "OP0000000001";

/// Which operator's keys (`OP` and 10 digits, as in the configuration file).
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorOpt {
    #[arg(
        long,
        env = "SIMGATE_OPERATOR",
        default_value = DEFAULT_OPERATOR,
        value_name = "OPERATOR_ID"
    )]
    pub operator: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuthKeyCommand {
    /// List auth keys (ids and times; a secret is shown once, when made).
    List(OperatorOpt),
    /// Make an auth key and print its id and secret (only this once).
    Create(OperatorOpt),
    /// Delete an auth key: it, and the API keys made with it, stop working
    /// at once.
    Delete {
        auth_key_id: String,
        #[command(flatten)]
        operator: OperatorOpt,
    },
}

/// An auth key as listed (SORACOM's `AuthKeyResponse`; times in seconds).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthKeyInfo {
    pub auth_key_id: Option<String>,
    pub create_date_time: Option<u64>,
    pub last_used_date_time: Option<u64>,
}

/// A new auth key.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Created {
    pub auth_key_id: Option<String>,
    pub auth_key: Option<String>,
}

fn ms(seconds: Option<u64>) -> Option<u64> {
    seconds.map(|s| s.saturating_mul(1000))
}

/// Auth keys as a table.
pub fn auth_keys_table(keys: &[AuthKeyInfo]) -> String {
    let mut t = Table::new(&["AUTH KEY ID", "CREATED", "LAST USED"]);
    for k in keys {
        t.row(vec![
            clean(k.auth_key_id.as_deref().unwrap_or("-")),
            when(ms(k.create_date_time)),
            when(ms(k.last_used_date_time)),
        ]);
    }
    t.render()
}

fn keys_path(operator: &str) -> String {
    path(&["v1", "operators", operator, "auth_keys"])
}

pub async fn run(ctx: &Ctx, command: AuthKeyCommand) -> Result<String, CliError> {
    match command {
        AuthKeyCommand::List(op) => {
            let r = ctx.get(&keys_path(&op.operator)).await?;
            ctx.show(&r, "a list of auth keys", |k: &Vec<AuthKeyInfo>| {
                auth_keys_table(k)
            })
        }
        AuthKeyCommand::Create(op) => {
            let r = ctx
                .send(Method::POST, &keys_path(&op.operator), None)
                .await?;
            if ctx.json {
                return Ok(raw(&r));
            }
            let created: Created = r.json("a new auth key")?;
            let (Some(id), Some(secret)) = (
                created.auth_key_id.filter(|s| !s.is_empty()),
                created.auth_key.filter(|s| !s.is_empty()),
            ) else {
                return Err(CliError::Transport("the API made no auth key".into()));
            };
            note(&format!(
                "auth key created for {}; its secret is shown only this once \
                 (POST /v1/auth with authKeyId and authKey):",
                clean(&op.operator)
            ));
            Ok(fields(&[
                ("authKeyId", clean(&id)),
                ("authKey", clean(&secret)),
            ]))
        }
        AuthKeyCommand::Delete {
            auth_key_id,
            operator,
        } => {
            let p = path(&[
                "v1",
                "operators",
                &operator.operator,
                "auth_keys",
                &auth_key_id,
            ]);
            ctx.send(Method::DELETE, &p, None).await?;
            Ok(ctx.done(format!("deleted auth key {}", clean(&auth_key_id))))
        }
    }
}
