//! Turns a group's Funnel destination and credentials into a sink.

use std::sync::Arc;
use std::time::Duration;

use simgate_control::{Credential, CredentialKind, Destination, SinkService};

use super::kinesis::{parse_resource_url, KinesisSink};
use super::null::NullSink;
use super::Sink;
use crate::upstream::Upstream;

/// The endpoint value that selects the in-process null sink (benchmarks).
pub const NULL_ENDPOINT: &str = "null:";

/// Builds sinks; tests substitute one that injects faults.
pub trait SinkFactory: Send + Sync + 'static {
    fn build(
        &self,
        destination: &Destination,
        credential: Option<&Credential>,
        request_timeout: Duration,
    ) -> Result<Arc<dyn Sink>, String>;
}

/// The real sinks, connecting through one [`Upstream`] (shared roots,
/// timeouts and connection pools).
#[derive(Debug, Clone)]
pub struct DefaultSinkFactory {
    upstream: Upstream,
}

impl DefaultSinkFactory {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

impl SinkFactory for DefaultSinkFactory {
    fn build(
        &self,
        destination: &Destination,
        credential: Option<&Credential>,
        request_timeout: Duration,
    ) -> Result<Arc<dyn Sink>, String> {
        if destination.endpoint.as_deref() == Some(NULL_ENDPOINT) {
            return Ok(Arc::new(NullSink));
        }
        match destination.service {
            SinkService::Kinesis => {
                let (region, stream) =
                    parse_resource_url(&destination.resource_url).map_err(|e| e.to_string())?;
                let endpoint = destination
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://kinesis.{region}.amazonaws.com"));
                let Some(CredentialKind::Aws(aws)) = credential.map(|c| &c.kind) else {
                    return Err("kinesis needs AWS credentials (type = \"aws\")".to_owned());
                };
                let sink = KinesisSink::with_upstream(
                    &self.upstream,
                    &endpoint,
                    region,
                    stream,
                    aws.clone(),
                    request_timeout,
                )
                .map_err(|e| e.to_string())?
                .with_random_partition_keys(destination.randomize_partition_key);
                Ok(Arc::new(sink))
            }
            other => Err(format!(
                "Funnel destination service {:?} is not supported yet (kinesis is)",
                other.as_str()
            )),
        }
    }
}
