//! `simgate sim …`: `/v1/subscribers` and the Harvest Data query.

use std::collections::BTreeMap;

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::{path, with_query};
use super::table::{self, clean, clean_max, opt, Table};
use super::{decode, note, parse_pair, raw, when, CliError, Ctx, NEXT_KEY};

/// Largest page the API serves (SIMs and Harvest entries alike).
const MAX_PAGE: usize = 1000;
/// Harvest content shown in a table is cut to this many columns.
const CONTENT_COLUMNS: usize = 100;

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// List SIMs in IMSI order (every page).
    List {
        /// Only SIMs in this group.
        #[arg(long)]
        group: Option<String>,
        /// Only SIMs in these states, `|`-separated (e.g. `active|ready`).
        #[arg(long)]
        status: Option<String>,
        /// Only SIMs with this tag (and value).
        #[arg(long, value_name = "NAME[=VALUE]")]
        tag: Option<String>,
        /// Stop after this many SIMs.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one SIM.
    Show { imsi: String },
    /// Register a SIM (status active unless --status says otherwise).
    Register {
        imsi: String,
        #[arg(long)]
        imei: Option<String>,
        #[arg(long)]
        msisdn: Option<String>,
        #[arg(long)]
        sim_id: Option<String>,
        /// Put it in this group.
        #[arg(long)]
        group: Option<String>,
        /// A tag; repeat for more.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
        /// ready, active, inactive, standby or suspended.
        #[arg(long)]
        status: Option<String>,
    },
    /// Delete a SIM and its static sessions.
    Delete { imsi: String },
    /// Put a SIM in a group.
    SetGroup { imsi: String, group: String },
    /// Take a SIM out of its group.
    UnsetGroup { imsi: String },
    /// Add or replace tags (others are kept).
    Tag {
        imsi: String,
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
    },
    /// Remove one tag.
    Untag { imsi: String, name: String },
    /// Activate a SIM.
    Activate { imsi: String },
    /// Deactivate a SIM (its traffic is refused).
    Deactivate { imsi: String },
    /// Suspend a SIM (its traffic is refused).
    Suspend { imsi: String },
    /// Terminate a SIM. Final: it cannot be activated again.
    Terminate { imsi: String },
    /// Lock a SIM to one device: to IMEI, else to the IMEI it is registered
    /// with or its session reported.
    ImeiLock { imsi: String, imei: Option<String> },
    /// Remove a SIM's IMEI lock.
    ImeiUnlock { imsi: String },
    /// Harvest data of a SIM, newest first unless --sort asc.
    Data {
        imsi: String,
        /// From this time: Unix ms, YYYY-MM-DD or RFC 3339.
        #[arg(long, value_parser = super::time::parse_time)]
        from: Option<u64>,
        /// Up to this time (default now): Unix ms, YYYY-MM-DD or RFC 3339.
        #[arg(long, value_parser = super::time::parse_time)]
        to: Option<u64>,
        #[arg(long, value_enum)]
        sort: Option<Sort>,
        /// Entries per page, 1 to 1000 (the API's default is 10).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Sort {
    Asc,
    Desc,
}

impl Sort {
    fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// A SIM as the API shows it (lenient: what is missing shows as `-`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sim {
    pub imsi: Option<String>,
    pub imei: Option<String>,
    pub msisdn: Option<String>,
    pub sim_id: Option<String>,
    pub operator_id: Option<String>,
    pub group_id: Option<String>,
    pub status: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub imei_lock: Option<ImeiLock>,
    pub session_status: Option<SessionStatus>,
    /// Unix ms.
    pub created_time: Option<u64>,
    pub last_modified_time: Option<u64>,
}

/// SORACOM's `sessionStatus`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionStatus {
    pub online: bool,
    pub ue_ip_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImeiLock {
    pub imei: Option<String>,
}

impl Sim {
    fn session(&self) -> String {
        match &self.session_status {
            Some(SessionStatus {
                online: true,
                ue_ip_address,
            }) => format!("online {}", opt(ue_ip_address.as_deref())),
            Some(_) => "offline".to_owned(),
            None => table::NONE.to_owned(),
        }
    }

    fn lock(&self) -> Option<&str> {
        self.imei_lock.as_ref().and_then(|l| l.imei.as_deref())
    }

    fn tags(&self) -> String {
        self.tags
            .as_ref()
            .map_or_else(|| table::NONE.to_owned(), table::tags)
    }
}

/// One Harvest entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Entry {
    pub time: Option<u64>,
    pub content_type: Option<String>,
    pub content: Option<String>,
    pub content_encoding: Option<String>,
}

const SIM_COLUMNS: [&str; 7] = [
    "IMSI",
    "STATUS",
    "GROUP",
    "IMEI",
    "MSISDN",
    "IMEI LOCK",
    "TAGS",
];

