//! `simgate credential …`: `/v1/credentials`. Secrets go in and never come
//! back out: the API shows only the access key id.

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::path;
use super::table::{self, clean, opt, Table};
use super::{when, CliError, Ctx};

#[derive(Debug, clap::Subcommand)]
pub enum CredentialCommand {
    /// List credential sets (without secrets).
    List,
    /// Show a credential set (without its secret).
    Show { id: String },
    /// Delete a credential set no group's Funnel uses.
    Delete { id: String },
    /// Create or replace an AWS credential set (Kinesis, Firehose).
    SetAws {
        id: String,
        #[arg(long)]
        access_key_id: String,
        /// Leave out to take it from AWS_SECRET_ACCESS_KEY, so it is not in
        /// shell history.
        #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
        secret_access_key: String,
        /// For temporary credentials.
        #[arg(long)]
        session_token: Option<String>,
    },
}

/// A credential set as listed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Credential {
    pub credentials_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub description: Option<String>,
    pub credentials: Option<Public>,
    /// Unix ms (`createdAt` from simgate before 0.2).
    #[serde(alias = "createdAt")]
    pub create_date_time: Option<u64>,
    #[serde(alias = "lastModifiedAt")]
    pub update_date_time: Option<u64>,
}

/// The non-secret part.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Public {
    pub access_key_id: Option<String>,
}

impl Credential {
    fn access_key_id(&self) -> Option<&str> {
        self.credentials.as_ref()?.access_key_id.as_deref()
    }
}

/// Credential sets as a table.
pub fn credentials_table(creds: &[Credential]) -> String {
    let mut t = Table::new(&["CREDENTIALS", "TYPE", "ACCESS KEY ID", "MODIFIED"]);
    for c in creds {
        t.row(vec![
            opt(c.credentials_id.as_deref()),
            opt(c.kind.as_deref()),
            opt(c.access_key_id()),
            when(c.update_date_time),
        ]);
    }
    t.render()
}

/// One credential set, field by field.
pub fn credential_fields(c: &Credential) -> String {
    table::fields(&[
        ("Credentials", opt(c.credentials_id.as_deref())),
        ("Type", opt(c.kind.as_deref())),
        ("Access key id", opt(c.access_key_id())),
        ("Description", opt(c.description.as_deref())),
        ("Created", when(c.create_date_time)),
        ("Modified", when(c.update_date_time)),
    ])
}

fn credential_path(id: &str) -> String {
    path(&["v1", "credentials", id])
}

pub async fn run(ctx: &Ctx, command: CredentialCommand) -> Result<String, CliError> {
    match command {
        CredentialCommand::List => {
            let r = ctx.get(&path(&["v1", "credentials"])).await?;
            ctx.show(&r, "a list of credentials", |c: &Vec<Credential>| {
                credentials_table(c)
            })
        }
        CredentialCommand::Show { id } => {
            let r = ctx.get(&credential_path(&id)).await?;
            ctx.show(&r, "credentials", credential_fields)
        }
        CredentialCommand::Delete { id } => {
            ctx.send(Method::DELETE, &credential_path(&id), None)
                .await?;
            Ok(ctx.done(format!("deleted credentials {}", clean(&id))))
        }
        CredentialCommand::SetAws {
            id,
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            if access_key_id.is_empty() || secret_access_key.is_empty() {
                return Err(CliError::usage(
                    "give --access-key-id and --secret-access-key (or AWS_SECRET_ACCESS_KEY)",
                ));
            }
            let mut creds = Map::new();
            creds.insert("accessKeyId".into(), json!(access_key_id));
            creds.insert("secretAccessKey".into(), json!(secret_access_key));
            if let Some(t) = session_token {
                creds.insert("sessionToken".into(), json!(t));
            }
            let body = json!({ "type": "aws-credentials", "credentials": Value::Object(creds) });
            let r = ctx
                .send(Method::PUT, &credential_path(&id), Some(&body))
                .await?;
            let verb = if r.status.as_u16() == 201 {
                "created"
            } else {
                "replaced"
            };
            let shown = ctx.show(&r, "credentials", |c: &Credential| {
                credentials_table(std::slice::from_ref(c))
            })?;
            if !ctx.json {
                super::note(&format!("{verb} credentials {}", clean(&id)));
            }
            Ok(shown)
        }
    }
}
