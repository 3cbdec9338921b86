//! Property of the Funnel envelope encoder
//! (`simgate::services::funnel::envelope::encode`), the path every HTTP, UDP
//! and TCP message to Funnel takes.
//!
//! Input: one control byte, then the payload.
//!
//! | bits | meaning                                                     |
//! |------|-------------------------------------------------------------|
//! | 0-1  | encoding: 0 `Json` (HTTP `application/json`, group `json`), |
//! |      | 1 and 3 `Unspecified` (group `unspecified`), 2 `Wrapped`    |
//! |      | (other HTTP content types, group `text`/`binary`/…)         |
//! | 2    | `payloads_only`                                             |
//! | 3-4  | source protocol: 0 udp, 1 tcp, 2 and 3 http                 |
//! | 5    | no IMEI (the envelope says `null`)                          |
//! | 6    | a destination whose provider and URL need JSON escaping     |
//! | 7    | `addSimId` (the SIM's ICCID as `simId`; with bit 5, `null`)  |
//!
//! Property, checked against serde_json as an independent oracle:
//! * `Ok`: what was appended to `out` (nothing before it changed) parses as
//!   JSON. `payloads` (the whole output when `payloads_only`) is the payload
//!   parsed as JSON when the encoding embeds it (`Json`; `Unspecified` when
//!   the payload is a JSON object or array), else `{"payload":"<base64>"}`
//!   whose base64 decodes to exactly the payload. The other envelope fields
//!   carry the metadata; `imei` is the 15-digit IMEI (an IMEISV input gives
//!   its first 14 digits and their Luhn check digit).
//! * `Err`: the encoding was `Json`, the payload is not JSON, and `out` is
//!   unchanged.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use base64::Engine as _;
use serde_json::{json, Value};
use simgate::services::funnel::envelope::{encode, EnvelopeMeta, PayloadEncoding, SourceProtocol};
use simgate_control::{CredentialId, Destination, Imei, Imsi, OperatorId, SimId, SinkService};

const TIMESTAMP_MS: u64 = 1_653_891_795_421;

/// `encode` appends; records encoded before must survive.
const EARLIER: &[u8] = b"{\"earlier\":true}\n";

pub(crate) fn check(data: &[u8]) {
    let Some((&control, payload)) = data.split_first() else {
        return;
    };
    let encoding = match control & 0b11 {
        0 => PayloadEncoding::Json,
        2 => PayloadEncoding::Wrapped,
        _ => PayloadEncoding::Unspecified,
    };
    let payloads_only = control & 0b100 != 0;
    let protocol = match (control >> 3) & 0b11 {
        0 => SourceProtocol::Udp,
        1 => SourceProtocol::Tcp,
        _ => SourceProtocol::Http,
    };
    let with_imei = control & 0b10_0000 == 0;
    let odd_destination = control & 0b100_0000 != 0;
    let add_sim_id = control & 0b1000_0000 != 0;

    let operator_id = OperatorId::parse("OP0000000001").expect("valid literal");
    let credentials_id = CredentialId::parse("kinesis-demo").expect("valid literal");
    let imsi = Imsi::parse("001010000000001").expect("valid literal");
    // An IMEISV (as RADIUS reports it) when the destination is odd: the
    // envelope must carry the 15-digit IMEI either way.
    let imei = Imei::parse(if odd_destination {
        "4901542032375101"
    } else {
        "353000000000001"
    })
    .expect("valid literal");
    let sim_id = SimId::parse("8942310000000000001").expect("valid literal");
    let destination = if odd_destination {
        let mut d = Destination::new(
            SinkService::Firehose,
            "https://example.com/\"quoted\"/\\/\n\t/ストリーム",
        );
        d.provider = "a\"w\\s\u{1}\u{7f}é\u{2028}".into();
        d
    } else {
        let mut d = Destination::new(
            SinkService::Kinesis,
            "https://kinesis.ap-northeast-1.amazonaws.com/devices",
        );
        d.endpoint = Some("http://127.0.0.1:4567".into());
        d.randomize_partition_key = true;
        d
    };
    let meta = EnvelopeMeta {
        operator_id: &operator_id,
        credentials_id: &credentials_id,
        destination: &destination,
        source_protocol: protocol,
        timestamp_ms: TIMESTAMP_MS,
        imsi: &imsi,
        imei: with_imei.then_some(&imei),
        sim_id: add_sim_id.then_some(with_imei.then_some(&sim_id)),
    };

    let as_json = serde_json::from_slice::<Value>(payload).ok();
    let mut out = EARLIER.to_vec();
    let result = encode(&meta, payload, encoding, payloads_only, &mut out);
    if let Err(e) = result {
        assert_eq!(
            encoding,
            PayloadEncoding::Json,
            "{encoding:?} refused a payload: {e}"
        );
        assert!(as_json.is_none(), "valid JSON refused: {e}");
        assert_eq!(out, EARLIER, "out changed although encode failed");
        return;
    }

    assert!(out.starts_with(EARLIER), "encode changed earlier bytes");
    let written = &out[EARLIER.len()..];
    let envelope: Value = serde_json::from_slice(written).unwrap_or_else(|e| {
        panic!(
            "{encoding:?} output is not JSON ({e}): {:?}",
            String::from_utf8_lossy(written)
        )
    });

    let payloads = if payloads_only {
        &envelope
    } else {
        check_metadata(&envelope, &meta);
        &envelope["payloads"]
    };
    let embedded = match encoding {
        PayloadEncoding::Json => true,
        PayloadEncoding::Wrapped => false,
        PayloadEncoding::Unspecified => matches!(as_json, Some(Value::Object(_) | Value::Array(_))),
    };
    if embedded {
        let expected = as_json
            .as_ref()
            .unwrap_or_else(|| panic!("{encoding:?} accepted a payload that is not JSON"));
        assert_eq!(payloads, expected, "{encoding:?} changed the JSON payload");
    } else {
        let wrapper = payloads
            .as_object()
            .filter(|o| o.len() == 1)
            .unwrap_or_else(|| {
                panic!("{encoding:?}: payloads is not {{\"payload\":…}}: {payloads}")
            });
        let Some(Value::String(b64)) = wrapper.get("payload") else {
            panic!("{encoding:?}: payloads.payload is not a base64 string: {payloads}");
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("payloads is not base64 ({e}): {b64:?}"));
        assert_eq!(decoded, payload, "base64 payloads differ from the input");
    }
}

fn check_metadata(envelope: &Value, meta: &EnvelopeMeta<'_>) {
    let mut expected = json!({
        "operatorId": meta.operator_id.as_str(),
        "credentialsId": meta.credentials_id.as_str(),
        "destination": {
            "provider": meta.destination.provider,
            "service": meta.destination.service.as_str(),
            "resourceUrl": meta.destination.resource_url,
        },
        "sourceProtocol": meta.source_protocol.as_str(),
        "timestamp": meta.timestamp_ms,
        "imsi": meta.imsi.as_str(),
        "imei": meta.imei.map(|i| i.imei15().into_owned()),
        "payloads": envelope["payloads"],
    });
    if let Some(sim_id) = meta.sim_id {
        expected["simId"] = json!(sim_id.map(SimId::as_str));
    }
    if let Some(imei) = expected["imei"].as_str() {
        assert_eq!(imei.len(), 15, "imei is not 15 digits: {imei}");
    }
    assert_eq!(envelope, &expected, "envelope metadata");
}
