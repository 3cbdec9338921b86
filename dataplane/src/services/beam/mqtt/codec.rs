//! MQTT 3.1.1 wire format (OASIS standard, 29 October 2014), sans-IO.
//!
//! [`decode`] takes one whole control packet from the front of a receive
//! buffer once all of it has arrived; [`encode`] appends one to a send
//! buffer. Both validate what the standard calls malformed, so a packet
//! that decodes re-encodes to the same body, and what [`encode`] writes
//! [`decode`] accepts. CONNECT from MQTT 3.1 (`MQIsdp`, level 3) is accepted
//! too and re-encoded as such.
//!
//! Decoding never panics and never buffers more than `max_packet` bytes:
//! the announced size is checked as soon as the Remaining Length has been
//! read, before the body arrives. Strings are copied out of the packet
//! (they are short); PUBLISH payloads, will messages and passwords are
//! [`Bytes`] slices of the received packet, without a copy.
//!
//! Not checked here: topic names and filters beyond being UTF-8 without
//! U+0000 (wildcards, empty topics — the proxy validates topics), and the
//! rules that depend on session state (client id vs. clean session, which
//! packets may come from which side).

pub use bytes::{Bytes, BytesMut};

use bytes::{Buf, BufMut};

/// The largest Remaining Length four bytes can encode.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The longest string or binary field (two-byte length prefix).
const MAX_FIELD: usize = u16::MAX as usize;

/// Quality of service of a PUBLISH, a will or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3 and above (QoS 3 is malformed).
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 4 = MQTT 3.1.1 ("MQTT"); 3 = MQTT 3.1 ("MQIsdp") also accepted and
    /// re-encoded with its own name.
    pub protocol_level: u8,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    /// Only with a `username` (a password alone is malformed).
    pub password: Option<Bytes>,
}

/// The return code of a CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUserNameOrPassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// `None` for the reserved codes 6–255.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Accepted,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ConnectReturnCode,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Must be false with QoS 0.
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// 0 for QoS 0 (and not on the wire: [`encode`] ignores it then);
    /// nonzero otherwise.
    pub pkid: u16,
    pub payload: Bytes,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    /// At least one.
    pub filters: Vec<(String, QoS)>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub pkid: u16,
    /// 0, 1, 2 granted QoS, or 0x80 failure; at least one.
    pub return_codes: Vec<u8>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    /// At least one.
    pub topics: Vec<String>,
}

/// An MQTT 3.1.1 control packet. The `u16`s are packet identifiers
/// (nonzero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
}

impl Packet {
    /// "connect", "publish", ... for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::ConnAck(_) => "connack",
            Self::Publish(_) => "publish",
            Self::PubAck(_) => "puback",
            Self::PubRec(_) => "pubrec",
            Self::PubRel(_) => "pubrel",
            Self::PubComp(_) => "pubcomp",
            Self::Subscribe(_) => "subscribe",
            Self::SubAck(_) => "suback",
            Self::Unsubscribe(_) => "unsubscribe",
            Self::UnsubAck(_) => "unsuback",
            Self::PingReq => "pingreq",
            Self::PingResp => "pingresp",
            Self::Disconnect => "disconnect",
        }
    }
}

/// Why a packet is refused. Any of these is a protocol violation after
/// which the connection must be closed (for
/// [`DecodeError::UnsupportedProtocolLevel`] a server first answers CONNACK
/// 0x01); the receive buffer's contents are then unspecified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed remaining length (more than four bytes)")]
    MalformedRemainingLength,
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// The whole first byte (type and flags).
    #[error("reserved fixed-header flags wrong in first byte {0:#04x}")]
    BadFlags(u8),
    #[error("protocol name is neither MQTT nor MQIsdp")]
    BadProtocolName,
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("string is not UTF-8 or contains U+0000")]
    InvalidUtf8,
    #[error("QoS 3")]
    BadQoS,
    #[error("packet identifier 0")]
    ZeroPacketId,
    #[error("SUBSCRIBE without topic filters")]
    EmptySubscribe,
    #[error("UNSUBSCRIBE without topic filters")]
    EmptyUnsubscribe,
    #[error("reserved return code {0:#04x}")]
    BadReturnCode(u8),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("bytes after the last field of the packet")]
    TrailingBytes,
}

impl DecodeError {
    /// Short snake_case label for a metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedRemainingLength => "malformed_remaining_length",
            Self::TooLarge { .. } => "too_large",
            Self::UnknownPacketType(_) => "unknown_packet_type",
            Self::BadFlags(_) => "bad_flags",
            Self::BadProtocolName => "bad_protocol_name",
            Self::UnsupportedProtocolLevel(_) => "unsupported_protocol_level",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::BadQoS => "bad_qos",
            Self::ZeroPacketId => "zero_packet_id",
            Self::EmptySubscribe => "empty_subscribe",
            Self::EmptyUnsubscribe => "empty_unsubscribe",
            Self::BadReturnCode(_) => "bad_return_code",
            Self::Malformed(_) => "malformed",
            Self::TrailingBytes => "trailing_bytes",
        }
    }
}

