//! The few MQTT 3.1.1 packets `loadgen mqtt` sends and reads: CONNECT,
//! CONNACK, PUBLISH at QoS 1, PUBACK. Sans-IO: bytes in, bytes out.

use thiserror::Error;

/// A packet the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum MqttError {
    #[error("remaining length longer than 4 bytes")]
    BadLength,
    #[error("packet of {0} bytes is too large")]
    TooLarge(usize),
    #[error("{what} of {len} bytes does not fit a 16-bit length")]
    FieldTooLong { what: &'static str, len: usize },
    #[error("expected {expected}, got packet type {got:#04x}")]
    Unexpected { expected: &'static str, got: u8 },
    #[error("CONNACK refused the connection (return code {0})")]
    Refused(u8),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Largest packet read back (CONNACK and PUBACK are 4 bytes).
const MAX_PACKET: usize = 64 << 10;

fn push_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn push_str(out: &mut Vec<u8>, what: &'static str, s: &[u8]) -> Result<(), MqttError> {
    let len = u16::try_from(s.len()).map_err(|_| MqttError::FieldTooLong { what, len: s.len() })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

/// CONNECT, clean session, no will, no credentials.
pub(crate) fn connect(client_id: &str, keep_alive_s: u16) -> Result<Vec<u8>, MqttError> {
    let mut body = Vec::with_capacity(12 + client_id.len());
    push_str(&mut body, "protocol name", b"MQTT")?;
    body.push(4); // 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    push_str(&mut body, "client id", client_id.as_bytes())?;
    Ok(packet(0x10, &body))
}

/// PUBLISH at QoS 1 with packet id `id`.
pub(crate) fn publish_qos1(topic: &str, id: u16, payload: &[u8]) -> Result<Vec<u8>, MqttError> {
    let mut body = Vec::with_capacity(4 + topic.len() + payload.len());
    push_str(&mut body, "topic", topic.as_bytes())?;
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    Ok(packet(0x32, &body))
}

/// DISCONNECT.
pub(crate) const DISCONNECT: [u8; 2] = [0xe0, 0x00];

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(first);
    push_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A whole packet at the start of `buf`: `(first byte, body range end,
/// body start)`, or `None` while incomplete.
fn split(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, MqttError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if len > MAX_PACKET {
                return Err(MqttError::TooLarge(len));
            }
            let start = 2 + i;
            let end = start + len;
            return Ok((buf.len() >= end).then_some((first, end, start)));
        }
    }
    Err(MqttError::BadLength)
}

/// CONNACK at the start of `buf`: the bytes it took, or `None` while
/// incomplete; an error if it is anything else or refuses.
pub(crate) fn connack(buf: &[u8]) -> Result<Option<usize>, MqttError> {
    let Some((first, end, start)) = split(buf)? else {
        return Ok(None);
    };
    if first != 0x20 {
        return Err(MqttError::Unexpected {
            expected: "CONNACK",
            got: first,
        });
    }
    let body = &buf[start..end];
    if body.len() != 2 {
        return Err(MqttError::Malformed("CONNACK"));
    }
    if body[1] != 0 {
        return Err(MqttError::Refused(body[1]));
    }
    Ok(Some(end))
}

/// A packet read while waiting for a PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// PUBACK for this packet id.
    Puback(u16),
    /// Anything else (a PINGRESP, a message from a subscription): skipped.
    Other,
}

/// The packet at the start of `buf` and the bytes it took, or `None` while
/// incomplete.
pub(crate) fn incoming(buf: &[u8]) -> Result<Option<(Incoming, usize)>, MqttError> {
    let Some((first, end, start)) = split(buf)? else {
        return Ok(None);
    };
    if first >> 4 == 4 {
        let body = &buf[start..end];
        if first != 0x40 || body.len() != 2 {
            return Err(MqttError::Malformed("PUBACK"));
        }
        return Ok(Some((
            Incoming::Puback(u16::from_be_bytes([body[0], body[1]])),
            end,
        )));
    }
    Ok(Some((Incoming::Other, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_bytes() {
        let p = connect("sim1", 60).unwrap();
        assert_eq!(
            p,
            [
                0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 4, b's', b'i', b'm',
                b'1'
            ]
        );
    }

    #[test]
    fn publish_bytes_and_long_lengths() {
        let p = publish_qos1("a/b", 7, b"hi").unwrap();
        assert_eq!(p, [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'h', b'i']);
        // 200-byte body: a two-byte remaining length (200 = 0xc8 0x01).
        let p = publish_qos1("t", 1, &[b'x'; 195]).unwrap();
        assert_eq!(&p[..3], &[0x32, 0xc8, 0x01]);
        assert_eq!(p.len(), 3 + 200);
        assert_eq!(split(&p).unwrap(), Some((0x32, p.len(), 3)));
        assert!(publish_qos1(&"t".repeat(70_000), 1, b"").is_err());
    }

    #[test]
    fn connack_and_puback() {
        assert_eq!(connack(&[0x20, 2, 0, 0]), Ok(Some(4)));
        assert_eq!(connack(&[0x20, 2, 0]), Ok(None));
        assert_eq!(connack(&[]), Ok(None));
        assert_eq!(connack(&[0x20, 2, 0, 5]), Err(MqttError::Refused(5)));
        assert!(matches!(
            connack(&[0x40, 2, 0, 1]),
            Err(MqttError::Unexpected { .. })
        ));
        assert_eq!(
            incoming(&[0x40, 2, 1, 2, 0xd0]),
            Ok(Some((Incoming::Puback(0x0102), 4)))
        );
        assert_eq!(incoming(&[0xd0, 0]), Ok(Some((Incoming::Other, 2))));
        assert_eq!(
            incoming(&[0x40, 3, 0, 1, 0]),
            Err(MqttError::Malformed("PUBACK"))
        );
        assert_eq!(
            incoming(&[0x30, 0xff, 0xff, 0xff, 0xff]),
            Err(MqttError::BadLength)
        );
        assert!(matches!(
            incoming(&[0x30, 0xff, 0xff, 0x7f]),
            Err(MqttError::TooLarge(_))
        ));
    }
}
