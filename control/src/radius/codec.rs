//! The RADIUS accounting wire format: packets and attributes as RFC 2865 §3
//! and §5 lay them out, accounting as RFC 2866 defines it, and the 3GPP
//! vendor-specific attributes of TS 29.061 §16.4.7.
//!
//! Pure functions over byte slices: no sockets, no clock, no allocation when
//! parsing (the parsed request borrows from the datagram).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Code      |  Identifier   |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Authenticator (16 octets)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Attributes: Type (1) | Length (1, ≥ 2, counts itself) | Value ...
//! ```

use std::net::Ipv4Addr;

use md5::{Digest, Md5};

use crate::model::IdError;

/// Accounting-Request (RFC 2866 §4.1).
pub const CODE_ACCOUNTING_REQUEST: u8 = 4;
/// Accounting-Response (RFC 2866 §4.2).
pub const CODE_ACCOUNTING_RESPONSE: u8 = 5;
/// Code, Identifier, Length and the 16-octet Authenticator.
pub const HEADER_LEN: usize = 20;
/// Largest packet RFC 2865 §3 allows.
pub const MAX_PACKET_LEN: usize = 4096;
/// An attribute's Length octet counts its own two header octets.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 255 - 2;
/// The IANA enterprise number of 3GPP, the vendor of `3GPP-IMSI` and
/// `3GPP-IMEISV`.
pub const VENDOR_3GPP: u32 = 10415;
/// An Accounting-Response carries no attributes here, so it is always the
/// bare header.
pub const RESPONSE_LEN: usize = HEADER_LEN;

/// An encoded Accounting-Response.
pub type AccountingResponse = [u8; RESPONSE_LEN];

/// Attribute types this codec reads or writes (RFC 2865 §5, RFC 2866 §5).
pub mod attr {
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const FRAMED_IP_ADDRESS: u8 = 8;
    pub const VENDOR_SPECIFIC: u8 = 26;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_SESSION_ID: u8 = 44;
}

/// 3GPP vendor-specific sub-attribute types (TS 29.061 §16.4.7.2).
pub mod attr_3gpp {
    pub const IMSI: u8 = 1;
    pub const IMEISV: u8 = 20;
}

/// Sub-attributes of a 3GPP Vendor-Specific attribute: vendor id (4 octets),
/// then vendor-type (1) + vendor-length (1, counts itself) + value.
const VSA_VENDOR_ID_LEN: usize = 4;
/// The largest value of one 3GPP sub-attribute: an attribute value holds at
/// most 253 octets, minus the vendor id and the sub-attribute header.
pub const MAX_VENDOR_VALUE_LEN: usize = MAX_ATTRIBUTE_VALUE_LEN - VSA_VENDOR_ID_LEN - 2;

/// Acct-Status-Type (40) values (RFC 2866 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcctStatusType {
    Start,
    Stop,
    InterimUpdate,
    AccountingOn,
    AccountingOff,
    /// Any other value (Tunnel-*, Failed, vendor values): carried, not acted on.
    Other(u32),
}

impl AcctStatusType {
    /// The canonical variant for a wire value: `from_u32(1)` is `Start`, never
    /// `Other(1)`.
    pub fn from_u32(value: u32) -> Self {
        match value {
            1 => Self::Start,
            2 => Self::Stop,
            3 => Self::InterimUpdate,
            7 => Self::AccountingOn,
            8 => Self::AccountingOff,
            v => Self::Other(v),
        }
    }

    pub fn to_u32(self) -> u32 {
        match self {
            Self::Start => 1,
            Self::Stop => 2,
            Self::InterimUpdate => 3,
            Self::AccountingOn => 7,
            Self::AccountingOff => 8,
            Self::Other(v) => v,
        }
    }
}

