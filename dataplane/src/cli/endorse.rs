//! `simgate endorse …`: `/v1/endorse/keys`, Endorse's signing keys.

use http::Method;
use serde::Deserialize;

use super::client::path;
use super::table::opt;
use super::{CliError, Ctx};

#[derive(Debug, clap::Subcommand)]
pub enum EndorseCommand {
    /// Show the signing key's id and the previous (still published) one.
    Keys,
    /// Make a new signing key. The current one stays published, so tokens
    /// it signed still verify; the one before it is withdrawn (rotate again
    /// only after the longest tokenTimeoutSeconds has passed).
    Rotate,
}

/// The keys as the API shows them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Keys {
    pub current: Option<String>,
    pub previous: Option<String>,
}

fn render(k: &Keys) -> String {
    format!(
        "Current   {}\nPrevious  {}\n",
        opt(k.current.as_deref()),
        opt(k.previous.as_deref())
    )
}

pub async fn run(ctx: &Ctx, command: EndorseCommand) -> Result<String, CliError> {
    let keys = path(&["v1", "endorse", "keys"]);
    let r = match command {
        EndorseCommand::Keys => ctx.get(&keys).await?,
        EndorseCommand::Rotate => {
            ctx.send(
                Method::POST,
                &path(&["v1", "endorse", "keys", "rotate"]),
                None,
            )
            .await?
        }
    };
    ctx.show(&r, "the Endorse keys", render)
}
