//! Properties of the RADIUS accounting codec and handler
//! (`simgate_control::radius`).
//!
//! Input: one UDP datagram, as the accounting listener would receive it. The
//! seeds are Accounting-Requests captured from radclient with the shared
//! secret `testing123` (see `control/testdata/radius/`), so unmutated seeds
//! also pass authentication.
//!
//! Properties:
//! * `parse_accounting_request` never panics. What it refuses, it refuses
//!   with a drop reason; a datagram under 20 octets is `TooShort`.
//! * What it accepts is exactly the first Length octets of the datagram, its
//!   attributes tile the area after the header (checked by an independent
//!   walk here), and the fields it extracted agree with that walk
//!   (Acct-Status-Type, Framed-IP-Address, 3GPP-IMSI, 3GPP-IMEISV).
//! * Re-encoding the extracted attributes with the packet's identifier gives
//!   a packet that parses to the same attributes and verifies with the secret
//!   it was signed with, and only with that one; the response built for it
//!   verifies against its authenticator.
//! * The handler, given the datagram as is and re-signed, never panics, and
//!   every response it returns verifies; an accepted Start or Interim binds
//!   the Framed-IP-Address to the IMSI it carries.
//!
//! Shared by the fuzz target and `dataplane/tests/fuzz_corpus.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use simgate_control::radius::{
    encode_accounting_request, parse_accounting_request, verify_accounting_response, Accounting,
    AccountingHandler, AcctStatusType, ClientSecrets, DropReason, DuplicateCache, Error,
    RadiusClient, RadiusStats,
};
use simgate_control::{Secret, SessionTable};

const SECRET: &[u8] = b"testing123";

/// What an independent walk over the attribute area finds.
#[derive(Default)]
struct Walk<'a> {
    status: Vec<u32>,
    framed_ip: Vec<Ipv4Addr>,
    imsi: Vec<&'a [u8]>,
    imeisv: Vec<&'a [u8]>,
}

/// Walks type-length-value attributes; `None` if they do not tile `area`.
fn walk(area: &[u8]) -> Option<Walk<'_>> {
    let mut found = Walk::default();
    let mut i = 0;
    while i < area.len() {
        let len = usize::from(*area.get(i + 1)?);
        if len < 2 || i + len > area.len() {
            return None;
        }
        let value = &area[i + 2..i + len];
        match area[i] {
            40 if value.len() == 4 => found
                .status
                .push(u32::from_be_bytes([value[0], value[1], value[2], value[3]])),
            8 if value.len() == 4 => found
                .framed_ip
                .push(Ipv4Addr::new(value[0], value[1], value[2], value[3])),
            26 if value.len() > 4 && value[..4] == [0, 0, 0x28, 0xaf] => {
                let mut j = 4;
                while j < value.len() {
                    let sub_len = usize::from(*value.get(j + 1)?);
                    if sub_len < 2 || j + sub_len > value.len() {
                        return None;
                    }
                    let sub = &value[j + 2..j + sub_len];
                    match value[j] {
                        1 => found.imsi.push(sub),
                        20 => found.imeisv.push(sub),
                        _ => {}
                    }
                    j += sub_len;
                }
            }
            _ => {}
        }
        i += len;
    }
    Some(found)
}

fn handler(sessions: &Arc<SessionTable>) -> AccountingHandler {
    let clients = ClientSecrets::new(
        &[RadiusClient {
            address: "127.0.0.0/8".parse().expect("client block"),
            secret: Secret::new(String::from_utf8_lossy(SECRET)),
        }],
        None,
    )
    .expect("client secrets");
    AccountingHandler::new(
        clients,
        Arc::clone(sessions),
        Arc::new(RadiusStats::new()),
        DuplicateCache::default(),
    )
}

/// Feeds `packet` to a fresh handler; checks the response and the binding.
fn check_handler(packet: &[u8]) {
    let sessions = Arc::new(SessionTable::new());
    let mut h = handler(&sessions);
    let source = SocketAddr::from(([127, 0, 0, 1], 1813));
    let Some(response) = h.handle(Instant::now(), source, packet) else {
        return;
    };
    let request = parse_accounting_request(packet).expect("answered an unparsable request");
    assert_eq!(
        verify_accounting_response(&response, &request.authenticator, SECRET),
        Ok(request.identifier),
        "response does not verify"
    );
    let a = &request.attributes;
    if matches!(
        a.status_type,
        Some(AcctStatusType::Start | AcctStatusType::InterimUpdate)
    ) {
        let ip = a.framed_ip.expect("answered a Start without Framed-IP");
        let s = sessions
            .lookup(IpAddr::V4(ip))
            .expect("acknowledged Start/Interim bound nothing");
        assert_eq!(
            Some(s.imsi.as_str().as_bytes()),
            a.imsi,
            "bound another IMSI"
        );
    }
}

pub(crate) fn check(data: &[u8]) {
    check_handler(data);
    let request = match parse_accounting_request(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                DropReason::ALL.iter().any(|r| r.as_str() == e.reason()),
                "{e:?} has an unknown reason"
            );
            if data.len() < 20 {
                assert!(matches!(e, Error::TooShort { .. }), "{e:?}");
            }
            return;
        }
    };

    let packet = request.packet();
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    assert_eq!(packet.len(), length, "packet is not Length octets");
    assert_eq!(packet, &data[..length]);
    assert_eq!(packet[0], 4);
    assert_eq!(request.identifier, data[1]);
    assert_eq!(request.authenticator[..], data[4..20]);

    let found = walk(&packet[20..]).expect("accepted attributes that do not tile the packet");
    let a = request.attributes;
    assert!(
        found.status.len() <= 1 && found.framed_ip.len() <= 1,
        "duplicates accepted"
    );
    assert!(
        found.imsi.len() <= 1 && found.imeisv.len() <= 1,
        "duplicates accepted"
    );
    assert_eq!(
        a.status_type.map(AcctStatusType::to_u32),
        found.status.first().copied()
    );
    assert_eq!(a.framed_ip, found.framed_ip.first().copied());
    assert_eq!(a.imsi, found.imsi.first().copied());
    assert_eq!(a.imeisv, found.imeisv.first().copied());

    // Re-encoded, signed with our secret: same attributes, authentic.
    let resigned = encode_accounting_request(request.identifier, &a, SECRET)
        .expect("cannot re-encode what was parsed");
    assert!(
        resigned.len() <= packet.len(),
        "re-encoding grew the packet"
    );
    let again = parse_accounting_request(&resigned).expect("re-encoded packet does not parse");
    assert_eq!(again.attributes, a, "round trip changed the attributes");
    assert_eq!(again.identifier, request.identifier);
    assert_eq!(again.verify(SECRET), Ok(()));
    assert_eq!(again.verify(b"testing124"), Err(Error::BadAuthenticator));
    let response = again.response(SECRET);
    assert_eq!(
        verify_accounting_response(&response, &again.authenticator, SECRET),
        Ok(request.identifier)
    );

    // Interpretation agrees with the attributes.
    match Accounting::from_attributes(&a) {
        Ok(Accounting::Start(r) | Accounting::Interim(r) | Accounting::Stop(r)) => {
            assert_eq!(Some(r.framed_ip), a.framed_ip);
            assert_eq!(Some(r.imsi.as_str().as_bytes()), a.imsi);
            assert_eq!(r.imei.as_ref().map(|i| i.as_str().as_bytes()), a.imeisv);
        }
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.drop_reason(),
                DropReason::Malformed | DropReason::BadAuthenticator
            ),
            "semantic check failed with a wire-level reason: {e:?}"
        ),
    }
    check_handler(&resigned);
}
