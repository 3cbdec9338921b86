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
mod radius_sessions;
mod records;
pub mod schema;
pub(crate) mod state;
pub mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableTable as _, TableDefinition};

use crate::model::{GroupId, IdError, Imsi, Operator};
pub use radius_sessions::{RadiusSessionWriter, BATCH_WINDOW as RADIUS_SESSIONS_BATCH_WINDOW};
use schema::{
    AUTH_KEYS, CREDENTIALS, GROUPS, KEY_SEEDED_AT, META, OPERATORS, SCHEMA_VERSION, SESSIONS,
    SUBSCRIBERS, TOKENS,
};
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
        each(&txn, OPERATORS, |key, bytes| {
            let op: Operator = records::decode("operators", key, bytes)?;
            state.operators.insert(op.id.clone(), op.into());
            Ok(())
        })?;
        each(&txn, GROUPS, |key, bytes| {
            let g = records::decode_stamped("groups", key, bytes)?;
            state.groups.insert(parse_key::<GroupId>("groups", key)?, g);
            Ok(())
        })?;
        each(&txn, SUBSCRIBERS, |key, bytes| {
            let s = records::decode_stamped("subscribers", key, bytes)?;
            state
                .subscribers
                .insert(parse_key::<Imsi>("subscribers", key)?, s);
            Ok(())
        })?;
        each(&txn, CREDENTIALS, |key, bytes| {
            let c = records::decode_credential("credentials", key, bytes)?;
            state.credentials.insert(c.value.id.clone(), c);
            Ok(())
        })?;
        each(&txn, SESSIONS, |key, bytes| {
            let (ip, s) = records::decode_session("sessions", key, bytes)?;
            state.sessions.insert(ip, s);
            Ok(())
        })?;
        each(&txn, TOKENS, |key, bytes| {
            let t = records::decode_token("tokens", key, bytes)?;
            state.tokens.insert(t.name.clone(), t);
            Ok(())
        })?;
        each(&txn, AUTH_KEYS, |key, bytes| {
            let k = auth_key::decode("auth_keys", key, bytes)?;
            state.auth_keys.insert(k.id.clone(), k);
            Ok(())
        })?;
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
            let mut operators = txn.open_table(OPERATORS)?;
            let mut groups = txn.open_table(GROUPS)?;
            let mut subscribers = txn.open_table(SUBSCRIBERS)?;
            let mut credentials = txn.open_table(CREDENTIALS)?;
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut tokens = txn.open_table(TOKENS)?;
            let mut auth_keys = txn.open_table(AUTH_KEYS)?;
            for change in changes {
                match change {
                    Change::Operator(id, Some(op)) => {
                        operators.insert(id.as_str(), serde_json::to_vec(&**op)?.as_slice())?;
                    }
                    Change::Operator(id, None) => {
                        operators.remove(id.as_str())?;
                    }
                    Change::Group(id, Some(g)) => {
                        groups.insert(id.as_str(), records::encode_stamped(g)?.as_slice())?;
                    }
                    Change::Group(id, None) => {
                        groups.remove(id.as_str())?;
                    }
                    Change::Subscriber(imsi, Some(s)) => {
                        subscribers
                            .insert(imsi.as_str(), records::encode_stamped(s)?.as_slice())?;
                    }
                    Change::Subscriber(imsi, None) => {
                        subscribers.remove(imsi.as_str())?;
                    }
                    Change::Credential(id, Some(c)) => {
                        credentials
                            .insert(id.as_str(), records::encode_credential(c)?.as_slice())?;
                    }
                    Change::Credential(id, None) => {
                        credentials.remove(id.as_str())?;
                    }
                    Change::Session(ip, Some(s)) => {
                        sessions.insert(
                            ip.to_string().as_str(),
                            records::encode_session(s)?.as_slice(),
                        )?;
                    }
                    Change::Session(ip, None) => {
                        sessions.remove(ip.to_string().as_str())?;
                    }
                    Change::Token(name, Some(t)) => {
                        tokens.insert(name.as_str(), records::encode_token(t)?.as_slice())?;
                    }
                    Change::Token(name, None) => {
                        tokens.remove(name.as_str())?;
                    }
                    Change::AuthKey(id, Some(k)) => {
                        auth_keys.insert(id.as_str(), auth_key::encode(k)?.as_slice())?;
                    }
                    Change::AuthKey(id, None) => {
                        auth_keys.remove(id.as_str())?;
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

fn each(
    txn: &ReadTransaction,
    def: TableDefinition<'_, &str, &[u8]>,
    mut f: impl FnMut(&str, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let table = txn.open_table(def)?;
    for entry in table.iter()? {
        let (k, v) = entry?;
        f(k.value(), v.value())?;
    }
    Ok(())
}

fn parse_key<T: std::str::FromStr<Err = IdError>>(
    table: &'static str,
    key: &str,
) -> Result<T, StoreError> {
    key.parse().map_err(|e: IdError| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        reason: e.to_string(),
    })
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
            txn.open_table(SUBSCRIBERS)
                .unwrap()
                .insert("001010000000001", b"not json".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open(&path).unwrap().load().unwrap_err();
        assert!(e.to_string().contains("subscribers/001010000000001"), "{e}");
    }
}
