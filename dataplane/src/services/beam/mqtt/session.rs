//! One proxied MQTT session, sans-IO: what goes where when a packet arrives
//! from the device or from the broker, and what is replayed when the broker
//! connection comes back. The driver ([`super::proxy`]) only moves bytes.
//!
//! Packet identifiers are passed through unchanged: each side of the proxy
//! is one connection, so the device's identifiers are valid upstream and
//! the broker's are valid towards the device. That makes the promise below
//! free of bookkeeping beyond one map:
//!
//! * A device's QoS 1 PUBLISH is kept until the broker's PUBACK, and only
//!   that PUBACK is passed to the device. If the broker connection drops,
//!   the kept messages are sent again (DUP set) once it is back, so nothing
//!   the device saw acknowledged is lost, and nothing unacknowledged is
//!   forgotten while the device stays connected.
//! * Subscriptions the broker granted are remembered and made again after
//!   a reconnect (with simgate's own identifiers, whose SUBACKs are
//!   swallowed).
//! * QoS 2 is not supported (as on SORACOM): a QoS 2 PUBLISH from the
//!   device ends the connection; a QoS 2 subscription is asked as QoS 1.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::codec::{Connect, Packet, Publish, QoS, Subscribe, Unsubscribe, Will};
use super::topic::{TopicContext, TopicError};

/// Device QoS 1 messages awaiting the broker's PUBACK, at most.
pub const MAX_INFLIGHT: usize = 1024;

/// Packets held while the broker connection is down (besides QoS 1
/// messages, which are always kept), at most; older QoS 0 messages are
/// dropped first.
pub const MAX_QUEUED: usize = 1024;

/// Where a packet goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ToUpstream(Packet),
    ToDevice(Packet),
}

/// The device broke the rules; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("QoS 2 is not supported")]
    QoS2,
    #[error("unexpected {0} from the device")]
    Unexpected(&'static str),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("more than {MAX_INFLIGHT} QoS 1 messages awaiting acknowledgement")]
    TooManyInflight,
    #[error("more than {MAX_QUEUED} requests held while the broker is unreachable")]
    QueueFull,
}

impl SessionError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::QoS2 => "qos2",
            Self::Unexpected(_) => "unexpected_packet",
            Self::Topic(_) => "topic_placeholder",
            Self::TooManyInflight => "too_many_inflight",
            Self::QueueFull => "queue_full",
        }
    }
}

/// What the device did, for the driver: keep going, or end the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The device sent DISCONNECT (already forwarded when possible).
    Disconnect,
}

/// The state of one proxied session.
#[derive(Debug)]
pub struct Session {
    ctx: TopicContext,
    append_imsi: bool,
    upstream_up: bool,
    /// Device QoS 1 PUBLISHes (as sent upstream) not yet acknowledged by
    /// the broker.
    inflight: BTreeMap<u16, Publish>,
    /// Filters (as sent upstream) the broker granted, with the QoS asked.
    subscriptions: BTreeMap<String, QoS>,
    pending_subscribe: HashMap<u16, Vec<(String, QoS)>>,
    pending_unsubscribe: HashMap<u16, Vec<String>>,
    /// simgate's own re-subscriptions after a reconnect.
    internal: HashSet<u16>,
    /// Packets for the broker held while it is unreachable.
    queued: VecDeque<Packet>,
    /// QoS 0 messages dropped because the queue was full.
    dropped: u64,
}

impl Session {
    /// A session whose broker connection is up.
    pub fn new(ctx: TopicContext, append_imsi: bool) -> Self {
        Self {
            ctx,
            append_imsi,
            upstream_up: true,
            inflight: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            pending_subscribe: HashMap::new(),
            pending_unsubscribe: HashMap::new(),
            internal: HashSet::new(),
            queued: VecDeque::new(),
            dropped: 0,
        }
    }

