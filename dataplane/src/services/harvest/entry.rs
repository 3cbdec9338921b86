//! One Harvest Data entry: what a device sent, when, and over what.
//!
//! Also the on-disk value layout (a pure codec, tested here) and the rule for
//! an entry's time (`X-Soracom-Timestamp` or the arrival time).

use bytes::Bytes;
use simgate_control::Imsi;

/// Longest `Content-Type` kept with an entry. A device cannot make the store
/// hold an arbitrarily large header next to a small body.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// The content type recorded when the device sent none (UDP, TCP).
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// How the entry reached simgate (the `category` field of the query API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    Http,
    Tcp,
    Udp,
    Mqtt,
}

impl Category {
    /// The name used in the query API: `http`, `tcp`, `udp`, `mqtt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Mqtt => "mqtt",
        }
    }

    /// The category named [`as_str`](Self::as_str) returns.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "http" => Self::Http,
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "mqtt" => Self::Mqtt,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::Http => 1,
            Self::Tcp => 2,
            Self::Udp => 3,
            Self::Mqtt => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Http,
            2 => Self::Tcp,
            3 => Self::Udp,
            4 => Self::Mqtt,
            _ => return None,
        })
    }
}

/// An entry as the ingress hands it to [`HarvestStore::append`](super::HarvestStore::append).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub imsi: Imsi,
    /// Unix time in milliseconds (see [`entry_time`]).
    pub time: u64,
    pub content_type: String,
    pub category: Category,
    pub content: Bytes,
}

/// An entry as stored. `seq` tells apart entries of one SIM in one millisecond
/// (0 for the first, then 1, 2, …); SORACOM has no such field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub imsi: Imsi,
    pub time: u64,
    pub seq: u32,
    pub content_type: String,
    pub category: Category,
    pub content: Bytes,
}

/// How far ahead of simgate's clock a device's `X-Soracom-Timestamp` may be
/// (clock skew); later times are refused.
pub const MAX_FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;

const MS_PER_DAY: u64 = 86_400_000;

/// `X-Soracom-Timestamp` was present but not acceptable (ingress: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTimestamp {
    /// Not a Unix time in milliseconds.
    #[error("X-Soracom-Timestamp must be a Unix time in milliseconds, got {0:?}")]
    Malformed(String),
    /// Older than the retention (it would be swept at once, and could be
    /// used to write below every reader's `from`), or more than
    /// [`MAX_FUTURE_SKEW_MS`] in the future (it would outlive the retention).
    #[error("X-Soracom-Timestamp {time} is outside the accepted range {earliest}..={latest} (retention, clock skew)")]
    OutOfRange {
        time: u64,
        earliest: u64,
        latest: u64,
    },
}

