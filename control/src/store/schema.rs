//! The store's schema version and the chain of migrations between versions.
//!
//! The `meta` table holds `schema_version`. Opening a file runs every
//! migration from its version up to [`SCHEMA_VERSION`] in the same write
//! transaction that records the new version, so a crash leaves the file at
//! the old version or the new one, never between. A file written by a newer
//! simgate (a version above ours) is refused rather than guessed at.

use redb::{ReadableTable as _, TableDefinition, WriteTransaction};

use super::configuration::{self, Namespace};
use super::StoreError;

/// The version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 3;

pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(crate) const KEY_SCHEMA_VERSION: &str = "schema_version";
/// Set (to the time, Unix ms) once the store has been seeded from the
/// configuration file; later starts do not seed again.
pub(crate) const KEY_SEEDED_AT: &str = "seeded_at";

pub(crate) const OPERATORS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("operators");
pub(crate) const GROUPS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("groups");
pub(crate) const SUBSCRIBERS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("subscribers");
pub(crate) const CREDENTIALS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("credentials");
pub(crate) const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");
pub(crate) const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");
/// SAM-style auth keys (`authKeyId` → hashed secret), for `POST /v1/auth`.
pub(crate) const AUTH_KEYS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("auth_keys");
/// Sessions learned from RADIUS accounting (IP → session), so that they
/// survive a restart until the gateway's next Interim-Update replaces them.
pub(crate) const RADIUS_SESSIONS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("radius_sessions");