/// Why a packet cannot be encoded: it would be malformed on the wire.
/// `out` is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("string of {0} bytes is longer than 65535")]
    StringTooLong(usize),
    #[error("string contains U+0000")]
    NulInString,
    #[error("binary field of {0} bytes is longer than 65535")]
    FieldTooLong(usize),
    #[error("remaining length {0} exceeds {MAX_REMAINING_LENGTH}")]
    PayloadTooLarge(usize),
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("packet identifier 0")]
    ZeroPacketId,
    #[error("SUBSCRIBE without topic filters")]
    EmptySubscribe,
    #[error("UNSUBSCRIBE without topic filters")]
    EmptyUnsubscribe,
    #[error("reserved SUBACK return code {0:#04x}")]
    BadReturnCode(u8),
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}

// Packet types (first byte >> 4).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

// CONNECT flags.
const CF_RESERVED: u8 = 0x01;
const CF_CLEAN_SESSION: u8 = 0x02;
const CF_WILL: u8 = 0x04;
const CF_WILL_QOS_SHIFT: u8 = 3;
const CF_WILL_QOS: u8 = 0x18;
const CF_WILL_RETAIN: u8 = 0x20;
const CF_PASSWORD: u8 = 0x40;
const CF_USERNAME: u8 = 0x80;

const NAME_311: &[u8] = b"MQTT";
const NAME_31: &[u8] = b"MQIsdp";

/// Checks the first byte: a known type with the flags 3.1.1 requires
/// (MQTT-2.2.2-1, -2; MQTT-3.3.1-4 for QoS 3, and DUP with QoS 0).
fn check_first_byte(first: u8) -> Result<(), DecodeError> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    match kind {
        PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::BadQoS);
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
            }
            Ok(())
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE if flags != 0b0010 => Err(DecodeError::BadFlags(first)),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => Ok(()),
        CONNECT | CONNACK | PUBACK | PUBREC | PUBCOMP | SUBACK | UNSUBACK | PINGREQ | PINGRESP
        | DISCONNECT => {
            if flags == 0 {
                Ok(())
            } else {
                Err(DecodeError::BadFlags(first))
            }
        }
        _ => Err(DecodeError::UnknownPacketType(kind)),
    }
}

/// Reads the Remaining Length at the front of `bytes`: `Ok(None)` while it
/// is incomplete, else its value and how many bytes it took (1–4).
/// Non-minimal encodings (e.g. `80 00` for 0) are accepted: 3.1.1 does not
/// forbid them; [`encode`] always writes the minimal one.
fn decode_remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::MalformedRemainingLength)
    } else {
        Ok(None)
    }
}

