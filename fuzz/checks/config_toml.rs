//! Property of the configuration file parser (`simgate_control::Config::parse`).
//!
//! Input: the file's text (invalid UTF-8 is replaced, lossily).
//!
//! Property: parsing never panics, and a configuration it accepts is
//! consistent: its snapshot holds every group and subscriber once, every
//! reference between them resolves, and every static session's IMSI
//! resolves to a registered subscriber (`resolve` may still refuse a
//! suspended SIM, but never with `UnknownSubscriber`).
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use simgate_control::{Config, IdentityError};

pub(crate) fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = Config::parse(&text) else {
        return;
    };
    let snapshot = config.snapshot();
    assert_eq!(
        snapshot.groups.len(),
        config.groups.len(),
        "a group was declared twice"
    );
    assert_eq!(
        snapshot.subscribers.len(),
        config.subscribers.len(),
        "a subscriber was declared twice"
    );
    for group in snapshot.groups.values() {
        if let Some(funnel) = &group.funnel {
            assert!(
                snapshot.credentials.contains_key(&funnel.credentials_id),
                "group {}: credentials {} not in the snapshot",
                group.id,
                funnel.credentials_id
            );
        }
        if let Some(op) = &group.operator_id {
            assert!(
                snapshot.operators.contains_key(op),
                "group {}: operator {op} not in the snapshot",
                group.id
            );
        }
    }
    for subscriber in snapshot.subscribers.values() {
        if let Some(g) = &subscriber.group_id {
            assert!(
                snapshot.groups.contains_key(g),
                "subscriber {}: group {g} not in the snapshot",
                subscriber.imsi
            );
        }
    }
    for (ip, session) in config.static_sessions() {
        match snapshot.resolve(&session) {
            Err(e @ IdentityError::UnknownSubscriber(_)) => {
                panic!("static session {ip}: {e}")
            }
            Err(_) => {}
            Ok(identity) => {
                assert_eq!(identity.subscriber.imsi, session.imsi, "session {ip}");
                assert_eq!(
                    identity.group.is_some(),
                    identity.subscriber.group_id.is_some(),
                    "session {ip}: group lost in resolution"
                );
            }
        }
    }
}
