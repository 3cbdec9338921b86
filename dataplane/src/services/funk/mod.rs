//! SORACOM Funk (HTTP Host `funk.*` on the devices' listener; UDP/TCP
//! through the Unified Endpoint): a device's message invokes the function
//! its group's `SoracomFunk` names, and the function's answer goes back to
//! the device.
//!
//! * AWS Lambda: the Invoke API (`POST /2015-03-31/functions/{name}/invocations`,
//!   SigV4 service `lambda`, the group's AWS credentials), the SIM's context
//!   in `X-Amz-Client-Context`.
//! * HTTPS functions (Azure Functions, Google Cloud Functions): `POST` to
//!   the URL with `User-Agent: SORACOM Funk` and an `x-soracom-token` JWT
//!   carrying the same context, signed with Endorse's keys (so a function
//!   verifies it from the published JWKS, `endorse.*/.well-known/jwks.json`).
//!
//! [`settings`] reads the group's configuration, [`request`] builds the
//! event, the context and the token and reads the answer — both sans-IO;
//! this module does the I/O.

pub mod request;
pub mod settings;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request};
use simgate_control::config::{FunkSettings, UpstreamSettings};
use simgate_control::{CredentialKind, Identity, Snapshot};
use tokio::sync::OnceCell;

use super::endorse::Endorse;
use super::{Handled, Message, Reply};
use crate::metrics::Metrics;
use crate::sinks::aws::{AwsJsonClient, Post};
use crate::sinks::exchange::exchange;
use crate::sinks::SinkError;
use crate::upstream::Upstream;
use request::{Answer, Sim};
use settings::Target;

const SERVICE: &str = "funk";
/// What SORACOM's Funk sends as `User-Agent`.
pub const USER_AGENT_VALUE: &str = "SORACOM Funk";

/// The Funk service: outbound connections (shared with nothing but its
/// own pool), Endorse's keys for the tokens, its settings.
pub struct Funk {
    /// Built at start by the server, or on first use (servers started
    /// with a test sink factory build none until Funk is used).
    upstream: Arc<OnceCell<Upstream>>,
    upstream_settings: UpstreamSettings,
    settings: Arc<FunkSettings>,
    endorse: Arc<Endorse>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Funk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Funk")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One invocation, everything owned (it outlives the device's message).
enum Call {
    Lambda {
        endpoint: String,
        region: String,
        path: String,
        client_context: String,
        credentials: simgate_control::AwsCredentials,
    },
    Https {
        url: String,
        token: String,
    },
}

impl Funk {
    pub fn new(
        upstream: Option<Upstream>,
        upstream_settings: UpstreamSettings,
        settings: FunkSettings,
        endorse: Arc<Endorse>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            upstream: Arc::new(OnceCell::new_with(upstream)),
            upstream_settings,
            settings: Arc::new(settings),
            endorse,
            metrics,
        }
    }

    /// Serves one message from an identified SIM: `400` when Funk is off
    /// for its group or the data does not fit the group's `contentType`,
    /// `500` when the group's `SoracomFunk` is unusable, else the
    /// function's answer (later).
    pub fn handle(&self, msg: &Message<'_>, identity: &Identity, snapshot: &Snapshot) -> Handled {
        let proto = msg.protocol.as_str();
        match self.prepare(msg, identity, snapshot) {
            Ok((target, call, event)) => {
                let (upstream, upstream_settings) =
                    (Arc::clone(&self.upstream), self.upstream_settings.clone());
                let (settings, metrics) = (Arc::clone(&self.settings), Arc::clone(&self.metrics));
                Handled::Later(Box::pin(async move {
                    let answer = invoke(&upstream, upstream_settings, &settings, call, event).await;
                    finish(&metrics, target, proto, answer)
                }))
            }
            Err(answer) => Handled::Now(finish(&self.metrics, "none", proto, answer)),
        }
    }

