//! Validated identifiers. Each is a newtype so an IMSI can never be passed
//! where an IMEI is expected, and every one that exists has been checked.
//! They wrap an `Arc<str>`: identities are cloned on the packet path, and a
//! clone must not allocate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn check_digits(kind: &'static str, s: &str, min: usize, max: usize) -> Result<(), IdError> {
    let err = |reason| IdError {
        kind,
        value: s.chars().take(64).collect(),
        reason,
    };
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("must contain only digits"));
    }
    if s.len() < min || s.len() > max {
        return Err(err(match (min, max) {
            (15, 15) => "must be 15 digits",
            _ => "has the wrong number of digits",
        }));
    }
    Ok(())
}

fn check_name(kind: &'static str, s: &str) -> Result<(), IdError> {
    let err = |reason| IdError {
        kind,
        value: s.chars().take(64).collect(),
        reason,
    };
    if s.is_empty() || s.len() > 64 {
        return Err(err("must be 1 to 64 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err("may contain only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, |$s:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            pub fn parse($s: &str) -> Result<Self, IdError> {
                $check?;
                Ok(Self($s.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text as a shared string: cloning it copies no bytes.
            pub fn shared(&self) -> std::sync::Arc<str> {
                std::sync::Arc::clone(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> Self {
                v.0.as_ref().to_owned()
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", $kind, &self.0)
            }
        }
    };
}

id_type!(
    /// International Mobile Subscriber Identity: 15 digits (MCC + MNC + MSIN).
    /// Some test networks use 14; ITU-T E.212 allows up to 15.
    Imsi, "Imsi", |s| check_digits("IMSI", s, 14, 15)
);
id_type!(
    /// Device identity: a 15-digit IMEI or a 16-digit IMEISV (as RADIUS
    /// `3GPP-IMEISV` carries it). 14 digits are accepted for IMEIs sent
    /// without their check digit.
    Imei, "Imei", |s| check_digits("IMEI", s, 14, 16)
);
id_type!(
    /// Phone number in E.164 form without the leading `+`.
    Msisdn, "Msisdn", |s| check_digits("MSISDN", s.strip_prefix('+').unwrap_or(s), 1, 15)
);
id_type!(
    /// ICCID printed on the SIM (SORACOM calls it the SIM ID): 18 to 22 digits.
    SimId, "SimId", |s| check_digits("SIM ID", s, 18, 22)
);
id_type!(
    /// SORACOM operator id: `OP` followed by 10 digits.
    OperatorId, "OperatorId", |s| match s.strip_prefix("OP") {
        Some(rest) => check_digits("operator id", rest, 10, 10),
        None => Err(IdError {
            kind: "operator id",
            value: s.chars().take(64).collect(),
            reason: "must be OP followed by 10 digits",
        }),
    }
);
id_type!(
    /// Group id, chosen by the operator.
    GroupId, "GroupId", |s| check_name("group id", s)
);
id_type!(
    /// Credential set id, e.g. `kinesis-demo`.
    CredentialId, "CredentialId", |s| check_name("credentials id", s)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imsi_accepts_15_digits_only() {
        assert!(Imsi::parse("001010000000001").is_ok());
        assert!(Imsi::parse("00101000000000a").is_err());
        assert!(Imsi::parse("0010100000000011").is_err());
        assert!(Imsi::parse("").is_err());
    }

    #[test]
    fn msisdn_strips_plus_for_validation() {
        assert!(Msisdn::parse("+818012345678").is_ok());
        assert!(Msisdn::parse("81-80").is_err());
    }

    #[test]
    fn operator_id_shape() {
        assert!(OperatorId::parse("OP0000000001").is_ok());
        assert!(OperatorId::parse("OP00000001").is_err());
        assert!(OperatorId::parse("XX0000000001").is_err());
    }

    #[test]
    fn serde_round_trip_validates() {
        let imsi: Imsi = serde_json::from_str("\"001010000000001\"").unwrap();
        assert_eq!(serde_json::to_string(&imsi).unwrap(), "\"001010000000001\"");
        assert!(serde_json::from_str::<Imsi>("\"12\"").is_err());
    }

    proptest::proptest! {
        #[test]
        fn imsi_parse_never_panics(s in "\\PC*") {
            let _ = Imsi::parse(&s);
        }

        #[test]
        fn valid_imsi_round_trips(s in "[0-9]{15}") {
            let imsi = Imsi::parse(&s).unwrap();
            proptest::prop_assert_eq!(imsi.as_str(), s.as_str());
        }
    }
}
