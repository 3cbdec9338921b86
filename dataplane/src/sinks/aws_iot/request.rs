//! The sans-IO half of the AWS IoT sink: SORACOM's resource URL, the topic
//! for one record, the publish path, and what a response means for its
//! record.

use crate::sinks::aws::error::classify_error;
use crate::sinks::aws::resource_url::ResourceUrlError;
use crate::sinks::{FailureKind, RecordOutcome, RetryReason};

/// SigV4 signing name of the IoT data plane.
pub const SIGNING_NAME: &str = "iotdata";

/// The placeholder SORACOM replaces with the sender's IMSI.
pub const IMSI_PLACEHOLDER: &str = "#{imsi}";

/// Longest topic AWS IoT accepts, in bytes (after expansion).
pub const MAX_TOPIC_BYTES: usize = 256;

/// Most `/` in a topic AWS IoT accepts (8 levels: 7 slashes).
pub const MAX_TOPIC_SLASHES: usize = 7;

/// Where and to what to publish, from the destination's `resourceUrl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IotResource {
    /// `https://{id}.iot.{region}.amazonaws.com` (the data endpoint).
    pub endpoint: String,
    pub region: String,
    /// The topic, possibly with [`IMSI_PLACEHOLDER`].
    pub topic: String,
}

/// Splits `https://a1b2c3-ats.iot.ap-northeast-1.amazonaws.com/devices/#{imsi}`.
///
/// The topic is the whole path (`#` included: SORACOM's placeholder is not a
/// URL fragment here); MQTT wildcards are refused since one cannot publish
/// to them.
pub fn parse_resource_url(url: &str) -> Result<IotResource, ResourceUrlError> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| match url.split_once("://") {
            Some((scheme, _)) => ResourceUrlError::NotHttps(scheme.to_owned()),
            None => ResourceUrlError::Invalid(format!("{url:?}: no scheme")),
        })?;
    let (host, topic) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.to_ascii_lowercase();
    let not_iot = || ResourceUrlError::NotServiceHost {
        service: "<id>.iot",
        host: host.clone(),
    };
    let (id, after) = host.split_once(".iot.").ok_or_else(not_iot)?;
    let region = after
        .strip_suffix(".amazonaws.com")
        .or_else(|| after.strip_suffix(".amazonaws.com.cn"))
        .filter(|r| is_label(r))
        .ok_or_else(not_iot)?;
    if !is_label(id) {
        return Err(not_iot());
    }
    if topic.contains('?') {
        return Err(ResourceUrlError::HasQuery);
    }
    let topic = topic.strip_suffix('/').unwrap_or(topic);
    if topic.is_empty() {
        return Err(ResourceUrlError::MissingName { service: "aws-iot" });
    }
    check_topic(topic)
        .map_err(|why| ResourceUrlError::Invalid(format!("topic {topic:?}: {why}")))?;
    Ok(IotResource {
        endpoint: format!("https://{host}"),
        region: region.to_owned(),
        topic: topic.to_owned(),
    })
}

/// `a-z0-9-` with no leading or trailing dash.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The topic template's rules, checked with the longest IMSI in place.
fn check_topic(template: &str) -> Result<(), String> {
    let topic = topic_for(template, "000000000000000");
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(format!("longer than {MAX_TOPIC_BYTES} bytes"));
    }
    if topic.matches('/').count() > MAX_TOPIC_SLASHES {
        return Err(format!("more than {} levels", MAX_TOPIC_SLASHES + 1));
    }
    if topic.contains(['#', '+']) {
        return Err("MQTT wildcards cannot be published to".into());
    }
    if topic.chars().any(char::is_control) {
        return Err("control characters".into());
    }
    Ok(())
}

/// The topic for a record from `imsi`.
pub fn topic_for(template: &str, imsi: &str) -> String {
    template.replace(IMSI_PLACEHOLDER, imsi)
}

/// `/topics/{topic}?qos=1`, the topic percent-encoded as one path segment
/// (its `/` too, as the AWS SDKs send it).
pub fn publish_path(topic: &str) -> String {
    let mut out = String::with_capacity(16 + topic.len() * 3);
    out.push_str("/topics/");
    for b in topic.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("?qos=1");
    out
}

