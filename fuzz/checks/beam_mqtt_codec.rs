//! Properties of Beam's MQTT 3.1.1 codec
//! (`simgate::services::beam::mqtt::codec`).
//!
//! Input: a byte stream as the MQTT proxy would receive it from a device or
//! a broker, any number of packets back to back (possibly ending in a
//! partial one, or garbage).
//!
//! Properties, decoding packet after packet with a 64 KiB limit until the
//! first `Ok(None)` or error:
//! * `decode` never panics; `Ok(None)` consumes nothing, and an error's
//!   `reason()` and message are available.
//! * What it accepts is exactly one whole packet by an independent reading
//!   of the fixed header (type byte, 1–4 byte Remaining Length, that many
//!   body bytes), within the limit; the same bytes under a limit one byte
//!   smaller are `TooLarge`, and every strict prefix of them is `Ok(None)`
//!   (or an error) and consumes nothing.
//! * Every decoded packet encodes; the encoding has the same first byte and
//!   the same body as the input (decoding accepts only canonical bodies; only
//!   the Remaining Length may have been non-minimal), decodes to the equal
//!   packet consuming all of it, and encodes again to identical bytes.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use simgate::services::beam::mqtt::codec::{decode, encode, BytesMut, DecodeError, Packet};

const MAX_PACKET: usize = 64 * 1024;

/// Prefixes of a packet up to this size are all tried; of a longer one, a
/// few.
const ALL_PREFIXES_UP_TO: usize = 300;

/// The fixed header read independently: (header length, remaining length),
/// or `None` when the input has no complete, well-formed one.
fn fixed_header(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let b = *bytes.get(1 + i)?;
        remaining += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((2 + i, remaining));
        }
    }
    None
}

fn encoded(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    if let Err(e) = encode(packet, &mut out) {
        panic!("decoded {} does not encode: {e}", packet.name());
    }
    out
}

fn check_prefixes(packet_bytes: &[u8]) {
    let n = packet_bytes.len();
    let cuts: Vec<usize> = if n <= ALL_PREFIXES_UP_TO {
        (0..n).collect()
    } else {
        vec![0, 1, 2, n / 2, n - 2, n - 1]
    };
    for cut in cuts {
        let mut buf = BytesMut::from(&packet_bytes[..cut]);
        match decode(&mut buf, MAX_PACKET) {
            Ok(None) => assert_eq!(buf.len(), cut, "Ok(None) consumed bytes"),
            Ok(Some(p)) => panic!("a {cut}-byte prefix decoded as {}", p.name()),
            // Type, flags and the announced size may be refused early.
            Err(_) => {}
        }
    }
}

pub(crate) fn check(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let offset = data.len() - buf.len();
        let rest = &data[offset..];
        let packet = match decode(&mut buf, MAX_PACKET) {
            Ok(Some(packet)) => packet,
            Ok(None) => {
                assert_eq!(buf.len(), rest.len(), "Ok(None) consumed bytes");
                return;
            }
            Err(e) => {
                assert!(!e.reason().is_empty() && !e.to_string().is_empty());
                return;
            }
        };
        let consumed = rest.len() - buf.len();
        let input = &rest[..consumed];

        let (header_len, remaining) =
            fixed_header(input).expect("accepted bytes start with a fixed header");
        assert_eq!(consumed, header_len + remaining, "not exactly one packet");
        assert!(consumed <= MAX_PACKET);
        assert_eq!(
            decode(&mut BytesMut::from(input), consumed - 1),
            Err(DecodeError::TooLarge {
                size: consumed,
                max: consumed - 1
            })
        );
        check_prefixes(input);

        let first = encoded(&packet);
        let (enc_header_len, enc_remaining) =
            fixed_header(&first).expect("encoding starts with a fixed header");
        assert_eq!(first[0], input[0], "first byte differs after re-encoding");
        assert_eq!(enc_remaining, remaining);
        assert!(enc_header_len <= header_len);
        assert_eq!(
            &first[enc_header_len..],
            &input[header_len..],
            "{} body is not canonical",
            packet.name()
        );

        let mut again = first.clone();
        assert_eq!(
            decode(&mut again, first.len()),
            Ok(Some(packet.clone())),
            "encoding does not decode to the same packet"
        );
        assert!(again.is_empty(), "encoding is more than one packet");
        assert_eq!(encoded(&packet), first, "encoding is not deterministic");
    }
}