/// The number of bytes the Remaining Length `len` takes (`len` at most
/// [`MAX_REMAINING_LENGTH`]).
fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_remaining_length(mut len: usize, out: &mut BytesMut) {
    loop {
        // The low seven bits; `as` cannot lose anything here.
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Decodes one whole packet from the front of `buf` (consuming it) if one
/// is complete.
///
/// `Ok(None)` = need more bytes (nothing consumed). `max_packet` bounds the
/// whole packet size (fixed header + remaining length): a larger
/// *announced* size is an error as soon as the length field is read, before
/// the body arrives (so a hostile client cannot make us buffer). A wrong
/// packet type or flags is an error as soon as the first byte is there.
pub fn decode(buf: &mut BytesMut, max_packet: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first)?;
    let Some((remaining, len_len)) = decode_remaining_length(&buf[1..])? else {
        return Ok(None);
    };
    let header_len = 1 + len_len;
    let size = header_len + remaining;
    if size > max_packet {
        return Err(DecodeError::TooLarge {
            size,
            max: max_packet,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut packet = buf.split_to(size).freeze();
    packet.advance(header_len);
    decode_body(first, packet).map(Some)
}

/// Decodes the variable header and payload of a packet whose first byte
/// `first` has been checked.
fn decode_body(first: u8, body: Bytes) -> Result<Packet, DecodeError> {
    let flags = first & 0x0f;
    let mut r = Reader(body);
    let packet = match first >> 4 {
        CONNECT => Packet::Connect(decode_connect(&mut r)?),
        CONNACK => {
            let ack_flags = r.u8()?;
            if ack_flags & 0xfe != 0 {
                return Err(DecodeError::Malformed("reserved CONNACK flags set"));
            }
            let code = r.u8()?;
            Packet::ConnAck(ConnAck {
                session_present: ack_flags & 0x01 != 0,
                code: ConnectReturnCode::from_u8(code).ok_or(DecodeError::BadReturnCode(code))?,
            })
        }
        PUBLISH => {
            let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::BadQoS)?;
            let topic = r.string()?;
            let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
            Packet::Publish(Publish {
                dup: flags & 0x08 != 0,
                qos,
                retain: flags & 0x01 != 0,
                topic,
                pkid,
                payload: r.rest(),
            })
        }
        PUBACK => Packet::PubAck(r.pkid()?),
        PUBREC => Packet::PubRec(r.pkid()?),
        PUBREL => Packet::PubRel(r.pkid()?),
        PUBCOMP => Packet::PubComp(r.pkid()?),
        UNSUBACK => Packet::UnsubAck(r.pkid()?),
        SUBSCRIBE => {
            let pkid = r.pkid()?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                let requested = r.u8()?;
                if requested & 0xfc != 0 {
                    return Err(DecodeError::Malformed(
                        "reserved bits set in a requested QoS",
                    ));
                }
                let qos = QoS::from_u8(requested).ok_or(DecodeError::BadQoS)?;
                filters.push((filter, qos));
            }
            if filters.is_empty() {
                return Err(DecodeError::EmptySubscribe);
            }
            Packet::Subscribe(Subscribe { pkid, filters })
        }
        SUBACK => {
            let pkid = r.pkid()?;
            let return_codes = r.rest().to_vec();
            if let Some(&bad) = return_codes.iter().find(|&&c| !valid_suback_code(c)) {
                return Err(DecodeError::BadReturnCode(bad));
            }
            if return_codes.is_empty() {
                return Err(DecodeError::Malformed("SUBACK without return codes"));
            }
            Packet::SubAck(SubAck { pkid, return_codes })
        }
        UNSUBSCRIBE => {
            let pkid = r.pkid()?;
            let mut topics = Vec::new();
            while !r.is_empty() {
                topics.push(r.string()?);
            }
            if topics.is_empty() {
                return Err(DecodeError::EmptyUnsubscribe);
            }
            Packet::Unsubscribe(Unsubscribe { pkid, topics })
        }
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect,
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    if r.is_empty() {
        Ok(packet)
    } else {
        Err(DecodeError::TrailingBytes)
    }
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    // Name and level first, so that a client of another version (MQTT 5
    // says "MQTT", level 5) gets UnsupportedProtocolLevel, whatever follows.
    let name = r.binary()?;
    let protocol_level = r.u8()?;
    match (&name[..], protocol_level) {
        (NAME_311, 4) | (NAME_31, 3) => {}
        (NAME_311 | NAME_31, level) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::BadProtocolName),
    }
    let flags = r.u8()?;
    if flags & CF_RESERVED != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    let will = if flags & CF_WILL != 0 {
        let qos =
            QoS::from_u8((flags & CF_WILL_QOS) >> CF_WILL_QOS_SHIFT).ok_or(DecodeError::BadQoS)?;
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos,
            retain: flags & CF_WILL_RETAIN != 0,
        })
    } else {
        if flags & (CF_WILL_QOS | CF_WILL_RETAIN) != 0 {
            return Err(DecodeError::Malformed(
                "will QoS or retain set without the will flag",
            ));
        }
        None
    };
    if flags & CF_PASSWORD != 0 && flags & CF_USERNAME == 0 {
        return Err(DecodeError::Malformed(
            "password flag without user name flag",
        ));
    }
    let username = if flags & CF_USERNAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & CF_PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol_level,
        clean_session: flags & CF_CLEAN_SESSION != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

fn valid_suback_code(code: u8) -> bool {
    matches!(code, 0 | 1 | 2 | 0x80)
}

/// Reads the fields of one packet body; running past its end is malformed.
struct Reader(Bytes);

impl Reader {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.0.is_empty() {
            return Err(DecodeError::Malformed(
                "field runs past the end of the packet",
            ));
        }
        Ok(self.0.get_u8())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.0.len() < 2 {
            return Err(DecodeError::Malformed(
                "field runs past the end of the packet",
            ));
        }
        Ok(self.0.get_u16())
    }

    fn pkid(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// Two-byte length and that many bytes, sliced out without a copy.
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        if self.0.len() < len {
            return Err(DecodeError::Malformed(
                "field runs past the end of the packet",
            ));
        }
        Ok(self.0.split_to(len))
    }

    /// A UTF-8 string without U+0000 (MQTT-1.5.3-1, -2; Rust's UTF-8 check
    /// also refuses the surrogates and overlong forms).
    fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(s.to_owned())
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.0)
    }
}

