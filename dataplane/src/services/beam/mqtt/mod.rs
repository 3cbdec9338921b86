//! Beam's MQTT proxy: the device speaks plain MQTT 3.1.1 to simgate on
//! :1883, simgate speaks MQTTS to the group's broker.
//!
//! [`codec`] is the sans-IO wire format (decode and encode whole packets),
//! [`topic`] the topic rewriting and keepalive rule, [`session`] the
//! sans-IO session (what goes where, what is replayed after a broker
//! reconnect); [`proxy`] is the thin I/O driver around them.

pub mod codec;
pub mod proxy;
pub mod session;
pub mod topic;
