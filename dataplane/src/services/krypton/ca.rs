//! Krypton's certificate authority: the one configured (`[krypton]
//! ca_cert` / `ca_key`, PEM; the key PKCS#8, SEC1 or PKCS#1), or one
//! generated on first use in `{data_dir}/krypton/` (`ca.pem`, `ca.key`,
//! both 0600, written atomically, the key first: a crash between leaves a
//! key without a certificate, which the next use replaces, never a
//! certificate whose key is lost).
//!
//! Every device certificate: a fresh key pair (ECDSA P-256 unless the
//! group says otherwise), subject `CN={IMSI}`, SAN URI `urn:imsi:{IMSI}`,
//! `extendedKeyUsage = clientAuth`, `basicConstraints CA:FALSE`, a random
//! positive 127-bit serial, valid from five minutes before `now` (clock
//! skew) for the days asked. The issuer name is the CA's subject read
//! from its certificate ([`super::der`]), so the chain verifies with the
//! CA file as given, whoever made it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use simgate_control::{secret_file, Imsi};

use super::der::{self, Attribute};
use super::request::{Issued, KeyAlgorithm};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
/// A generated CA lives twenty years: longer than any device certificate
/// it signs (at most ten).
const GENERATED_CA_DAYS: u64 = 20 * 366;
/// Certificates are valid from this long before `now`, for devices whose
/// clock runs a little behind.
const BACKDATE_SECS: u64 = 300;
const DAY_SECS: u64 = 86_400;

/// Unix seconds as rcgen's time type, reached through rcgen (which does
/// not re-export the `time` crate, and simgate need not depend on it).
macro_rules! unix_time_fn {
    () => {
        |unix_secs: u64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix_secs)
    };
}

/// Why the CA cannot be loaded, made or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: cannot read the certificate: {source}")]
    Certificate {
        path: PathBuf,
        source: der::DerError,
    },
    #[error("{path}: {reason}")]
    Subject { path: PathBuf, reason: String },
    #[error("{path}: not a private key rcgen can sign with: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the CA key {key} is not the key of the CA certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("[krypton] ca_cert and ca_key must be set together")]
    HalfConfigured,
    #[error("cannot make a key or certificate: {0}")]
    Generate(String),
}

