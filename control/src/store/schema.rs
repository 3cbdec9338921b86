//! The store's schema version and the chain of migrations between versions.
//!
//! The `meta` table holds `schema_version`. Opening a file runs every
//! migration from its version up to [`SCHEMA_VERSION`] in the same write
//! transaction that records the new version, so a crash leaves the file at
//! the old version or the new one, never between. A file written by a newer
//! simgate (a version above ours) is refused rather than guessed at.

use redb::{ReadableTable as _, TableDefinition, WriteTransaction};

use super::StoreError;

/// The version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 1;

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

/// One step: brings a store from version `i` to `i + 1` (its index).
type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` migrates version `i` to `i + 1`; version 0 is an empty
/// file. Append a step (and bump [`SCHEMA_VERSION`]) for each new version;
/// never edit a released one.
const MIGRATIONS: &[Migration] = &[v0_to_v1];

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
    }

    #[test]
    fn migrate_records_the_version_and_refuses_unknown_steps() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("m.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        assert_eq!(read_version(&txn).unwrap(), 0);
        migrate(&txn, 0, 1).unwrap();
        assert_eq!(read_version(&txn).unwrap(), 1);
        assert!(migrate(&txn, 1, 2).is_err());
        assert!(migrate(&txn, 1, 0).is_err());
        migrate(&txn, 1, 1).unwrap();
        txn.commit().unwrap();
    }
}