/// Why a datagram was refused, or a packet could not be built. Each variant
/// maps to a [`DropReason`], the label of the counter it increments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("datagram of {len} octets is shorter than the 20-octet RADIUS header")]
    TooShort { len: usize },
    #[error("header Length {length} is outside 20..=4096")]
    BadLength { length: u16 },
    #[error("header Length {length} exceeds the {received} octets received")]
    Truncated { length: u16, received: usize },
    #[error("code {code} is not Accounting-Request (4)")]
    NotAccountingRequest { code: u8 },
    #[error("code {code} is not Accounting-Response (5)")]
    NotAccountingResponse { code: u8 },
    #[error("attribute at offset {offset} runs past the packet's Length")]
    AttributeTruncated { offset: usize },
    #[error("attribute {attr_type} has an invalid length {length}")]
    AttributeLength { attr_type: u8, length: u8 },
    #[error("attribute {attr_type} appears more than once")]
    DuplicateAttribute { attr_type: u8 },
    #[error("3GPP Vendor-Specific attribute at offset {offset} is malformed")]
    VendorAttribute { offset: usize },
    #[error("3GPP attribute {vendor_type} appears more than once")]
    DuplicateVendorAttribute { vendor_type: u8 },
    #[error("value of attribute {attr_type} is {len} octets, more than fits")]
    ValueTooLong { attr_type: u8, len: usize },
    #[error("packet would be {len} octets, more than 4096")]
    PacketTooLong { len: usize },
    #[error("authenticator does not match the shared secret")]
    BadAuthenticator,
    #[error("Accounting-Request without Acct-Status-Type")]
    MissingStatusType,
    #[error("Accounting-Request without Framed-IP-Address")]
    MissingFramedIp,
    #[error("Accounting-Request without 3GPP-IMSI")]
    MissingImsi,
    #[error("3GPP-IMSI: {0}")]
    InvalidImsi(IdError),
    #[error("3GPP-IMEISV: {0}")]
    InvalidImei(IdError),
}

impl Error {
    pub fn drop_reason(&self) -> DropReason {
        match self {
            Self::TooShort { .. }
            | Self::BadLength { .. }
            | Self::Truncated { .. }
            | Self::AttributeTruncated { .. }
            | Self::AttributeLength { .. }
            | Self::DuplicateAttribute { .. }
            | Self::VendorAttribute { .. }
            | Self::DuplicateVendorAttribute { .. }
            | Self::ValueTooLong { .. }
            | Self::PacketTooLong { .. } => DropReason::Malformed,
            Self::NotAccountingRequest { .. } | Self::NotAccountingResponse { .. } => {
                DropReason::NotAccountingRequest
            }
            Self::BadAuthenticator => DropReason::BadAuthenticator,
            Self::MissingStatusType => DropReason::MissingStatusType,
            Self::MissingFramedIp => DropReason::MissingFramedIp,
            Self::MissingImsi => DropReason::MissingImsi,
            Self::InvalidImsi(_) => DropReason::InvalidImsi,
            Self::InvalidImei(_) => DropReason::InvalidImei,
        }
    }

    /// The counter label, e.g. `malformed` or `bad_authenticator`.
    pub fn reason(&self) -> &'static str {
        self.drop_reason().as_str()
    }
}

/// Why an accounting datagram was dropped without a reply: the label set of
/// the drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The source address matches no configured client (set by the server,
    /// never by the codec).
    UnknownClient,
    Malformed,
    BadAuthenticator,
    NotAccountingRequest,
    MissingStatusType,
    MissingFramedIp,
    MissingImsi,
    InvalidImsi,
    InvalidImei,
}

impl DropReason {
    pub const ALL: [Self; 9] = [
        Self::UnknownClient,
        Self::Malformed,
        Self::BadAuthenticator,
        Self::NotAccountingRequest,
        Self::MissingStatusType,
        Self::MissingFramedIp,
        Self::MissingImsi,
        Self::InvalidImsi,
        Self::InvalidImei,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownClient => "unknown_client",
            Self::Malformed => "malformed",
            Self::BadAuthenticator => "bad_authenticator",
            Self::NotAccountingRequest => "not_accounting_request",
            Self::MissingStatusType => "missing_status_type",
            Self::MissingFramedIp => "missing_framed_ip",
            Self::MissingImsi => "missing_imsi",
            Self::InvalidImsi => "invalid_imsi",
            Self::InvalidImei => "invalid_imei",
        }
    }

    /// Position in [`Self::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One raw attribute: its type and value (without the two header octets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub attr_type: u8,
    pub value: &'a [u8],
}

/// Walks the attribute area of a packet. Yields an error, then stops, at the
/// first attribute that does not fit.
#[derive(Debug, Clone)]
pub struct RawAttributes<'a> {
    rest: &'a [u8],
    /// Offset of `rest` in the packet, for error messages.
    offset: usize,
}

