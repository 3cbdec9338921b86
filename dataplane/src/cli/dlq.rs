//! `simgate dlq …`: `/v1/funnel/dead_letters`, the Funnel records that could
//! not be delivered (rejected by the sink, out of attempts, too old).

use base64::Engine as _;
use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::client::{path, with_query};
use super::table::{clean_max, opt, Table};
use super::{decode, note, raw, when, CliError, Ctx};

/// Largest page the API serves.
const MAX_PAGE: usize = 1000;
/// Details and data shown in a table are cut to this many columns.
const TEXT_COLUMNS: usize = 60;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first per destination (every page).
    List {
        #[command(flatten)]
        filter: Filter,
        /// Stop after this many dead letters.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Dead letters held per destination.
    Summary,
    /// Send dead letters again; those accepted leave the dead-letter store.
    Replay {
        #[command(flatten)]
        filter: Filter,
    },
    /// Delete dead letters for good (all of them unless filtered).
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Confirm: purged records cannot be recovered.
        #[arg(long)]
        yes: bool,
    },
}

/// Which dead letters a command is about.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only this destination (its id, as `simgate dlq summary` shows it).
    #[arg(long, value_name = "ID")]
    pub destination_id: Option<String>,
    /// Only this reason: rejected, attempts_exhausted, expired, too_large.
    #[arg(long)]
    pub reason: Option<String>,
}

impl Filter {
    fn pairs(&self) -> [(&'static str, Option<&str>); 2] {
        [
            ("destination_id", self.destination_id.as_deref()),
            ("reason", self.reason.as_deref()),
        ]
    }
}

/// A destination as the API shows it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Destination {
    pub service: Option<String>,
    pub resource_url: Option<String>,
}

/// One dead letter (lenient: what is missing shows as `-`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeadLetter {
    pub destination_id: Option<String>,
    pub time: Option<u64>,
    pub partition_key: Option<String>,
    pub data: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub attempts: Option<u32>,
}

impl DeadLetter {
    /// The record as text when it is UTF-8 (envelopes are JSON), else its
    /// base64 with a `base64:` prefix.
    fn data_text(&self) -> String {
        let Some(b64) = self.data.as_deref() else {
            return String::new();
        };
        match base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(text) => text,
            None => format!("base64:{b64}"),
        }
    }
}