/// A loaded CA: the PEM devices are given, and rcgen's view of it to sign
/// with.
pub struct Ca {
    pem: String,
    /// rcgen signs "by" a certificate: this one has the CA's subject and
    /// key (it is never published; only its name and key are used).
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately no key.
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// The CA certificate as PEM (what brokers are configured to trust).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Reads a CA from its certificate and key PEM; `cert_path` and
    /// `key_path` only name them in errors.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, CaError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| {
            CaError::NoCertificate {
                path: cert_path.to_owned(),
            }
        })?;
        let fields = der::ca_fields(&der).map_err(|source| CaError::Certificate {
            path: cert_path.to_owned(),
            source,
        })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Key {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
        if key.public_key_der() != fields.spki {
            return Err(CaError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        let subject = distinguished_name(&fields.subject).map_err(|reason| CaError::Subject {
            path: cert_path.to_owned(),
            reason,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = params
            .self_signed(&key)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        Ok(Self {
            pem: pem_of(&der),
            issuer,
            key,
        })
    }

    /// Issues a device certificate for `imsi`. `serial` is the caller's
    /// randomness (its top bit is cleared, a bit below it set, so the
    /// INTEGER is positive and always 16 bytes).
    pub fn issue(
        &self,
        imsi: &Imsi,
        algorithm: KeyAlgorithm,
        validity_days: u32,
        now_ms: u64,
        mut serial: [u8; 16],
    ) -> Result<Issued, CaError> {
        let gen = |e: rcgen::Error| CaError::Generate(e.to_string());
        let at = unix_time_fn!();
        let key = match algorithm {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
        .map_err(gen)?;
        serial[0] = (serial[0] & 0x7f) | 0x40;
        let now = now_ms / 1000;
        let not_before = now.saturating_sub(BACKDATE_SECS);
        let not_after = now.saturating_add(u64::from(validity_days) * DAY_SECS);

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, imsi.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:imsi:{}", imsi.as_str())
                .try_into()
                .map_err(gen)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if algorithm == KeyAlgorithm::Rsa2048 {
            // TLS 1.2 RSA key exchange.
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = at(not_before);
        params.not_after = at(not_after);
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(gen)?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            ca_pem: self.pem.clone(),
            serial: hex::encode(serial),
            not_before_ms: not_before * 1000,
            not_after_ms: not_after * 1000,
        })
    }

    /// A new self-signed CA (ECDSA P-256): its certificate and key PEM.
    pub fn generate(now_ms: u64, serial: [u8; 16]) -> Result<(String, String), CaError> {
        let gen = |e: rcgen::Error| CaError::Generate(e.to_string());
        let at = unix_time_fn!();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "simgate");
        dn.push(DnType::CommonName, "simgate Krypton CA");
        params.distinguished_name = dn;
        // Signs device certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut serial = serial;
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = now_ms / 1000;
        params.not_before = at(now.saturating_sub(BACKDATE_SECS));
        params.not_after = at(now.saturating_add(GENERATED_CA_DAYS * DAY_SECS));
        let cert = params.self_signed(&key).map_err(gen)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Where the CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    Configured {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generated on first use in this directory.
    DataDir(PathBuf),
}

impl CaSource {
    /// From `[krypton]` (both paths or neither) and the Krypton data dir.
    pub fn new(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        data_dir: &Path,
    ) -> Result<Self, CaError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Self::Configured { cert, key }),
            (None, None) => Ok(Self::DataDir(data_dir.to_owned())),
            _ => Err(CaError::HalfConfigured),
        }
    }
}

/// The CA, loaded (or generated) on first use and then read without a
/// lock.
#[derive(Debug)]
pub struct CaStore {
    source: CaSource,
    ca: ArcSwapOption<Ca>,
    /// One load or generation at a time (two would make two CAs).
    loading: Mutex<()>,
}

impl CaStore {
    pub fn new(source: CaSource) -> Self {
        Self {
            source,
            ca: ArcSwapOption::empty(),
            loading: Mutex::new(()),
        }
    }

    /// The CA; the first call loads it or makes it. Blocking (files, key
    /// generation). `now_ms` and `serial` are used only when one is made.
    pub fn get(&self, now_ms: u64, serial: [u8; 16]) -> Result<Arc<Ca>, CaError> {
        if let Some(ca) = self.ca.load_full() {
            return Ok(ca);
        }
        let _one = self
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(ca) = self.ca.load_full() {
            return Ok(ca);
        }
        let ca = Arc::new(self.load(now_ms, serial)?);
        self.ca.store(Some(Arc::clone(&ca)));
        Ok(ca)
    }

    fn load(&self, now_ms: u64, serial: [u8; 16]) -> Result<Ca, CaError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { path, source }
        };
        match &self.source {
            CaSource::Configured { cert, key } => {
                let c = std::fs::read_to_string(cert).map_err(io_err(cert))?;
                let k = std::fs::read_to_string(key).map_err(io_err(key))?;
                Ca::from_pem(&c, &k, cert, key)
            }
            CaSource::DataDir(dir) => {
                secret_file::create_private_dir(dir).map_err(io_err(dir))?;
                let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
                let c = secret_file::read(&cert).map_err(io_err(&cert))?;
                let k = secret_file::read(&key).map_err(io_err(&key))?;
                if let (Some(c), Some(k)) = (c, k) {
                    return Ca::from_pem(&c, &k, &cert, &key);
                }
                let (c, k) = Ca::generate(now_ms, serial)?;
                secret_file::write(&key, &k).map_err(io_err(&key))?;
                secret_file::write(&cert, &c).map_err(io_err(&cert))?;
                tracing::info!(cert = %cert.display(), "Krypton CA generated");
                Ca::from_pem(&c, &k, &cert, &key)
            }
        }
    }
}

