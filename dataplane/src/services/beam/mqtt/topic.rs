//! Topic rewriting on the way up: the placeholders `{{imsi}}`, `{{simId}}`
//! and `{{imei}}` in PUBLISH topics and SUBSCRIBE / UNSUBSCRIBE filters are
//! replaced by the SIM's values, and with "add IMSI to topic" (the entry's
//! `addSubscriberHeader`) a PUBLISH to `t` goes up as `t/{IMSI}`.
//!
//! A placeholder whose value the SIM does not have (no IMEI reported) is an
//! error, never an empty string: publishing to `sensors//x` instead of
//! `sensors/<imei>/x` would mix devices up.

/// The SIM's values for the placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicContext {
    pub imsi: String,
    pub sim_id: Option<String>,
    /// 15-digit IMEI.
    pub imei: Option<String>,
}

/// A placeholder the SIM has no value for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic placeholder {{{{{0}}}}} has no value for this SIM")]
pub struct TopicError(pub &'static str);

const PLACEHOLDERS: [&str; 3] = ["imsi", "simId", "imei"];

impl TopicContext {
    fn value(&self, name: &str) -> Option<&str> {
        match name {
            "imsi" => Some(&self.imsi),
            "simId" => self.sim_id.as_deref(),
            "imei" => self.imei.as_deref(),
            _ => None,
        }
    }

    /// `topic` with its placeholders replaced. Text between `{{` and `}}`
    /// that names no placeholder is left as it is.
    pub fn expand(&self, topic: &str) -> Result<String, TopicError> {
        if !topic.contains("{{") {
            return Ok(topic.to_owned());
        }
        let mut out = String::with_capacity(topic.len() + 16);
        let mut rest = topic;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let known = PLACEHOLDERS
                .iter()
                .find(|p| after.strip_prefix(**p).is_some_and(|t| t.starts_with("}}")));
            match known {
                Some(name) => {
                    out.push_str(self.value(name).ok_or(TopicError(name))?);
                    rest = &after[name.len() + 2..];
                }
                None => {
                    out.push_str("{{");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A PUBLISH topic as it goes upstream.
    pub fn publish_topic(&self, topic: &str, append_imsi: bool) -> Result<String, TopicError> {
        let mut t = self.expand(topic)?;
        if append_imsi {
            t.push('/');
            t.push_str(&self.imsi);
        }
        Ok(t)
    }
}

/// SORACOM's rule for the device's keepalive: 0 (none) or 5 to 1200
/// seconds; anything else is refused with CONNACK "not authorized".
pub fn keep_alive_allowed(secs: u16) -> bool {
    secs == 0 || (5..=1200).contains(&secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> TopicContext {
        TopicContext {
            imsi: "001010000000001".into(),
            sim_id: Some("8942310000000000001".into()),
            imei: None,
        }
    }

    #[test]
    fn placeholders_and_imsi_suffix() {
        let c = ctx();
        assert_eq!(c.expand("a/{{imsi}}/b").unwrap(), "a/001010000000001/b");
        assert_eq!(
            c.expand("{{simId}}{{imsi}}").unwrap(),
            "8942310000000000001001010000000001"
        );
        assert_eq!(c.expand("x/{{other}}/{{").unwrap(), "x/{{other}}/{{");
        assert_eq!(c.expand("{{imei}}").unwrap_err(), TopicError("imei"));
        assert_eq!(c.publish_topic("t", true).unwrap(), "t/001010000000001");
        assert_eq!(c.publish_topic("t", false).unwrap(), "t");
        assert!(c
            .expand("{{imei}}")
            .unwrap_err()
            .to_string()
            .contains("{{imei}}"));
    }

    #[test]
    fn keep_alive_rule() {
        for ok in [0, 5, 60, 1200] {
            assert!(keep_alive_allowed(ok), "{ok}");
        }
        for bad in [1, 4, 1201, u16::MAX] {
            assert!(!keep_alive_allowed(bad), "{bad}");
        }
    }

    proptest! {
        /// Without placeholders a topic is unchanged; with them, no `{{imsi}}` is left.
        #[test]
        fn expansion(prefix in "[a-z/]{0,8}", suffix in "[a-z/{}]{0,8}") {
            let c = ctx();
            let plain = format!("{prefix}{suffix}");
            if !plain.contains("{{") {
                prop_assert_eq!(c.expand(&plain).unwrap(), plain.clone());
            }
            let t = format!("{prefix}{{{{imsi}}}}/{prefix}");
            let out = c.expand(&t).unwrap();
            prop_assert!(!out.contains("{{imsi}}"));
            prop_assert!(out.contains("001010000000001"));
        }
    }
}