impl<'a> RawAttributes<'a> {
    /// `area` is the packet after its 20-octet header, cut at Length.
    pub fn new(area: &'a [u8]) -> Self {
        Self {
            rest: area,
            offset: HEADER_LEN,
        }
    }
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = Result<RawAttribute<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&attr_type, after_type) = self.rest.split_first()?;
        let offset = self.offset;
        let fail = |this: &mut Self, e| {
            this.rest = &[];
            Some(Err(e))
        };
        let Some(&length) = after_type.first() else {
            return fail(self, Error::AttributeTruncated { offset });
        };
        if length < 2 {
            return fail(self, Error::AttributeLength { attr_type, length });
        }
        let Some((attribute, rest)) = self.rest.split_at_checked(usize::from(length)) else {
            return fail(self, Error::AttributeTruncated { offset });
        };
        self.rest = rest;
        self.offset += attribute.len();
        Some(Ok(RawAttribute {
            attr_type,
            value: &attribute[2..],
        }))
    }
}

/// The attributes simgate reads from an Accounting-Request; the rest are
/// skipped. Byte strings are borrowed as sent (RADIUS "string" is octets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountingAttributes<'a> {
    /// Acct-Status-Type (40).
    pub status_type: Option<AcctStatusType>,
    /// Framed-IP-Address (8): the address the SIM's traffic comes from.
    pub framed_ip: Option<Ipv4Addr>,
    /// NAS-IP-Address (4): the packet gateway that sent the request.
    pub nas_ip: Option<Ipv4Addr>,
    /// Calling-Station-Id (31): the MSISDN on a 3GPP gateway.
    pub calling_station_id: Option<&'a [u8]>,
    /// Acct-Session-Id (44).
    pub acct_session_id: Option<&'a [u8]>,
    /// 3GPP-IMSI (vendor 10415, type 1): ASCII digits.
    pub imsi: Option<&'a [u8]>,
    /// 3GPP-IMEISV (vendor 10415, type 20): ASCII digits.
    pub imeisv: Option<&'a [u8]>,
}

/// A structurally valid Accounting-Request. Its authenticator is not yet
/// checked: call [`AccountingRequest::verify`] with the client's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountingRequest<'a> {
    /// The packet, exactly Length octets (trailing datagram octets cut off).
    packet: &'a [u8],
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attributes: AccountingAttributes<'a>,
}

/// Reads the header shared by requests and responses: checks the sizes and
/// returns the packet cut at its Length field.
fn packet_of(datagram: &[u8]) -> Result<&[u8], Error> {
    if datagram.len() < HEADER_LEN {
        return Err(Error::TooShort {
            len: datagram.len(),
        });
    }
    let length = u16::from_be_bytes([datagram[2], datagram[3]]);
    if usize::from(length) < HEADER_LEN || usize::from(length) > MAX_PACKET_LEN {
        return Err(Error::BadLength { length });
    }
    // Octets beyond Length are padding and ignored (RFC 2865 §3).
    datagram.get(..usize::from(length)).ok_or(Error::Truncated {
        length,
        received: datagram.len(),
    })
}

fn authenticator_of(packet: &[u8]) -> [u8; 16] {
    let mut a = [0; 16];
    a.copy_from_slice(&packet[4..HEADER_LEN]);
    a
}

/// Parses an Accounting-Request datagram. Does not check the authenticator.
pub fn parse_accounting_request(datagram: &[u8]) -> Result<AccountingRequest<'_>, Error> {
    let packet = packet_of(datagram)?;
    if packet[0] != CODE_ACCOUNTING_REQUEST {
        return Err(Error::NotAccountingRequest { code: packet[0] });
    }
    let mut attributes = AccountingAttributes::default();
    let mut offset = HEADER_LEN;
    for raw in RawAttributes::new(&packet[HEADER_LEN..]) {
        let raw = raw?;
        read_attribute(&mut attributes, raw, offset)?;
        offset += 2 + raw.value.len();
    }
    Ok(AccountingRequest {
        packet,
        identifier: packet[1],
        authenticator: authenticator_of(packet),
        attributes,
    })
}

/// Stores `value` in `slot`, refusing a second occurrence: two addresses or two
/// IMSIs in one request would make the identity ambiguous.
fn set_once<T>(slot: &mut Option<T>, value: T, duplicate: Error) -> Result<(), Error> {
    if slot.is_some() {
        return Err(duplicate);
    }
    *slot = Some(value);
    Ok(())
}

fn fixed<const N: usize>(raw: RawAttribute<'_>) -> Result<[u8; N], Error> {
    raw.value.try_into().map_err(|_| Error::AttributeLength {
        attr_type: raw.attr_type,
        // value.len() + 2 ≤ 255: it came from a Length octet.
        length: u8::try_from(raw.value.len() + 2).unwrap_or(u8::MAX),
    })
}

