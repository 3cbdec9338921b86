//! Serving a UDP receive batch: each datagram as [`Services::handle`]
//! would, under one snapshot, except that the records going to Funnel alone are gathered and
//! queued together, one submission per destination (one permit acquisition
//! or one spool append, one channel send), their envelopes in one buffer.

use std::sync::Arc;

use simgate_control::clock::now_ms;
use simgate_control::{Identity, Snapshot};

use super::funnel::{FunnelBatch, FunnelReply, SourceProtocol};
use super::{
    count_funnel_reply, funnel_answer, Entry, Handled, Message, Reply, ReplyFuture, Services,
};

/// The answers to a receive batch.
#[derive(Default)]
pub struct BatchAnswers {
    /// By place in the batch; `None` for a message answered in `together`.
    pub each: Vec<Option<Handled>>,
    /// Messages (places in the batch) answered alike once their spool
    /// commit resolves.
    pub together: Vec<(Vec<usize>, ReplyFuture)>,
    funnel: FunnelBatch,
}

impl Services {
    /// Serves a receive batch's messages; `answers` is reused between
    /// batches.
    pub fn handle_batch(
        &self,
        msgs: &[Message<'_>],
        snapshot: &Snapshot,
        answers: &mut BatchAnswers,
    ) {
        answers.each.clear();
        answers.together.clear();
        let now = now_ms();
        for (slot, msg) in msgs.iter().enumerate() {
            let identity = match self.sender(msg, snapshot) {
                Ok(identity) => identity,
                Err(refused) => {
                    answers.each.push(Some(refused));
                    continue;
                }
            };
            if !self.funnel_alone(msg, &identity) {
                answers
                    .each
                    .push(Some(self.handle_identified(msg, &identity, snapshot)));
                continue;
            }
            let prepared =
                self.funnel
                    .prepare_in(&mut answers.funnel, slot, &identity, snapshot, msg, now);
            answers.each.push(match prepared {
                Ok(()) => None,
                Err(r) => Some(Handled::Now(self.funnel_reply(msg.protocol.as_str(), &r))),
            });
        }
        if answers.funnel.is_empty() {
            return;
        }
        let proto = SourceProtocol::Udp.as_str();
        let BatchAnswers {
            each,
            together,
            funnel,
        } = answers;
        funnel.submit(|slots, submitted| {
            let mut accepted = Vec::with_capacity(slots.len());
            for (slot, result) in slots.into_iter().zip(submitted.results) {
                match result {
                    Ok(()) if submitted.commit.is_some() => accepted.push(slot),
                    Ok(()) => each[slot] = Some(Handled::Now(self.accepted(proto))),
                    Err(e) => {
                        each[slot] = Some(Handled::Now(self.funnel_reply(proto, &e.into())));
                    }
                }
            }
            if let Some(commit) = submitted.commit {
                let metrics = Arc::clone(&self.metrics);
                let n = accepted.len();
                together.push((
                    accepted,
                    Box::pin(async move {
                        let r = match commit.await {
                            Ok(()) => FunnelReply::Accepted,
                            Err(e) => e.into(),
                        };
                        let reply = funnel_answer(&r);
                        // Counted once per device answered.
                        for _ in 0..n {
                            count_funnel_reply(&metrics, proto, &r, reply.status);
                        }
                        reply
                    }),
                ));
            }
        });
    }

    fn accepted(&self, proto: &'static str) -> Reply {
        self.funnel_reply(proto, &FunnelReply::Accepted)
    }

    /// Whether the message goes to Funnel and nowhere else, answered with
    /// Funnel's own answer (what [`Services::handle_identified`] would do
    /// for it comes down to [`Services::funnel`]).
    fn funnel_alone(&self, msg: &Message<'_>, identity: &Identity) -> bool {
        // TCP waits for room in a full queue, HTTP reads Content-Type:
        // batches are UDP's.
        if msg.protocol != SourceProtocol::Udp {
            return false;
        }
        match msg.entry {
            Entry::Funnel => true,
            Entry::Unified => self.unified_is_funnel_alone(msg, identity),
            Entry::Harvest | Entry::Funk => false,
        }
    }
}