    /// Everything that needs no I/O: the settings, the credentials, the
    /// event, the context and the token.
    fn prepare(
        &self,
        msg: &Message<'_>,
        identity: &Identity,
        snapshot: &Snapshot,
    ) -> Result<(&'static str, Call, Bytes), Answer> {
        let group = identity.group.as_deref();
        let settings = match settings::of(group, self.settings.allow_insecure_endpoints) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(failure(
                    400,
                    "disabled",
                    "Funk is not enabled for this SIM's group".into(),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "SoracomFunk is unusable");
                return Err(failure(500, "config_error", e.to_string()));
            }
        };
        let form = request::form(settings.content_type, msg.protocol, msg.content_type);
        let event = request::event(form, msg.payload).map_err(|e| {
            let status = if matches!(e, request::EventError::TooLarge(_)) {
                413
            } else {
                400
            };
            failure(status, "bad_request", e.to_string())
        })?;
        let s = &identity.subscriber;
        let imei = identity.imei.as_ref().map(|i| i.imei15());
        let sim = Sim {
            operator_id: identity.operator_id.as_str(),
            coverage: &self.settings.coverage,
            imsi: s.imsi.as_str(),
            sim_id: s.sim_id.as_ref().map(|m| m.as_str()),
            imei: imei.as_deref(),
            protocol: msg.protocol,
        };
        let target = settings.target.label();
        let call = match settings.target {
            Target::Lambda {
                function,
                endpoint,
                credentials_id,
            } => {
                let credential = simgate_control::snapshot::resolve_credentials_ref(
                    snapshot,
                    &credentials_id,
                    &s.imsi,
                )
                .map_err(|e| failure(500, "config_error", format!("SoracomFunk: {e}")))?;
                let CredentialKind::Aws(aws) = &credential.kind else {
                    return Err(failure(
                        500,
                        "config_error",
                        format!(
                            "SoracomFunk: credentials {} are of type {}, AWS Lambda needs aws",
                            credential.id,
                            credential.kind.type_name()
                        ),
                    ));
                };
                Call::Lambda {
                    endpoint,
                    path: function.invoke_path(),
                    region: function.region,
                    client_context: request::client_context(&sim),
                    credentials: aws.clone(),
                }
            }
            Target::Https { url } => {
                let now = simgate_control::clock::now_ms() / 1000;
                let jti = format!("{:032x}", rand::random::<u128>());
                let claims = request::token_claims(&self.endorse.issuer, &sim, now, &jti);
                let token = self
                    .endorse
                    .keys
                    .keys()
                    .current
                    .sign(&claims)
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot sign a Funk token");
                        failure(500, "internal_error", "cannot sign the token".into())
                    })?;
                Call::Https { url, token }
            }
        };
        Ok((target, call, event))
    }
}

/// Whether the SIM's group turns Funk on (`SoracomFunk.enabled: true`),
/// usable or not: for the Unified Endpoint, which includes Funk then (a
/// broken configuration answers with its error, not silence).
pub fn is_enabled(identity: &Identity) -> bool {
    identity
        .group
        .as_deref()
        .and_then(|g| g.configuration.get(settings::NAMESPACE))
        .and_then(|ns| ns.get("enabled"))
        .and_then(serde_json::Value::as_bool)
        == Some(true)
}