/// Appends the packet's wire form to `out`; on error `out` is unchanged.
pub fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_inner(packet, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_inner(packet: &Packet, out: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => encode_connect(c, out),
        Packet::ConnAck(ack) => {
            header(out, CONNACK << 4, 2)?;
            out.put_u8(u8::from(ack.session_present));
            out.put_u8(ack.code.as_u8());
            Ok(())
        }
        Packet::Publish(p) => {
            if p.qos == QoS::AtMostOnce && p.dup {
                return Err(EncodeError::Invalid("DUP set on a QoS 0 PUBLISH"));
            }
            let with_pkid = p.qos != QoS::AtMostOnce;
            if with_pkid && p.pkid == 0 {
                return Err(EncodeError::ZeroPacketId);
            }
            let len = string_len(&p.topic)? + if with_pkid { 2 } else { 0 } + p.payload.len();
            let first =
                PUBLISH << 4 | u8::from(p.dup) << 3 | p.qos.as_u8() << 1 | u8::from(p.retain);
            header(out, first, len)?;
            put_string(out, &p.topic);
            if with_pkid {
                out.put_u16(p.pkid);
            }
            out.put_slice(&p.payload);
            Ok(())
        }
        Packet::PubAck(id) => pkid_only(out, PUBACK << 4, *id),
        Packet::PubRec(id) => pkid_only(out, PUBREC << 4, *id),
        Packet::PubRel(id) => pkid_only(out, PUBREL << 4 | 0b0010, *id),
        Packet::PubComp(id) => pkid_only(out, PUBCOMP << 4, *id),
        Packet::UnsubAck(id) => pkid_only(out, UNSUBACK << 4, *id),
        Packet::Subscribe(s) => {
            nonzero(s.pkid)?;
            if s.filters.is_empty() {
                return Err(EncodeError::EmptySubscribe);
            }
            let mut len = 2usize;
            for (filter, _) in &s.filters {
                len = len.saturating_add(string_len(filter)? + 1);
            }
            header(out, SUBSCRIBE << 4 | 0b0010, len)?;
            out.put_u16(s.pkid);
            for (filter, qos) in &s.filters {
                put_string(out, filter);
                out.put_u8(qos.as_u8());
            }
            Ok(())
        }
        Packet::SubAck(s) => {
            nonzero(s.pkid)?;
            if let Some(&bad) = s.return_codes.iter().find(|&&c| !valid_suback_code(c)) {
                return Err(EncodeError::BadReturnCode(bad));
            }
            if s.return_codes.is_empty() {
                return Err(EncodeError::Invalid("SUBACK without return codes"));
            }
            header(
                out,
                SUBACK << 4,
                2usize.saturating_add(s.return_codes.len()),
            )?;
            out.put_u16(s.pkid);
            out.put_slice(&s.return_codes);
            Ok(())
        }
        Packet::Unsubscribe(u) => {
            nonzero(u.pkid)?;
            if u.topics.is_empty() {
                return Err(EncodeError::EmptyUnsubscribe);
            }
            let mut len = 2usize;
            for topic in &u.topics {
                len = len.saturating_add(string_len(topic)?);
            }
            header(out, UNSUBSCRIBE << 4 | 0b0010, len)?;
            out.put_u16(u.pkid);
            for topic in &u.topics {
                put_string(out, topic);
            }
            Ok(())
        }
        Packet::PingReq => header(out, PINGREQ << 4, 0),
        Packet::PingResp => header(out, PINGRESP << 4, 0),
        Packet::Disconnect => header(out, DISCONNECT << 4, 0),
    }
}

fn encode_connect(c: &Connect, out: &mut BytesMut) -> Result<(), EncodeError> {
    let name = match c.protocol_level {
        4 => NAME_311,
        3 => NAME_31,
        other => return Err(EncodeError::UnsupportedProtocolLevel(other)),
    };
    if c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid("password without user name"));
    }
    let mut flags = 0u8;
    // name, level, flags, keep alive, client id
    let mut len = 2 + name.len() + 1 + 1 + 2 + string_len(&c.client_id)?;
    if c.clean_session {
        flags |= CF_CLEAN_SESSION;
    }
    if let Some(will) = &c.will {
        flags |= CF_WILL | will.qos.as_u8() << CF_WILL_QOS_SHIFT;
        if will.retain {
            flags |= CF_WILL_RETAIN;
        }
        len += string_len(&will.topic)? + binary_len(&will.payload)?;
    }
    if let Some(username) = &c.username {
        flags |= CF_USERNAME;
        len += string_len(username)?;
    }
    if let Some(password) = &c.password {
        flags |= CF_PASSWORD;
        len += binary_len(password)?;
    }
    header(out, CONNECT << 4, len)?;
    put_binary(out, name);
    out.put_u8(c.protocol_level);
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    put_string(out, &c.client_id);
    if let Some(will) = &c.will {
        put_string(out, &will.topic);
        put_binary(out, &will.payload);
    }
    if let Some(username) = &c.username {
        put_string(out, username);
    }
    if let Some(password) = &c.password {
        put_binary(out, password);
    }
    Ok(())
}

/// Writes the fixed header and reserves room for the body.
fn header(out: &mut BytesMut, first: u8, remaining: usize) -> Result<(), EncodeError> {
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PayloadTooLarge(remaining));
    }
    out.reserve(1 + remaining_length_len(remaining) + remaining);
    out.put_u8(first);
    put_remaining_length(remaining, out);
    Ok(())
}

fn pkid_only(out: &mut BytesMut, first: u8, pkid: u16) -> Result<(), EncodeError> {
    nonzero(pkid)?;
    header(out, first, 2)?;
    out.put_u16(pkid);
    Ok(())
}

fn nonzero(pkid: u16) -> Result<(), EncodeError> {
    if pkid == 0 {
        Err(EncodeError::ZeroPacketId)
    } else {
        Ok(())
    }
}