/// rcgen's form of a name read from a certificate. rcgen writes one
/// attribute per RDN, each type once, in order, keeping the string type:
/// a name it cannot write the same way is refused rather than signed
/// under a different issuer name (no verifier would chain it).
fn distinguished_name(rdns: &[Vec<Attribute>]) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in rdns {
        let [a] = rdn.as_slice() else {
            return Err("the subject has a multi-valued RDN, which cannot be reproduced".into());
        };
        let ty = DnType::from_oid(&a.oid);
        if dn.get(&ty).is_some() {
            return Err(format!(
                "the subject repeats the attribute {:?}, which cannot be reproduced",
                a.oid
            ));
        }
        let bad = |e: rcgen::Error| format!("subject attribute {:?}: {e}", a.oid);
        let text = || String::from_utf8(a.value.clone()).map_err(|e| e.to_string());
        let value = match a.tag {
            0x0c => DnValue::Utf8String(text()?),
            0x13 => DnValue::PrintableString(text()?.try_into().map_err(bad)?),
            0x16 => DnValue::Ia5String(text()?.try_into().map_err(bad)?),
            0x14 => DnValue::TeletexString(text()?.try_into().map_err(bad)?),
            0x1e => {
                DnValue::BmpString(rcgen::BmpString::from_utf16be(a.value.clone()).map_err(bad)?)
            }
            0x1c => DnValue::UniversalString(
                rcgen::UniversalString::from_utf32be(a.value.clone()).map_err(bad)?,
            ),
            t => {
                return Err(format!(
                    "subject attribute {:?} has string tag {t:#04x}",
                    a.oid
                ))
            }
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn imsi() -> Imsi {
        Imsi::parse("001010000000001").unwrap()
    }

    /// rustls's own client-certificate verifier (webpki) accepts `cert`
    /// as a client of a server trusting `ca_pem`.
    fn verifies(ca_pem: &str, cert_pem: &str, at_ms: u64) -> bool {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let ee = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let now = UnixTime::since_unix_epoch(Duration::from_millis(at_ms));
        verifier.verify_client_cert(&ee, &[], now).is_ok()
    }

    #[test]
    fn a_generated_ca_issues_certificates_that_chain_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let store = CaStore::new(CaSource::DataDir(dir.path().join("krypton")));
        let ca = store.get(NOW_MS, [7; 16]).unwrap();
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let issued = ca.issue(&imsi(), alg, 30, NOW_MS, [0xff; 16]).unwrap();
            assert!(
                verifies(ca.pem(), &issued.certificate_pem, NOW_MS),
                "{alg:?}"
            );
            assert!(!verifies(
                ca.pem(),
                &issued.certificate_pem,
                NOW_MS + 31 * DAY_SECS * 1000
            ));
            assert_eq!(issued.serial, format!("7f{}", "ff".repeat(15)));
            assert_eq!(
                issued.not_after_ms - issued.not_before_ms,
                (30 * DAY_SECS + BACKDATE_SECS) * 1000
            );
            assert!(issued
                .private_key_pem
                .starts_with("-----BEGIN PRIVATE KEY-----"));
            let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
            let f = der::ca_fields(&der).unwrap();
            assert_eq!(
                f.subject,
                vec![vec![Attribute {
                    oid: vec![2, 5, 4, 3],
                    tag: 0x0c,
                    value: b"001010000000001".to_vec()
                }]]
            );
            let text = String::from_utf8_lossy(&der);
            assert!(text.contains("urn:imsi:001010000000001"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let key = dir.path().join("krypton").join(CA_KEY);
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Loaded again: the same CA, and what it issues chains to the first.
        let again = CaStore::new(CaSource::DataDir(dir.path().join("krypton")))
            .get(NOW_MS, [8; 16])
            .unwrap();
        assert_eq!(again.pem(), ca.pem());
        let issued = again
            .issue(&imsi(), KeyAlgorithm::EcdsaP256, 1, NOW_MS, [1; 16])
            .unwrap();
        assert!(verifies(ca.pem(), &issued.certificate_pem, NOW_MS));
        // Another CA's certificate does not chain.
        let other = CaStore::new(CaSource::DataDir(dir.path().join("other")))
            .get(NOW_MS, [9; 16])
            .unwrap();
        assert!(!verifies(other.pem(), &issued.certificate_pem, NOW_MS));
    }

    #[test]
    fn configuration_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, _) = Ca::generate(NOW_MS, [1; 16]).unwrap();
        let (_, k2) = Ca::generate(NOW_MS, [2; 16]).unwrap();
        let (p, q) = (Path::new("c"), Path::new("k"));
        assert!(matches!(
            Ca::from_pem(&c1, &k2, p, q),
            Err(CaError::KeyMismatch { .. })
        ));
        assert!(matches!(
            Ca::from_pem("junk", &k2, p, q),
            Err(CaError::NoCertificate { .. })
        ));
        assert!(matches!(
            Ca::from_pem(&c1, "junk", p, q),
            Err(CaError::Key { .. })
        ));
        assert!(matches!(
            CaSource::new(Some("c".into()), None, dir.path()),
            Err(CaError::HalfConfigured)
        ));
        let missing = CaStore::new(CaSource::Configured {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
        });
        assert!(matches!(
            missing.get(NOW_MS, [0; 16]),
            Err(CaError::Io { .. })
        ));
    }
}
