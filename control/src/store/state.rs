//! The control plane's entities in memory, and every rule about changing
//! them. Pure: an [`Edit`] changes the [`State`] in place, records the
//! [`Change`]s a store must write and how to undo them, and is given the
//! time; nothing here does I/O, so the rules are tested without a database.
//!
//! Editing in place (rather than on a copy) keeps a mutation's cost
//! proportional to what it changes, not to the number of SIMs; an edit that
//! is not [finished](Edit::finish) — a rule refused it, or the store could
//! not write it — is undone when dropped.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use super::auth_key::{AuthKeyRecord, MAX_AUTH_KEYS};
use super::configuration::{self, Namespace};
use super::token::TokenDigest;
use super::StoreError;
use crate::config::Config;
use crate::model::{
    Credential, CredentialId, Group, GroupId, Imei, Imsi, Msisdn, Operator, OperatorId, Subscriber,
    SubscriberStatus,
};
use crate::snapshot::{Session, Snapshot};

/// An entity with the times (Unix ms) it was created and last changed.
#[derive(Debug)]
pub struct Stamped<T> {
    pub value: Arc<T>,
    pub created_at: u64,
    pub last_modified_at: u64,
}

impl<T> Clone for Stamped<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            created_at: self.created_at,
            last_modified_at: self.last_modified_at,
        }
    }
}

/// An IP → IMSI binding kept in the store (from the config file or the API),
/// as opposed to one learned from RADIUS, which lives only in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSession {
    pub imsi: Imsi,
    pub imei: Option<Imei>,
    pub msisdn: Option<Msisdn>,
    pub created_at: u64,
}

impl StaticSession {
    pub fn session(&self) -> Session {
        Session::new(self.imsi.clone(), self.imei.clone(), self.msisdn.clone())
    }

    fn same_binding(&self, other: &Self) -> bool {
        self.imsi == other.imsi && self.imei == other.imei && self.msisdn == other.msisdn
    }
}

/// A stored API token: its name and the SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenRecord {
    pub(crate) name: String,
    pub(crate) digest: TokenDigest,
    pub(crate) created_at: u64,
}

/// Everything the store holds, as loaded.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub(crate) operators: BTreeMap<OperatorId, Arc<Operator>>,
    pub(crate) groups: BTreeMap<GroupId, Stamped<Group>>,
    pub(crate) subscribers: BTreeMap<Imsi, Stamped<Subscriber>>,
    pub(crate) credentials: BTreeMap<CredentialId, Stamped<Credential>>,
    pub(crate) sessions: BTreeMap<IpAddr, StaticSession>,
    pub(crate) tokens: BTreeMap<String, TokenRecord>,
    /// SORACOM auth keys by `authKeyId` (hashed secrets).
    pub(crate) auth_keys: BTreeMap<String, AuthKeyRecord>,
}

impl State {
    /// The data plane's view. O(entities) reference-count increments.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: 0,
            operators: self
                .operators
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(&v.value)))
                .collect(),
            subscribers: self
                .subscribers
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(&v.value)))
                .collect(),
            credentials: self
                .credentials
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(&v.value)))
                .collect(),
        }
    }

    /// The operator to fill in when an entity names none: the only one there is.
    fn only_operator(&self) -> Option<OperatorId> {
        let mut ids = self.operators.keys();
        match (ids.next(), ids.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        }
    }
}

/// One entity written (`Some`) or removed (`None`) by an edit.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Operator(OperatorId, Option<Arc<Operator>>),
    Group(GroupId, Option<Stamped<Group>>),
    Subscriber(Imsi, Option<Stamped<Subscriber>>),
    Credential(CredentialId, Option<Stamped<Credential>>),
    Session(IpAddr, Option<StaticSession>),
    Token(String, Option<TokenRecord>),
    AuthKey(String, Option<AuthKeyRecord>),
}