fn read_attribute<'a>(
    out: &mut AccountingAttributes<'a>,
    raw: RawAttribute<'a>,
    offset: usize,
) -> Result<(), Error> {
    let duplicate = Error::DuplicateAttribute {
        attr_type: raw.attr_type,
    };
    match raw.attr_type {
        attr::ACCT_STATUS_TYPE => {
            let v = u32::from_be_bytes(fixed(raw)?);
            set_once(&mut out.status_type, AcctStatusType::from_u32(v), duplicate)
        }
        attr::FRAMED_IP_ADDRESS => {
            set_once(&mut out.framed_ip, Ipv4Addr::from(fixed(raw)?), duplicate)
        }
        attr::NAS_IP_ADDRESS => set_once(&mut out.nas_ip, Ipv4Addr::from(fixed(raw)?), duplicate),
        attr::CALLING_STATION_ID => set_once(&mut out.calling_station_id, raw.value, duplicate),
        attr::ACCT_SESSION_ID => set_once(&mut out.acct_session_id, raw.value, duplicate),
        attr::VENDOR_SPECIFIC => read_vendor_specific(out, raw.value, offset),
        // Everything else (octet counters, Acct-Delay-Time, Message-Authenticator, …)
        // is not needed to bind a session; the Request Authenticator covers it anyway.
        _ => Ok(()),
    }
}

/// A Vendor-Specific value: vendor id, then (for 3GPP) packed sub-attributes
/// that must fill the value exactly. Other vendors' formats are not ours to
/// judge and are skipped.
fn read_vendor_specific<'a>(
    out: &mut AccountingAttributes<'a>,
    value: &'a [u8],
    offset: usize,
) -> Result<(), Error> {
    let malformed = Error::VendorAttribute { offset };
    let Some((vendor, mut rest)) = value.split_first_chunk::<VSA_VENDOR_ID_LEN>() else {
        return Err(malformed);
    };
    if u32::from_be_bytes(*vendor) != VENDOR_3GPP {
        return Ok(());
    }
    if rest.is_empty() {
        return Err(malformed);
    }
    while let Some((&vendor_type, after_type)) = rest.split_first() {
        let length = usize::from(*after_type.first().ok_or(malformed.clone())?);
        if length < 2 {
            return Err(malformed);
        }
        let (sub, next) = rest.split_at_checked(length).ok_or(malformed.clone())?;
        rest = next;
        let duplicate = Error::DuplicateVendorAttribute { vendor_type };
        match vendor_type {
            attr_3gpp::IMSI => set_once(&mut out.imsi, &sub[2..], duplicate)?,
            attr_3gpp::IMEISV => set_once(&mut out.imeisv, &sub[2..], duplicate)?,
            _ => {}
        }
    }
    Ok(())
}

impl<'a> AccountingRequest<'a> {
    /// The packet as received, cut at its Length field.
    pub fn packet(&self) -> &'a [u8] {
        self.packet
    }

    /// Checks the Request Authenticator (RFC 2866 §3):
    /// `MD5(Code + Identifier + Length + 16 zero octets + Attributes + Secret)`.
    pub fn verify(&self, secret: &[u8]) -> Result<(), Error> {
        let expected = request_authenticator(self.packet, secret);
        if constant_time_eq(&expected, &self.authenticator) {
            Ok(())
        } else {
            Err(Error::BadAuthenticator)
        }
    }

    /// The Accounting-Response acknowledging this request.
    pub fn response(&self, secret: &[u8]) -> AccountingResponse {
        encode_accounting_response(self.identifier, &self.authenticator, secret)
    }
}

/// MD5 over the packet with its authenticator field zeroed, then the secret.
fn request_authenticator(packet: &[u8], secret: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(&packet[..4]);
    md5.update([0u8; 16]);
    md5.update(&packet[HEADER_LEN..]);
    md5.update(secret);
    md5.finalize().into()
}