/// The encoded size of a string field, if it can be one.
fn string_len(s: &str) -> Result<usize, EncodeError> {
    if s.len() > MAX_FIELD {
        return Err(EncodeError::StringTooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(EncodeError::NulInString);
    }
    Ok(2 + s.len())
}

/// The encoded size of a binary field, if it can be one.
fn binary_len(b: &[u8]) -> Result<usize, EncodeError> {
    if b.len() > MAX_FIELD {
        return Err(EncodeError::FieldTooLong(b.len()));
    }
    Ok(2 + b.len())
}

/// Writes a field checked by [`string_len`] / [`binary_len`].
fn put_binary(out: &mut BytesMut, b: &[u8]) {
    // Checked to fit by the caller; saturating keeps this total anyway.
    out.put_u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
    out.put_slice(b);
}

fn put_string(out: &mut BytesMut, s: &str) {
    put_binary(out, s.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(p: &Packet) -> BytesMut {
        let mut out = BytesMut::new();
        encode(p, &mut out).unwrap();
        out
    }

    fn dec(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), usize::MAX)
    }

    /// Encodes, checks the wire bytes when given, decodes back and checks
    /// that the whole encoding was consumed.
    fn round_trip(p: &Packet, wire: Option<&[u8]>) {
        let bytes = enc(p);
        if let Some(wire) = wire {
            assert_eq!(&bytes[..], wire, "{p:?}");
        }
        let mut buf = bytes.clone();
        assert_eq!(decode(&mut buf, bytes.len()).unwrap().as_ref(), Some(p));
        assert!(buf.is_empty());
    }

    fn connect() -> Connect {
        Connect {
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: "dev1".into(),
            will: None,
            username: None,
            password: None,
        }
    }

    fn publish(qos: QoS, pkid: u16, payload: &'static [u8]) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: "a/b".into(),
            pkid,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn connect_round_trips() {
        round_trip(
            &Packet::Connect(connect()),
            Some(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1"),
        );
        let full = Connect {
            protocol_level: 4,
            clean_session: false,
            keep_alive: 0,
            client_id: String::new(),
            will: Some(Will {
                topic: "w".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: true,
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"\x00p")),
        };
        round_trip(
            &Packet::Connect(full.clone()),
            Some(b"\x10\x1b\x00\x04MQTT\x04\xf4\x00\x00\x00\x00\x00\x01w\x00\x03bye\x00\x01u\x00\x02\x00p"),
        );
        round_trip(
            &Packet::Connect(Connect {
                protocol_level: 3,
                ..full
            }),
            None,
        );
        round_trip(
            &Packet::Connect(Connect {
                username: Some("only-user".into()),
                ..connect()
            }),
            None,
        );
        // MQTT 3.1 keeps its name.
        let v31 = enc(&Packet::Connect(Connect {
            protocol_level: 3,
            ..connect()
        }));
        assert_eq!(&v31[2..10], b"\x00\x06MQIsdp");
    }

    #[test]
    fn other_packets_round_trip() {
        let cases: Vec<(Packet, &[u8])> = vec![
            (
                Packet::ConnAck(ConnAck {
                    session_present: true,
                    code: ConnectReturnCode::Accepted,
                }),
                b"\x20\x02\x01\x00",
            ),
            (
                Packet::ConnAck(ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::NotAuthorized,
                }),
                b"\x20\x02\x00\x05",
            ),
            (
                Packet::Publish(publish(QoS::AtMostOnce, 0, b"hi")),
                b"\x30\x07\x00\x03a/bhi",
            ),
            (
                Packet::Publish(Publish {
                    retain: true,
                    ..publish(QoS::AtLeastOnce, 10, b"")
                }),
                b"\x33\x07\x00\x03a/b\x00\x0a",
            ),
            (
                Packet::Publish(Publish {
                    dup: true,
                    ..publish(QoS::ExactlyOnce, 0x1234, b"x")
                }),
                b"\x3c\x08\x00\x03a/b\x12\x34x",
            ),
            (Packet::PubAck(1), b"\x40\x02\x00\x01"),
            (Packet::PubRec(2), b"\x50\x02\x00\x02"),
            (Packet::PubRel(3), b"\x62\x02\x00\x03"),
            (Packet::PubComp(65535), b"\x70\x02\xff\xff"),
            (
                Packet::Subscribe(Subscribe {
                    pkid: 7,
                    filters: vec![
                        ("a/+".into(), QoS::AtLeastOnce),
                        ("#".into(), QoS::ExactlyOnce),
                    ],
                }),
                b"\x82\x0c\x00\x07\x00\x03a/+\x01\x00\x01#\x02",
            ),
            (
                Packet::SubAck(SubAck {
                    pkid: 7,
                    return_codes: vec![1, 0x80, 0, 2],
                }),
                b"\x90\x06\x00\x07\x01\x80\x00\x02",
            ),
            (
                Packet::Unsubscribe(Unsubscribe {
                    pkid: 8,
                    topics: vec!["a/+".into(), "b".into()],
                }),
                b"\xa2\x0a\x00\x08\x00\x03a/+\x00\x01b",
            ),
            (Packet::UnsubAck(8), b"\xb0\x02\x00\x08"),
            (Packet::PingReq, b"\xc0\x00"),
            (Packet::PingResp, b"\xd0\x00"),
            (Packet::Disconnect, b"\xe0\x00"),
        ];
        for (packet, wire) in &cases {
            round_trip(packet, Some(wire));
        }
        let names: Vec<_> = cases.iter().map(|(p, _)| p.name()).collect();
        assert!(names.contains(&"unsuback") && names.contains(&"pingreq"));
    }

    #[test]
    fn qos0_pkid_is_not_on_the_wire() {
        let bytes = enc(&Packet::Publish(publish(QoS::AtMostOnce, 99, b"")));
        assert_eq!(&bytes[..], b"\x30\x05\x00\x03a/b");
        assert_eq!(
            dec(&bytes).unwrap(),
            Some(Packet::Publish(publish(QoS::AtMostOnce, 0, b"")))
        );
    }

    #[test]
    fn publish_payload_is_a_slice_of_the_packet() {
        let mut buf = enc(&Packet::Publish(publish(QoS::AtMostOnce, 0, b"payload")));
        let start = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode(&mut buf, 1024).unwrap() else {
            panic!("not a publish");
        };
        assert_eq!(p.payload.as_ptr() as usize, start + 7);
    }

    #[test]
    fn remaining_length_spec_examples() {
        let cases: [(usize, &[u8]); 8] = [
            (0, b"\x00"),
            (127, b"\x7f"),
            (128, b"\x80\x01"),
            (16_383, b"\xff\x7f"),
            (16_384, b"\x80\x80\x01"),
            (2_097_151, b"\xff\xff\x7f"),
            (2_097_152, b"\x80\x80\x80\x01"),
            (268_435_455, b"\xff\xff\xff\x7f"),
        ];
        for (len, wire) in cases {
            let mut out = BytesMut::new();
            put_remaining_length(len, &mut out);
            assert_eq!(&out[..], wire, "{len}");
            assert_eq!(remaining_length_len(len), wire.len());
            assert_eq!(decode_remaining_length(wire), Ok(Some((len, wire.len()))));
            // Every strict prefix is incomplete.
            for cut in 0..wire.len() {
                assert_eq!(decode_remaining_length(&wire[..cut]), Ok(None));
            }
        }
        // A fifth byte is malformed, as soon as the fourth has its
        // continuation bit.
        assert_eq!(
            decode_remaining_length(b"\xff\xff\xff\xff"),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            dec(b"\x30\x80\x80\x80\x80\x01"),
            Err(DecodeError::MalformedRemainingLength)
        );
        // Non-minimal is accepted.
        assert_eq!(dec(b"\xc0\x80\x00"), Ok(Some(Packet::PingReq)));
    }

    #[test]
    fn large_publishes_round_trip() {
        // Remaining lengths 16384 (3-byte header) and 2097152 (4-byte).
        for total in [16_384usize, 2_097_152] {
            let payload = Bytes::from(vec![0xa5; total - 5]);
            let p = Packet::Publish(Publish {
                payload,
                ..publish(QoS::AtMostOnce, 0, b"")
            });
            let bytes = enc(&p);
            assert_eq!(bytes.len(), 1 + remaining_length_len(total) + total);
            round_trip(&p, None);
        }
        let too_big = Packet::Publish(Publish {
            payload: Bytes::from(vec![0; MAX_REMAINING_LENGTH - 4]),
            ..publish(QoS::AtMostOnce, 0, b"")
        });
        let mut out = BytesMut::from(&b"keep"[..]);
        assert_eq!(
            encode(&too_big, &mut out),
            Err(EncodeError::PayloadTooLarge(MAX_REMAINING_LENGTH + 1))
        );
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn partial_input_needs_more_at_every_split() {
        let packets = vec![
            Packet::Connect(Connect {
                will: Some(Will {
                    topic: "will".into(),
                    payload: Bytes::from_static(b"gone"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                }),
                username: Some("user".into()),
                password: Some(Bytes::from_static(b"pw")),
                ..connect()
            }),
            Packet::Publish(Publish {
                payload: Bytes::from(vec![b'x'; 300]),
                ..publish(QoS::AtLeastOnce, 1, b"")
            }),
            Packet::Subscribe(Subscribe {
                pkid: 2,
                filters: vec![("t/#".into(), QoS::AtMostOnce)],
            }),
            Packet::PubRel(3),
            Packet::PingReq,
            Packet::Disconnect,
        ];
        let mut all = BytesMut::new();
        for p in &packets {
            encode(p, &mut all).unwrap();
        }
        for split in 0..=all.len() {
            let mut buf = BytesMut::from(&all[..split]);
            let mut got = Vec::new();
            loop {
                let before = buf.len();
                match decode(&mut buf, 4096).unwrap() {
                    Some(p) => got.push(p),
                    None => {
                        assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                        break;
                    }
                }
            }
            // Feed the rest; everything comes out, in order.
            buf.extend_from_slice(&all[split..]);
            while let Some(p) = decode(&mut buf, 4096).unwrap() {
                got.push(p);
            }
            assert!(buf.is_empty());
            assert_eq!(got, packets, "split at {split}");
        }
    }

    #[test]
    fn too_large_is_refused_before_the_body() {
        // A PUBLISH announcing 1 MB: refused with only the header there.
        let mut buf = BytesMut::from(&b"\x30\x80\x80\x40"[..]);
        assert_eq!(
            decode(&mut buf, 65_536),
            Err(DecodeError::TooLarge {
                size: 4 + 0x10_0000,
                max: 65_536
            })
        );
        // The limit counts the fixed header: exactly max is fine.
        let bytes = enc(&Packet::Publish(publish(QoS::AtMostOnce, 0, b"12345")));
        assert_eq!(bytes.len(), 12);
        assert!(decode(&mut bytes.clone(), 12).unwrap().is_some());
        assert_eq!(
            decode(&mut bytes.clone(), 11),
            Err(DecodeError::TooLarge { size: 12, max: 11 })
        );
        // Incomplete but within the limit: wait.
        assert_eq!(decode(&mut BytesMut::from(&bytes[..5]), 12), Ok(None));
    }

    #[test]
    fn bad_first_bytes() {
        for first in [0x00u8, 0xf0] {
            assert_eq!(
                dec(&[first]),
                Err(DecodeError::UnknownPacketType(first >> 4))
            );
        }
        // Refused as soon as the first byte is there.
        for first in [0x11u8, 0x28, 0x41, 0x60, 0x63, 0x80, 0x83, 0xa0, 0xc1, 0xe8] {
            assert_eq!(
                dec(&[first]),
                Err(DecodeError::BadFlags(first)),
                "{first:#x}"
            );
        }
        assert_eq!(dec(b"\x36\x00"), Err(DecodeError::BadQoS));
        assert_eq!(dec(b"\x3f"), Err(DecodeError::BadQoS));
        assert_eq!(
            dec(b"\x38\x05\x00\x03a/b"),
            Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"))
        );
    }

    fn connect_bytes(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        body.extend_from_slice(name);
        body.push(level);
        body.push(flags);
        body.extend_from_slice(&[0, 60]);
        body.extend_from_slice(payload);
        let mut out = vec![0x10, u8::try_from(body.len()).unwrap()];
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn bad_connects() {
        let id = b"\x00\x02id";
        assert!(dec(&connect_bytes(b"MQTT", 4, 0x02, id)).unwrap().is_some());
        assert_eq!(
            dec(&connect_bytes(b"MQTT", 5, 0x02, id)),
            Err(DecodeError::UnsupportedProtocolLevel(5))
        );
        assert_eq!(
            dec(&connect_bytes(b"MQTT", 3, 0x02, id)),
            Err(DecodeError::UnsupportedProtocolLevel(3))
        );
        assert_eq!(
            dec(&connect_bytes(b"MQIsdp", 4, 0x02, id)),
            Err(DecodeError::UnsupportedProtocolLevel(4))
        );
        assert_eq!(
            dec(&connect_bytes(b"MQTS", 4, 0x02, id)),
            Err(DecodeError::BadProtocolName)
        );
        // Reserved flag.
        assert_eq!(
            dec(&connect_bytes(b"MQTT", 4, 0x03, id))
                .unwrap_err()
                .reason(),
            "malformed"
        );
        // Will QoS / retain without the will flag; will QoS 3.
        for flags in [0x08, 0x10, 0x20] {
            assert!(dec(&connect_bytes(b"MQTT", 4, flags, id)).is_err());
        }
        assert_eq!(
            dec(&connect_bytes(
                b"MQTT",
                4,
                0x1c,
                b"\x00\x02id\x00\x01w\x00\x00"
            )),
            Err(DecodeError::BadQoS)
        );
        // Password without user name.
        assert!(dec(&connect_bytes(b"MQTT", 4, 0x40, b"\x00\x02id\x00\x01p")).is_err());
        // User name flag but no user name; trailing bytes.
        assert!(dec(&connect_bytes(b"MQTT", 4, 0x80, id)).is_err());
        assert_eq!(
            dec(&connect_bytes(b"MQTT", 4, 0x00, b"\x00\x02id\x00")),
            Err(DecodeError::TrailingBytes)
        );
        // Client id with U+0000, invalid UTF-8, a surrogate.
        for bad in [
            &b"\x00\x02i\x00"[..],
            b"\x00\x02\xc3\x28",
            b"\x00\x03\xed\xa0\x80",
        ] {
            assert_eq!(
                dec(&connect_bytes(b"MQTT", 4, 0x02, bad)),
                Err(DecodeError::InvalidUtf8)
            );
        }
        let mut out = BytesMut::new();
        assert_eq!(
            encode(
                &Packet::Connect(Connect {
                    password: Some(Bytes::new()),
                    ..connect()
                }),
                &mut out
            ),
            Err(EncodeError::Invalid("password without user name"))
        );
        assert_eq!(
            encode(
                &Packet::Connect(Connect {
                    protocol_level: 5,
                    ..connect()
                }),
                &mut out
            ),
            Err(EncodeError::UnsupportedProtocolLevel(5))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn bad_bodies() {
        let cases: [(&[u8], &str); 14] = [
            (b"\x40\x02\x00\x00", "zero_packet_id"),
            (b"\x40\x03\x00\x01\x00", "trailing_bytes"),
            (b"\x40\x01\x00", "malformed"),
            (b"\x33\x05\x00\x03a/b", "malformed"),
            (b"\x32\x07\x00\x03a/b\x00\x00", "zero_packet_id"),
            (b"\x82\x02\x00\x01", "empty_subscribe"),
            (b"\x82\x06\x00\x01\x00\x01a\x03", "bad_qos"),
            (b"\x82\x06\x00\x01\x00\x01a\x04", "malformed"),
            (b"\x82\x05\x00\x01\x00\x01a", "malformed"),
            (b"\xa2\x02\x00\x01", "empty_unsubscribe"),
            (b"\x90\x03\x00\x01\x03", "bad_return_code"),
            (b"\x90\x02\x00\x01", "malformed"),
            (b"\x20\x02\x02\x00", "malformed"),
            (b"\x20\x02\x00\x06", "bad_return_code"),
        ];
        for (wire, reason) in cases {
            let err = dec(wire).unwrap_err();
            assert_eq!(err.reason(), reason, "{wire:x?}: {err}");
        }
        assert_eq!(dec(b"\xc0\x01\x00"), Err(DecodeError::TrailingBytes));
        assert_eq!(
            dec(b"\x30\x05\x00\x04a/b"),
            Err(DecodeError::Malformed(
                "field runs past the end of the packet"
            ))
        );
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let bad = [
            (Packet::PubAck(0), EncodeError::ZeroPacketId),
            (
                Packet::Publish(publish(QoS::AtLeastOnce, 0, b"")),
                EncodeError::ZeroPacketId,
            ),
            (
                Packet::Publish(Publish {
                    dup: true,
                    ..publish(QoS::AtMostOnce, 0, b"")
                }),
                EncodeError::Invalid("DUP set on a QoS 0 PUBLISH"),
            ),
            (
                Packet::Publish(Publish {
                    topic: "a\0".into(),
                    ..publish(QoS::AtMostOnce, 0, b"")
                }),
                EncodeError::NulInString,
            ),
            (
                Packet::Publish(Publish {
                    topic: "a".repeat(65_536),
                    ..publish(QoS::AtMostOnce, 0, b"")
                }),
                EncodeError::StringTooLong(65_536),
            ),
            (
                Packet::Subscribe(Subscribe {
                    pkid: 1,
                    filters: vec![],
                }),
                EncodeError::EmptySubscribe,
            ),
            (
                Packet::Unsubscribe(Unsubscribe {
                    pkid: 1,
                    topics: vec![],
                }),
                EncodeError::EmptyUnsubscribe,
            ),
            (
                Packet::SubAck(SubAck {
                    pkid: 1,
                    return_codes: vec![0, 3],
                }),
                EncodeError::BadReturnCode(3),
            ),
            (
                Packet::Connect(Connect {
                    username: Some("u".into()),
                    password: Some(Bytes::from(vec![0; 65_536])),
                    ..connect()
                }),
                EncodeError::FieldTooLong(65_536),
            ),
        ];
        for (packet, err) in bad {
            let mut out = BytesMut::from(&b"x"[..]);
            assert_eq!(encode(&packet, &mut out), Err(err));
            assert_eq!(&out[..], b"x");
        }
    }

    fn string() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..12)
            .prop_map(|cs| cs.into_iter().filter(|&c| c != '\0').collect())
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn qos() -> impl Strategy<Value = QoS> {
        (0u8..3).prop_map(|q| QoS::from_u8(q).unwrap())
    }

    fn pkid() -> impl Strategy<Value = u16> {
        1u16..
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let will = proptest::option::of((string(), bytes(), qos(), any::<bool>()).prop_map(
            |(topic, payload, qos, retain)| Will {
                topic,
                payload,
                qos,
                retain,
            },
        ));
        let credentials = proptest::option::of((string(), proptest::option::of(bytes())));
        let connect = (
            prop_oneof![Just(3u8), Just(4u8)],
            any::<bool>(),
            any::<u16>(),
            string(),
            will,
            credentials,
        )
            .prop_map(
                |(protocol_level, clean_session, keep_alive, client_id, will, creds)| {
                    let (username, password) = match creds {
                        Some((u, p)) => (Some(u), p),
                        None => (None, None),
                    };
                    Packet::Connect(Connect {
                        protocol_level,
                        clean_session,
                        keep_alive,
                        client_id,
                        will,
                        username,
                        password,
                    })
                },
            );
        let connack = (any::<bool>(), 0u8..6).prop_map(|(session_present, code)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code: ConnectReturnCode::from_u8(code).unwrap(),
            })
        });
        let publish = (
            any::<bool>(),
            qos(),
            any::<bool>(),
            string(),
            pkid(),
            bytes(),
        )
            .prop_map(|(dup, qos, retain, topic, pkid, payload)| {
                let qos0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    pkid: if qos0 { 0 } else { pkid },
                    payload,
                })
            });
        let subscribe = (pkid(), proptest::collection::vec((string(), qos()), 1..5))
            .prop_map(|(pkid, filters)| Packet::Subscribe(Subscribe { pkid, filters }));
        let suback = (
            pkid(),
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)], 1..5),
        )
            .prop_map(|(pkid, return_codes)| Packet::SubAck(SubAck { pkid, return_codes }));
        let unsubscribe = (pkid(), proptest::collection::vec(string(), 1..5))
            .prop_map(|(pkid, topics)| Packet::Unsubscribe(Unsubscribe { pkid, topics }));
        prop_oneof![
            connect,
            connack,
            publish,
            pkid().prop_map(Packet::PubAck),
            pkid().prop_map(Packet::PubRec),
            pkid().prop_map(Packet::PubRel),
            pkid().prop_map(Packet::PubComp),
            subscribe,
            suback,
            unsubscribe,
            pkid().prop_map(Packet::UnsubAck),
            Just(Packet::PingReq),
            Just(Packet::PingResp),
            Just(Packet::Disconnect),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(packets in proptest::collection::vec(packet(), 1..4)) {
            let mut buf = BytesMut::new();
            for p in &packets {
                encode(p, &mut buf).unwrap();
            }
            let wire = buf.clone();
            let mut got = Vec::new();
            while let Some(p) = decode(&mut buf, wire.len()).unwrap() {
                got.push(p);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&got, &packets);
            let mut again = BytesMut::new();
            for p in &got {
                encode(p, &mut again).unwrap();
            }
            prop_assert_eq!(again, wire);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(p)) = decode(&mut buf, 1024) {
                let mut out = BytesMut::new();
                encode(&p, &mut out).unwrap();
            }
        }
    }
}