/// SIMs as a table.
pub fn sims_table(sims: &[Sim]) -> String {
    let mut t = Table::new(&SIM_COLUMNS);
    for s in sims {
        t.row(vec![
            opt(s.imsi.as_deref()),
            opt(s.status.as_deref()),
            opt(s.group_id.as_deref()),
            opt(s.imei.as_deref()),
            opt(s.msisdn.as_deref()),
            opt(s.lock()),
            s.tags(),
        ]);
    }
    t.render()
}

/// One SIM, field by field.
pub fn sim_fields(s: &Sim) -> String {
    table::fields(&[
        ("IMSI", opt(s.imsi.as_deref())),
        ("Status", opt(s.status.as_deref())),
        ("Group", opt(s.group_id.as_deref())),
        ("IMEI", opt(s.imei.as_deref())),
        ("MSISDN", opt(s.msisdn.as_deref())),
        ("SIM ID", opt(s.sim_id.as_deref())),
        ("Operator", opt(s.operator_id.as_deref())),
        ("IMEI lock", opt(s.lock())),
        ("Tags", s.tags()),
        ("Session", s.session()),
        ("Created", when(s.created_time)),
        ("Modified", when(s.last_modified_time)),
    ])
}

/// Harvest entries as a table.
pub fn entries_table(entries: &[Entry]) -> String {
    let mut t = Table::new(&["TIME", "CONTENT TYPE", "CONTENT"]);
    for e in entries {
        let content = e.content.as_deref().unwrap_or_default();
        let content = match e.content_encoding.as_deref() {
            Some(enc) => format!("{}:{}", clean(enc), content),
            None => content.to_owned(),
        };
        t.row(vec![
            when(e.time),
            opt(e.content_type.as_deref()),
            clean_max(&content, CONTENT_COLUMNS),
        ]);
    }
    t.render()
}

fn one_sim(ctx: &Ctx, reply: &super::Reply) -> Result<String, CliError> {
    ctx.show(reply, "a SIM", |s: &Sim| {
        sims_table(std::slice::from_ref(s))
    })
}

fn sim_path(imsi: &str, rest: &[&str]) -> String {
    let mut segments = vec!["v1", "subscribers", imsi];
    segments.extend_from_slice(rest);
    path(&segments)
}

