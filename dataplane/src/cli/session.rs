//! `simgate session …`: `/v1/sessions`, which SIM holds which IP address.

use std::net::IpAddr;

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::path;
use super::table::{opt, Table};
use super::{CliError, Ctx};

#[derive(Debug, clap::Subcommand)]
pub enum SessionCommand {
    /// List sessions (static and learned from RADIUS).
    List,
    /// Bind an IP address to a SIM (a static session, kept across restarts).
    Bind {
        ip: IpAddr,
        imsi: String,
        #[arg(long)]
        imei: Option<String>,
        #[arg(long)]
        msisdn: Option<String>,
    },
    /// Remove the session of an IP address.
    Unbind { ip: IpAddr },
}

/// A session as the API shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Session {
    pub ip: Option<String>,
    pub imsi: Option<String>,
    pub imei: Option<String>,
    pub msisdn: Option<String>,
    pub source: Option<String>,
}

/// Sessions as a table.
pub fn sessions_table(sessions: &[Session]) -> String {
    let mut t = Table::new(&["IP", "IMSI", "IMEI", "MSISDN", "SOURCE"]);
    for s in sessions {
        t.row(vec![
            opt(s.ip.as_deref()),
            opt(s.imsi.as_deref()),
            opt(s.imei.as_deref()),
            opt(s.msisdn.as_deref()),
            opt(s.source.as_deref()),
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, command: SessionCommand) -> Result<String, CliError> {
    match command {
        SessionCommand::List => {
            let r = ctx.get(&path(&["v1", "sessions"])).await?;
            ctx.show(&r, "a list of sessions", |s: &Vec<Session>| {
                sessions_table(s)
            })
        }
        SessionCommand::Bind {
            ip,
            imsi,
            imei,
            msisdn,
        } => {
            let mut body = Map::new();
            body.insert("imsi".into(), json!(imsi));
            if let Some(i) = imei {
                body.insert("imei".into(), json!(i));
            }
            if let Some(m) = msisdn {
                body.insert("msisdn".into(), json!(m));
            }
            let r = ctx
                .send(
                    Method::PUT,
                    &path(&["v1", "sessions", &ip.to_string()]),
                    Some(&Value::Object(body)),
                )
                .await?;
            ctx.show(&r, "a session", |s: &Session| {
                sessions_table(std::slice::from_ref(s))
            })
        }
        SessionCommand::Unbind { ip } => {
            ctx.send(
                Method::DELETE,
                &path(&["v1", "sessions", &ip.to_string()]),
                None,
            )
            .await?;
            Ok(ctx.done(format!("unbound {ip}")))
        }
    }
}
