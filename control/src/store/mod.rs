//! The control plane's persistent store: one redb file,
//! `{data_dir}/control.redb`.
//!
//! Layout (schema version 2, see [`schema`]): a `meta` table (`&str → u64`:
//! `schema_version`, `seeded_at`) and one table per entity, each `&str →
//! JSON bytes`:
//!
//! | table         | key            | value                                                   |
//! |---------------|----------------|---------------------------------------------------------|
//! | `operators`   | operator id    | the [`Operator`]                                         |
//! | `groups`      | group id       | `{"value": Group, "createdAt", "lastModifiedAt"}`       |
//! | `subscribers` | IMSI           | `{"value": Subscriber, "createdAt", "lastModifiedAt"}`  |
//! | `credentials` | credentials id | type (`aws-credentials`, `psk`, `x509`) and its fields, **secrets included** (the gateway's own store) |
//! | `sessions`    | IP address     | static session: imsi, imei, msisdn, createdAt           |
//! | `tokens`      | token name     | `{"sha256": hex, "createdAt"}` — never the token        |
//! | `radius_sessions` | IPv4 address | session learned from RADIUS: imsi, imei?, msisdn?, nas (the gateway); written behind ([`RadiusSessionWriter`]) |
//! | `auth_keys`   | `authKeyId`    | `{"operatorId","salt","sha256","createdAt","lastUsedAt"?}` — never the secret ([`auth_key`]) |
//!
//! Every mutation is one durable write transaction. The rules about what may
//! change live in `state.rs` (pure); this module only reads and writes.

pub mod auth_key;
pub mod configuration;
pub(crate) mod radius_sessions;
pub(crate) mod records;
pub mod schema;
pub(crate) mod state;
pub mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable as _, TableDefinition};

use crate::model::IdError;
pub use radius_sessions::{RadiusSessionWriter, BATCH_WINDOW as RADIUS_SESSIONS_BATCH_WINDOW};
use schema::{KEY_SEEDED_AT, META, SCHEMA_VERSION};
use state::{Change, State};
pub use state::{Stamped, StaticSession};

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "control.redb";

/// Why a control-plane operation failed. The first four are the caller's
/// doing (the API answers 4xx); the rest are the store's (5xx, retry later).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: String },
    /// The entity exists already, or others still depend on it.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong: a malformed id, a dangling reference.
    #[error("{0}")]
    Invalid(String),
    /// Not allowed in the entity's current state (a terminated SIM).
    #[error("{0}")]
    InvalidState(String),
    #[error(
        "control store {path} has schema version {found}, but this simgate understands \
         versions up to {supported}; run the simgate that wrote it, or restore a backup"
    )]
    FutureSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("control store record {table}/{key} cannot be read: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("control store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("control store: {0}")]
    Storage(#[from] Box<redb::Error>),
    /// The fleet's etcd cannot be reached (or this node cannot catch up
    /// with it): nothing was written; retry later (the API answers 503).
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    #[error("cannot encode a control store record: {0}")]
    Encode(#[from] serde_json::Error),
}

impl StoreError {
    /// Whether the caller's request is at fault (as opposed to the store).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. } | Self::Conflict(_) | Self::Invalid(_) | Self::InvalidState(_)
        )
    }
}