/// An entity by the store's table name and key (see `records::TABLES`).
pub(crate) type EntityRef = (&'static str, String);

impl Change {
    /// The entities a written value names, which the rules require to
    /// exist: a SIM's group and operator, a group's operator and credential
    /// sets, a static session's SIM. A store shared by writers that cannot
    /// lock each other out (a fleet's etcd) guards on these.
    pub(crate) fn references(&self) -> Vec<EntityRef> {
        let mut out = Vec::new();
        match self {
            Self::Subscriber(_, Some(s)) => {
                if let Some(g) = &s.value.group_id {
                    out.push(("groups", g.to_string()));
                }
                if let Some(op) = &s.value.operator_id {
                    out.push(("operators", op.to_string()));
                }
            }
            Self::Group(_, Some(g)) => {
                if let Some(op) = &g.value.operator_id {
                    out.push(("operators", op.to_string()));
                }
                if let Some(f) = &g.value.funnel {
                    out.push(("credentials", f.credentials_id.to_string()));
                }
                for c in g.value.beam.fixed_credentials() {
                    out.push(("credentials", c.to_string()));
                }
            }
            Self::Session(_, Some(s)) => out.push(("subscribers", s.imsi.to_string())),
            _ => {}
        }
        out.sort();
        out.dedup();
        out
    }

    /// The entity this change removes, if others may name it (the other
    /// side of [`references`](Self::references)).
    pub(crate) fn removes_referable(&self) -> Option<EntityRef> {
        match self {
            Self::Operator(id, None) => Some(("operators", id.to_string())),
            Self::Group(id, None) => Some(("groups", id.to_string())),
            Self::Credential(id, None) => Some(("credentials", id.to_string())),
            Self::Subscriber(imsi, None) => Some(("subscribers", imsi.to_string())),
            _ => None,
        }
    }

    /// Whether the data plane's [`Snapshot`] shows this entity.
    pub(crate) fn in_snapshot(&self) -> bool {
        !matches!(
            self,
            Self::Session(..) | Self::Token(..) | Self::AuthKey(..)
        )
    }
}

impl State {
    /// Applies `change` and returns the change that undoes it.
    pub(crate) fn apply(&mut self, change: Change) -> Change {
        fn put<K: Ord + Clone, V>(m: &mut BTreeMap<K, V>, k: &K, v: Option<V>) -> Option<V> {
            match v {
                Some(v) => m.insert(k.clone(), v),
                None => m.remove(k),
            }
        }
        match change {
            Change::Operator(k, v) => {
                let old = put(&mut self.operators, &k, v);
                Change::Operator(k, old)
            }
            Change::Group(k, v) => {
                let old = put(&mut self.groups, &k, v);
                Change::Group(k, old)
            }
            Change::Subscriber(k, v) => {
                let old = put(&mut self.subscribers, &k, v);
                Change::Subscriber(k, old)
            }
            Change::Credential(k, v) => {
                let old = put(&mut self.credentials, &k, v);
                Change::Credential(k, old)
            }
            Change::Session(k, v) => {
                let old = put(&mut self.sessions, &k, v);
                Change::Session(k, old)
            }
            Change::Token(k, v) => {
                let old = put(&mut self.tokens, &k, v);
                Change::Token(k, old)
            }
            Change::AuthKey(k, v) => {
                let old = put(&mut self.auth_keys, &k, v);
                Change::AuthKey(k, old)
            }
        }
    }
}

/// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; sessions are
/// keyed by the plain IPv4 address, as the [`crate::SessionTable`] does.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// Longest tag name and value accepted.
const MAX_TAG_NAME: usize = 128;
const MAX_TAG_VALUE: usize = 1024;

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), StoreError> {
    for (k, v) in tags {
        if k.is_empty() || k.len() > MAX_TAG_NAME {
            return Err(StoreError::Invalid(format!(
                "tag names must be 1 to {MAX_TAG_NAME} bytes"
            )));
        }
        if v.len() > MAX_TAG_VALUE {
            return Err(StoreError::Invalid(format!(
                "tag {k}: values may be at most {MAX_TAG_VALUE} bytes"
            )));
        }
    }
    Ok(())
}