/// The time of a new entry: the device's `X-Soracom-Timestamp` (Unix ms) when
/// it sent one, else the arrival time. Surrounding whitespace is ignored.
///
/// A device time must lie in `[arrival − retention_days, arrival +
/// MAX_FUTURE_SKEW_MS]`; `retention_days = 0` (keep everything) sets no lower
/// bound.
pub fn entry_time(
    x_soracom_timestamp: Option<&str>,
    arrival_ms: u64,
    retention_days: u32,
) -> Result<u64, InvalidTimestamp> {
    let Some(raw) = x_soracom_timestamp else {
        return Ok(arrival_ms);
    };
    let s = raw.trim();
    let malformed = || InvalidTimestamp::Malformed(raw.chars().take(32).collect());
    // `u64::from_str` accepts a leading '+'; a timestamp is digits only.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let time: u64 = s.parse().map_err(|_| malformed())?;
    let earliest = if retention_days == 0 {
        0
    } else {
        arrival_ms.saturating_sub(u64::from(retention_days).saturating_mul(MS_PER_DAY))
    };
    let latest = arrival_ms.saturating_add(MAX_FUTURE_SKEW_MS);
    if time < earliest || time > latest {
        return Err(InvalidTimestamp::OutOfRange {
            time,
            earliest,
            latest,
        });
    }
    Ok(time)
}

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt harvest value: {0}")]
pub struct CorruptValue(pub &'static str);

/// Value format version 1:
///
/// ```text
/// [1u8 version][u8 category][u8 content-type length][content type][content…]
/// ```
///
/// The key (IMSI, time, seq) is not repeated in the value.
const VALUE_VERSION: u8 = 1;
const VALUE_HEADER: usize = 3;

/// Encodes an entry's value. The content type must be at most
/// [`MAX_CONTENT_TYPE_BYTES`] long (checked by the store before this is called).
pub(crate) fn encode_value(content_type: &str, category: Category, content: &[u8]) -> Vec<u8> {
    // The store refuses longer ones; never split a character if one slips by.
    let mut end = content_type.len().min(MAX_CONTENT_TYPE_BYTES);
    while !content_type.is_char_boundary(end) {
        end -= 1;
    }
    let ct = &content_type.as_bytes()[..end];
    let ct_len = u8::try_from(end).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(VALUE_HEADER + ct.len() + content.len());
    out.push(VALUE_VERSION);
    out.push(category.code());
    out.push(ct_len);
    out.extend_from_slice(ct);
    out.extend_from_slice(content);
    out
}

/// Decodes a value written by [`encode_value`] into (content type, category,
/// content).
pub(crate) fn decode_value(value: &[u8]) -> Result<(String, Category, Bytes), CorruptValue> {
    let [version, category, ct_len, rest @ ..] = value else {
        return Err(CorruptValue("shorter than its header"));
    };
    if *version != VALUE_VERSION {
        return Err(CorruptValue("unknown format version"));
    }
    let category = Category::from_code(*category).ok_or(CorruptValue("unknown category"))?;
    let ct_len = usize::from(*ct_len);
    if rest.len() < ct_len {
        return Err(CorruptValue("content type runs past the end"));
    }
    let (ct, content) = rest.split_at(ct_len);
    let ct = std::str::from_utf8(ct).map_err(|_| CorruptValue("content type is not UTF-8"))?;
    Ok((ct.to_owned(), category, Bytes::copy_from_slice(content)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamp_header_or_arrival() {
        let now = 1_653_891_795_421;
        assert_eq!(entry_time(None, 7, 40), Ok(7));
        assert_eq!(entry_time(Some("1653891795421"), now, 40), Ok(now));
        assert_eq!(entry_time(Some(" 12 "), 7, 40), Ok(12));
        for bad in ["", "+1", "-1", "1.5", "abc", "99999999999999999999999"] {
            assert!(
                matches!(
                    entry_time(Some(bad), 7, 40),
                    Err(InvalidTimestamp::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timestamp_must_be_within_retention_and_skew() {
        let now: u64 = 1_700_000_000_000;
        let day = 86_400_000;
        let at = |t: u64, days| entry_time(Some(&t.to_string()), now, days);
        assert_eq!(at(now - 40 * day, 40), Ok(now - 40 * day));
        assert!(matches!(
            at(now - 40 * day - 1, 40),
            Err(InvalidTimestamp::OutOfRange { .. })
        ));
        assert_eq!(
            at(now + MAX_FUTURE_SKEW_MS, 40),
            Ok(now + MAX_FUTURE_SKEW_MS)
        );
        assert!(at(now + MAX_FUTURE_SKEW_MS + 1, 40).is_err());
        assert!(at(u64::MAX, 40).is_err());
        // retention_days = 0 keeps everything: no lower bound, still no future.
        assert_eq!(at(1, 0), Ok(1));
        assert!(at(now + day, 0).is_err());
    }

    #[test]
    fn value_round_trip() {
        for cat in [Category::Http, Category::Tcp, Category::Udp, Category::Mqtt] {
            let v = encode_value("application/json", cat, b"{\"temp\":21}");
            let (ct, c, body) = decode_value(&v).unwrap();
            assert_eq!(ct, "application/json");
            assert_eq!(c, cat);
            assert_eq!(&body[..], b"{\"temp\":21}");
        }
        let v = encode_value("", Category::Udp, b"");
        assert_eq!(
            decode_value(&v).unwrap(),
            (String::new(), Category::Udp, Bytes::new())
        );
    }

    #[test]
    fn category_names_round_trip() {
        for cat in [Category::Http, Category::Tcp, Category::Udp, Category::Mqtt] {
            assert_eq!(Category::from_name(cat.as_str()), Some(cat));
        }
        assert_eq!(Category::from_name("HTTP"), None);
    }

    #[test]
    fn corrupt_values_are_refused() {
        assert!(decode_value(&[]).is_err());
        assert!(decode_value(&[1, 1]).is_err());
        assert!(decode_value(&[2, 1, 0]).is_err());
        assert!(decode_value(&[1, 9, 0]).is_err());
        assert!(decode_value(&[1, 1, 4, b'a']).is_err());
        assert!(decode_value(&[1, 1, 1, 0xff]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_value(&bytes);
        }

        #[test]
        fn encode_decode(ct in "[ -~]{0,255}", content in proptest::collection::vec(any::<u8>(), 0..300)) {
            let v = encode_value(&ct, Category::Tcp, &content);
            let (ct2, cat, body) = decode_value(&v).unwrap();
            prop_assert_eq!(ct2, ct);
            prop_assert_eq!(cat, Category::Tcp);
            prop_assert_eq!(&body[..], &content[..]);
        }
    }
}
