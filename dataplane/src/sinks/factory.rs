//! Turns a group's Funnel destination and credentials into a sink.

use std::sync::Arc;
use std::time::Duration;

use simgate_control::{AwsCredentials, Credential, CredentialKind, Destination, SinkService};

use super::aws::{AwsConfigError, ResourceUrlError};
use super::aws_iot::AwsIotSink;
use super::eventhubs::{EventHubsConfigError, EventHubsSink};
use super::firehose::FirehoseSink;
use super::https::request::HttpsConfigError;
use super::https::HttpsSink;
use super::kinesis::KinesisSink;
use super::null::NullSink;
use super::pubsub::{PubsubConfigError, PubsubSink};
use super::Sink;
use crate::upstream::Upstream;

/// Why a destination cannot be turned into a sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkBuildError {
    /// The destination needs AWS credentials and has none, or another type.
    #[error("{service} needs AWS credentials (type = \"aws\")")]
    NeedsAwsCredentials { service: &'static str },
    /// Event Hubs needs a shared access policy, or the credential is another type.
    #[error("{service} needs Azure credentials (type = \"azure-credentials\")")]
    NeedsAzureCredentials { service: &'static str },
    #[error("resourceUrl: {0}")]
    ResourceUrl(#[from] ResourceUrlError),
    #[error(transparent)]
    EventHubs(#[from] EventHubsConfigError),
    #[error(transparent)]
    Aws(#[from] AwsConfigError),
    /// Pub/Sub needs a Google service account key file, or has another type.
    #[error(
        "{service} needs a Google service account key (type = \"google-service-account-json\")"
    )]
    NeedsGoogleCredentials { service: &'static str },
    #[error("pubsub: {0}")]
    Pubsub(#[from] PubsubConfigError),
    /// An `https` destination signs with a `psk` credential or not at all.
    #[error("https signs with a psk credential (type = \"psk\"), not {found:?}")]
    HttpsNeedsPsk { found: &'static str },
    #[error("https destination: {0}")]
    Https(#[from] HttpsConfigError),
    /// For test factories that fail on purpose.
    #[error("{0}")]
    Other(String),
}

/// Builds sinks; tests substitute one that injects faults.
pub trait SinkFactory: Send + Sync + 'static {
    fn build(
        &self,
        destination: &Destination,
        credential: Option<&Credential>,
        request_timeout: Duration,
    ) -> Result<Arc<dyn Sink>, SinkBuildError>;
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

/// The AWS credentials of `credential`, or the error naming `service`.
fn aws_credentials(
    credential: Option<&Credential>,
    service: SinkService,
) -> Result<&AwsCredentials, SinkBuildError> {
    match credential.map(|c| &c.kind) {
        Some(CredentialKind::Aws(aws)) => Ok(aws),
        _ => Err(SinkBuildError::NeedsAwsCredentials {
            service: service.as_str(),
        }),
    }
}

/// The destination's `endpoint` override, else `https://{service}.{region}.amazonaws.com`.
fn aws_endpoint(destination: &Destination, service: &str, region: &str) -> String {
    destination
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://{service}.{region}.amazonaws.com"))
}

impl SinkFactory for DefaultSinkFactory {
    fn build(
        &self,
        destination: &Destination,
        credential: Option<&Credential>,
        request_timeout: Duration,
    ) -> Result<Arc<dyn Sink>, SinkBuildError> {
        match destination.service {
            SinkService::Discard => Ok(Arc::new(NullSink)),
            SinkService::Kinesis => {
                let (region, stream) =
                    super::kinesis::parse_resource_url(&destination.resource_url)?;
                let endpoint = aws_endpoint(destination, "kinesis", &region);
                let aws = aws_credentials(credential, destination.service)?;
                let sink = KinesisSink::with_upstream(
                    &self.upstream,
                    &endpoint,
                    region,
                    stream,
                    aws.clone(),
                    request_timeout,
                )?
                .with_random_partition_keys(destination.randomize_partition_key);
                Ok(Arc::new(sink))
            }
            SinkService::Firehose => {
                let (region, delivery_stream) =
                    super::firehose::parse_resource_url(&destination.resource_url)?;
                let endpoint = aws_endpoint(destination, "firehose", &region);
                let aws = aws_credentials(credential, destination.service)?;
                let sink = FirehoseSink::with_upstream(
                    &self.upstream,
                    &endpoint,
                    region,
                    delivery_stream,
                    aws,
                    request_timeout,
                )?;
                Ok(Arc::new(sink))
            }
            SinkService::AwsIot => {
                let resource = super::aws_iot::parse_resource_url(&destination.resource_url)?;
                let endpoint = destination
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| resource.endpoint.clone());
                let aws = aws_credentials(credential, destination.service)?;
                let sink = AwsIotSink::with_upstream(
                    &self.upstream,
                    &endpoint,
                    resource,
                    destination.send_payloads_as_binary,
                    aws,
                    request_timeout,
                )?;
                Ok(Arc::new(sink))
            }
            SinkService::Https => {
                let psk = match credential.map(|c| &c.kind) {
                    None => None,
                    Some(CredentialKind::Psk(p)) => Some(p.key.expose()),
                    Some(other) => {
                        return Err(SinkBuildError::HttpsNeedsPsk {
                            found: other.type_name(),
                        })
                    }
                };
                let url = destination
                    .endpoint
                    .as_deref()
                    .unwrap_or(&destination.resource_url);
                let sink = HttpsSink::with_upstream(
                    &self.upstream,
                    url,
                    destination.request_mode,
                    &destination.headers,
                    psk,
                    request_timeout,
                )?;
                Ok(Arc::new(sink))
            }
            SinkService::Pubsub => {
                let Some(CredentialKind::GoogleServiceAccount(google)) =
                    credential.map(|c| &c.kind)
                else {
                    return Err(SinkBuildError::NeedsGoogleCredentials {
                        service: destination.service.as_str(),
                    });
                };
                let sink = PubsubSink::with_upstream(
                    &self.upstream,
                    &destination.resource_url,
                    destination.endpoint.as_deref(),
                    google.credentials.expose(),
                    request_timeout,
                )?;
                Ok(Arc::new(sink))
            }
            SinkService::Eventhubs => {
                let Some(CredentialKind::Azure(azure)) = credential.map(|c| &c.kind) else {
                    return Err(SinkBuildError::NeedsAzureCredentials {
                        service: destination.service.as_str(),
                    });
                };
                let sink = EventHubsSink::with_upstream(
                    &self.upstream,
                    &destination.resource_url,
                    destination.endpoint.as_deref(),
                    azure,
                    request_timeout,
                )?;
                Ok(Arc::new(sink))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use simgate_control::{AzureCredentials, CredentialId, Secret};

    use super::*;
    use crate::sinks::eventhubs::EventHubsUrlError;

    fn factory() -> DefaultSinkFactory {
        DefaultSinkFactory::new(Upstream::shared_default().unwrap())
    }

    fn aws() -> Credential {
        Credential {
            id: CredentialId::parse("c").unwrap(),
            description: None,
            kind: CredentialKind::Aws(AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("s"),
                session_token: None,
            }),
        }
    }

    fn azure() -> Credential {
        Credential {
            id: CredentialId::parse("az").unwrap(),
            description: None,
            kind: CredentialKind::Azure(AzureCredentials {
                policy_name: "send".into(),
                key: Secret::new("k"),
            }),
        }
    }

    fn build(d: &Destination, c: Option<&Credential>) -> Result<&'static str, SinkBuildError> {
        factory()
            .build(d, c, Duration::from_secs(1))
            .map(|s| s.kind())
    }

    #[tokio::test]
    async fn builds_each_sink_or_says_why_not() {
        let kinesis = Destination::new(
            SinkService::Kinesis,
            "https://kinesis.us-east-1.amazonaws.com/s",
        );
        let firehose = Destination::new(
            SinkService::Firehose,
            "https://firehose.us-east-1.amazonaws.com/s",
        );
        assert_eq!(build(&kinesis, Some(&aws())).unwrap(), "kinesis");
        assert_eq!(build(&firehose, Some(&aws())).unwrap(), "firehose");
        let iot = Destination::new(
            SinkService::AwsIot,
            "https://a1b2-ats.iot.ap-northeast-1.amazonaws.com/devices/#{imsi}",
        );
        assert_eq!(build(&iot, Some(&aws())).unwrap(), "aws-iot");
        assert!(matches!(
            build(&iot, None),
            Err(SinkBuildError::NeedsAwsCredentials { service: "aws-iot" })
        ));
        let discard = Destination::new(SinkService::Discard, "bench");
        assert_eq!(build(&discard, None).unwrap(), "null");

        assert!(matches!(
            build(&firehose, None),
            Err(SinkBuildError::NeedsAwsCredentials {
                service: "firehose"
            })
        ));
        let wrong = Destination::new(
            SinkService::Firehose,
            "https://kinesis.us-east-1.amazonaws.com/s",
        );
        assert!(matches!(
            build(&wrong, Some(&aws())),
            Err(SinkBuildError::ResourceUrl(
                ResourceUrlError::NotServiceHost { .. }
            ))
        ));
        let pubsub = Destination::new(SinkService::Pubsub, "devices");
        assert!(matches!(
            build(&pubsub, Some(&aws())),
            Err(SinkBuildError::NeedsGoogleCredentials { service: "pubsub" })
        ));
        let google = |key_file: String| Credential {
            id: CredentialId::parse("g").unwrap(),
            description: None,
            kind: CredentialKind::GoogleServiceAccount(simgate_control::GoogleServiceAccountJson {
                credentials: Secret::new(key_file),
            }),
        };
        let key_file =
            crate::sinks::pubsub::token::tests::key_file("https://oauth2.googleapis.com/token");
        assert_eq!(
            build(&pubsub, Some(&google(key_file.to_string()))).unwrap(),
            "pubsub"
        );
        assert!(matches!(
            build(&pubsub, Some(&google("{}".into()))),
            Err(SinkBuildError::Pubsub(PubsubConfigError::KeyFile(_)))
        ));
        let bad_topic = Destination::new(SinkService::Pubsub, "goog-x");
        assert!(matches!(
            build(&bad_topic, Some(&google(key_file.to_string()))),
            Err(SinkBuildError::Pubsub(PubsubConfigError::Topic(_)))
        ));
        // Event Hubs: a shared access policy, a valid resource URL.
        let eventhubs = Destination::new(
            SinkService::Eventhubs,
            "https://ns.servicebus.windows.net/devices/messages",
        );
        assert_eq!(build(&eventhubs, Some(&azure())).unwrap(), "eventhubs");
        assert!(matches!(
            build(&eventhubs, Some(&aws())),
            Err(SinkBuildError::NeedsAzureCredentials {
                service: "eventhubs"
            })
        ));
        assert!(matches!(
            build(&eventhubs, None),
            Err(SinkBuildError::NeedsAzureCredentials { .. })
        ));
        let no_messages = Destination::new(
            SinkService::Eventhubs,
            "https://ns.servicebus.windows.net/devices",
        );
        assert!(matches!(
            build(&no_messages, Some(&azure())),
            Err(SinkBuildError::EventHubs(
                EventHubsConfigError::ResourceUrl(EventHubsUrlError::MissingMessages(_))
            ))
        ));
        // https: a psk signs, no credential sends unsigned, others refuse.
        let https = Destination::new(SinkService::Https, "https://hooks.example.com/in");
        let psk = Credential {
            id: CredentialId::parse("p").unwrap(),
            description: None,
            kind: CredentialKind::Psk(simgate_control::PskCredentials {
                key: Secret::new("k"),
            }),
        };
        assert_eq!(build(&https, Some(&psk)).unwrap(), "https");
        assert_eq!(build(&https, None).unwrap(), "https");
        assert!(matches!(
            build(&https, Some(&aws())),
            Err(SinkBuildError::HttpsNeedsPsk {
                found: "aws-credentials"
            })
        ));
        let bad = Destination::new(SinkService::Https, "ftp://hooks.example.com/in");
        assert!(matches!(
            build(&bad, None),
            Err(SinkBuildError::Https(HttpsConfigError::UnsupportedScheme(
                _
            )))
        ));
        let mut bad = https.clone();
        bad.headers
            .insert("Authorization".into(), "Bearer t".into());
        assert!(matches!(
            build(&bad, None),
            Err(SinkBuildError::Https(HttpsConfigError::InvalidHeader(_)))
        ));
        // The old magic endpoint is no longer special: it is not a URL.
        let mut old = kinesis.clone();
        old.endpoint = Some("null:".into());
        assert!(matches!(
            build(&old, Some(&aws())),
            Err(SinkBuildError::Aws(_))
        ));
    }
}
