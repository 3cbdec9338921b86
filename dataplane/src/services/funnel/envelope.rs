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
//! JSON payloads are embedded as JSON values; anything else is wrapped as
//! `{"payload":"<base64>"}`, the wrapping SORACOM's Beam and Funk use for
//! bytes that are not JSON. `imei` is the 15-digit IMEI (an IMEISV's first
//! 14 digits and their Luhn check digit); an unknown IMEI is `null` so the
//! keys are always present. `simId` follows `imei` when the group sets
//! `addSimId` (`null` for a SIM without one). With `payloadsOnly` the
//! record is just what `payloads` would hold; with AWS IoT's
//! `sendPayloadsAsBinary` it is the device's bytes as they came.

use base64::Engine as _;
use simgate_control::{CredentialId, Destination, Imei, Imsi, OperatorId, SimId};

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
    /// Must be valid JSON; embedded as is (HTTP `application/json`, group
    /// `contentType` `json`).
    Json,
    /// Embedded as JSON if it is a JSON object or array, else wrapped
    /// (group `contentType` `unspecified`, the default).
    Unspecified,
    /// Always wrapped as `{"payload":"<base64>"}` (other HTTP content,
    /// group `contentType` `text`, `binary`, `application/x-soracom-bf-v1`).
    Wrapped,
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
    /// `Some` when the group sets `addSimId`: the SIM's ICCID, if known.
    pub sim_id: Option<Option<&'a SimId>>,
}

/// The device sent something other than what it promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// SORACOM's own wording, returned to the device as is.
    #[error("Invalid JSON is send to funnel.")]
    InvalidJson,
}