/// A set of changes in progress on the state, undone on drop unless
/// [finished](Self::finish).
#[derive(Debug)]
pub(crate) struct Edit<'a> {
    next: &'a mut State,
    changes: Vec<Change>,
    undo: Vec<Change>,
    now: u64,
    finished: bool,
}

impl Drop for Edit<'_> {
    fn drop(&mut self) {
        if !self.finished {
            while let Some(u) = self.undo.pop() {
                self.next.apply(u);
            }
        }
    }
}

impl<'a> Edit<'a> {
    pub(crate) fn new(state: &'a mut State, now: u64) -> Self {
        Self {
            next: state,
            changes: Vec::new(),
            undo: Vec::new(),
            now,
            finished: false,
        }
    }

    pub(crate) fn state(&self) -> &State {
        self.next
    }

    /// What must be written for the state to match the store.
    pub(crate) fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Keeps the changes (they have been written) and returns them.
    pub(crate) fn finish(mut self) -> Vec<Change> {
        self.finished = true;
        std::mem::take(&mut self.changes)
    }

    fn record(&mut self, change: Change) {
        self.changes.push(change.clone());
        let undo = self.next.apply(change);
        self.undo.push(undo);
    }

    /// `value` stamped against what it replaces, and whether it differs.
    fn stamp<T: PartialEq>(&self, old: Option<&Stamped<T>>, value: T) -> (Stamped<T>, bool) {
        match old {
            Some(o) if *o.value == value => (o.clone(), false),
            Some(o) => (
                Stamped {
                    value: Arc::new(value),
                    created_at: o.created_at,
                    last_modified_at: self.now,
                },
                true,
            ),
            None => (
                Stamped {
                    value: Arc::new(value),
                    created_at: self.now,
                    last_modified_at: self.now,
                },
                true,
            ),
        }
    }

    // ---- operators ----

    fn put_operator(&mut self, op: Operator) {
        if self.next.operators.get(&op.id).is_some_and(|o| **o == op) {
            return;
        }
        self.record(Change::Operator(op.id.clone(), Some(Arc::new(op))));
    }

    fn check_operator(&self, op: Option<&OperatorId>) -> Result<(), StoreError> {
        match op {
            Some(id) if !self.next.operators.contains_key(id) => {
                Err(StoreError::Invalid(format!("operator {id} does not exist")))
            }
            _ => Ok(()),
        }
    }

    // ---- subscribers ----

    fn check_subscriber(&self, s: &Subscriber) -> Result<(), StoreError> {
        self.check_operator(s.operator_id.as_ref())?;
        if let Some(g) = &s.group_id {
            if !self.next.groups.contains_key(g) {
                return Err(StoreError::Invalid(format!("group {g} does not exist")));
            }
        }
        check_tags(&s.tags)
    }

    /// Writes a subscriber (validated), keeping its creation time.
    fn put_subscriber(&mut self, mut s: Subscriber) -> Result<Stamped<Subscriber>, StoreError> {
        if s.operator_id.is_none() {
            s.operator_id = self.next.only_operator();
        }
        self.check_subscriber(&s)?;
        let (new, changed) = self.stamp(self.next.subscribers.get(&s.imsi), s);
        if changed {
            self.record(Change::Subscriber(
                new.value.imsi.clone(),
                Some(new.clone()),
            ));
        }
        Ok(new)
    }

    pub(crate) fn create_subscriber(
        &mut self,
        s: Subscriber,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        if self.next.subscribers.contains_key(&s.imsi) {
            return Err(StoreError::Conflict(format!(
                "subscriber {} already exists",
                s.imsi
            )));
        }
        if s.status == SubscriberStatus::Terminated {
            return Err(StoreError::Invalid(
                "a subscriber cannot be registered as terminated".into(),
            ));
        }
        self.put_subscriber(s)
    }

