//! Just enough DER to sign with an existing CA certificate: its subject
//! (the issuer name of every certificate it signs must equal it byte for
//! byte) and its SubjectPublicKeyInfo (to check that the configured key is
//! the certificate's). rcgen reads certificates only with its
//! `x509-parser` feature, a second ASN.1 stack for two fields.
//!
//! Sans-IO; every length is checked, nothing indexes past the input.

/// One attribute of a name: `type = value`, with the value's string tag
/// kept so the name can be written again identically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The type's OID arcs (2.5.4.3 is the common name).
    pub oid: Vec<u64>,
    /// The value's universal tag (0x0c UTF8String, 0x13 PrintableString, …).
    pub tag: u8,
    pub value: Vec<u8>,
}

/// The two fields of a certificate simgate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFields {
    /// The subject's relative distinguished names, each its attributes.
    pub subject: Vec<Vec<Attribute>>,
    /// SubjectPublicKeyInfo, whole (tag and length included).
    pub spki: Vec<u8>,
}

/// Why a certificate cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    #[error("truncated or malformed DER")]
    Malformed,
    #[error("unexpected DER tag {0:#04x}")]
    Tag(u8),
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// A cursor over DER.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next element: its tag, its content, and the whole element.
    fn next(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), DerError> {
        let all = self.0;
        let [tag, first, rest @ ..] = all else {
            return Err(DerError::Malformed);
        };
        if tag & 0x1f == 0x1f {
            // Multi-byte tags appear in no certificate field read here.
            return Err(DerError::Tag(*tag));
        }
        let (len, rest) = if first & 0x80 == 0 {
            (usize::from(*first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(DerError::Malformed);
            }
            let (bytes, rest) = rest.split_at(n);
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return Err(DerError::Malformed);
        }
        let (content, after) = rest.split_at(len);
        let header = all.len() - rest.len();
        let whole = all.get(..header + len).ok_or(DerError::Malformed)?;
        self.0 = after;
        Ok((*tag, content, whole))
    }

    fn expect(&mut self, tag: u8) -> Result<(&'a [u8], &'a [u8]), DerError> {
        match self.next()? {
            (t, content, whole) if t == tag => Ok((content, whole)),
            (t, _, _) => Err(DerError::Tag(t)),
        }
    }

    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads the subject and the public key of a DER certificate.
pub fn ca_fields(cert: &[u8]) -> Result<CaFields, DerError> {
    let mut outer = Reader(cert);
    let (certificate, _) = outer.expect(SEQUENCE)?;
    if !outer.is_empty() {
        return Err(DerError::Malformed);
    }
    let (tbs, _) = Reader(certificate).expect(SEQUENCE)?;
    let mut tbs = Reader(tbs);
    if tbs.peek_tag() == Some(VERSION) {
        tbs.next()?;
    }
    tbs.expect(0x02)?; // serialNumber
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    let (subject, _) = tbs.expect(SEQUENCE)?;
    let (_, spki) = tbs.expect(SEQUENCE)?;
    Ok(CaFields {
        subject: name(subject)?,
        spki: spki.to_vec(),
    })
}

fn name(content: &[u8]) -> Result<Vec<Vec<Attribute>>, DerError> {
    let mut rdns = Reader(content);
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let (set, _) = rdns.expect(SET)?;
        let mut atvs = Reader(set);
        let mut rdn = Vec::new();
        while !atvs.is_empty() {
            let (atv, _) = atvs.expect(SEQUENCE)?;
            let mut atv = Reader(atv);
            let (oid, _) = atv.expect(OID)?;
            let (tag, value, _) = atv.next()?;
            if !atv.is_empty() {
                return Err(DerError::Malformed);
            }
            rdn.push(Attribute {
                oid: oid_arcs(oid)?,
                tag,
                value: value.to_vec(),
            });
        }
        out.push(rdn);
    }
    Ok(out)
}

fn oid_arcs(content: &[u8]) -> Result<Vec<u64>, DerError> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    let mut in_arc = false;
    for &b in content {
        if !in_arc && b == 0x80 {
            // A leading 0x80 is not minimal.
            return Err(DerError::Malformed);
        }
        if acc > u64::MAX >> 7 {
            return Err(DerError::Malformed);
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        in_arc = b & 0x80 != 0;
        if !in_arc {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    if in_arc || arcs.is_empty() {
        return Err(DerError::Malformed);
    }
    Ok(arcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_rcgen_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CountryName,
            rcgen::DnValue::PrintableString("JP".try_into().unwrap()),
        );
        dn.push(rcgen::DnType::CommonName, "テスト CA");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let f = ca_fields(cert.der()).unwrap();
        assert_eq!(
            f.subject,
            vec![
                vec![Attribute {
                    oid: vec![2, 5, 4, 6],
                    tag: 0x13,
                    value: b"JP".to_vec()
                }],
                vec![Attribute {
                    oid: vec![2, 5, 4, 3],
                    tag: 0x0c,
                    value: "テスト CA".as_bytes().to_vec()
                }],
            ]
        );
        assert_eq!(f.spki, key.public_key_der());
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert!(ca_fields(b"").is_err());
        assert!(ca_fields(&[0x30, 0x82, 0xff]).is_err());
        assert!(ca_fields(&[0x30, 0x00]).is_err());
        assert!(ca_fields(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert_eq!(oid_arcs(&[0x55, 0x04, 0x03]), Ok(vec![2, 5, 4, 3]));
        assert_eq!(oid_arcs(&[0x2a, 0x86, 0x48]), Ok(vec![1, 2, 840]));
        assert!(oid_arcs(&[0x2a, 0x86]).is_err());
        assert!(oid_arcs(&[0x80, 0x01]).is_err());
    }
}