pub async fn run(ctx: &Ctx, command: SimCommand) -> Result<String, CliError> {
    match command {
        SimCommand::List {
            group,
            status,
            tag,
            limit,
        } => {
            if limit == Some(0) {
                return Err(CliError::usage("--limit must be at least 1"));
            }
            let (tag_name, tag_value) = match tag.as_deref().map(|t| t.split_once('=')) {
                None => (None, None),
                Some(Some((n, v))) => (Some(n), Some(v)),
                Some(None) => (tag.as_deref(), None),
            };
            let pages = ctx
                .all_pages(
                    &path(&["v1", "subscribers"]),
                    &[
                        ("group_id", group.as_deref()),
                        ("status_filter", status.as_deref()),
                        ("tag_name", tag_name),
                        ("tag_value", tag_value),
                    ],
                    MAX_PAGE,
                    limit,
                    "a list of SIMs",
                )
                .await?;
            if ctx.json {
                return Ok(pages.json());
            }
            Ok(sims_table(&decode::<Sim>(pages.items, "a SIM")?))
        }
        SimCommand::Show { imsi } => {
            let r = ctx.get(&sim_path(&imsi, &[])).await?;
            ctx.show(&r, "a SIM", sim_fields)
        }
        SimCommand::Register {
            imsi,
            imei,
            msisdn,
            sim_id,
            group,
            tags,
            status,
        } => {
            let mut body = Map::new();
            for (k, v) in [
                ("imei", imei),
                ("msisdn", msisdn),
                ("simId", sim_id),
                ("groupId", group),
                ("status", status),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if !tags.is_empty() {
                let tags: BTreeMap<String, String> = tags.into_iter().collect();
                body.insert("tags".into(), json!(tags));
            }
            let r = ctx
                .send(
                    Method::POST,
                    &sim_path(&imsi, &["register"]),
                    Some(&Value::Object(body)),
                )
                .await?;
            one_sim(ctx, &r)
        }
        SimCommand::Delete { imsi } => {
            ctx.send(Method::DELETE, &sim_path(&imsi, &[]), None)
                .await?;
            Ok(ctx.done(format!("deleted SIM {}", clean(&imsi))))
        }
        SimCommand::SetGroup { imsi, group } => {
            let r = ctx
                .send(
                    Method::POST,
                    &sim_path(&imsi, &["set_group"]),
                    Some(&json!({ "groupId": group })),
                )
                .await?;
            one_sim(ctx, &r)
        }
        SimCommand::UnsetGroup { imsi } => {
            let r = ctx
                .send(Method::POST, &sim_path(&imsi, &["unset_group"]), None)
                .await?;
            one_sim(ctx, &r)
        }
        SimCommand::Tag { imsi, tags } => {
            let body: Vec<Value> = tags
                .into_iter()
                .map(|(k, v)| json!({ "tagName": k, "tagValue": v }))
                .collect();
            let r = ctx
                .send(
                    Method::PUT,
                    &sim_path(&imsi, &["tags"]),
                    Some(&Value::Array(body)),
                )
                .await?;
            one_sim(ctx, &r)
        }
        SimCommand::Untag { imsi, name } => {
            ctx.send(Method::DELETE, &sim_path(&imsi, &["tags", &name]), None)
                .await?;
            Ok(ctx.done(format!(
                "removed tag {} from SIM {}",
                clean(&name),
                clean(&imsi)
            )))
        }
        SimCommand::Activate { imsi } => transition(ctx, &imsi, "activate").await,
        SimCommand::Deactivate { imsi } => transition(ctx, &imsi, "deactivate").await,
        SimCommand::Suspend { imsi } => transition(ctx, &imsi, "suspend").await,
        SimCommand::Terminate { imsi } => transition(ctx, &imsi, "terminate").await,
        SimCommand::ImeiLock { imsi, imei } => {
            let body = imei.map(|i| json!({ "imei": i }));
            let r = ctx
                .send(
                    Method::POST,
                    &sim_path(&imsi, &["set_imei_lock"]),
                    body.as_ref(),
                )
                .await?;
            one_sim(ctx, &r)
        }
        SimCommand::ImeiUnlock { imsi } => {
            let r = ctx
                .send(Method::POST, &sim_path(&imsi, &["unset_imei_lock"]), None)
                .await?;
            one_sim(ctx, &r)
        }
        SimCommand::Data {
            imsi,
            from,
            to,
            sort,
            limit,
            all,
        } => data(ctx, &imsi, from, to, sort, limit, all).await,
    }
}

async fn transition(ctx: &Ctx, imsi: &str, action: &str) -> Result<String, CliError> {
    let r = ctx
        .send(Method::POST, &sim_path(imsi, &[action]), None)
        .await?;
    one_sim(ctx, &r)
}

async fn data(
    ctx: &Ctx,
    imsi: &str,
    from: Option<u64>,
    to: Option<u64>,
    sort: Option<Sort>,
    limit: Option<usize>,
    all: bool,
) -> Result<String, CliError> {
    if let Some(n) = limit {
        if !(1..=MAX_PAGE).contains(&n) {
            return Err(CliError::usage(format!("--limit must be 1 to {MAX_PAGE}")));
        }
    }
    let (from, to) = (from.map(|v| v.to_string()), to.map(|v| v.to_string()));
    let filters = [
        ("from", from.as_deref()),
        ("to", to.as_deref()),
        ("sort", sort.map(Sort::as_str)),
    ];
    let data_path = sim_path(imsi, &["data"]);
    if all {
        let pages = ctx
            .all_pages(
                &data_path,
                &filters,
                limit.unwrap_or(MAX_PAGE),
                None,
                "a list of Harvest entries",
            )
            .await?;
        if ctx.json {
            return Ok(pages.json());
        }
        return Ok(entries_table(&decode::<Entry>(
            pages.items,
            "a Harvest entry",
        )?));
    }
    let limit = limit.map(|n| n.to_string());
    let mut pairs = filters.to_vec();
    pairs.push(("limit", limit.as_deref()));
    let r = ctx.get(&with_query(data_path, &pairs)).await?;
    let out = if ctx.json {
        raw(&r)
    } else {
        entries_table(&r.json::<Vec<Entry>>("a list of Harvest entries")?)
    };
    if r.header(NEXT_KEY).is_some() {
        note("(more entries: add --all, or a larger --limit)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sims_render_with_dashes_for_what_is_missing() {
        let s: Sim = serde_json::from_value(json!({
            "imsi": "001010000000001", "status": "active", "groupId": null,
            "tags": {"name": "a\nb"}, "imeiLock": {"imei": "353000000000001"}
        }))
        .unwrap();
        let out = sims_table(&[s]);
        let mut lines = out.lines();
        assert!(lines.next().unwrap().starts_with("IMSI"));
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "001010000000001",
                "active",
                "-",
                "-",
                "-",
                "353000000000001",
                "name=a\\nb"
            ]
        );
        // Anything at all decodes: unknown fields are ignored.
        let s: Sim = serde_json::from_value(json!({"x": 1})).unwrap();
        assert!(sim_fields(&s).contains("IMSI"));
    }

    #[test]
    fn entries_show_time_type_and_cut_content() {
        let e: Vec<Entry> = serde_json::from_value(json!([
            {"time": 1714566896789u64, "contentType": "application/json", "content": "{\"t\":1}"},
            {"time": 1, "contentType": "application/octet-stream", "content": "AAE=", "contentEncoding": "base64"},
            {"content": "x".repeat(500)}
        ]))
        .unwrap();
        let out = entries_table(&e);
        assert!(
            out.contains("2024-05-01T12:34:56.789Z  application/json"),
            "{out}"
        );
        assert!(out.contains("base64:AAE="), "{out}");
        assert!(out.lines().all(|l| l.chars().count() < 200), "{out}");
    }
}