/// One step: brings a store from version `i` to `i + 1` (its index).
type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` migrates version `i` to `i + 1`; version 0 is an empty
/// file. Append a step (and bump [`SCHEMA_VERSION`]) for each new version;
/// never edit a released one.
const MIGRATIONS: &[Migration] = &[v0_to_v1, v1_to_v2, v2_to_v3];

/// Version 1: one table per entity, JSON values (see `records.rs`).
fn v0_to_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    for def in [
        OPERATORS,
        GROUPS,
        SUBSCRIBERS,
        CREDENTIALS,
        SESSIONS,
        TOKENS,
    ] {
        txn.open_table(def)?;
    }
    Ok(())
}

/// Version 2: Beam is typed. Groups carry `SoracomBeam` in a `beam` field
/// (entry URL → entry) instead of verbatim in `configuration`, and
/// credentials may be `psk` or `x509` as well as `aws-credentials`. A
/// version 1 simgate could read neither, hence the new version.
///
/// Version 1 kept `SoracomBeam` as given, unchecked: entries that are valid
/// move to `beam`; an entry that is not (an unknown key, a bad destination)
/// cannot be served, and is dropped with a warning naming the group, key
/// and reason — refusing to open the store over it would stop every SIM.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut groups = txn.open_table(GROUPS)?;
    let mut rewritten = Vec::new();
    for row in groups.iter()? {
        let (k, v) = row?;
        let key = k.value().to_owned();
        let mut record: serde_json::Value =
            serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                table: "groups",
                key: key.clone(),
                reason: e.to_string(),
            })?;
        let Some(verbatim) = record
            .pointer_mut("/value/configuration")
            .and_then(serde_json::Value::as_object_mut)
            .and_then(|c| c.remove(Namespace::Beam.as_str()))
        else {
            continue;
        };
        let mut beam = serde_json::Map::new();
        for (entry_key, value) in verbatim.as_object().into_iter().flatten() {
            match configuration::beam_entry(entry_key, value.clone()) {
                Ok((point, entry)) => {
                    beam.insert(point.key(), serde_json::to_value(&entry)?);
                }
                Err(e) => tracing::warn!(
                    group = %key,
                    key = %entry_key,
                    error = %e,
                    "control store migration: SoracomBeam entry dropped, it is not valid"
                ),
            }
        }
        if let Some(value) = record
            .get_mut("value")
            .and_then(serde_json::Value::as_object_mut)
        {
            if !beam.is_empty() {
                value.insert("beam".into(), serde_json::Value::Object(beam));
            }
        }
        rewritten.push((key, serde_json::to_vec(&record)?));
    }
    for (key, bytes) in rewritten {
        groups.insert(key.as_str(), bytes.as_slice())?;
    }
    Ok(())
}

/// Version 3: auth keys (SORACOM `POST /v1/auth`) and persisted RADIUS
/// sessions, each a table of its own. A version 2 simgate would ignore
/// both, silently losing auth keys: hence the version.
fn v2_to_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(AUTH_KEYS)?;
    txn.open_table(RADIUS_SESSIONS)?;
    Ok(())
}

/// The version recorded in the file; 0 for a new file.
pub(crate) fn read_version(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META)?;
    let v = meta.get(KEY_SCHEMA_VERSION)?.map_or(0, |v| v.value());
    Ok(v)
}

/// Whether a file at `found` can be opened by this build.
pub(crate) fn check(found: u64, supported: u64) -> Result<(), (u64, u64)> {
    if found > supported {
        Err((found, supported))
    } else {
        Ok(())
    }
}

/// Runs the migrations `from → to` in `txn` and records `to`.
pub fn migrate(txn: &WriteTransaction, from: u64, to: u64) -> Result<(), StoreError> {
    let steps = usize::try_from(from)
        .ok()
        .zip(usize::try_from(to).ok())
        .and_then(|(f, t)| MIGRATIONS.get(f..t))
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "no migration from schema version {from} to {to} (this build knows 0 to {})",
                MIGRATIONS.len()
            ))
        })?;
    for step in steps {
        step(txn)?;
    }
    if from != to {
        txn.open_table(META)?.insert(KEY_SCHEMA_VERSION, to)?;
        tracing::info!(from, to, "control store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_covers_every_version() {
        assert_eq!(MIGRATIONS.len() as u64, SCHEMA_VERSION);
    }

    #[test]
    fn future_versions_are_refused() {
        assert!(check(0, 1).is_ok());
        assert!(check(1, 1).is_ok());
        assert_eq!(check(2, 1), Err((2, 1)));
        assert_eq!(check(3, 2), Err((3, 2)));
    }

    #[test]
    fn migrate_records_the_version_and_refuses_unknown_steps() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("m.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        assert_eq!(read_version(&txn).unwrap(), 0);
        migrate(&txn, 0, 1).unwrap();
        assert_eq!(read_version(&txn).unwrap(), 1);
        migrate(&txn, 1, 2).unwrap();
        assert_eq!(read_version(&txn).unwrap(), 2);
        migrate(&txn, 2, 3).unwrap();
        assert_eq!(read_version(&txn).unwrap(), 3);
        assert!(txn.open_table(AUTH_KEYS).is_ok());
        assert!(migrate(&txn, 3, 4).is_err());
        assert!(migrate(&txn, 3, 0).is_err());
        migrate(&txn, 3, 3).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn v1_verbatim_beam_moves_to_the_typed_field() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("m.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        migrate(&txn, 0, 1).unwrap();
        let v1 = serde_json::json!({
            "value": {"id": "g", "operator_id": null, "name": "", "funnel": null,
                "harvest": {"enabled": false}, "tags": {},
                "configuration": {
                    "SoracomAir": {"userdata": "u"},
                    "SoracomBeam": {
                        "tcp://beam.soracom.io:8023": {"destination": "tcps://h:9000", "enabled": true,
                            "password": "p"},
                        "http://beam.soracom.io:8888/": {"destination": "https://h/", "enabled": true},
                        "bogus": {"destination": "https://h/"}
                    }}},
            "createdAt": 1, "lastModifiedAt": 2});
        txn.open_table(GROUPS)
            .unwrap()
            .insert("g", serde_json::to_vec(&v1).unwrap().as_slice())
            .unwrap();
        migrate(&txn, 1, 2).unwrap();
        let bytes = txn
            .open_table(GROUPS)
            .unwrap()
            .get("g")
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        let g: crate::model::Group = serde_json::from_value(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["value"].clone(),
        )
        .unwrap();
        // The TCP entry's password is MQTT-only: not valid, dropped.
        assert_eq!(g.beam.entries.len(), 1, "{:?}", g.beam);
        assert!(g
            .beam
            .http_entries()
            .any(|(p, e)| p == "/" && e.destination == "https://h/"));
        assert!(!g.configuration.contains_key("SoracomBeam"));
        assert_eq!(g.configuration["SoracomAir"]["userdata"], "u");
    }
}
