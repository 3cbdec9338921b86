//! Properties of Beam's TCP identity line
//! (`simgate::services::beam::signature`).
//!
//! Input: one line as an upstream server receives it, without its line end,
//! `imei=… imsi=… msisdn=… simId=… timestamp=…[;signature=<hex>]` (invalid
//! UTF-8 is skipped: the line is text).
//!
//! Properties:
//! * `TcpIdentityLine::parse` never panics.
//! * An accepted line is canonical: `tcp_identity_line` of its fields gives
//!   back exactly its signed part, and with its signature the whole line.
//! * Re-signed with a key, the line parses to the same fields and verifies
//!   with that key only; a signature present in the input verifies exactly
//!   when it is the SHA-256 of key + signed part (checked with the key
//!   `topsecret`, the published vector's).
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use simgate::services::beam::signature::{tcp_identity_line, TcpIdentityLine};

const KEY: &[u8] = b"topsecret";

pub(crate) fn check(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = TcpIdentityLine::parse(line) else {
        return;
    };
    assert_eq!(
        tcp_identity_line(&parsed.fields, None),
        parsed.signed,
        "accepted line is not canonical"
    );
    let expected = tcp_identity_line(&parsed.fields, Some(KEY));
    match parsed.signature {
        Some(sig) => {
            assert_eq!(format!("{};signature={sig}", parsed.signed), line);
            assert_eq!(parsed.verify(KEY), expected == line);
        }
        None => {
            assert_eq!(parsed.signed, line);
            assert!(!parsed.verify(KEY));
        }
    }
    let resigned = TcpIdentityLine::parse(&expected).expect("a line simgate writes parses");
    assert_eq!(resigned.fields, parsed.fields);
    assert!(resigned.verify(KEY));
    assert!(!resigned.verify(b"topsecreT"));
}
