//! The headers Beam adds to an upstream HTTP request: the SIM's identity as
//! configured, the signature with a PSK, and the entry's `customHeaders`.
//!
//! Identity headers are trusted by the server, so a device must never be
//! able to send its own: every `X-Soracom-{IMSI,IMEI,MSISDN,SIM-ID,
//! Timestamp,Signature-Version,Signature}` the device sent is removed first,
//! whether or not the entry adds that header. `customHeaders` are applied
//! next, and simgate's identity headers last, so configuration cannot
//! overwrite what the signature covers either.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use simgate_control::{BeamEntry, CustomHeader, HeaderAction, Identity};

use super::signature::{http_signature, SignedFields, SIGNATURE_VERSION};

pub const X_SORACOM_IMSI: HeaderName = HeaderName::from_static("x-soracom-imsi");
pub const X_SORACOM_IMEI: HeaderName = HeaderName::from_static("x-soracom-imei");
pub const X_SORACOM_MSISDN: HeaderName = HeaderName::from_static("x-soracom-msisdn");
pub const X_SORACOM_SIM_ID: HeaderName = HeaderName::from_static("x-soracom-sim-id");
pub const X_SORACOM_TIMESTAMP: HeaderName = HeaderName::from_static("x-soracom-timestamp");
pub const X_SORACOM_SIGNATURE_VERSION: HeaderName =
    HeaderName::from_static("x-soracom-signature-version");
pub const X_SORACOM_SIGNATURE: HeaderName = HeaderName::from_static("x-soracom-signature");

/// Every header only simgate may set.
const IDENTITY_HEADERS: [HeaderName; 7] = [
    X_SORACOM_IMSI,
    X_SORACOM_IMEI,
    X_SORACOM_MSISDN,
    X_SORACOM_SIM_ID,
    X_SORACOM_TIMESTAMP,
    X_SORACOM_SIGNATURE_VERSION,
    X_SORACOM_SIGNATURE,
];

/// The sending SIM's identity, as Beam shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeamIdentity<'a> {
    pub imsi: &'a str,
    /// 15-digit IMEI (not the IMEISV).
    pub imei: Option<&'a str>,
    pub msisdn: Option<&'a str>,
    pub sim_id: Option<&'a str>,
}

impl<'a> BeamIdentity<'a> {
    /// From a resolved identity; `imei15` is `identity.imei`'s 15-digit form
    /// ([`simgate_control::Imei::imei15`]), computed by the caller so this
    /// borrows only.
    pub fn new(identity: &'a Identity, imei15: Option<&'a str>) -> Self {
        let s = &identity.subscriber;
        Self {
            imsi: s.imsi.as_str(),
            imei: imei15,
            msisdn: s.msisdn.as_ref().map(|m| m.as_str()),
            sim_id: s.sim_id.as_ref().map(|m| m.as_str()),
        }
    }

    /// The fields `entry` switches on, at `now_ms`.
    pub fn fields(&self, entry: &BeamEntry, now_ms: u64) -> SignedFields<'a> {
        SignedFields {
            imei: self.imei.filter(|_| entry.add_equipment_header),
            imsi: Some(self.imsi).filter(|_| entry.add_subscriber_header),
            msisdn: self.msisdn.filter(|_| entry.add_msisdn_header),
            sim_id: self.sim_id.filter(|_| entry.add_sim_id_header),
            timestamp_ms: now_ms,
        }
    }
}

/// A header that cannot be sent (configuration checked in the control plane
/// makes this unexpected; it is a configuration error, not the device's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("custom header {name:?} cannot be sent: {reason}")]
pub struct HeaderError {
    pub name: String,
    pub reason: &'static str,
}

/// The identity and signature headers, in order: IMSI, IMEI, MSISDN, SIM-ID,
/// then with `psk` Timestamp, Signature-Version and Signature. Pass `psk`
/// when the entry has `addSignature` (the key resolved from its `psk`).
pub fn identity_headers(
    id: &BeamIdentity<'_>,
    entry: &BeamEntry,
    psk: Option<&[u8]>,
    now_ms: u64,
) -> Vec<(HeaderName, HeaderValue)> {
    let f = id.fields(entry, now_ms);
    let mut out = Vec::with_capacity(7);
    for (name, value) in [
        (X_SORACOM_IMSI, f.imsi),
        (X_SORACOM_IMEI, f.imei),
        (X_SORACOM_MSISDN, f.msisdn),
        (X_SORACOM_SIM_ID, f.sim_id),
    ] {
        // Identifiers are digits (validated ids): always valid values.
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            out.push((name, v));
        }
    }
    if let Some(psk) = psk {
        out.push((X_SORACOM_TIMESTAMP, HeaderValue::from(now_ms)));
        out.push((
            X_SORACOM_SIGNATURE_VERSION,
            HeaderValue::from_static(SIGNATURE_VERSION),
        ));
        let sig = http_signature(psk, &f);
        if let Ok(v) = HeaderValue::from_str(&sig) {
            out.push((X_SORACOM_SIGNATURE, v));
        }
    }
    out
}

/// Removes every identity header the device sent.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    for name in &IDENTITY_HEADERS {
        headers.remove(name);
    }
}