/// Compares without an early exit, so response time does not tell an
/// attacker how many leading octets of a forged authenticator were right.
fn constant_time_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Builds an Accounting-Response with no attributes (RFC 2866 §3):
/// Response Authenticator = `MD5(Code + ID + Length + RequestAuth + Secret)`.
pub fn encode_accounting_response(
    identifier: u8,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> AccountingResponse {
    let mut out = [0u8; RESPONSE_LEN];
    out[0] = CODE_ACCOUNTING_RESPONSE;
    out[1] = identifier;
    out[2..4].copy_from_slice(&(RESPONSE_LEN as u16).to_be_bytes());
    let mut md5 = Md5::new();
    md5.update(&out[..4]);
    md5.update(request_authenticator);
    md5.update(secret);
    out[4..].copy_from_slice(&md5.finalize());
    out
}

/// Checks an Accounting-Response against the request it answers (the client
/// side: tests and the load generator). Returns the response's identifier.
pub fn verify_accounting_response(
    datagram: &[u8],
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<u8, Error> {
    let packet = packet_of(datagram)?;
    if packet[0] != CODE_ACCOUNTING_RESPONSE {
        return Err(Error::NotAccountingResponse { code: packet[0] });
    }
    let mut md5 = Md5::new();
    md5.update(&packet[..4]);
    md5.update(request_authenticator);
    md5.update(&packet[HEADER_LEN..]);
    md5.update(secret);
    let expected: [u8; 16] = md5.finalize().into();
    if constant_time_eq(&expected, &authenticator_of(packet)) {
        Ok(packet[1])
    } else {
        Err(Error::BadAuthenticator)
    }
}

fn push_attribute(out: &mut Vec<u8>, attr_type: u8, value: &[u8]) -> Result<(), Error> {
    let length = u8::try_from(value.len() + 2).map_err(|_| Error::ValueTooLong {
        attr_type,
        len: value.len(),
    })?;
    out.push(attr_type);
    out.push(length);
    out.extend_from_slice(value);
    Ok(())
}

/// Appends the 3GPP sub-attributes, packed into one Vendor-Specific
/// attribute when they fit together, else one each.
fn push_3gpp(out: &mut Vec<u8>, subs: &[(u8, &[u8])]) -> Result<(), Error> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for &(vendor_type, value) in subs {
        if value.len() > MAX_VENDOR_VALUE_LEN {
            return Err(Error::ValueTooLong {
                attr_type: attr::VENDOR_SPECIFIC,
                len: value.len(),
            });
        }
        let fits_last = chunks
            .last()
            .is_some_and(|c| c.len() + 2 + value.len() <= MAX_ATTRIBUTE_VALUE_LEN);
        if !fits_last {
            chunks.push(VENDOR_3GPP.to_be_bytes().to_vec());
        }
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(vendor_type);
            // ≤ 249: checked against MAX_VENDOR_VALUE_LEN above.
            chunk.push((value.len() + 2) as u8);
            chunk.extend_from_slice(value);
        }
    }
    for chunk in &chunks {
        push_attribute(out, attr::VENDOR_SPECIFIC, chunk)?;
    }
    Ok(())
}