/// Invokes the function and reads its whole (bounded) answer, within
/// `[funk] timeout_ms`.
async fn invoke(
    upstream: &OnceCell<Upstream>,
    upstream_settings: UpstreamSettings,
    settings: &FunkSettings,
    call: Call,
    event: Bytes,
) -> Answer {
    let upstream = match upstream
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || Upstream::new(&upstream_settings))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up outbound TLS for Funk");
            return failure(
                502,
                "unreachable",
                format!("cannot set up outbound TLS: {e}"),
            );
        }
    };
    let timeout = Duration::from_millis(settings.timeout_ms);
    let max = settings.max_response_bytes;
    match call {
        Call::Lambda {
            endpoint,
            region,
            path,
            client_context,
            credentials,
        } => {
            let client = match AwsJsonClient::new(
                upstream,
                &endpoint,
                region,
                "lambda",
                &credentials,
                timeout,
            ) {
                Ok(c) => c,
                Err(e) => return failure(500, "config_error", format!("SoracomFunk: {e}")),
            };
            let Ok(context) = HeaderValue::from_str(&client_context) else {
                return failure(500, "internal_error", "client context header".into());
            };
            let post = Post {
                path_and_query: &path,
                content_type: "application/json",
                target: None,
            };
            let extra = [
                (
                    "x-amz-invocation-type",
                    HeaderValue::from_static("RequestResponse"),
                ),
                ("x-amz-client-context", context),
            ];
            match client.post_with_headers(&post, &extra, event, max).await {
                Ok(r) => {
                    let h = |n: &str| r.headers.get(n).and_then(|v| v.to_str().ok());
                    request::lambda_answer(
                        r.status.as_u16(),
                        h("x-amz-function-error"),
                        h("x-amzn-errortype"),
                        r.body.clone(),
                    )
                }
                Err(e) => unreachable_answer("AWS Lambda", &e),
            }
        }
        Call::Https { url, token } => {
            let req = Request::builder()
                .method(Method::POST)
                .uri(url.as_str())
                .header(USER_AGENT, USER_AGENT_VALUE)
                .header(CONTENT_TYPE, "application/json")
                .header("x-soracom-token", token)
                .body(event);
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    return failure(500, "config_error", format!("SoracomFunk resourceUrl: {e}"))
                }
            };
            match exchange(upstream.http(), req, timeout, max).await {
                Ok(r) => request::https_answer(
                    r.status.as_u16(),
                    r.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                    r.body,
                ),
                Err(e) => unreachable_answer("the function", &e),
            }
        }
    }
}

/// `504` when the function did not answer in time, else `502`.
fn unreachable_answer(what: &str, e: &SinkError) -> Answer {
    let (status, outcome) = if e.reason.ends_with("timeout") {
        (504, "timeout")
    } else {
        (502, "unreachable")
    };
    tracing::debug!(reason = e.reason, error = %e.message, "Funk invocation failed");
    failure(
        status,
        outcome,
        format!("cannot reach {what}: {} ({})", e.message, e.reason),
    )
}

fn failure(status: u16, outcome: &'static str, message: String) -> Answer {
    Answer {
        status,
        body: Bytes::from(message),
        content_type: "text/plain",
        outcome,
    }
}

/// Counts the invocation and the answer, and shapes it for every protocol:
/// HTTP gets status and body; UDP and TCP the function's body as is on
/// success, else `"{status} {message}"`.
fn finish(metrics: &Metrics, target: &'static str, proto: &'static str, a: Answer) -> Reply {
    metrics.funk_invocation(target, a.outcome);
    metrics.served(SERVICE, proto, a.status);
    if a.outcome == "ok" {
        return Reply {
            status: a.status,
            line: a.body.clone(),
            body: a.body,
            content_type: Cow::Borrowed(a.content_type),
            retry_after: None,
            close: false,
            silent_on_udp: false,
        };
    }
    let message = String::from_utf8_lossy(&a.body).into_owned();
    Reply {
        content_type: Cow::Borrowed(a.content_type),
        body: a.body,
        ..Reply::error(a.status, &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(funk: Option<serde_json::Value>) -> Identity {
        let mut group = json!({"id": "g"});
        if let Some(ns) = funk {
            group["configuration"] = json!({ settings::NAMESPACE: ns });
        }
        Identity {
            subscriber: Arc::new(
                serde_json::from_value(json!({"imsi": "001010000000001"})).unwrap(),
            ),
            group: Some(Arc::new(serde_json::from_value(group).unwrap())),
            operator_id: simgate_control::OperatorId::parse("OP0000000001").unwrap(),
            imei: None,
            imsi_text: Arc::from("001010000000001"),
        }
    }

    #[test]
    fn enabled_is_the_groups_switch() {
        assert!(!is_enabled(&identity(None)));
        assert!(!is_enabled(&identity(Some(json!({"enabled": false})))));
        assert!(!is_enabled(&identity(Some(json!({"enabled": "yes"})))));
        // On but unusable still counts: the device hears why.
        assert!(is_enabled(&identity(Some(json!({"enabled": true})))));
    }
}
