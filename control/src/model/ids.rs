//! Validated identifiers. Each is a newtype so an IMSI can never be passed
//! where an IMEI is expected, and every one that exists has been checked.
//! Identities are cloned on the packet path and held by millions of
//! sessions: short ones are stored inline, longer names as a shared
//! `Arc<str>`, so a clone never allocates.

use std::fmt;
use std::sync::Arc;

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

/// How an identifier keeps its text.
trait IdText: Clone {
    fn new(s: &str) -> Self;
    fn as_str(&self) -> &str;
    fn shared(&self) -> Arc<str>;
}

/// Up to 23 bytes kept inline: IMSIs, IMEIs, MSISDNs, SIM and operator ids
/// are short, and a million sessions each holding three of them must not
/// mean three million heap blocks (`scripts/bench.sh sessions`).
#[derive(Clone, Copy)]
struct Inline {
    len: u8,
    buf: [u8; 23],
}

impl IdText for Inline {
    fn new(s: &str) -> Self {
        // Callers validate the length first; cut at a char boundary anyway.
        let mut len = s.len().min(23);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0u8; 23];
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        Self {
            len: len as u8,
            buf,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    fn shared(&self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}

/// Longer names, shared: cloning copies no bytes.
#[derive(Clone)]
struct Shared(Arc<str>);

impl IdText for Shared {
    fn new(s: &str) -> Self {
        Self(s.into())
    }

    fn as_str(&self) -> &str {
        &self.0
    }

    fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $storage:ty, |$s:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name($storage);

        impl $name {
            pub fn parse($s: &str) -> Result<Self, IdError> {
                $check?;
                Ok(Self(<$storage as IdText>::new($s)))
            }

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// The text as a shared string.
            pub fn shared(&self) -> Arc<str> {
                self.0.shared()
            }
        }

        // Equality, hashing and order are those of the text, whatever the
        // storage, so maps keyed by ids order them as strings.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
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
                v.as_str().to_owned()
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
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", $kind, self.as_str())
            }
        }
    };
}

id_type!(
    /// International Mobile Subscriber Identity: 15 digits (MCC + MNC + MSIN).
    /// Some test networks use 14; ITU-T E.212 allows up to 15.
    Imsi, "Imsi", Inline, |s| check_digits("IMSI", s, 14, 15)
);
id_type!(
    /// Device identity: a 15-digit IMEI or a 16-digit IMEISV (as RADIUS
    /// `3GPP-IMEISV` carries it). 14 digits are accepted for IMEIs sent
    /// without their check digit.
    Imei, "Imei", Inline, |s| check_digits("IMEI", s, 14, 16)
);
id_type!(
    /// Phone number in E.164 form without the leading `+`.
    Msisdn, "Msisdn", Inline, |s| check_digits("MSISDN", s.strip_prefix('+').unwrap_or(s), 1, 15)
);
id_type!(
    /// ICCID printed on the SIM (SORACOM calls it the SIM ID): 18 to 22 digits.
    SimId, "SimId", Inline, |s| check_digits("SIM ID", s, 18, 22)
);
id_type!(
    /// SORACOM operator id: `OP` followed by 10 digits.
    OperatorId, "OperatorId", Inline, |s| match s.strip_prefix("OP") {
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
    GroupId, "GroupId", Shared, |s| check_name("group id", s)
);
id_type!(
    /// Credential set id, e.g. `kinesis-demo`.
    CredentialId, "CredentialId", Shared, |s| check_name("credentials id", s)
);

impl Imei {
    /// The 15-digit IMEI, as SORACOM shows it (`X-Soracom-IMEI`, the Funnel
    /// envelope's `imei`): from a 16-digit IMEISV or a 14-digit IMEI, the
    /// first 14 digits (TAC + serial) and their Luhn check digit.
    pub fn imei15(&self) -> std::borrow::Cow<'_, str> {
        let s = self.as_str();
        match s.get(..14) {
            Some(body) if s.len() != 15 => {
                std::borrow::Cow::Owned(format!("{body}{}", luhn_check_digit(body)))
            }
            _ => std::borrow::Cow::Borrowed(s),
        }
    }
}

/// The Luhn check digit of a string of ASCII digits.
fn luhn_check_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0') % 10);
            if i % 2 == 0 {
                let dd = d * 2;
                dd / 10 + dd % 10
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imei15_from_imeisv_and_short_imei() {
        // 49015420323751 has check digit 8 (the usual Luhn example).
        for s in ["490154203237518", "4901542032375101", "49015420323751"] {
            assert_eq!(Imei::parse(s).unwrap().imei15(), "490154203237518", "{s}");
        }
        assert_eq!(
            Imei::parse("353000000000001").unwrap().imei15(),
            "353000000000001"
        );
    }

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
    fn order_and_equality_are_the_texts() {
        let a = Imsi::parse("00101000000009").unwrap(); // 14 digits
        let b = Imsi::parse("001010000000010").unwrap(); // 15 digits
        assert_eq!(a.cmp(&b), a.as_str().cmp(b.as_str()));
        assert_eq!(a, Imsi::parse("00101000000009").unwrap());
        assert_eq!(size_of::<Imsi>(), 24);
        assert_eq!(
            Msisdn::parse("+818012345678").unwrap().as_str(),
            "+818012345678"
        );
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