/// One row of the summary.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SummaryRow {
    pub destination_id: Option<String>,
    pub destination: Option<Destination>,
    pub credentials_id: Option<String>,
    pub count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplayReport {
    replayed: u64,
    failed: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Purged {
    purged: u64,
}

/// Dead letters as a table.
pub fn letters_table(letters: &[DeadLetter]) -> String {
    let mut t = Table::new(&[
        "TIME",
        "DESTINATION ID",
        "REASON",
        "ATTEMPTS",
        "KEY",
        "DETAIL",
        "DATA",
    ]);
    for l in letters {
        t.row(vec![
            when(l.time),
            opt(l.destination_id.as_deref()),
            opt(l.reason.as_deref()),
            l.attempts.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            opt(l.partition_key.as_deref()),
            opt(Some(&clean_max(
                l.detail.as_deref().unwrap_or_default(),
                TEXT_COLUMNS,
            ))),
            opt(Some(&clean_max(&l.data_text(), TEXT_COLUMNS))),
        ]);
    }
    t.render()
}

/// The per-destination summary as a table.
pub fn summary_table(rows: &[SummaryRow]) -> String {
    let mut t = Table::new(&[
        "DESTINATION ID",
        "SERVICE",
        "RESOURCE URL",
        "CREDENTIALS",
        "COUNT",
    ]);
    for r in rows {
        let d = r.destination.as_ref();
        t.row(vec![
            opt(r.destination_id.as_deref()),
            opt(d.and_then(|d| d.service.as_deref())),
            opt(d.and_then(|d| d.resource_url.as_deref())),
            opt(r.credentials_id.as_deref()),
            r.count.map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ]);
    }
    t.render()
}

fn dlq_path(rest: &[&str]) -> String {
    let mut segments = vec!["v1", "funnel", "dead_letters"];
    segments.extend_from_slice(rest);
    path(&segments)
}

pub async fn run(ctx: &Ctx, command: DlqCommand) -> Result<String, CliError> {
    match command {
        DlqCommand::List { filter, limit } => {
            if limit == Some(0) {
                return Err(CliError::usage("--limit must be at least 1"));
            }
            let pages = ctx
                .all_pages(
                    &dlq_path(&[]),
                    &filter.pairs(),
                    MAX_PAGE,
                    limit,
                    "a list of dead letters",
                )
                .await?;
            if ctx.json {
                return Ok(pages.json());
            }
            Ok(letters_table(&decode::<DeadLetter>(
                pages.items,
                "a dead letter",
            )?))
        }
        DlqCommand::Summary => {
            let r = ctx.get(&dlq_path(&["summary"])).await?;
            ctx.show(&r, "a dead-letter summary", |rows: &Vec<SummaryRow>| {
                summary_table(rows)
            })
        }
        DlqCommand::Replay { filter } => {
            let mut body = Map::new();
            for (k, v) in [
                ("destinationId", filter.destination_id),
                ("reason", filter.reason),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), Value::String(v));
                }
            }
            // No filter: no body, which the API reads as "every dead letter".
            let body = (!body.is_empty()).then_some(Value::Object(body));
            let r = ctx
                .send(Method::POST, &dlq_path(&["replay"]), body.as_ref())
                .await?;
            let report: ReplayReport = r.json("a replay report")?;
            if report.failed > 0 {
                note(&format!(
                    "{} dead letters could not be replayed and stay in the store \
                     (see the server log)",
                    report.failed
                ));
            }
            if ctx.json {
                return Ok(raw(&r));
            }
            Ok(format!("replayed {} dead letters\n", report.replayed))
        }
        DlqCommand::Purge { filter, yes } => {
            if !yes {
                return Err(CliError::usage(
                    "purge deletes dead letters for good: add --yes \
                     (with --destination-id or --reason to purge only some)",
                ));
            }
            let r = ctx
                .send(
                    Method::DELETE,
                    &with_query(dlq_path(&[]), &filter.pairs()),
                    None,
                )
                .await?;
            ctx.show(&r, "a purge report", |p: &Purged| {
                format!("purged {} dead letters\n", p.purged)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn letters_show_reason_key_and_decoded_data() {
        let letters: Vec<DeadLetter> = serde_json::from_value(json!([
            {
                "destinationId": "0123abcd", "time": 1714566896789u64,
                "partitionKey": "001010000000001", "reason": "rejected",
                "detail": "ValidationException:\nbad", "attempts": 1,
                "data": base64::engine::general_purpose::STANDARD.encode(b"{\"i\":1}"),
                "destination": {"service": "kinesis", "resource_url": "https://k/s"}
            },
            {"data": "/wA=", "detail": "x".repeat(500)},
            {}
        ]))
        .unwrap();
        let out = letters_table(&letters);
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("TIME"));
        let first = lines.next().unwrap();
        assert!(
            first.contains("2024-05-01T12:34:56.789Z  0123abcd"),
            "{out}"
        );
        assert!(first.contains("rejected"), "{out}");
        assert!(first.contains("ValidationException:\\nbad"), "{out}");
        assert!(first.contains("{\"i\":1}"), "{out}");
        assert!(lines.next().unwrap().contains("base64:/wA="), "{out}");
        assert!(out.lines().all(|l| l.chars().count() < 250), "{out}");
    }

    #[test]
    fn summary_shows_destination_and_count() {
        let rows: Vec<SummaryRow> = serde_json::from_value(json!([{
            "destinationId": "0123abcd", "credentialsId": "c", "count": 3,
            "destination": {"provider": "aws", "service": "kinesis", "resource_url": "https://k/s"}
        }]))
        .unwrap();
        let out = summary_table(&rows);
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["0123abcd", "kinesis", "https://k/s", "c", "3"]);
    }
}