    pub(crate) fn update_subscriber(
        &mut self,
        s: Subscriber,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        if !self.next.subscribers.contains_key(&s.imsi) {
            return Err(not_found("subscriber", &s.imsi));
        }
        self.put_subscriber(s)
    }

    /// Changes one subscriber through `f`, which sees a copy.
    pub(crate) fn modify_subscriber(
        &mut self,
        imsi: &Imsi,
        f: impl FnOnce(&mut Subscriber) -> Result<(), StoreError>,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        let mut s = Subscriber::clone(
            &self
                .next
                .subscribers
                .get(imsi)
                .ok_or_else(|| not_found("subscriber", imsi))?
                .value,
        );
        f(&mut s)?;
        self.put_subscriber(s)
    }

    /// The SORACOM state machine: any state may move to any other except out
    /// of `terminated`, which is final.
    pub(crate) fn set_status(
        &mut self,
        imsi: &Imsi,
        status: SubscriberStatus,
    ) -> Result<Stamped<Subscriber>, StoreError> {
        self.modify_subscriber(imsi, |s| {
            if s.status == SubscriberStatus::Terminated {
                return Err(StoreError::InvalidState(format!(
                    "subscriber {imsi} is terminated; termination is final"
                )));
            }
            s.status = status;
            Ok(())
        })
    }

