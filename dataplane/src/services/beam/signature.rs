//! Beam's signatures, exactly as SORACOM computes them (`../shared/SORACOM.md`,
//! checked against both published test vectors).
//!
//! * HTTP: lowercase hex SHA-256 of
//!   `{PSK}x-soracom-imei={IMEI}x-soracom-imsi={IMSI}x-soracom-msisdn={MSISDN}x-soracom-sim-id={SIMID}x-soracom-timestamp={TS}`,
//!   the enabled fields only, always in that (alphabetical) order, no
//!   separators; sent as `X-Soracom-Signature` with
//!   `X-Soracom-Signature-Version: 20151001`.
//! * TCP → TCP(S): the first line upstream is
//!   `imei=… imsi=… msisdn=… simId=… timestamp=…` (enabled fields,
//!   space-separated) and, with a PSK, `;signature=<hex SHA-256 of PSK + line>`.
//!
//! Pure functions: the time is an argument. [`TcpIdentityLine::parse`] is the
//! server's side (tests, fuzzing, and anyone verifying simgate's output).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// `X-Soracom-Signature-Version`.
pub const SIGNATURE_VERSION: &str = "20151001";

/// The identity fields an entry sends: `None` for a field that is switched
/// off (or unknown for this SIM).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignedFields<'a> {
    pub imei: Option<&'a str>,
    pub imsi: Option<&'a str>,
    pub msisdn: Option<&'a str>,
    pub sim_id: Option<&'a str>,
    /// Unix ms.
    pub timestamp_ms: u64,
}