/// Whether `encode` embeds `payload` as JSON with `encoding` (`None`: it
/// refuses it).
pub fn embeds(payload: &[u8], encoding: PayloadEncoding) -> Option<bool> {
    match encoding {
        PayloadEncoding::Json => is_json(payload).then_some(true),
        PayloadEncoding::Unspecified => {
            Some(matches!(first_non_ws(payload), Some(b'{' | b'[')) && is_json(payload))
        }
        PayloadEncoding::Wrapped => Some(false),
    }
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
    let embed = embeds(payload, encoding).ok_or(EnvelopeError::InvalidJson)?;
    if meta.destination.send_payloads_as_binary {
        out.extend_from_slice(payload);
        return Ok(());
    }
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
        Some(imei) => write_str(&imei.imei15(), out),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(sim_id) = meta.sim_id {
        out.extend_from_slice(b",\"simId\":");
        match sim_id {
            Some(s) => write_str(s.as_str(), out),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"payloads\":");
    write_payload(payload, embed, out);
    out.push(b'}');
    Ok(())
}

/// The payload embedded, or wrapped as `{"payload":"<base64>"}`.
fn write_payload(payload: &[u8], embed: bool, out: &mut Vec<u8>) {
    if embed {
        out.extend_from_slice(trim_ws(payload));
    } else {
        out.extend_from_slice(b"{\"payload\":\"");
        let start = out.len();
        let len = base64::encoded_len(payload.len(), true).unwrap_or(0);
        out.resize(start + len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(payload, &mut out[start..])
            .unwrap_or(0);
        out.truncate(start + written);
        out.extend_from_slice(b"\"}");
    }
}

/// Strict validation: the bytes must be UTF-8 and every string and number
/// must decode. serde_json's `IgnoredAny` skips string contents, so it let
/// through invalid UTF-8 and lone surrogates (found by the fuzzer), which
/// would make the whole envelope unparsable downstream. Funk checks its
/// JSON events with it too.
pub(crate) fn is_json(payload: &[u8]) -> bool {
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
    use serde_json::{json, Value};
    use simgate_control::SinkService;

    struct Fixture {
        op: OperatorId,
        cred: CredentialId,
        dest: Destination,
        imsi: Imsi,
        imei: Imei,
        sim_id: SimId,
    }

    fn fixture() -> Fixture {
        let mut dest = Destination::new(
            SinkService::Kinesis,
            "https://kinesis.ap-northeast-1.amazonaws.com/devices",
        );
        dest.endpoint = Some("http://127.0.0.1:1".into());
        Fixture {
            op: OperatorId::parse("OP0000000001").unwrap(),
            cred: CredentialId::parse("kinesis-demo").unwrap(),
            dest,
            imsi: Imsi::parse("001010000000001").unwrap(),
            imei: Imei::parse("353000000000001").unwrap(),
            sim_id: SimId::parse("8942310000000000001").unwrap(),
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
            sim_id: None,
        }
    }

    fn encoded(m: &EnvelopeMeta<'_>, payload: &[u8], e: PayloadEncoding, only: bool) -> String {
        let mut out = Vec::new();
        encode(m, payload, e, only, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_soracom_example_byte_for_byte() {
        let f = fixture();
        assert_eq!(
            encoded(
                &meta(&f, SourceProtocol::Udp),
                b"{\"temp\":21}",
                PayloadEncoding::Unspecified,
                false
            ),
            r#"{"operatorId":"OP0000000001","credentialsId":"kinesis-demo","destination":{"provider":"aws","service":"kinesis","resourceUrl":"https://kinesis.ap-northeast-1.amazonaws.com/devices"},"sourceProtocol":"udp","timestamp":1653891795421,"imsi":"001010000000001","imei":"353000000000001","payloads":{"temp":21}}"#
        );
    }

    #[test]
    fn destination_flags_stay_out_of_the_envelope() {
        let mut f = fixture();
        f.dest.payloads_only = true;
        f.dest.randomize_partition_key = true;
        let v: Value = serde_json::from_str(&encoded(
            &meta(&f, SourceProtocol::Udp),
            b"{}",
            PayloadEncoding::Unspecified,
            false,
        ))
        .unwrap();
        assert_eq!(
            v["destination"],
            json!({"provider": "aws", "service": "kinesis",
                "resourceUrl": "https://kinesis.ap-northeast-1.amazonaws.com/devices"})
        );
    }

    #[test]
    fn send_payloads_as_binary_keeps_the_bytes_as_they_came() {
        let mut f = fixture();
        f.dest.send_payloads_as_binary = true;
        let m = meta(&f, SourceProtocol::Udp);
        for (payload, encoding) in [
            (&b"\x00\xff raw"[..], PayloadEncoding::Wrapped),
            (&b" {\"t\":1} "[..], PayloadEncoding::Unspecified),
        ] {
            let mut out = Vec::new();
            encode(&m, payload, encoding, false, &mut out).unwrap();
            assert_eq!(out, payload);
        }
        // A device that promised JSON is still held to it.
        let mut out = Vec::new();
        assert_eq!(
            encode(&m, b"{oops", PayloadEncoding::Json, false, &mut out),
            Err(EnvelopeError::InvalidJson)
        );
    }

    #[test]
    fn imeisv_is_sent_as_the_15_digit_imei_and_sim_id_on_request() {
        let f = fixture();
        let imeisv = Imei::parse("4901542032375101").unwrap();
        let mut m = meta(&f, SourceProtocol::Tcp);
        m.imei = Some(&imeisv);
        m.sim_id = Some(Some(&f.sim_id));
        let v: Value =
            serde_json::from_str(&encoded(&m, b"[1]", PayloadEncoding::Unspecified, false))
                .unwrap();
        assert_eq!(v["imei"], "490154203237518");
        assert_eq!(v["simId"], "8942310000000000001");
        assert_eq!(v["payloads"], json!([1]));
        m.sim_id = Some(None);
        m.imei = None;
        let v: Value =
            serde_json::from_str(&encoded(&m, b"[1]", PayloadEncoding::Unspecified, false))
                .unwrap();
        assert_eq!(v["simId"], Value::Null);
        assert_eq!(v["imei"], Value::Null);
        // Without addSimId there is no simId key at all.
        m.sim_id = None;
        let v: Value =
            serde_json::from_str(&encoded(&m, b"[1]", PayloadEncoding::Unspecified, false))
                .unwrap();
        assert!(v.get("simId").is_none());
    }

    #[test]
    fn bytes_that_are_not_json_are_wrapped_and_invalid_json_is_refused() {
        let f = fixture();
        let m = meta(&f, SourceProtocol::Tcp);
        assert_eq!(
            encoded(&m, b"\x00\xffhi", PayloadEncoding::Unspecified, true),
            r#"{"payload":"AP9oaQ=="}"#
        );
        let v: Value = serde_json::from_str(&encoded(
            &m,
            b"\x00\xffhi",
            PayloadEncoding::Unspecified,
            false,
        ))
        .unwrap();
        assert_eq!(v["payloads"], json!({"payload": "AP9oaQ=="}));
        // Wrapped even when the bytes are JSON (binary, text, other HTTP).
        assert_eq!(
            encoded(&m, b"{\"a\":1}", PayloadEncoding::Wrapped, true),
            r#"{"payload":"eyJhIjoxfQ=="}"#
        );
        let mut out = Vec::new();
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
        // A bare number is JSON, but Unspecified only embeds objects and arrays.
        assert_eq!(
            encoded(&m, b"42", PayloadEncoding::Unspecified, true),
            r#"{"payload":"NDI="}"#
        );
        assert_eq!(encoded(&m, b" 42 ", PayloadEncoding::Json, true), "42");
        // An empty message is wrapped too.
        assert_eq!(
            encoded(&m, b"", PayloadEncoding::Unspecified, true),
            r#"{"payload":""}"#
        );
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
            // Unspecified falls back to wrapping, and the envelope stays valid JSON.
            encode(
                &meta(&f, SourceProtocol::Udp),
                bad,
                PayloadEncoding::Unspecified,
                false,
                &mut out,
            )
            .unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert!(v["payloads"]["payload"].is_string(), "{v}");
        }
    }

    fn any_encoding() -> impl Strategy<Value = PayloadEncoding> {
        prop_oneof![
            Just(PayloadEncoding::Json),
            Just(PayloadEncoding::Unspecified),
            Just(PayloadEncoding::Wrapped),
        ]
    }

    proptest! {
        #[test]
        fn envelope_is_always_valid_json_with_the_payload(
            payload in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                "\\PC{0,40}".prop_map(|s| serde_json::to_vec(&json!({"s": s})).unwrap()),
            ],
            ts in any::<u64>(),
            only in any::<bool>(),
            add_sim_id in any::<bool>(),
            encoding in any_encoding(),
        ) {
            let f = fixture();
            let mut m = meta(&f, SourceProtocol::Udp);
            m.timestamp_ms = ts;
            m.sim_id = add_sim_id.then_some(Some(&f.sim_id));
            let as_json = serde_json::from_slice::<Value>(&payload).ok();
            let mut out = Vec::new();
            if encode(&m, &payload, encoding, only, &mut out).is_err() {
                prop_assert_eq!(encoding, PayloadEncoding::Json);
                prop_assert!(as_json.is_none());
                return Ok(());
            }
            let v: Value = serde_json::from_slice(&out).unwrap();
            let p = if only { &v } else { &v["payloads"] };
            let embedded = match encoding {
                PayloadEncoding::Json => true,
                PayloadEncoding::Wrapped => false,
                PayloadEncoding::Unspecified => {
                    matches!(as_json, Some(Value::Object(_) | Value::Array(_)))
                }
            };
            if embedded {
                prop_assert_eq!(Some(p), as_json.as_ref());
            } else {
                let wrapper = p.as_object().unwrap();
                prop_assert_eq!(wrapper.len(), 1);
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(wrapper["payload"].as_str().unwrap())
                    .unwrap();
                prop_assert_eq!(raw, payload);
            }
            if !only {
                prop_assert_eq!(v["timestamp"].as_u64(), Some(ts));
                prop_assert_eq!(v["imsi"].as_str(), Some("001010000000001"));
                prop_assert_eq!(v.get("simId").is_some(), add_sim_id);
            }
        }

        #[test]
        fn json_objects_are_embedded(n in any::<i64>(), s in "\\PC{0,20}") {
            let f = fixture();
            let payload = serde_json::to_vec(&json!({"n": n, "s": s})).unwrap();
            let mut out = Vec::new();
            encode(&meta(&f, SourceProtocol::Http), &payload, PayloadEncoding::Json, false, &mut out).unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(&v["payloads"]["n"], &json!(n));
        }
    }
}
