//! Registration records: the last certificate issued to each SIM, one
//! JSON file per IMSI in `{data_dir}/krypton/registrations/` (written
//! atomically, 0600). Files rather than a control-store table: a record is
//! written once per provisioning (rare, off the hot path), read only by
//! the operator API, and is the data plane's own, as the Endorse keys are;
//! the control store's mutation pipeline and snapshots would carry it to
//! every packet lookup for nothing.
//!
//! The private key is never recorded.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use simgate_control::{secret_file, Imsi};

/// One SIM's registration, as the operator API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub imsi: String,
    pub operation_id: String,
    pub provider: String,
    /// The certificate's serial, lowercase hex.
    pub serial_number: String,
    pub subject: String,
    pub key_algorithm: String,
    /// Milliseconds since the epoch.
    pub not_before: u64,
    pub not_after: u64,
    pub created_time: u64,
    /// Certificates issued to this SIM so far (this one included).
    pub issued_count: u64,
}

/// Why records cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a registration record: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The records' directory.
#[derive(Debug)]
pub struct Registrations {
    dir: PathBuf,
}

impl Registrations {
    /// Records in `dir` (made, private, on the first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, imsi: &Imsi) -> PathBuf {
        // An Imsi is digits only: a safe file name.
        self.dir.join(format!("{}.json", imsi.as_str()))
    }

    /// Writes `record` over the SIM's previous one, counting it after
    /// that one. Blocking.
    pub fn put(&self, imsi: &Imsi, mut record: Registration) -> Result<Registration, RecordError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| RecordError::Io { path, source }
        };
        secret_file::create_private_dir(&self.dir).map_err(io_err(&self.dir))?;
        // A corrupt old record does not stop a new certificate.
        let before = self.get(imsi).ok().flatten().map_or(0, |r| r.issued_count);
        record.issued_count = before.saturating_add(1);
        let path = self.path(imsi);
        let text = serde_json::to_string(&record).map_err(|source| RecordError::Corrupt {
            path: path.clone(),
            source,
        })?;
        secret_file::write(&path, &text).map_err(io_err(&path))?;
        Ok(record)
    }

    /// The SIM's record, if it has one. Blocking.
    pub fn get(&self, imsi: &Imsi) -> Result<Option<Registration>, RecordError> {
        read(&self.path(imsi))
    }

    /// Every record, by IMSI. Blocking.
    pub fn list(&self) -> Result<Vec<Registration>, RecordError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RecordError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| RecordError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            let is_record = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| Imsi::parse(s).is_ok())
                && path.extension().is_some_and(|e| e == "json");
            if !is_record {
                continue; // e.g. a `.tmp` left by a crash mid-write
            }
            if let Some(r) = read(&path)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.imsi.cmp(&b.imsi));
        Ok(out)
    }
}

fn read(path: &Path) -> Result<Option<Registration>, RecordError> {
    let text = secret_file::read(path).map_err(|source| RecordError::Io {
        path: path.to_owned(),
        source,
    })?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|source| RecordError::Corrupt {
            path: path.to_owned(),
            source,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(imsi: &str, serial: &str) -> Registration {
        Registration {
            imsi: imsi.into(),
            operation_id: "op".into(),
            provider: "x509".into(),
            serial_number: serial.into(),
            subject: format!("CN={imsi}"),
            key_algorithm: "ECDSA_P256".into(),
            not_before: 1,
            not_after: 2,
            created_time: 3,
            issued_count: 0,
        }
    }

    #[test]
    fn records_persist_per_sim_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let regs = Registrations::new(dir.path().join("registrations"));
        assert!(regs.list().unwrap().is_empty());
        let a = Imsi::parse("001010000000002").unwrap();
        let b = Imsi::parse("001010000000001").unwrap();
        assert_eq!(regs.get(&a).unwrap(), None);
        assert_eq!(
            regs.put(&a, record(a.as_str(), "01")).unwrap().issued_count,
            1
        );
        let second = regs.put(&a, record(a.as_str(), "02")).unwrap();
        assert_eq!(second.issued_count, 2);
        regs.put(&b, record(b.as_str(), "03")).unwrap();
        std::fs::write(dir.path().join("registrations/x.json.tmp"), "junk").unwrap();
        let all = Registrations::new(dir.path().join("registrations"))
            .list()
            .unwrap();
        assert_eq!(
            all.iter()
                .map(|r| r.serial_number.as_str())
                .collect::<Vec<_>>(),
            ["03", "02"]
        );
        assert_eq!(regs.get(&a).unwrap(), Some(second));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(regs.path(&a))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