/// The HTTP signature (`X-Soracom-Signature`), lowercase hex.
pub fn http_signature(psk: &[u8], f: &SignedFields<'_>) -> String {
    let mut h = Sha256::new();
    h.update(psk);
    for (name, value) in [
        ("x-soracom-imei=", f.imei),
        ("x-soracom-imsi=", f.imsi),
        ("x-soracom-msisdn=", f.msisdn),
        ("x-soracom-sim-id=", f.sim_id),
    ] {
        if let Some(v) = value {
            h.update(name.as_bytes());
            h.update(v.as_bytes());
        }
    }
    h.update(b"x-soracom-timestamp=");
    h.update(f.timestamp_ms.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The identity part of the TCP line: `imei=… imsi=… msisdn=… simId=… timestamp=…`.
fn tcp_fields(f: &SignedFields<'_>) -> String {
    let mut line = String::with_capacity(96);
    for (name, value) in [
        ("imei", f.imei),
        ("imsi", f.imsi),
        ("msisdn", f.msisdn),
        ("simId", f.sim_id),
    ] {
        if let Some(v) = value {
            // Writing to a String cannot fail.
            let _ = write!(line, "{name}={v} ");
        }
    }
    let _ = write!(line, "timestamp={}", f.timestamp_ms);
    line
}

/// The first line sent upstream on a TCP → TCP(S) entry, without its line
/// end: the identity fields and, with a PSK, `;signature=<hex>`.
pub fn tcp_identity_line(f: &SignedFields<'_>, psk: Option<&[u8]>) -> String {
    let mut line = tcp_fields(f);
    if let Some(psk) = psk {
        let sig = tcp_signature(psk, &line);
        line.push_str(";signature=");
        line.push_str(&sig);
    }
    line
}

/// Hex SHA-256 of `PSK + fields`.
fn tcp_signature(psk: &[u8], fields: &str) -> String {
    let mut h = Sha256::new();
    h.update(psk);
    h.update(fields.as_bytes());
    hex::encode(h.finalize())
}

/// Why a TCP identity line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("identity line is not UTF-8 or has control characters")]
    NotText,
    #[error("identity field {0:?} is not name=value")]
    BadField(String),
    #[error("identity field {0} is repeated")]
    Repeated(&'static str),
    #[error("identity field {0:?} is unknown")]
    UnknownField(String),
    #[error("identity fields are out of order")]
    OutOfOrder,
    #[error("identity line has no timestamp")]
    NoTimestamp,
    #[error("signature is not 64 lowercase hex digits")]
    BadSignature,
}

/// A parsed TCP identity line (server side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpIdentityLine<'a> {
    pub fields: SignedFields<'a>,
    /// The `name=value …` part the signature covers.
    pub signed: &'a str,
    pub signature: Option<&'a str>,
}

impl<'a> TcpIdentityLine<'a> {
    /// Parses one line (without its line end). Fields must come in
    /// simgate's (and SORACOM's) order; unknown or repeated ones are refused.
    pub fn parse(line: &'a str) -> Result<Self, LineError> {
        if line.bytes().any(|b| b.is_ascii_control()) {
            return Err(LineError::NotText);
        }
        let (signed, signature) = match line.split_once(";signature=") {
            Some((s, sig)) => {
                let ok =
                    sig.len() == 64 && sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !ok {
                    return Err(LineError::BadSignature);
                }
                (s, Some(sig))
            }
            None => (line, None),
        };
        let mut fields = SignedFields::default();
        let mut timestamp = None;
        let mut last = 0;
        for part in signed.split(' ') {
            let (name, value) = part
                .split_once('=')
                .filter(|(n, v)| !n.is_empty() && !v.is_empty())
                .ok_or_else(|| LineError::BadField(part.chars().take(64).collect()))?;
            let (rank, slot, label): (usize, Option<&mut Option<&'a str>>, &'static str) =
                match name {
                    "imei" => (1, Some(&mut fields.imei), "imei"),
                    "imsi" => (2, Some(&mut fields.imsi), "imsi"),
                    "msisdn" => (3, Some(&mut fields.msisdn), "msisdn"),
                    "simId" => (4, Some(&mut fields.sim_id), "simId"),
                    "timestamp" => (5, None, "timestamp"),
                    other => return Err(LineError::UnknownField(other.chars().take(64).collect())),
                };
            if rank == last {
                return Err(LineError::Repeated(label));
            }
            if rank < last {
                return Err(LineError::OutOfOrder);
            }
            last = rank;
            match slot {
                Some(slot) => *slot = Some(value),
                None => {
                    // Canonical decimal only (no sign, no leading zero), so
                    // a line has one spelling and re-encodes to itself.
                    let canonical = value.bytes().all(|b| b.is_ascii_digit())
                        && (value == "0" || !value.starts_with('0'));
                    timestamp = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|_| canonical)
                            .ok_or_else(|| LineError::BadField(part.chars().take(64).collect()))?,
                    );
                }
            }
        }
        if last != 5 {
            return Err(LineError::NoTimestamp);
        }
        fields.timestamp_ms = timestamp.ok_or(LineError::NoTimestamp)?;
        Ok(Self {
            fields,
            signed,
            signature,
        })
    }

    /// Whether the signature is present and made with `psk`.
    pub fn verify(&self, psk: &[u8]) -> bool {
        self.signature.is_some_and(|sig| {
            constant_time_eq(sig.as_bytes(), tcp_signature(psk, self.signed).as_bytes())
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SORACOM's published HTTP vector.
    #[test]
    fn http_vector() {
        let f = SignedFields {
            imei: Some("860000012345678"),
            imsi: Some("295000012345678"),
            msisdn: None,
            sim_id: None,
            timestamp_ms: 1_445_587_157_992,
        };
        assert_eq!(
            http_signature(b"mysecretkey", &f),
            "95c8e34d68e2bd76502c1e403108dc1bd7008964c31081d0415adb9f21a721a5"
        );
    }

    /// SORACOM's published TCP vector.
    #[test]
    fn tcp_vector() {
        let f = SignedFields {
            imsi: Some("440101234567890"),
            timestamp_ms: 1_608_251_959_862,
            ..Default::default()
        };
        assert_eq!(
            tcp_identity_line(&f, None),
            "imsi=440101234567890 timestamp=1608251959862"
        );
        let line = tcp_identity_line(&f, Some(b"topsecret"));
        assert_eq!(
            line,
            "imsi=440101234567890 timestamp=1608251959862;signature=\
             9b7c3587a10b94453127aa614bac55ca0d953f4a98f428a086114f67120a850b"
        );
        let parsed = TcpIdentityLine::parse(&line).unwrap();
        assert_eq!(parsed.fields, f);
        assert!(parsed.verify(b"topsecret"));
        assert!(!parsed.verify(b"topsecreT"));
    }

    #[test]
    fn all_fields_in_order() {
        let f = SignedFields {
            imei: Some("353000000000001"),
            imsi: Some("001010000000001"),
            msisdn: Some("818000000001"),
            sim_id: Some("8942310000000000001"),
            timestamp_ms: 7,
        };
        assert_eq!(
            tcp_identity_line(&f, None),
            "imei=353000000000001 imsi=001010000000001 msisdn=818000000001 \
             simId=8942310000000000001 timestamp=7"
        );
        // The HTTP string, by hand.
        let by_hand = {
            let mut h = Sha256::new();
            h.update(
                "kx-soracom-imei=353000000000001x-soracom-imsi=001010000000001\
                 x-soracom-msisdn=818000000001x-soracom-sim-id=8942310000000000001\
                 x-soracom-timestamp=7",
            );
            hex::encode(h.finalize())
        };
        assert_eq!(http_signature(b"k", &f), by_hand);
    }

    #[test]
    fn bad_lines_are_refused() {
        for (line, want) in [
            ("", LineError::BadField(String::new())),
            ("imsi=1", LineError::NoTimestamp),
            ("timestamp=1 imsi=1", LineError::OutOfOrder),
            ("imsi=1 imsi=2 timestamp=1", LineError::Repeated("imsi")),
            (
                "imsi=1 foo=2 timestamp=1",
                LineError::UnknownField("foo".into()),
            ),
            (
                "imsi=1 timestamp=x",
                LineError::BadField("timestamp=x".into()),
            ),
            ("imsi=1 timestamp=1;signature=abc", LineError::BadSignature),
            ("imsi=1 timestamp=1\r", LineError::NotText),
            ("imsi=1  timestamp=1", LineError::BadField(String::new())),
        ] {
            assert_eq!(TcpIdentityLine::parse(line), Err(want), "{line:?}");
        }
    }

    fn digits(min: usize, max: usize) -> impl Strategy<Value = Option<String>> {
        proptest::option::of(
            proptest::string::string_regex(&format!("[0-9]{{{min},{max}}}")).unwrap(),
        )
    }

    proptest! {
        /// Whatever fields are on, the line parses back to them, verifies
        /// with its key only, and the HTTP signature depends on every field.
        #[test]
        fn line_round_trips_and_verifies(
            imei in digits(15, 15), imsi in digits(15, 15), msisdn in digits(1, 15),
            sim_id in digits(18, 22), ts in any::<u64>(),
            psk in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let f = SignedFields {
                imei: imei.as_deref(), imsi: imsi.as_deref(), msisdn: msisdn.as_deref(),
                sim_id: sim_id.as_deref(), timestamp_ms: ts,
            };
            let line = tcp_identity_line(&f, Some(&psk));
            let parsed = TcpIdentityLine::parse(&line).unwrap();
            prop_assert_eq!(parsed.fields, f);
            prop_assert!(parsed.verify(&psk));
            let mut other = psk.clone();
            other[0] ^= 1;
            prop_assert!(!parsed.verify(&other));
            let sig = http_signature(&psk, &f);
            prop_assert_eq!(sig.len(), 64);
            let later = SignedFields { timestamp_ms: ts.wrapping_add(1), ..f };
            prop_assert_ne!(http_signature(&psk, &later), sig);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = TcpIdentityLine::parse(&s);
        }
    }
}