impl From<IdError> for StoreError {
    fn from(e: IdError) -> Self {
        Self::Invalid(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Storage(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The open redb file.
#[derive(Debug)]
pub(crate) struct Store {
    db: Arc<Database>,
}

/// What [`Store::load`] found.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) state: State,
    /// Whether the store was seeded from a configuration file before.
    pub(crate) seeded: bool,
}

impl Store {
    /// Opens (creating if need be) the file and brings its schema up to
    /// [`SCHEMA_VERSION`]; refuses files from a newer simgate.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        // Credentials and token digests live here: owner only (0600).
        crate::secret_file::ensure_private_file(path)?;
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        let found = schema::read_version(&txn)?;
        if let Err((found, supported)) = schema::check(found, SCHEMA_VERSION) {
            txn.abort()?;
            return Err(StoreError::FutureSchema {
                path: path.to_owned(),
                found,
                supported,
            });
        }
        schema::migrate(&txn, found, SCHEMA_VERSION)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The write-behind keeper of RADIUS sessions (`radius_sessions`).
    pub(crate) fn radius_sessions(
        &self,
        stats: Arc<crate::radius::RadiusStats>,
    ) -> Result<RadiusSessionWriter, StoreError> {
        Ok(RadiusSessionWriter::new(Arc::clone(&self.db), stats)?)
    }

    /// Removes a persisted RADIUS session at once.
    pub(crate) fn remove_radius_session(&self, ip: std::net::Ipv4Addr) -> Result<(), StoreError> {
        radius_sessions::remove_now(&self.db, ip)
    }

    /// Reads every entity.
    pub(crate) fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read()?;
        let mut state = State::default();
        for name in records::TABLES {
            let table = txn.open_table(TableDefinition::<&str, &[u8]>::new(name))?;
            for entry in table.iter()? {
                let (k, v) = entry?;
                state.apply(records::decode_change(name, k.value(), Some(v.value()))?);
            }
        }
        let seeded = txn.open_table(META)?.get(KEY_SEEDED_AT)?.is_some();
        Ok(Loaded { state, seeded })
    }

    /// Writes `changes` in one durable transaction; with `seeded_at`, also
    /// records that the store has been seeded.
    pub(crate) fn commit(
        &self,
        changes: &[Change],
        seeded_at: Option<u64>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut tables = Vec::with_capacity(records::TABLES.len());
            for name in records::TABLES {
                tables.push(txn.open_table(TableDefinition::<&str, &[u8]>::new(name))?);
            }
            for change in changes {
                let r = records::encode_change(change)?;
                let i = records::TABLES
                    .iter()
                    .position(|t| *t == r.table)
                    .unwrap_or_default();
                match &r.value {
                    Some(v) => {
                        tables[i].insert(r.key.as_str(), v.as_slice())?;
                    }
                    None => {
                        tables[i].remove(r.key.as_str())?;
                    }
                }
            }
            if let Some(at) = seeded_at {
                txn.open_table(META)?.insert(KEY_SEEDED_AT, at)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use state::Edit;

    fn seeded(path: &Path) -> Store {
        let store = Store::open(path).unwrap();
        let mut st = State::default();
        let mut e = Edit::new(&mut st, 5);
        e.apply_config(&Config::embedded_default()).unwrap();
        e.put_token("default", token::digest("sgt_x")).unwrap();
        let changes = e.finish();
        store.commit(&changes, Some(5)).unwrap();
        store
    }

    #[test]
    fn v1_file_reopens_with_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        drop(seeded(&path));
        let store = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.seeded);
        assert_eq!(loaded.state.subscribers.len(), 1);
        assert_eq!(loaded.state.groups.len(), 1);
        assert_eq!(loaded.state.sessions.len(), 1);
        assert!(token::verify(
            "sgt_x",
            loaded.state.tokens.values().map(|t| &t.digest)
        ));
    }

    #[test]
    fn new_file_is_unseeded_and_at_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let store = Store::open(&path).unwrap();
        assert!(!store.load().unwrap().seeded);
        drop(store);
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert_eq!(schema::read_version(&txn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn future_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        drop(seeded(&path));
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(schema::KEY_SCHEMA_VERSION, SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open(&path).unwrap_err();
        assert!(
            matches!(e, StoreError::FutureSchema { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
                && msg.contains(&format!("up to {SCHEMA_VERSION}")),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_record_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        drop(seeded(&path));
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(schema::SUBSCRIBERS)
                .unwrap()
                .insert("001010000000001", b"not json".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open(&path).unwrap().load().unwrap_err();
        assert!(e.to_string().contains("subscribers/001010000000001"), "{e}");
    }
}