    /// Removes a subscriber and the static sessions that name it.
    pub(crate) fn delete_subscriber(&mut self, imsi: &Imsi) -> Result<(), StoreError> {
        if !self.next.subscribers.contains_key(imsi) {
            return Err(not_found("subscriber", imsi));
        }
        self.record(Change::Subscriber(imsi.clone(), None));
        let ips: Vec<IpAddr> = self
            .next
            .sessions
            .iter()
            .filter(|(_, s)| &s.imsi == imsi)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            self.delete_session(ip);
        }
        Ok(())
    }

    // ---- groups ----

    fn check_group(&self, g: &Group) -> Result<(), StoreError> {
        self.check_operator(g.operator_id.as_ref())?;
        if let Some(f) = &g.funnel {
            if !self.next.credentials.contains_key(&f.credentials_id) {
                return Err(StoreError::Invalid(format!(
                    "group {}: Funnel credentials {} do not exist",
                    g.id, f.credentials_id
                )));
            }
        }
        g.beam
            .validate()
            .map_err(|e| StoreError::Invalid(format!("group {}: SoracomBeam: {e}", g.id)))?;
        for (id, expected) in g.beam.fixed_credentials_typed() {
            let Some(c) = self.next.credentials.get(&id) else {
                return Err(StoreError::Invalid(format!(
                    "group {}: Beam credentials {id} do not exist",
                    g.id
                )));
            };
            let found = c.value.kind.type_name();
            if found != expected {
                return Err(StoreError::Invalid(format!(
                    "group {}: Beam credentials {id} are of type {found}, {expected} is needed",
                    g.id
                )));
            }
        }
        configuration::check_verbatim(g)?;
        check_tags(&g.tags)
    }

    fn put_group(&mut self, mut g: Group) -> Result<Stamped<Group>, StoreError> {
        if g.operator_id.is_none() {
            g.operator_id = self.next.only_operator();
        }
        self.check_group(&g)?;
        let (new, changed) = self.stamp(self.next.groups.get(&g.id), g);
        if changed {
            self.record(Change::Group(new.value.id.clone(), Some(new.clone())));
        }
        Ok(new)
    }

    pub(crate) fn create_group(&mut self, g: Group) -> Result<Stamped<Group>, StoreError> {
        if self.next.groups.contains_key(&g.id) {
            return Err(StoreError::Conflict(format!(
                "group {} already exists",
                g.id
            )));
        }
        self.put_group(g)
    }

    pub(crate) fn update_group(&mut self, g: Group) -> Result<Stamped<Group>, StoreError> {
        if !self.next.groups.contains_key(&g.id) {
            return Err(not_found("group", &g.id));
        }
        self.put_group(g)
    }

    pub(crate) fn modify_group(
        &mut self,
        id: &GroupId,
        f: impl FnOnce(&mut Group, &State) -> Result<(), StoreError>,
    ) -> Result<Stamped<Group>, StoreError> {
        let mut g = Group::clone(
            &self
                .next
                .groups
                .get(id)
                .ok_or_else(|| not_found("group", id))?
                .value,
        );
        f(&mut g, self.next)?;
        self.put_group(g)
    }

    pub(crate) fn put_configuration(
        &mut self,
        id: &GroupId,
        ns: Namespace,
        entries: Vec<(String, Value)>,
    ) -> Result<Stamped<Group>, StoreError> {
        self.modify_group(id, |g, state| {
            configuration::put(g, ns, entries, &|c| state.credentials.contains_key(c))
        })
    }

    pub(crate) fn delete_configuration(
        &mut self,
        id: &GroupId,
        ns: Namespace,
        key: &str,
    ) -> Result<Stamped<Group>, StoreError> {
        self.modify_group(id, |g, _| configuration::delete(g, ns, key))
    }

    /// Removes a group no subscriber belongs to.
    pub(crate) fn delete_group(&mut self, id: &GroupId) -> Result<(), StoreError> {
        if !self.next.groups.contains_key(id) {
            return Err(not_found("group", id));
        }
        let members = self
            .next
            .subscribers
            .values()
            .filter(|s| s.value.group_id.as_ref() == Some(id))
            .count();
        if members > 0 {
            return Err(StoreError::Conflict(format!(
                "group {id} still has {members} subscriber(s); move them out first (unset_group)"
            )));
        }
        self.record(Change::Group(id.clone(), None));
        Ok(())
    }

    // ---- credentials ----

    /// Creates or replaces a credential set; says whether it was created.
    pub(crate) fn put_credential(
        &mut self,
        c: Credential,
    ) -> Result<(Stamped<Credential>, bool), StoreError> {
        let old = self.next.credentials.get(&c.id);
        let created = old.is_none();
        let (new, changed) = self.stamp(old, c);
        if changed {
            self.record(Change::Credential(new.value.id.clone(), Some(new.clone())));
        }
        Ok((new, created))
    }

    /// Removes a credential set no group's Funnel or Beam names. (A Beam
    /// reference with `#{imsi}` names no one set: those may be deleted.)
    pub(crate) fn delete_credential(&mut self, id: &CredentialId) -> Result<(), StoreError> {
        if !self.next.credentials.contains_key(id) {
            return Err(not_found("credentials", id));
        }
        if let Some(g) = self.next.groups.values().find(|g| {
            g.value
                .funnel
                .as_ref()
                .is_some_and(|f| &f.credentials_id == id)
                || g.value.beam.fixed_credentials().any(|c| &c == id)
        }) {
            return Err(StoreError::Conflict(format!(
                "credentials {id} are used by group {}",
                g.value.id
            )));
        }
        self.record(Change::Credential(id.clone(), None));
        Ok(())
    }

    // ---- static sessions ----

    /// Binds `ip` to a registered subscriber.
    pub(crate) fn put_session(
        &mut self,
        ip: IpAddr,
        imsi: Imsi,
        imei: Option<Imei>,
        msisdn: Option<Msisdn>,
    ) -> Result<StaticSession, StoreError> {
        if !self.next.subscribers.contains_key(&imsi) {
            return Err(StoreError::Invalid(format!(
                "subscriber {imsi} does not exist (register it first)"
            )));
        }
        let ip = canonical_ip(ip);
        let mut s = StaticSession {
            imsi,
            imei,
            msisdn,
            created_at: self.now,
        };
        if let Some(old) = self.next.sessions.get(&ip) {
            if old.same_binding(&s) {
                return Ok(old.clone());
            }
            s.created_at = old.created_at;
        }
        self.record(Change::Session(ip, Some(s.clone())));
        Ok(s)
    }

    /// Removes a static session; `None` if there was none for `ip`.
    pub(crate) fn delete_session(&mut self, ip: IpAddr) -> Option<StaticSession> {
        let ip = canonical_ip(ip);
        let old = self.next.sessions.get(&ip)?.clone();
        self.record(Change::Session(ip, None));
        Some(old)
    }

    // ---- tokens ----

    pub(crate) fn put_token(&mut self, name: &str, digest: TokenDigest) -> Result<(), StoreError> {
        check_token_name(name)?;
        if self.next.tokens.contains_key(name) {
            return Err(StoreError::Conflict(format!("token {name} already exists")));
        }
        let t = TokenRecord {
            name: name.to_owned(),
            digest,
            created_at: self.now,
        };
        self.record(Change::Token(name.to_owned(), Some(t)));
        Ok(())
    }

    pub(crate) fn revoke_token(&mut self, name: &str) -> Result<(), StoreError> {
        if !self.next.tokens.contains_key(name) {
            return Err(not_found("token", name));
        }
        self.record(Change::Token(name.to_owned(), None));
        Ok(())
    }

    // ---- auth keys ----

    /// Adds an auth key (its id is new, made by the caller), created now.
    pub(crate) fn put_auth_key(&mut self, mut key: AuthKeyRecord) -> Result<(), StoreError> {
        if self.next.auth_keys.contains_key(&key.id) {
            return Err(StoreError::Conflict(format!(
                "auth key {} already exists",
                key.id
            )));
        }
        let of_operator = self
            .next
            .auth_keys
            .values()
            .filter(|k| k.operator_id == key.operator_id)
            .count();
        if of_operator >= MAX_AUTH_KEYS {
            return Err(StoreError::Conflict(format!(
                "operator {} has {MAX_AUTH_KEYS} auth keys already; delete one first",
                key.operator_id
            )));
        }
        key.created_at = self.now;
        key.last_used_at = None;
        self.record(Change::AuthKey(key.id.clone(), Some(key)));
        Ok(())
    }

    /// Records that the auth key `id` was used now.
    pub(crate) fn touch_auth_key(&mut self, id: &str) -> Result<(), StoreError> {
        let mut key = self
            .next
            .auth_keys
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("auth key", id))?;
        key.last_used_at = Some(self.now);
        self.record(Change::AuthKey(id.to_owned(), Some(key)));
        Ok(())
    }

    pub(crate) fn delete_auth_key(&mut self, id: &str) -> Result<(), StoreError> {
        if !self.next.auth_keys.contains_key(id) {
            return Err(not_found("auth key", id));
        }
        self.record(Change::AuthKey(id.to_owned(), None));
        Ok(())
    }

    // ---- the configuration file ----

    /// Upserts every entity the file declares; keeps the others (those the
    /// API made). What the file says wins for what it declares; entities it
    /// declares unchanged are not rewritten (their `lastModifiedAt` stays).
    pub(crate) fn apply_config(&mut self, config: &Config) -> Result<(), StoreError> {
        for op in &config.operators {
            self.put_operator(op.clone());
        }
        for c in &config.credentials {
            self.put_credential(c.clone())?;
        }
        for g in &config.groups {
            self.put_group(g.clone())?;
        }
        for s in &config.subscribers {
            self.put_subscriber(s.clone())?;
        }
        for s in &config.sessions {
            self.put_session(s.ip, s.imsi.clone(), s.imei.clone(), s.msisdn.clone())?;
        }
        Ok(())
    }
}

