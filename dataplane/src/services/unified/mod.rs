//! The Unified Endpoint (port 23080, and HTTP whose Host names no service):
//! one message goes, in parallel, to every service the SIM's group enables
//! among Beam (UDP/TCP → HTTP), Funnel, Funk and Harvest, and the device gets one
//! answer chosen by the group's `UnifiedEndpoint` response format
//! ([`reply::compose`]).

pub mod reply;

use simgate_control::model::unified::{ResponseFormat, UnifiedService};
use simgate_control::{BeamEntry, BeamEntryPoint, Identity, Snapshot};

use super::funnel::SourceProtocol;
use super::{resolve, Handled, Message, Reply, Services};

/// The Beam entry a UDP or TCP message to the Unified Endpoint is also
/// forwarded through, when the group enables it.
fn beam_entry(
    protocol: SourceProtocol,
    identity: &Identity,
) -> Option<(BeamEntryPoint, &BeamEntry)> {
    let point = match protocol {
        SourceProtocol::Udp => BeamEntryPoint::UdpToHttp,
        SourceProtocol::Tcp => BeamEntryPoint::TcpToHttp,
        SourceProtocol::Http => return None,
    };
    let entry = identity.group.as_deref()?.beam.enabled(&point)?;
    Some((point, entry))
}

impl Services {
    /// Whether [`Self::unified`] would give the message to Funnel alone and
    /// return Funnel's answer as it is: the usual case, which a UDP receive
    /// batch serves together ([`Self::handle_batch`]).
    pub(super) fn unified_is_funnel_alone(&self, msg: &Message<'_>, identity: &Identity) -> bool {
        let group = identity.group.as_deref();
        super::funnel::is_enabled(identity)
            && !group.is_some_and(|g| g.harvest.enabled)
            && !super::funk::is_enabled(identity)
            && beam_entry(msg.protocol, identity).is_none()
            && matches!(ResponseFormat::of(group), Ok(ResponseFormat::Auto))
    }

    /// Serves a message sent to the Unified Endpoint.
    pub(super) fn unified(
        &self,
        msg: &Message<'_>,
        identity: &Identity,
        snapshot: &Snapshot,
        funnel_on: bool,
        harvest_on: bool,
    ) -> Handled {
        let proto = msg.protocol.as_str();
        let format = match ResponseFormat::of(identity.group.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                // Written before simgate checked it (or by hand in the
                // store): refuse rather than guess which answer is wanted.
                self.metrics.served("unified", proto, 500);
                return Handled::Now(Reply::error(500, &e.to_string()));
            }
        };
        let beam = beam_entry(msg.protocol, identity);
        let mut parts: Vec<(UnifiedService, Handled)> = Vec::with_capacity(4);
        if let Some((point, entry)) = beam {
            parts.push((
                UnifiedService::Beam,
                self.beam
                    .forward_payload(&point, entry, msg.payload, identity, snapshot),
            ));
        }
        if funnel_on {
            parts.push((UnifiedService::Funnel, self.funnel(msg, identity, snapshot)));
        }
        if super::funk::is_enabled(identity) {
            parts.push((
                UnifiedService::Funk,
                self.funk.handle(msg, identity, snapshot),
            ));
        }
        if harvest_on {
            parts.push((UnifiedService::Harvest, self.harvest(msg, identity)));
        }
        if parts.is_empty() {
            self.metrics.served("unified", proto, 400);
            return Handled::Now(Reply::error(
                400,
                "no service is enabled for this SIM's group (enable Beam, Funnel, Funk or Harvest)",
            ));
        }
        // One service answering as itself needs no waiting on the others.
        if matches!(format, ResponseFormat::Auto) && parts.len() == 1 {
            if let Some((_, only)) = parts.pop() {
                return only;
            }
        }
        let imsi = identity.subscriber.imsi.to_string();
        let metrics = std::sync::Arc::clone(&self.metrics);
        Handled::Later(Box::pin(async move {
            let (names, handled): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
            // Every service gets the message whatever the format: a format
            // naming one service only chooses whose answer is returned.
            let replies = futures_util::future::join_all(handled.into_iter().map(resolve)).await;
            let named: Vec<reply::Part<'_>> = names.into_iter().zip(replies.iter()).collect();
            let r = reply::compose(&format, &imsi, &named);
            // Each service counted its own answer; this is the device's.
            metrics.served("unified", proto, r.status);
            r
        }))
    }
}
