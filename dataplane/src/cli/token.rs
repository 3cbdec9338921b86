//! `simgate token …`: `/v1/tokens`, the API's bearer tokens.

use http::Method;
use serde::Deserialize;
use serde_json::json;

use super::client::path;
use super::table::{clean, opt, Table};
use super::{note, raw, when, CliError, Ctx};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// List tokens (names only; a token is shown once, when made).
    List,
    /// Make a token and print it (only this once) on stdout.
    Create { name: String },
    /// Revoke a token: it stops working at once. The last one cannot be
    /// revoked.
    Revoke { name: String },
}

/// A token as listed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenInfo {
    pub name: Option<String>,
    pub created_at: Option<u64>,
}

/// A new token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Created {
    pub name: Option<String>,
    pub token: Option<String>,
}

/// Tokens as a table.
pub fn tokens_table(tokens: &[TokenInfo]) -> String {
    let mut t = Table::new(&["NAME", "CREATED"]);
    for k in tokens {
        t.row(vec![opt(k.name.as_deref()), when(k.created_at)]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, command: TokenCommand) -> Result<String, CliError> {
    match command {
        TokenCommand::List => {
            let r = ctx.get(&path(&["v1", "tokens"])).await?;
            ctx.show(&r, "a list of tokens", |t: &Vec<TokenInfo>| tokens_table(t))
        }
        TokenCommand::Create { name } => {
            let r = ctx
                .send(
                    Method::POST,
                    &path(&["v1", "tokens"]),
                    Some(&json!({ "name": name })),
                )
                .await?;
            if ctx.json {
                return Ok(raw(&r));
            }
            let created: Created = r.json("a new token")?;
            let token = created
                .token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| CliError::Transport("the API made no token".into()))?;
            // Only the token on stdout, so `simgate token create ci > ci.token`
            // captures exactly it.
            note(&format!(
                "token {} created; it is shown only this once (use it as SIMGATE_TOKEN):",
                clean(created.name.as_deref().unwrap_or(&name))
            ));
            Ok(format!("{}\n", clean(&token)))
        }
        TokenCommand::Revoke { name } => {
            ctx.send(Method::DELETE, &path(&["v1", "tokens", &name]), None)
                .await?;
            Ok(ctx.done(format!("revoked token {}", clean(&name))))
        }
    }
}
