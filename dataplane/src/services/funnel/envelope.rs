//! The Funnel envelope: one JSON object per device message, exactly as SORACOM
//! Funnel delivers it. Pure: bytes and metadata in, bytes out.
//!
//! ```json
//! {"operatorId":"OP0000000001","credentialsId":"kinesis-demo",
//!  "destination":{"provider":"aws","service":"kinesis","resourceUrl":"https://…/devices"},
//!  "sourceProtocol":"udp","timestamp":1653891795421,
//!  "imsi":"001010000000001","imei":"353000000000001","payloads":{"temp":21}}
//! ```
//!
//! JSON payloads are embedded as JSON values; anything else is a base64
//! string. SORACOM does not document the non-JSON case; this is simgate's
//! choice. An unknown IMEI is sent as `null` so the keys are always present.

use base64::Engine as _;
use simgate_control::{CredentialId, Destination, Imei, Imsi, OperatorId};

/// The protocol the device used, as the envelope's `sourceProtocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceProtocol {
    Udp,
    Tcp,
    Http,
}

impl SourceProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Http => "http",
        }
    }
}

/// How to put the payload into `payloads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadEncoding {
    /// Must be valid JSON; embedded as is.
    Json,
    /// Embedded as JSON if it is a JSON object or array, else base64.
    Auto,
    /// Always a base64 string.
    Base64,
}

/// Everything in the envelope except the payload.
#[derive(Debug, Clone, Copy)]
pub struct EnvelopeMeta<'a> {
    pub operator_id: &'a OperatorId,
    pub credentials_id: &'a CredentialId,
    pub destination: &'a Destination,
    pub source_protocol: SourceProtocol,
    pub timestamp_ms: u64,
    pub imsi: &'a Imsi,
    pub imei: Option<&'a Imei>,
}

/// The device sent something other than what it promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// SORACOM's own wording, returned to the device as is.
    #[error("Invalid JSON is send to funnel.")]
    InvalidJson,
}

/// Builds one envelope (or only the payload when `payloads_only`) into `out`.
/// On error `out` is left as it was.
pub fn encode(
    meta: &EnvelopeMeta<'_>,
    payload: &[u8],
    encoding: PayloadEncoding,
    payloads_only: bool,
    out: &mut Vec<u8>,
) -> Result<(), EnvelopeError> {
    let embed = match encoding {
        PayloadEncoding::Json => {
            if !is_json(payload) {
                return Err(EnvelopeError::InvalidJson);
            }
            true
        }
        PayloadEncoding::Auto => {
            matches!(first_non_ws(payload), Some(b'{' | b'[')) && is_json(payload)
        }
        PayloadEncoding::Base64 => false,
    };
    if payloads_only {
        write_payload(payload, embed, out);
        return Ok(());
    }
    out.reserve(256 + payload.len() * 4 / 3);
    out.extend_from_slice(b"{\"operatorId\":");
    write_str(meta.operator_id.as_str(), out);
    out.extend_from_slice(b",\"credentialsId\":");
    write_str(meta.credentials_id.as_str(), out);
    out.extend_from_slice(b",\"destination\":{\"provider\":");
    write_str(&meta.destination.provider, out);
    out.extend_from_slice(b",\"service\":");
    write_str(meta.destination.service.as_str(), out);
    out.extend_from_slice(b",\"resourceUrl\":");
    write_str(&meta.destination.resource_url, out);
    out.extend_from_slice(b"},\"sourceProtocol\":\"");
    out.extend_from_slice(meta.source_protocol.as_str().as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":");
    // Writing into a Vec cannot fail; no temporary String.
    let _ = std::io::Write::write_fmt(out, format_args!("{}", meta.timestamp_ms));
    out.extend_from_slice(b",\"imsi\":");
    write_str(meta.imsi.as_str(), out);
    out.extend_from_slice(b",\"imei\":");
    match meta.imei {
        Some(imei) => write_str(imei.as_str(), out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"payloads\":");
    write_payload(payload, embed, out);
    out.push(b'}');
    Ok(())
}

fn write_payload(payload: &[u8], embed: bool, out: &mut Vec<u8>) {
    if embed {
        out.extend_from_slice(trim_ws(payload));
    } else {
        out.push(b'"');
        let start = out.len();
        let len = base64::encoded_len(payload.len(), true).unwrap_or(0);
        out.resize(start + len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(payload, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.push(b'"');
    }
}

/// Strict validation: the bytes must be UTF-8 and every string and number
/// must decode. serde_json's `IgnoredAny` skips string contents, so it let
/// through invalid UTF-8 and lone surrogates (found by the fuzzer), which
/// would make the whole envelope unparsable downstream.
fn is_json(payload: &[u8]) -> bool {
    std::str::from_utf8(payload).is_ok() && serde_json::from_slice::<Validated>(payload).is_ok()
}

/// Deserializes any JSON value, decoding (and so validating) every string
/// and number, without building a tree.
struct Validated;

impl<'de> serde::Deserialize<'de> for Validated {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidatedVisitor)
    }
}

struct ValidatedVisitor;

impl<'de> serde::de::Visitor<'de> for ValidatedVisitor {
    type Value = Validated;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_str<E>(self, _: &str) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_unit<E>(self) -> Result<Validated, E> {
        Ok(Validated)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Validated, A::Error> {
        while seq.next_element::<Validated>()?.is_some() {}
        Ok(Validated)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Validated, A::Error> {
        while map.next_entry::<IgnoredKey, Validated>()?.is_some() {}
        Ok(Validated)
    }
}

/// A map key, decoded (so validated) and dropped.
struct IgnoredKey;

impl<'de> serde::Deserialize<'de> for IgnoredKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ValidatedVisitor).map(|_| Self)
    }
}