    /// The CONNECT sent to the broker for the device's CONNECT: the will's
    /// topic rewritten like a PUBLISH's, and the entry's `username` /
    /// `password` when it has them (else the device's).
    pub fn upstream_connect(
        &self,
        device: &Connect,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Connect, TopicError> {
        let will = match &device.will {
            Some(w) => Some(Will {
                topic: self.ctx.publish_topic(&w.topic, self.append_imsi)?,
                ..w.clone()
            }),
            None => None,
        };
        let (username, password) = match username {
            Some(u) => (
                Some(u.to_owned()),
                password.map(bytes::Bytes::copy_from_slice),
            ),
            None => (device.username.clone(), device.password.clone()),
        };
        Ok(Connect {
            will,
            username,
            password,
            ..device.clone()
        })
    }

    /// QoS 0 messages dropped while the broker was unreachable.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// QoS 1 messages awaiting the broker's acknowledgement.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// A packet from the device.
    pub fn on_device(
        &mut self,
        packet: Packet,
        out: &mut Vec<Action>,
    ) -> Result<Outcome, SessionError> {
        match packet {
            Packet::Publish(p) => self.device_publish(p, out)?,
            Packet::Subscribe(s) => {
                let filters = s
                    .filters
                    .into_iter()
                    .map(|(f, q)| Ok((self.ctx.expand(&f)?, q.min(QoS::AtLeastOnce))))
                    .collect::<Result<Vec<_>, TopicError>>()?;
                self.pending_subscribe.insert(s.pkid, filters.clone());
                self.up(
                    Packet::Subscribe(Subscribe {
                        pkid: s.pkid,
                        filters,
                    }),
                    out,
                )?;
            }
            Packet::Unsubscribe(u) => {
                let topics = u
                    .topics
                    .iter()
                    .map(|t| self.ctx.expand(t))
                    .collect::<Result<Vec<_>, _>>()?;
                self.pending_unsubscribe.insert(u.pkid, topics.clone());
                self.up(
                    Packet::Unsubscribe(Unsubscribe {
                        pkid: u.pkid,
                        topics,
                    }),
                    out,
                )?;
            }
            Packet::PingReq if !self.upstream_up => {
                // Keep the device's keepalive satisfied while the broker
                // is being reached again.
                out.push(Action::ToDevice(Packet::PingResp));
            }
            Packet::PingReq => out.push(Action::ToUpstream(Packet::PingReq)),
            // Acknowledgements of messages the broker sent: only the
            // connection that carried them can take them.
            p
            @ (Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::PubRel(_)) => {
                if self.upstream_up {
                    out.push(Action::ToUpstream(p));
                }
            }
            Packet::Disconnect => {
                if self.upstream_up {
                    out.push(Action::ToUpstream(Packet::Disconnect));
                }
                return Ok(Outcome::Disconnect);
            }
            other => return Err(SessionError::Unexpected(other.name())),
        }
        Ok(Outcome::Continue)
    }

    fn device_publish(
        &mut self,
        mut p: Publish,
        out: &mut Vec<Action>,
    ) -> Result<(), SessionError> {
        p.topic = self.ctx.publish_topic(&p.topic, self.append_imsi)?;
        match p.qos {
            QoS::ExactlyOnce => return Err(SessionError::QoS2),
            QoS::AtLeastOnce => {
                if !self.inflight.contains_key(&p.pkid) && self.inflight.len() >= MAX_INFLIGHT {
                    return Err(SessionError::TooManyInflight);
                }
                // A device's own resend (DUP) replaces the kept copy.
                self.inflight.insert(p.pkid, p.clone());
                if self.upstream_up {
                    out.push(Action::ToUpstream(Packet::Publish(p)));
                }
            }
            QoS::AtMostOnce => self.up(Packet::Publish(p), out)?,
        }
        Ok(())
    }

    /// Sends `p` upstream now, or holds it until the broker is back.
    fn up(&mut self, p: Packet, out: &mut Vec<Action>) -> Result<(), SessionError> {
        if self.upstream_up {
            out.push(Action::ToUpstream(p));
            return Ok(());
        }
        if self.queued.len() >= MAX_QUEUED {
            // Make room by dropping the oldest QoS 0 message, else the new
            // one if it is QoS 0; control packets are never dropped (their
            // answers are owed to the device), so too many of them end the
            // session instead.
            let oldest_qos0 = self
                .queued
                .iter()
                .position(|q| matches!(q, Packet::Publish(p) if p.qos == QoS::AtMostOnce));
            self.dropped += 1;
            match oldest_qos0 {
                Some(i) => {
                    self.queued.remove(i);
                }
                None if matches!(&p, Packet::Publish(_)) => return Ok(()),
                None => return Err(SessionError::QueueFull),
            }
        }
        self.queued.push_back(p);
        Ok(())
    }

    /// A packet from the broker.
    pub fn on_upstream(&mut self, packet: Packet, out: &mut Vec<Action>) {
        match packet {
            Packet::PubAck(pkid) => {
                if self.inflight.remove(&pkid).is_some() {
                    out.push(Action::ToDevice(Packet::PubAck(pkid)));
                }
            }
            Packet::SubAck(ack) => {
                if self.internal.remove(&ack.pkid) {
                    return;
                }
                if let Some(filters) = self.pending_subscribe.remove(&ack.pkid) {
                    for ((filter, qos), code) in filters.into_iter().zip(&ack.return_codes) {
                        if *code != 0x80 {
                            self.subscriptions.insert(filter, qos);
                        }
                    }
                }
                out.push(Action::ToDevice(Packet::SubAck(ack)));
            }
            Packet::UnsubAck(pkid) => {
                if let Some(topics) = self.pending_unsubscribe.remove(&pkid) {
                    for t in topics {
                        self.subscriptions.remove(&t);
                    }
                }
                out.push(Action::ToDevice(Packet::UnsubAck(pkid)));
            }
            // The CONNACK is the driver's; a second one means nothing.
            Packet::ConnAck(_) => {}
            other => out.push(Action::ToDevice(other)),
        }
    }

    /// The broker connection is gone: hold packets until [`Session::on_upstream_ready`].
    pub fn on_upstream_lost(&mut self) {
        self.upstream_up = false;
        // Requests in flight on the lost connection are made again at
        // ready (subscriptions from `pending_subscribe`), so their
        // acknowledgements are still owed to the device.
        for (pkid, filters) in self.pending_subscribe.clone() {
            self.queued
                .push_front(Packet::Subscribe(Subscribe { pkid, filters }));
        }
        for (pkid, topics) in self.pending_unsubscribe.clone() {
            self.queued
                .push_front(Packet::Unsubscribe(Unsubscribe { pkid, topics }));
        }
        self.internal.clear();
    }

    /// The broker accepted a new connection: what to send it first.
    pub fn on_upstream_ready(&mut self, out: &mut Vec<Action>) {
        self.upstream_up = true;
        let pending: HashSet<&String> = self
            .pending_subscribe
            .values()
            .flatten()
            .map(|(f, _)| f)
            .collect();
        let again: Vec<(String, QoS)> = self
            .subscriptions
            .iter()
            .filter(|(f, _)| !pending.contains(f))
            .map(|(f, q)| (f.clone(), *q))
            .collect();
        if !again.is_empty() {
            if let Some(pkid) = self.free_pkid() {
                self.internal.insert(pkid);
                out.push(Action::ToUpstream(Packet::Subscribe(Subscribe {
                    pkid,
                    filters: again,
                })));
            }
        }
        for p in self.inflight.values() {
            let mut p = p.clone();
            p.dup = true;
            out.push(Action::ToUpstream(Packet::Publish(p)));
        }
        while let Some(p) = self.queued.pop_front() {
            out.push(Action::ToUpstream(p));
        }
    }

    /// An identifier no request of the device's is using, from the top of
    /// the range (devices count up from 1).
    fn free_pkid(&self) -> Option<u16> {
        (1..=u16::MAX).rev().find(|id| {
            !self.inflight.contains_key(id)
                && !self.pending_subscribe.contains_key(id)
                && !self.pending_unsubscribe.contains_key(id)
                && !self.internal.contains(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::beam::mqtt::codec::SubAck;
    use bytes::Bytes;

    fn session(append: bool) -> Session {
        Session::new(
            TopicContext {
                imsi: "001010000000001".into(),
                sim_id: None,
                imei: Some("860000012345678".into()),
            },
            append,
        )
    }

    fn publish(topic: &str, qos: QoS, pkid: u16) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            pkid,
            payload: Bytes::from_static(b"x"),
        })
    }

    fn device(s: &mut Session, p: Packet) -> Vec<Action> {
        let mut out = Vec::new();
        s.on_device(p, &mut out).unwrap();
        out
    }

    fn upstream(s: &mut Session, p: Packet) -> Vec<Action> {
        let mut out = Vec::new();
        s.on_upstream(p, &mut out);
        out
    }

    #[test]
    fn publish_rewrites_and_puback_waits_for_the_broker() {
        let mut s = session(true);
        let out = device(&mut s, publish("t/{{imei}}", QoS::AtLeastOnce, 7));
        assert_eq!(
            out,
            [Action::ToUpstream(publish(
                "t/860000012345678/001010000000001",
                QoS::AtLeastOnce,
                7
            ))]
        );
        assert_eq!(s.inflight(), 1);
        assert_eq!(
            upstream(&mut s, Packet::PubAck(7)),
            [Action::ToDevice(Packet::PubAck(7))]
        );
        assert_eq!(s.inflight(), 0);
        // A duplicate PUBACK is not passed on.
        assert!(upstream(&mut s, Packet::PubAck(7)).is_empty());
    }

    #[test]
    fn qos2_and_second_connect_end_the_session() {
        let mut s = session(false);
        let mut out = Vec::new();
        assert_eq!(
            s.on_device(publish("t", QoS::ExactlyOnce, 1), &mut out),
            Err(SessionError::QoS2)
        );
        let c = Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
        };
        let e = s.on_device(Packet::Connect(c), &mut out).unwrap_err();
        assert_eq!(e.reason(), "unexpected_packet");
    }

    #[test]
    fn reconnect_replays_unacked_and_subscriptions() {
        let mut s = session(false);
        let sub = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![("cmd/{{imsi}}".into(), QoS::ExactlyOnce)],
        });
        let out = device(&mut s, sub);
        let Action::ToUpstream(Packet::Subscribe(up)) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            up.filters,
            [("cmd/001010000000001".to_owned(), QoS::AtLeastOnce)]
        );
        upstream(
            &mut s,
            Packet::SubAck(SubAck {
                pkid: 1,
                return_codes: vec![1],
            }),
        );
        device(&mut s, publish("a", QoS::AtLeastOnce, 2));
        s.on_upstream_lost();
        // While down: QoS 1 kept, QoS 0 queued, pings answered locally.
        assert!(device(&mut s, publish("b", QoS::AtLeastOnce, 3)).is_empty());
        assert!(device(&mut s, publish("c", QoS::AtMostOnce, 0)).is_empty());
        assert_eq!(
            device(&mut s, Packet::PingReq),
            [Action::ToDevice(Packet::PingResp)]
        );
        let mut out = Vec::new();
        s.on_upstream_ready(&mut out);
        let names: Vec<String> = out
            .iter()
            .map(|a| match a {
                Action::ToUpstream(Packet::Publish(p)) => format!("pub {} dup={}", p.topic, p.dup),
                Action::ToUpstream(Packet::Subscribe(s)) => format!("sub {}", s.filters[0].0),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "sub cmd/001010000000001",
                "pub a dup=true",
                "pub b dup=true",
                "pub c dup=false"
            ]
        );
        // simgate's own SUBACK is swallowed.
        let Action::ToUpstream(Packet::Subscribe(again)) = &out[0] else {
            panic!()
        };
        assert_eq!(again.pkid, u16::MAX);
        assert!(upstream(
            &mut s,
            Packet::SubAck(SubAck {
                pkid: again.pkid,
                return_codes: vec![1]
            })
        )
        .is_empty());
    }

    #[test]
    fn full_queue_drops_qos0_first() {
        let mut s = session(false);
        s.on_upstream_lost();
        for _ in 0..MAX_QUEUED + 5 {
            device(&mut s, publish("q0", QoS::AtMostOnce, 0));
        }
        assert_eq!(s.dropped(), 5);
        let mut out = Vec::new();
        s.on_upstream_ready(&mut out);
        assert_eq!(out.len(), MAX_QUEUED);
    }

    #[test]
    fn upstream_connect_uses_entry_credentials() {
        let s = session(true);
        let c = Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: "dev".into(),
            will: Some(Will {
                topic: "lwt".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtMostOnce,
                retain: false,
            }),
            username: Some("device".into()),
            password: Some(Bytes::from_static(b"devpw")),
        };
        let up = s.upstream_connect(&c, Some("entry"), Some(b"pw")).unwrap();
        assert_eq!(up.username.as_deref(), Some("entry"));
        assert_eq!(up.password.as_deref(), Some(&b"pw"[..]));
        assert_eq!(up.will.unwrap().topic, "lwt/001010000000001");
        let up = s.upstream_connect(&c, None, None).unwrap();
        assert_eq!(up.username.as_deref(), Some("device"));
        assert_eq!(up.client_id, "dev");
    }
}