/// Token names follow the id rule: 1 to 64 of letters, digits, `-_.`.
pub(crate) fn check_token_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "token names are 1 to 64 letters, digits, '-', '_' or '.'".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn imsi(n: u8) -> Imsi {
        Imsi::parse(&format!("0010100000000{n:02}")).unwrap()
    }

    fn sim(n: u8) -> Subscriber {
        Subscriber {
            imsi: imsi(n),
            imei: None,
            msisdn: None,
            sim_id: None,
            operator_id: None,
            group_id: None,
            tags: Default::default(),
            status: SubscriberStatus::Active,
            imei_lock: None,
        }
    }

    fn group(id: &str) -> Group {
        Group {
            id: GroupId::parse(id).unwrap(),
            operator_id: None,
            name: String::new(),
            funnel: None,
            harvest: Default::default(),
            beam: Default::default(),
            tags: Default::default(),
            configuration: Default::default(),
        }
    }

    fn demo() -> State {
        let mut st = State::default();
        let mut e = Edit::new(&mut st, 1);
        e.apply_config(&Config::embedded_default()).unwrap();
        e.finish();
        st
    }

    #[test]
    fn seeding_fills_the_only_operator_and_records_changes() {
        let mut state = State::default();
        let mut e = Edit::new(&mut state, 7);
        e.apply_config(&Config::embedded_default()).unwrap();
        let changes = e.finish();
        // operator, group, subscriber, session
        assert_eq!(changes.len(), 4, "{changes:?}");
        let s = &state.subscribers[&imsi(1)];
        assert_eq!(
            s.value.operator_id.as_ref().unwrap().as_str(),
            "OP0000000001"
        );
        assert_eq!((s.created_at, s.last_modified_at), (7, 7));
        assert!(
            state.snapshot().groups[&GroupId::parse("demo").unwrap()]
                .harvest
                .enabled
        );
    }

    #[test]
    fn reapplying_an_unchanged_file_writes_nothing() {
        let mut state = demo();
        let mut e = Edit::new(&mut state, 99);
        e.apply_config(&Config::embedded_default()).unwrap();
        let changes = e.finish();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(state.subscribers[&imsi(1)].last_modified_at, 1);
    }

    #[test]
    fn references_are_checked() {
        let mut st = demo();
        let mut e = Edit::new(&mut st, 2);
        let mut s = sim(2);
        s.group_id = Some(GroupId::parse("nope").unwrap());
        assert!(matches!(
            e.create_subscriber(s),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            e.create_subscriber(sim(1)),
            Err(StoreError::Conflict(_))
        ));
        // The demo group has a member.
        let demo_id = GroupId::parse("demo").unwrap();
        assert!(matches!(
            e.delete_group(&demo_id),
            Err(StoreError::Conflict(_))
        ));
        e.modify_subscriber(&imsi(1), |s| {
            s.group_id = None;
            Ok(())
        })
        .unwrap();
        e.delete_group(&demo_id).unwrap();
        assert!(matches!(
            e.put_session("10.0.0.1".parse().unwrap(), imsi(9), None, None),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn credentials_in_use_cannot_be_deleted() {
        use crate::model::{AwsCredentials, CredentialKind, Secret};
        let mut st = State::default();
        let mut e = Edit::new(&mut st, 1);
        let id = CredentialId::parse("kin").unwrap();
        let (_, created) = e
            .put_credential(Credential {
                id: id.clone(),
                description: None,
                kind: CredentialKind::Aws(AwsCredentials {
                    access_key_id: "AKID".into(),
                    secret_access_key: Secret::new("x"),
                    session_token: None,
                }),
            })
            .unwrap();
        assert!(created);
        e.create_group(group("g")).unwrap();
        e.put_configuration(
            &GroupId::parse("g").unwrap(),
            Namespace::Funnel,
            vec![
                (
                    "destination".into(),
                    json!({"service": "kinesis", "resourceUrl": "https://k/s"}),
                ),
                ("credentialsId".into(), json!("kin")),
            ],
        )
        .unwrap();
        assert!(matches!(
            e.delete_credential(&id),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn terminated_is_final() {
        let mut st = demo();
        let mut e = Edit::new(&mut st, 2);
        e.set_status(&imsi(1), SubscriberStatus::Suspended).unwrap();
        e.set_status(&imsi(1), SubscriberStatus::Active).unwrap();
        e.set_status(&imsi(1), SubscriberStatus::Terminated)
            .unwrap();
        for s in [SubscriberStatus::Active, SubscriberStatus::Terminated] {
            assert!(matches!(
                e.set_status(&imsi(1), s),
                Err(StoreError::InvalidState(_))
            ));
        }
    }

    #[test]
    fn deleting_a_subscriber_removes_its_static_sessions() {
        let mut st = demo();
        let mut e = Edit::new(&mut st, 2);
        e.delete_subscriber(&imsi(1)).unwrap();
        let changes = e.finish();
        assert!(st.sessions.is_empty());
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Session(_, None))));
    }

    #[test]
    fn mapped_v4_sessions_are_keyed_by_v4() {
        let mut st = demo();
        let mut e = Edit::new(&mut st, 2);
        e.put_session("::ffff:10.1.2.3".parse().unwrap(), imsi(1), None, None)
            .unwrap();
        assert!(e
            .state()
            .sessions
            .contains_key(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(e.delete_session("10.1.2.3".parse().unwrap()).is_some());
    }

    #[test]
    fn token_names_are_checked_and_unique() {
        let mut st = State::default();
        let mut e = Edit::new(&mut st, 1);
        e.put_token("ci", [0; 32]).unwrap();
        assert!(matches!(
            e.put_token("ci", [1; 32]),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            e.put_token("a b", [1; 32]),
            Err(StoreError::Invalid(_))
        ));
        e.revoke_token("ci").unwrap();
        assert!(matches!(
            e.revoke_token("ci"),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn an_unfinished_edit_is_undone() {
        let mut st = demo();
        {
            let mut e = Edit::new(&mut st, 2);
            e.set_status(&imsi(1), SubscriberStatus::Suspended).unwrap();
            e.create_subscriber(sim(2)).unwrap();
            e.delete_session("127.0.0.1".parse().unwrap()).unwrap();
            e.put_token("t", [0; 32]).unwrap();
            e.create_group(group("g")).unwrap();
            e.delete_group(&GroupId::parse("g").unwrap()).unwrap();
            assert_eq!(e.changes().len(), 6);
            // Dropped without finish: the store did not take it.
        }
        let fresh = demo();
        assert_eq!(st.subscribers.len(), 1);
        assert_eq!(
            st.subscribers[&imsi(1)].value.status,
            SubscriberStatus::Active
        );
        assert_eq!(st.sessions, fresh.sessions);
        assert!(st.tokens.is_empty());
        assert_eq!(
            st.groups.keys().collect::<Vec<_>>(),
            fresh.groups.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn auth_keys_are_added_used_and_deleted() {
        let op = OperatorId::parse("OP0000000001").unwrap();
        let key = AuthKeyRecord {
            id: "keyId-a".into(),
            operator_id: op,
            salt: [1; 16],
            digest: [2; 32],
            created_at: 0,
            last_used_at: Some(1),
        };
        let mut st = State::default();
        let mut e = Edit::new(&mut st, 7);
        e.put_auth_key(key.clone()).unwrap();
        assert!(matches!(
            e.put_auth_key(key.clone()),
            Err(StoreError::Conflict(_))
        ));
        e.finish();
        let k = &st.auth_keys["keyId-a"];
        assert_eq!((k.created_at, k.last_used_at), (7, None));
        let mut e = Edit::new(&mut st, 9);
        e.touch_auth_key("keyId-a").unwrap();
        assert!(matches!(
            e.touch_auth_key("keyId-b"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(e.changes().iter().all(|c| !c.in_snapshot()));
        e.finish();
        assert_eq!(st.auth_keys["keyId-a"].last_used_at, Some(9));
        {
            // Undone when not finished.
            let mut e = Edit::new(&mut st, 10);
            e.delete_auth_key("keyId-a").unwrap();
        }
        assert!(st.auth_keys.contains_key("keyId-a"));
        let mut e = Edit::new(&mut st, 11);
        e.delete_auth_key("keyId-a").unwrap();
        assert!(e.delete_auth_key("keyId-a").is_err());
        e.finish();
        assert!(st.auth_keys.is_empty());
    }
}
