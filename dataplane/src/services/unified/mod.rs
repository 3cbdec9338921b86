//! The Unified Endpoint (port 23080, and HTTP whose Host names no service):
//! one message goes, in parallel, to every service the SIM's group enables
//! among Beam (UDP/TCP → HTTP), Funnel, Funk and Harvest, and the device gets one
//! answer chosen by the group's `UnifiedEndpoint` response format
//! ([`reply::compose`]).

pub mod reply;

use simgate_control::model::unified::{ResponseFormat, UnifiedService};
use simgate_control::{BeamEntryPoint, Identity, Snapshot};

use super::funnel::SourceProtocol;
use super::{resolve, Handled, Message, Reply, Services};

impl Services {
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
        let beam_point = match msg.protocol {
            SourceProtocol::Udp => Some(BeamEntryPoint::UdpToHttp),
            SourceProtocol::Tcp => Some(BeamEntryPoint::TcpToHttp),
            SourceProtocol::Http => None,
        };
        let beam = beam_point.and_then(|point| {
            let entry = identity.group.as_deref()?.beam.enabled(&point)?;
            Some((point, entry))
        });
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