/// What a Publish response means for its record. A 2xx is delivered (IoT
/// Core answers 200 with `{}`); errors are classified as every AWS sink
/// classifies them.
pub fn outcome(
    status: u16,
    error_type: Option<&str>,
    body: &[u8],
) -> Result<(), crate::sinks::SinkError> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(classify_error(status, error_type, body))
    }
}

/// One record's outcome from a failed publish.
pub fn record_outcome(e: &crate::sinks::SinkError) -> RecordOutcome {
    match e.kind {
        FailureKind::Permanent => RecordOutcome::Rejected(e.message.clone()),
        FailureKind::Throttled => RecordOutcome::Retryable(RetryReason::throttled(e.reason)),
        FailureKind::Transient => RecordOutcome::Retryable(RetryReason::transient(e.reason)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resource_urls() {
        let r = parse_resource_url(
            "https://a1b2c3d4e5-ats.iot.ap-northeast-1.amazonaws.com/devices/#{imsi}/up",
        )
        .unwrap();
        assert_eq!(
            r,
            IotResource {
                endpoint: "https://a1b2c3d4e5-ats.iot.ap-northeast-1.amazonaws.com".into(),
                region: "ap-northeast-1".into(),
                topic: "devices/#{imsi}/up".into(),
            }
        );
        let cn = parse_resource_url("https://x.iot.cn-north-1.amazonaws.com.cn/t").unwrap();
        assert_eq!(cn.region, "cn-north-1");
        for (bad, why) in [
            ("http://x.iot.us-east-1.amazonaws.com/t", "https"),
            ("https://kinesis.us-east-1.amazonaws.com/t", "iot"),
            ("https://x.iot.us-east-1.amazonaws.com/", "no stream name"),
            ("https://x.iot.us-east-1.amazonaws.com", "no stream name"),
            ("https://x.iot.us-east-1.amazonaws.com/a/#", "wildcards"),
            ("https://x.iot.us-east-1.amazonaws.com/a/+/b", "wildcards"),
            ("https://x.iot.us-east-1.amazonaws.com/a?b=1", "query"),
            (
                "https://x.iot.us-east-1.amazonaws.com/1/2/3/4/5/6/7/8/9",
                "levels",
            ),
            ("x.iot.us-east-1.amazonaws.com/t", "scheme"),
        ] {
            let e = parse_resource_url(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("https://x.iot.us-east-1.amazonaws.com/{}", "a".repeat(257));
        assert!(parse_resource_url(&long)
            .unwrap_err()
            .to_string()
            .contains("256"));
    }

    #[test]
    fn topics_and_paths() {
        assert_eq!(
            topic_for("d/#{imsi}/#{imsi}", "001010000000001"),
            "d/001010000000001/001010000000001"
        );
        assert_eq!(topic_for("plain", "1"), "plain");
        assert_eq!(publish_path("d/001 x"), "/topics/d%2F001%20x?qos=1");
        assert_eq!(publish_path("a.b-c_d~"), "/topics/a.b-c_d~?qos=1");
    }

    #[test]
    fn outcomes() {
        assert!(outcome(200, None, b"{}").is_ok());
        let e = outcome(
            413,
            Some("RequestEntityTooLargeException"),
            br#"{"message":"Payload exceeds the maximum size"}"#,
        )
        .unwrap_err();
        assert_eq!((e.kind, e.reason), (FailureKind::Permanent, "too_large"));
        assert!(
            matches!(record_outcome(&e), RecordOutcome::Rejected(m) if m.contains("maximum size"))
        );
        let e = outcome(
            429,
            Some("ThrottlingException"),
            br#"{"message":"Rate exceeded"}"#,
        )
        .unwrap_err();
        assert_eq!(
            record_outcome(&e),
            RecordOutcome::Retryable(RetryReason::throttled("throttling"))
        );
        let e = outcome(503, None, b"").unwrap_err();
        assert_eq!(
            record_outcome(&e),
            RecordOutcome::Retryable(RetryReason::transient("http_503"))
        );
        let e = outcome(
            403,
            Some("ForbiddenException"),
            br#"{"message":"not authorized"}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, FailureKind::Permanent);
        let e = outcome(401, Some("UnauthorizedException"), b"{}").unwrap_err();
        assert_eq!((e.kind, e.reason), (FailureKind::Permanent, "unauthorized"));
    }
}