/// Applies one entry's `customHeaders` (append / replace / delete).
pub fn apply_custom_headers<'h>(
    headers: &mut HeaderMap,
    custom: impl IntoIterator<Item = &'h CustomHeader>,
) -> Result<(), HeaderError> {
    for h in custom {
        let err = |reason| HeaderError {
            name: h.header_key.chars().take(64).collect(),
            reason,
        };
        let name = HeaderName::from_bytes(h.header_key.as_bytes())
            .map_err(|_| err("invalid header name"))?;
        if IDENTITY_HEADERS.contains(&name) {
            // Never let configuration forge what simgate signs.
            return Err(err("X-Soracom identity headers are set by Beam itself"));
        }
        match h.action {
            HeaderAction::Delete => {
                headers.remove(&name);
            }
            HeaderAction::Append | HeaderAction::Replace => {
                let value = HeaderValue::from_str(&h.header_value)
                    .map_err(|_| err("invalid header value"))?;
                if h.action == HeaderAction::Append {
                    headers.append(name, value);
                } else {
                    headers.insert(name, value);
                }
            }
        }
    }
    Ok(())
}

/// Everything Beam does to the device's request headers before sending
/// them upstream: strip forged identity headers, apply `customHeaders`,
/// add the identity (and signature with `psk`).
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    id: &BeamIdentity<'_>,
    entry: &BeamEntry,
    psk: Option<&[u8]>,
    now_ms: u64,
) -> Result<(), HeaderError> {
    strip_identity_headers(headers);
    apply_custom_headers(headers, entry.custom_headers.values())?;
    for (name, value) in identity_headers(id, entry, psk, now_ms) {
        headers.insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: serde_json::Value) -> BeamEntry {
        serde_json::from_value(v).unwrap()
    }

    const ID: BeamIdentity<'static> = BeamIdentity {
        imsi: "295000012345678",
        imei: Some("860000012345678"),
        msisdn: Some("818000000001"),
        sim_id: Some("8942310000000000001"),
    };

    #[test]
    fn published_vector_through_the_headers() {
        let e = entry(json!({"destination": "https://x", "enabled": true,
            "addSubscriberHeader": true, "addEquipmentHeader": true, "addSignature": true,
            "psk": {"$credentialsId": "k"}}));
        let h = identity_headers(&ID, &e, Some(b"mysecretkey"), 1_445_587_157_992);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-soracom-imsi",
                "x-soracom-imei",
                "x-soracom-timestamp",
                "x-soracom-signature-version",
                "x-soracom-signature"
            ]
        );
        let get = |n: &str| h.iter().find(|(k, _)| k == n).unwrap().1.to_str().unwrap();
        assert_eq!(get("x-soracom-timestamp"), "1445587157992");
        assert_eq!(get("x-soracom-signature-version"), "20151001");
        assert_eq!(
            get("x-soracom-signature"),
            "95c8e34d68e2bd76502c1e403108dc1bd7008964c31081d0415adb9f21a721a5"
        );
    }

    #[test]
    fn switches_choose_the_headers() {
        let none = entry(json!({"destination": "https://x"}));
        assert!(identity_headers(&ID, &none, None, 1).is_empty());
        let all = entry(
            json!({"destination": "https://x", "addSubscriberHeader": true,
            "addEquipmentHeader": true, "addMsisdnHeader": true, "addSimIdHeader": true}),
        );
        let h = identity_headers(&ID, &all, None, 1);
        assert_eq!(h.len(), 4);
        assert_eq!(h[2].1, "818000000001");
        assert_eq!(h[3].1, "8942310000000000001");
        // A SIM without an MSISDN just has no header.
        let partial = BeamIdentity { msisdn: None, ..ID };
        assert_eq!(identity_headers(&partial, &all, None, 1).len(), 3);
    }

    #[test]
    fn custom_headers_and_forged_identity() {
        let e = entry(
            json!({"destination": "https://x", "addSubscriberHeader": true,
            "customHeaders": {
                "a": {"action": "append", "headerKey": "X-A", "headerValue": "2"},
                "b": {"action": "replace", "headerKey": "X-B", "headerValue": "new"},
                "c": {"action": "delete", "headerKey": "X-C"}}}),
        );
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("old"));
        h.append("x-b", HeaderValue::from_static("older"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        h.insert(
            "x-soracom-imsi",
            HeaderValue::from_static("999999999999999"),
        );
        h.insert("x-soracom-signature", HeaderValue::from_static("forged"));
        prepare_request_headers(&mut h, &ID, &e, None, 5).unwrap();
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-a"), ["1", "2"]);
        assert_eq!(all("x-b"), ["new"]);
        assert!(all("x-c").is_empty());
        assert_eq!(all("x-soracom-imsi"), ["295000012345678"]);
        assert!(all("x-soracom-signature").is_empty());

        let forge = entry(json!({"destination": "https://x", "customHeaders": {
            "s": {"action": "replace", "headerKey": "X-Soracom-IMSI", "headerValue": "1"}}}));
        let e = prepare_request_headers(&mut HeaderMap::new(), &ID, &forge, None, 5).unwrap_err();
        assert!(e.to_string().contains("X-Soracom-IMSI"), "{e}");
    }
}