/// Builds an Accounting-Request carrying `attributes`, with its Request
/// Authenticator computed from `secret`. [`parse_accounting_request`] of the
/// result gives `attributes` back.
pub fn encode_accounting_request(
    identifier: u8,
    attributes: &AccountingAttributes<'_>,
    secret: &[u8],
) -> Result<Vec<u8>, Error> {
    let a = attributes;
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[CODE_ACCOUNTING_REQUEST, identifier, 0, 0]);
    out.extend_from_slice(&[0; 16]);
    if let Some(status) = a.status_type {
        push_attribute(
            &mut out,
            attr::ACCT_STATUS_TYPE,
            &status.to_u32().to_be_bytes(),
        )?;
    }
    if let Some(ip) = a.framed_ip {
        push_attribute(&mut out, attr::FRAMED_IP_ADDRESS, &ip.octets())?;
    }
    if let Some(ip) = a.nas_ip {
        push_attribute(&mut out, attr::NAS_IP_ADDRESS, &ip.octets())?;
    }
    if let Some(v) = a.calling_station_id {
        push_attribute(&mut out, attr::CALLING_STATION_ID, v)?;
    }
    if let Some(v) = a.acct_session_id {
        push_attribute(&mut out, attr::ACCT_SESSION_ID, v)?;
    }
    let subs: Vec<(u8, &[u8])> = [(attr_3gpp::IMSI, a.imsi), (attr_3gpp::IMEISV, a.imeisv)]
        .into_iter()
        .filter_map(|(t, v)| Some((t, v?)))
        .collect();
    push_3gpp(&mut out, &subs)?;
    let length = u16::try_from(out.len())
        .ok()
        .filter(|&l| usize::from(l) <= MAX_PACKET_LEN)
        .ok_or(Error::PacketTooLong { len: out.len() })?;
    out[2..4].copy_from_slice(&length.to_be_bytes());
    let authenticator = request_authenticator(&out, secret);
    out[4..HEADER_LEN].copy_from_slice(&authenticator);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"testing123";

    fn testdata(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/radius")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn sample() -> AccountingAttributes<'static> {
        AccountingAttributes {
            status_type: Some(AcctStatusType::Start),
            framed_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            nas_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
            calling_station_id: Some(b"818000000001"),
            acct_session_id: Some(b"s1"),
            imsi: Some(b"001010000000001"),
            imeisv: Some(b"3530000000000101"),
        }
    }

    #[test]
    fn captured_start_from_radclient() {
        let data = testdata("start-3gpp-imsi-imeisv-msisdn.bin");
        let req = parse_accounting_request(&data).unwrap();
        req.verify(SECRET).unwrap();
        assert_eq!(req.verify(b"testing124"), Err(Error::BadAuthenticator));
        assert_eq!(
            req.attributes,
            AccountingAttributes {
                status_type: Some(AcctStatusType::Start),
                framed_ip: Some(Ipv4Addr::new(10, 128, 0, 7)),
                nas_ip: Some(Ipv4Addr::new(192, 0, 2, 10)),
                calling_station_id: Some(b"819012345678"),
                acct_session_id: Some(b"4f3c0a0100000001"),
                imsi: Some(b"440103123456789"),
                imeisv: Some(b"3534900698733801"),
            }
        );
        assert_eq!(req.packet().len(), data.len());
        assert_eq!(req.identifier, data[1]);
    }

    #[test]
    fn captured_interim_stop_on_off() {
        for (name, status) in [
            ("interim-update.bin", AcctStatusType::InterimUpdate),
            ("stop.bin", AcctStatusType::Stop),
            ("accounting-on.bin", AcctStatusType::AccountingOn),
            ("accounting-off.bin", AcctStatusType::AccountingOff),
            ("start-without-imsi.bin", AcctStatusType::Start),
        ] {
            let data = testdata(name);
            let req = parse_accounting_request(&data).unwrap();
            req.verify(SECRET).unwrap();
            assert_eq!(req.attributes.status_type, Some(status), "{name}");
            assert_eq!(
                req.attributes.nas_ip,
                Some(Ipv4Addr::new(192, 0, 2, 10)),
                "{name}"
            );
        }
        let stop = testdata("stop.bin");
        let stop = parse_accounting_request(&stop).unwrap();
        assert_eq!(stop.attributes.imsi, Some(&b"440103123456789"[..]));
        assert_eq!(
            stop.attributes.framed_ip,
            Some(Ipv4Addr::new(10, 128, 0, 7))
        );
        let no_imsi = testdata("start-without-imsi.bin");
        let no_imsi = parse_accounting_request(&no_imsi).unwrap();
        assert_eq!(no_imsi.attributes.imsi, None);
        assert_eq!(
            no_imsi.attributes.framed_ip,
            Some(Ipv4Addr::new(10, 128, 0, 8))
        );
    }

    #[test]
    fn response_authenticator_matches_rfc_formula() {
        let data = testdata("start-3gpp-imsi-imeisv-msisdn.bin");
        let req = parse_accounting_request(&data).unwrap();
        let resp = req.response(SECRET);
        assert_eq!(resp[0], CODE_ACCOUNTING_RESPONSE);
        assert_eq!(resp[1], req.identifier);
        assert_eq!(&resp[2..4], &[0, 20]);
        let mut md5 = Md5::new();
        md5.update([5, req.identifier, 0, 20]);
        md5.update(req.authenticator);
        md5.update(SECRET);
        assert_eq!(&resp[4..], &md5.finalize()[..]);
        assert_eq!(
            verify_accounting_response(&resp, &req.authenticator, SECRET),
            Ok(req.identifier)
        );
        assert_eq!(
            verify_accounting_response(&resp, &req.authenticator, b"other"),
            Err(Error::BadAuthenticator)
        );
    }

    #[test]
    fn trailing_octets_beyond_length_are_ignored() {
        let mut data = encode_accounting_request(9, &sample(), SECRET).unwrap();
        let len = data.len();
        data.extend_from_slice(&[0xAA; 7]);
        let req = parse_accounting_request(&data).unwrap();
        assert_eq!(req.packet().len(), len);
        req.verify(SECRET).unwrap();
        assert_eq!(req.attributes, sample());
    }

    #[test]
    fn header_errors() {
        let good = encode_accounting_request(1, &sample(), SECRET).unwrap();
        assert_eq!(
            parse_accounting_request(&good[..19]),
            Err(Error::TooShort { len: 19 })
        );
        let mut short = good.clone();
        short[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            parse_accounting_request(&short),
            Err(Error::BadLength { length: 19 })
        );
        let mut huge = good.clone();
        huge[2..4].copy_from_slice(&4097u16.to_be_bytes());
        assert_eq!(
            parse_accounting_request(&huge),
            Err(Error::BadLength { length: 4097 })
        );
        let cut = &good[..good.len() - 1];
        assert!(matches!(
            parse_accounting_request(cut),
            Err(Error::Truncated { .. })
        ));
        let mut access = good.clone();
        access[0] = 1;
        assert_eq!(
            parse_accounting_request(&access),
            Err(Error::NotAccountingRequest { code: 1 })
        );
        assert_eq!(
            Error::NotAccountingRequest { code: 1 }.reason(),
            "not_accounting_request"
        );
    }

    /// A 20-octet header with the given attribute area and a correct Length.
    fn with_attributes(area: &[u8]) -> Vec<u8> {
        let mut p = vec![CODE_ACCOUNTING_REQUEST, 1, 0, 0];
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(area);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn attribute_errors() {
        let cases: &[(&[u8], Error)] = &[
            (&[40], Error::AttributeTruncated { offset: 20 }),
            (
                &[40, 1],
                Error::AttributeLength {
                    attr_type: 40,
                    length: 1,
                },
            ),
            (
                &[40, 0, 0, 0],
                Error::AttributeLength {
                    attr_type: 40,
                    length: 0,
                },
            ),
            (
                &[31, 5, b'1', b'2'],
                Error::AttributeTruncated { offset: 20 },
            ),
            (
                &[8, 5, 10, 0, 0],
                Error::AttributeLength {
                    attr_type: 8,
                    length: 5,
                },
            ),
            (
                &[40, 4, 0, 1],
                Error::AttributeLength {
                    attr_type: 40,
                    length: 4,
                },
            ),
            (
                &[8, 6, 10, 0, 0, 1, 8, 6, 10, 0, 0, 2],
                Error::DuplicateAttribute { attr_type: 8 },
            ),
            // Vendor-Specific too short for a vendor id.
            (&[26, 5, 0, 0, 0x28], Error::VendorAttribute { offset: 20 }),
            // 3GPP with no sub-attribute.
            (
                &[26, 6, 0, 0, 0x28, 0xaf],
                Error::VendorAttribute { offset: 20 },
            ),
            // Sub-attribute runs past the VSA.
            (
                &[26, 9, 0, 0, 0x28, 0xaf, 1, 4, b'0'],
                Error::VendorAttribute { offset: 20 },
            ),
            // Sub-attribute length 1.
            (
                &[26, 8, 0, 0, 0x28, 0xaf, 1, 1],
                Error::VendorAttribute { offset: 20 },
            ),
            // Same IMSI twice in one VSA.
            (
                &[26, 12, 0, 0, 0x28, 0xaf, 1, 3, b'1', 1, 3, b'2'],
                Error::DuplicateVendorAttribute { vendor_type: 1 },
            ),
        ];
        for (area, want) in cases {
            let p = with_attributes(area);
            assert_eq!(parse_accounting_request(&p).as_ref(), Err(want), "{area:?}");
            assert_eq!(want.reason(), "malformed");
        }
    }

    #[test]
    fn other_vendors_are_skipped_and_empty_packets_parse() {
        // Vendor 9 (Cisco) with a free-form value.
        let p = with_attributes(&[26, 9, 0, 0, 0, 9, 0xff, 0xff, 0xff]);
        let req = parse_accounting_request(&p).unwrap();
        assert_eq!(req.attributes, AccountingAttributes::default());
        let p = with_attributes(&[]);
        assert_eq!(
            parse_accounting_request(&p).unwrap().attributes,
            AccountingAttributes::default()
        );
    }

    #[test]
    fn packed_3gpp_vsa_carries_both() {
        let p = encode_accounting_request(3, &sample(), SECRET).unwrap();
        let vsas = RawAttributes::new(&p[HEADER_LEN..])
            .filter(|a| a.as_ref().unwrap().attr_type == attr::VENDOR_SPECIFIC)
            .count();
        assert_eq!(vsas, 1, "IMSI and IMEISV share one Vendor-Specific");
        let req = parse_accounting_request(&p).unwrap();
        req.verify(SECRET).unwrap();
        assert_eq!(req.attributes, sample());
    }

    #[test]
    fn encoder_refuses_what_does_not_fit() {
        let long = [b'1'; 254];
        let a = AccountingAttributes {
            acct_session_id: Some(&long),
            ..Default::default()
        };
        assert!(matches!(
            encode_accounting_request(1, &a, SECRET),
            Err(Error::ValueTooLong { .. })
        ));
        let a = AccountingAttributes {
            imsi: Some(&long[..248]),
            ..Default::default()
        };
        assert!(matches!(
            encode_accounting_request(1, &a, SECRET),
            Err(Error::ValueTooLong { .. })
        ));
        let a = AccountingAttributes {
            imsi: Some(&long[..247]),
            imeisv: Some(&long[..247]),
            ..Default::default()
        };
        let p = encode_accounting_request(1, &a, SECRET).unwrap();
        assert_eq!(parse_accounting_request(&p).unwrap().attributes, a);
    }

    #[test]
    fn every_drop_reason_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn attributes() -> impl Strategy<Value = (u8, u32, [u8; 4], String, String, String, String)>
        {
            (
                any::<u8>(),
                any::<u32>(),
                any::<[u8; 4]>(),
                "[0-9]{14,15}",
                "[0-9]{14,16}",
                "\\+?[0-9]{1,15}",
                "[ -~]{0,64}",
            )
        }

        proptest! {
            #[test]
            fn encode_parse_round_trip(
                (id, status, ip, imsi, imei, msisdn, session) in attributes(),
                nas in proptest::option::of(any::<[u8; 4]>()),
                secret in proptest::collection::vec(any::<u8>(), 1..64),
            ) {
                let a = AccountingAttributes {
                    status_type: Some(AcctStatusType::from_u32(status)),
                    framed_ip: Some(Ipv4Addr::from(ip)),
                    nas_ip: nas.map(Ipv4Addr::from),
                    calling_station_id: Some(msisdn.as_bytes()),
                    acct_session_id: Some(session.as_bytes()),
                    imsi: Some(imsi.as_bytes()),
                    imeisv: Some(imei.as_bytes()),
                };
                let p = encode_accounting_request(id, &a, &secret).unwrap();
                let req = parse_accounting_request(&p).unwrap();
                prop_assert_eq!(req.identifier, id);
                prop_assert_eq!(req.attributes, a);
                prop_assert!(req.verify(&secret).is_ok());
                let resp = req.response(&secret);
                prop_assert_eq!(
                    verify_accounting_response(&resp, &req.authenticator, &secret),
                    Ok(id)
                );
            }

            #[test]
            fn tampering_is_detected(
                (id, status, ip, imsi, imei, msisdn, session) in attributes(),
                flip in any::<usize>(),
                bit in 0u8..8,
            ) {
                let a = AccountingAttributes {
                    status_type: Some(AcctStatusType::from_u32(status)),
                    framed_ip: Some(Ipv4Addr::from(ip)),
                    nas_ip: None,
                    calling_station_id: Some(msisdn.as_bytes()),
                    acct_session_id: Some(session.as_bytes()),
                    imsi: Some(imsi.as_bytes()),
                    imeisv: Some(imei.as_bytes()),
                };
                let mut p = encode_accounting_request(id, &a, SECRET).unwrap();
                // Any octet but Length (which would just make it unparsable).
                let mut at = flip % p.len();
                if at == 2 || at == 3 {
                    at = 4;
                }
                p[at] ^= 1 << bit;
                if let Ok(req) = parse_accounting_request(&p) {
                    prop_assert_eq!(req.verify(SECRET), Err(Error::BadAuthenticator));
                }
            }

            #[test]
            fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(req) = parse_accounting_request(&data) {
                    let _ = req.verify(SECRET);
                    let _ = req.response(SECRET);
                }
                let _ = verify_accounting_response(&data, &[0; 16], SECRET);
            }

            #[test]
            fn parse_never_panics_on_well_framed_garbage(
                area in proptest::collection::vec(any::<u8>(), 0..300)
            ) {
                let p = with_attributes(&area);
                if let Ok(req) = parse_accounting_request(&p) {
                    let total: usize = RawAttributes::new(&p[HEADER_LEN..])
                        .map(|a| a.unwrap().value.len() + 2)
                        .sum();
                    prop_assert_eq!(total, area.len());
                    let _ = req.verify(SECRET);
                }
            }
        }
    }
}
