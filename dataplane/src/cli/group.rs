//! `simgate group …`: `/v1/groups` and their configuration namespaces.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::path;
use super::table::{self, clean, opt, Table};
use super::{parse_pair, parse_setting, when, CliError, Ctx};

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List groups.
    List,
    /// Show a group and its configuration.
    Show { id: String },
    /// Create a group (ID generated when left out).
    Create {
        id: Option<String>,
        /// A human name (SORACOM keeps it as the tag `name`).
        #[arg(long)]
        name: Option<String>,
        /// A tag; repeat for more.
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
    },
    /// Delete a group no SIM belongs to.
    Delete { id: String },
    /// Set keys of a configuration namespace. Values are JSON when they
    /// parse as JSON, else strings: `group set demo SoracomHarvest
    /// enabled=true`, `group set demo SoracomFunnel
    /// destination='{"service":"kinesis","resourceUrl":"https://…"}'
    /// credentialsId=kinesis-demo`.
    Set {
        id: String,
        /// SoracomHarvest, SoracomFunnel, SoracomAir, SoracomBeam, …
        namespace: String,
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, Value)>,
    },
    /// Remove one configuration key.
    Unset {
        id: String,
        namespace: String,
        key: String,
    },
}

/// A group as the API shows it (SORACOM's shape: the name is the tag
/// `name`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Group {
    pub group_id: Option<String>,
    pub operator_id: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub configuration: Option<BTreeMap<String, BTreeMap<String, Value>>>,
    /// Unix ms (`createdAt` from simgate before 0.2).
    #[serde(alias = "createdAt")]
    pub created_time: Option<u64>,
    #[serde(alias = "lastModifiedAt")]
    pub last_modified_time: Option<u64>,
}

impl Group {
    fn name(&self) -> Option<&str> {
        self.tags.as_ref()?.get("name").map(String::as_str)
    }

    fn tags(&self) -> String {
        self.tags
            .as_ref()
            .map_or_else(|| table::NONE.to_owned(), table::tags)
    }

    /// Namespaces in use: `SoracomHarvest`, or `SoracomFunnel(off)` when
    /// its `enabled` is false.
    fn services(&self) -> String {
        let names: Vec<String> = self
            .configuration
            .iter()
            .flatten()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(ns, keys)| match keys.get("enabled") {
                Some(Value::Bool(false)) => format!("{}(off)", clean(ns)),
                _ => clean(ns),
            })
            .collect();
        if names.is_empty() {
            table::NONE.to_owned()
        } else {
            names.join(" ")
        }
    }
}

/// Groups as a table.
pub fn groups_table(groups: &[Group]) -> String {
    let mut t = Table::new(&["GROUP", "NAME", "CONFIGURATION", "CREATED"]);
    for g in groups {
        t.row(vec![
            opt(g.group_id.as_deref()),
            opt(g.name()),
            g.services(),
            when(g.created_time),
        ]);
    }
    t.render()
}

/// One group: fields, then `Namespace.key = value` lines.
pub fn group_fields(g: &Group) -> String {
    let mut out = table::fields(&[
        ("Group", opt(g.group_id.as_deref())),
        ("Name", opt(g.name())),
        ("Operator", opt(g.operator_id.as_deref())),
        ("Tags", g.tags()),
        ("Created", when(g.created_time)),
        ("Modified", when(g.last_modified_time)),
    ]);
    let lines: Vec<(String, String)> = g
        .configuration
        .iter()
        .flatten()
        .flat_map(|(ns, keys)| {
            keys.iter()
                .map(move |(k, v)| (format!("{}.{}", clean(ns), clean(k)), clean(&v.to_string())))
        })
        .collect();
    out.push_str("Configuration");
    if lines.is_empty() {
        out.push_str("  (none)\n");
    } else {
        out.push('\n');
        for (k, v) in lines {
            let _ = writeln!(out, "  {k} = {v}");
        }
    }
    out
}

fn group_path(id: &str, rest: &[&str]) -> String {
    let mut segments = vec!["v1", "groups", id];
    segments.extend_from_slice(rest);
    path(&segments)
}

pub async fn run(ctx: &Ctx, command: GroupCommand) -> Result<String, CliError> {
    match command {
        GroupCommand::List => {
            let r = ctx.get(&path(&["v1", "groups"])).await?;
            ctx.show(&r, "a list of groups", |g: &Vec<Group>| groups_table(g))
        }
        GroupCommand::Show { id } => {
            let r = ctx.get(&group_path(&id, &[])).await?;
            ctx.show(&r, "a group", group_fields)
        }
        GroupCommand::Create { id, name, tags } => {
            let mut body = Map::new();
            if let Some(id) = id {
                body.insert("groupId".into(), json!(id));
            }
            let mut tags: BTreeMap<String, String> = tags.into_iter().collect();
            if let Some(name) = name {
                tags.insert("name".into(), name);
            }
            if !tags.is_empty() {
                body.insert("tags".into(), json!(tags));
            }
            let r = ctx
                .send(
                    Method::POST,
                    &path(&["v1", "groups"]),
                    Some(&Value::Object(body)),
                )
                .await?;
            ctx.show(&r, "a group", group_fields)
        }
        GroupCommand::Delete { id } => {
            ctx.send(Method::DELETE, &group_path(&id, &[]), None)
                .await?;
            Ok(ctx.done(format!("deleted group {}", clean(&id))))
        }
        GroupCommand::Set {
            id,
            namespace,
            settings,
        } => {
            let body: Vec<Value> = settings
                .into_iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect();
            let r = ctx
                .send(
                    Method::PUT,
                    &group_path(&id, &["configuration", &namespace]),
                    Some(&Value::Array(body)),
                )
                .await?;
            ctx.show(&r, "a group", group_fields)
        }
        GroupCommand::Unset { id, namespace, key } => {
            ctx.send(
                Method::DELETE,
                &group_path(&id, &["configuration", &namespace, &key]),
                None,
            )
            .await?;
            Ok(ctx.done(format!(
                "removed {}.{} from group {}",
                clean(&namespace),
                clean(&key),
                clean(&id)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_show_their_namespaces_and_keys() {
        let g: Group = serde_json::from_value(json!({
            "groupId": "demo", "tags": {"name": "Demo"},
            "configuration": {
                "SoracomHarvest": {"enabled": true},
                "SoracomFunnel": {"enabled": false, "credentialsId": "k"},
                "SoracomAir": {}
            },
            "createdTime": 0
        }))
        .unwrap();
        let list = groups_table(std::slice::from_ref(&g));
        assert!(
            list.contains(
                "demo   Demo  SoracomFunnel(off) SoracomHarvest  1970-01-01T00:00:00.000Z"
            ),
            "{list}"
        );
        let show = group_fields(&g);
        assert!(show.contains("  SoracomHarvest.enabled = true\n"), "{show}");
        assert!(
            show.contains("  SoracomFunnel.credentialsId = \"k\"\n"),
            "{show}"
        );
        let empty = group_fields(&Group::default());
        assert!(empty.contains("Configuration  (none)"), "{empty}");
    }
}