fn first_non_ws(b: &[u8]) -> Option<u8> {
    b.iter().copied().find(|c| !c.is_ascii_whitespace())
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // Identifiers are validated, but the resource URL and provider come from
    // configuration and may need escaping; serde_json writes a Vec infallibly.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use simgate_control::SinkService;

    struct Fixture {
        op: OperatorId,
        cred: CredentialId,
        dest: Destination,
        imsi: Imsi,
        imei: Imei,
    }

    fn fixture() -> Fixture {
        Fixture {
            op: OperatorId::parse("OP0000000001").unwrap(),
            cred: CredentialId::parse("kinesis-demo").unwrap(),
            dest: Destination {
                provider: "aws".into(),
                service: SinkService::Kinesis,
                resource_url: "https://kinesis.ap-northeast-1.amazonaws.com/devices".into(),
                endpoint: Some("http://127.0.0.1:1".into()),
            },
            imsi: Imsi::parse("001010000000001").unwrap(),
            imei: Imei::parse("353000000000001").unwrap(),
        }
    }

    fn meta(f: &Fixture, proto: SourceProtocol) -> EnvelopeMeta<'_> {
        EnvelopeMeta {
            operator_id: &f.op,
            credentials_id: &f.cred,
            destination: &f.dest,
            source_protocol: proto,
            timestamp_ms: 1_653_891_795_421,
            imsi: &f.imsi,
            imei: Some(&f.imei),
        }
    }

    #[test]
    fn matches_soracom_example_byte_for_byte() {
        let f = fixture();
        let mut out = Vec::new();
        encode(
            &meta(&f, SourceProtocol::Udp),
            b"{\"temp\":21}",
            PayloadEncoding::Auto,
            false,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"operatorId":"OP0000000001","credentialsId":"kinesis-demo","destination":{"provider":"aws","service":"kinesis","resourceUrl":"https://kinesis.ap-northeast-1.amazonaws.com/devices"},"sourceProtocol":"udp","timestamp":1653891795421,"imsi":"001010000000001","imei":"353000000000001","payloads":{"temp":21}}"#
        );
    }

    #[test]
    fn binary_is_base64_and_invalid_json_is_refused() {
        let f = fixture();
        let mut out = Vec::new();
        encode(
            &meta(&f, SourceProtocol::Tcp),
            b"\x00\xffhi",
            PayloadEncoding::Auto,
            true,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"\"AP9oaQ==\"");
        out.clear();
        let e = encode(
            &meta(&f, SourceProtocol::Http),
            b"{nope",
            PayloadEncoding::Json,
            false,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "Invalid JSON is send to funnel.");
        assert!(out.is_empty());
        // A bare number is JSON, but Auto only embeds objects and arrays.
        encode(
            &meta(&f, SourceProtocol::Udp),
            b"42",
            PayloadEncoding::Auto,
            true,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"\"NDI=\"");
    }

    #[test]
    fn fuzzer_findings_are_refused_as_json() {
        let f = fixture();
        for bad in [&b"{\"\xff\":1}"[..], br#"["\udead"]"#, b"3e313333333333333"] {
            let mut out = Vec::new();
            let r = encode(
                &meta(&f, SourceProtocol::Http),
                bad,
                PayloadEncoding::Json,
                false,
                &mut out,
            );
            assert_eq!(r, Err(EnvelopeError::InvalidJson), "{bad:?}");
            // Auto falls back to base64, and the envelope stays valid JSON.
            encode(
                &meta(&f, SourceProtocol::Udp),
                bad,
                PayloadEncoding::Auto,
                false,
                &mut out,
            )
            .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
        }
    }

    proptest! {
        #[test]
        fn envelope_is_always_valid_json_with_the_payload(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            ts in any::<u64>(),
            only in any::<bool>(),
        ) {
            let f = fixture();
            let mut m = meta(&f, SourceProtocol::Udp);
            m.timestamp_ms = ts;
            let mut out = Vec::new();
            encode(&m, &payload, PayloadEncoding::Auto, only, &mut out).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let p = if only { &v } else { &v["payloads"] };
            match p {
                serde_json::Value::String(s) => {
                    let raw = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
                    prop_assert_eq!(raw, payload);
                }
                other => {
                    let orig: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                    prop_assert_eq!(other, &orig);
                }
            }
            if !only {
                prop_assert_eq!(v["timestamp"].as_u64(), Some(ts));
                prop_assert_eq!(v["imsi"].as_str(), Some("001010000000001"));
            }
        }

        #[test]
        fn json_objects_are_embedded(n in any::<i64>(), s in "\\PC{0,20}") {
            let f = fixture();
            let payload = serde_json::to_vec(&serde_json::json!({"n": n, "s": s})).unwrap();
            let mut out = Vec::new();
            encode(&meta(&f, SourceProtocol::Http), &payload, PayloadEncoding::Json, false, &mut out).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(&v["payloads"]["n"], &serde_json::json!(n));
        }
    }
}
