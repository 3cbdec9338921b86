//! Hand-written JSON for AWS request bodies: batches of up to 5 MiB are
//! written straight into one buffer instead of through a `serde_json::Value`
//! tree that would copy every payload twice.

/// Length of the padded standard base64 of `n` bytes.
pub fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Appends the padded standard base64 of `data`.
pub fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    use base64::Engine as _;
    let engine = &base64::engine::general_purpose::STANDARD;
    let start = out.len();
    out.resize(start + base64_len(data.len()), 0);
    match engine.encode_slice(data, &mut out[start..]) {
        Ok(written) => out.truncate(start + written),
        // Cannot happen (the slice is exactly the padded length); stay
        // correct rather than panic if the crate ever disagrees.
        Err(_) => {
            out.truncate(start);
            out.extend_from_slice(engine.encode(data).as_bytes());
        }
    }
}

/// Writes `s` as a JSON string literal (quotes included).
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}
