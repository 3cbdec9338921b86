//! What an Accounting-Request means for simgate's session table, decided from
//! its attributes alone (pure: no table, no clock).
//!
//! * Start and Interim-Update bind `Framed-IP-Address` to the SIM; both must
//!   carry `Framed-IP-Address` and a valid `3GPP-IMSI`. A request without them
//!   cannot be recorded, and RFC 2866 §4.1 says a server that cannot record a
//!   request must not acknowledge it: it is dropped and counted
//!   (`missing_framed_ip`, `missing_imsi`, `invalid_imsi`), and the gateway's
//!   retransmissions show up in the same counter.
//! * Stop needs the same two attributes: the IMSI is what tells a Stop for the
//!   current holder of an address from a late Stop of a previous one.
//! * `3GPP-IMEISV` is optional; when present it must be 14–16 digits (a
//!   16-digit IMEISV is kept as it is: [`Imei`] accepts it and the IMEI lock
//!   compares the first 14 digits). An unparsable one drops the request
//!   (`invalid_imei`) rather than binding a session without an IMEI, which
//!   would slip past an IMEI lock.
//! * `Calling-Station-Id` is the MSISDN on a 3GPP gateway; one that is not a
//!   phone number (some gateways send other ids there) is left out of the
//!   session and counted (`msisdn_ignored`), not fatal.
//! * Accounting-On/Off and other status types carry no session.

use std::net::Ipv4Addr;

use super::codec::{AccountingAttributes, AcctStatusType, Error};
use crate::model::{Imei, Imsi, Msisdn};
use crate::snapshot::Session;

/// The meaning of one verified Accounting-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accounting {
    Start(SessionRecord),
    Interim(SessionRecord),
    Stop(SessionRecord),
    /// The gateway (re)started accounting: it holds no sessions any more.
    AccountingOn,
    /// The gateway is stopping accounting: its sessions are over.
    AccountingOff,
    /// A status type simgate does not act on (acknowledged, counted).
    Other(u32),
}

/// The SIM holding an address, as a Start, Interim-Update or Stop tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub framed_ip: Ipv4Addr,
    pub imsi: Imsi,
    pub imei: Option<Imei>,
    pub msisdn: Option<Msisdn>,
    /// A Calling-Station-Id was present but is not an MSISDN.
    pub msisdn_ignored: bool,
}

impl SessionRecord {
    pub fn session(&self) -> Session {
        Session::new(self.imsi.clone(), self.imei.clone(), self.msisdn.clone())
    }
}

impl Accounting {
    /// Interprets the attributes of a request whose authenticator was checked.
    pub fn from_attributes(a: &AccountingAttributes<'_>) -> Result<Self, Error> {
        let status = a.status_type.ok_or(Error::MissingStatusType)?;
        Ok(match status {
            AcctStatusType::Start => Self::Start(SessionRecord::from_attributes(a)?),
            AcctStatusType::InterimUpdate => Self::Interim(SessionRecord::from_attributes(a)?),
            AcctStatusType::Stop => Self::Stop(SessionRecord::from_attributes(a)?),
            AcctStatusType::AccountingOn => Self::AccountingOn,
            AcctStatusType::AccountingOff => Self::AccountingOff,
            AcctStatusType::Other(v) => Self::Other(v),
        })
    }
}

impl SessionRecord {
    fn from_attributes(a: &AccountingAttributes<'_>) -> Result<Self, Error> {
        let framed_ip = a.framed_ip.ok_or(Error::MissingFramedIp)?;
        let imsi = a.imsi.ok_or(Error::MissingImsi)?;
        // Non-UTF-8 becomes U+FFFD, which the digit check refuses.
        let imsi = Imsi::parse(&String::from_utf8_lossy(imsi)).map_err(Error::InvalidImsi)?;
        let imei = a
            .imeisv
            .map(|v| Imei::parse(&String::from_utf8_lossy(v)))
            .transpose()
            .map_err(Error::InvalidImei)?;
        let msisdn = a
            .calling_station_id
            .map(|v| Msisdn::parse(&String::from_utf8_lossy(v)));
        let msisdn_ignored = matches!(msisdn, Some(Err(_)));
        Ok(Self {
            framed_ip,
            imsi,
            imei,
            msisdn: msisdn.and_then(Result::ok),
            msisdn_ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> AccountingAttributes<'static> {
        AccountingAttributes {
            status_type: Some(AcctStatusType::Start),
            framed_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            imsi: Some(b"001010000000001"),
            imeisv: Some(b"3530000000000101"),
            calling_station_id: Some(b"818000000001"),
            ..Default::default()
        }
    }

    #[test]
    fn start_with_everything() {
        let Accounting::Start(r) = Accounting::from_attributes(&start()).unwrap() else {
            panic!("not a Start")
        };
        assert_eq!(r.framed_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(r.imsi.as_str(), "001010000000001");
        assert_eq!(r.imei.unwrap().as_str(), "3530000000000101");
        assert_eq!(r.msisdn.unwrap().as_str(), "818000000001");
        assert!(!r.msisdn_ignored);
    }

    #[test]
    fn required_attributes() {
        let reason = |a: AccountingAttributes<'_>| {
            Accounting::from_attributes(&a)
                .map(|_| ())
                .unwrap_err()
                .reason()
        };
        assert_eq!(
            reason(AccountingAttributes {
                status_type: None,
                ..start()
            }),
            "missing_status_type"
        );
        for status in [
            AcctStatusType::Start,
            AcctStatusType::InterimUpdate,
            AcctStatusType::Stop,
        ] {
            let base = AccountingAttributes {
                status_type: Some(status),
                ..start()
            };
            assert_eq!(
                reason(AccountingAttributes {
                    framed_ip: None,
                    ..base
                }),
                "missing_framed_ip"
            );
            assert_eq!(
                reason(AccountingAttributes { imsi: None, ..base }),
                "missing_imsi"
            );
            assert_eq!(
                reason(AccountingAttributes {
                    imsi: Some(b"0010100000000x1"),
                    ..base
                }),
                "invalid_imsi"
            );
            assert_eq!(
                reason(AccountingAttributes {
                    imsi: Some(b"\xff\xfe"),
                    ..base
                }),
                "invalid_imsi"
            );
            assert_eq!(
                reason(AccountingAttributes {
                    imeisv: Some(b"35300000"),
                    ..base
                }),
                "invalid_imei"
            );
        }
    }

    #[test]
    fn optional_attributes() {
        let a = AccountingAttributes {
            imeisv: None,
            calling_station_id: Some(b"00-11-22-33-44-55"),
            ..start()
        };
        let Accounting::Start(r) = Accounting::from_attributes(&a).unwrap() else {
            panic!("not a Start")
        };
        assert_eq!(r.imei, None);
        assert_eq!(r.msisdn, None);
        assert!(r.msisdn_ignored);
    }

    #[test]
    fn on_off_and_others_need_no_session() {
        for (status, want) in [
            (AcctStatusType::AccountingOn, Accounting::AccountingOn),
            (AcctStatusType::AccountingOff, Accounting::AccountingOff),
            (AcctStatusType::Other(9), Accounting::Other(9)),
        ] {
            let a = AccountingAttributes {
                status_type: Some(status),
                ..Default::default()
            };
            assert_eq!(Accounting::from_attributes(&a).unwrap(), want);
        }
    }
}
