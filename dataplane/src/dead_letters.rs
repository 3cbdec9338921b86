//! The dead-letter store: records Funnel could not deliver (rejected by the
//! sink, out of attempts, or older than `max_record_age`), each kept with
//! its reason, so that nothing acknowledged to a device disappears without
//! a trace. One JSON-lines file per destination under
//! `{data_dir}/dead-letters/`, appended and fsynced before the record leaves
//! the spool; listed, replayed and purged over the API and the CLI.
//!
//! A torn last line (a crash during an append) is skipped when reading.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use simgate_control::Destination;

/// Why the dead-letter store failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead-letter file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One dead-lettered record, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// When it was dead-lettered (ms since the epoch).
    pub time: u64,
    /// When the device's message was accepted (ms since the epoch).
    pub accepted_at: u64,
    pub destination: Destination,
    pub credentials_id: String,
    pub partition_key: String,
    /// The record as the sink would have received it, base64.
    pub data: String,
    /// Short, stable reason (`rejected`, `attempts_exhausted`, `expired`,
    /// `too_large`).
    pub reason: String,
    /// The sink's words, or the last error.
    pub detail: String,
    pub attempts: u32,
}

impl DeadLetter {
    /// The record bytes.
    pub fn data_bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .ok()
    }

    pub fn encode_data(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }
}

/// The store: one file per destination, one lock for all (dead letters are
/// rare; appends and rewrites must not interleave).
#[derive(Debug)]
pub struct DeadLetterStore {
    dir: PathBuf,
    /// Guards the files, and holds the number of letters stored once it has
    /// been counted (kept up to date by append and retain, so a metrics
    /// scrape never reads the files).
    lock: Mutex<Option<usize>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeadLetterError + '_ {
    move |source| DeadLetterError::Io {
        path: path.to_owned(),
        source,
    }
}

impl DeadLetterStore {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            lock: Mutex::new(None),
        }
    }

    fn file(&self, destination_id: &str) -> PathBuf {
        self.dir.join(format!("{destination_id}.jsonl"))
    }

    /// Appends records of one destination and fsyncs them.
    pub fn append(
        &self,
        destination_id: &str,
        letters: &[DeadLetter],
    ) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut count = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        simgate_control::secret_file::create_private_dir(&self.dir).map_err(io_err(&self.dir))?;
        let path = self.file(destination_id);
        let mut text = Vec::new();
        for l in letters {
            // Serializing these plain structs cannot fail.
            if serde_json::to_writer(&mut text, l).is_ok() {
                text.push(b'\n');
            }
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        // A crash mid-append leaves a torn last line: start on a fresh line
        // so that it cannot swallow this record.
        let len = f.metadata().map_err(io_err(&path))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, len - 1)
                .map_err(io_err(&path))?;
            if last[0] != b'\n' {
                text.insert(0, b'\n');
            }
        }
        f.write_all(&text).map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))?;
        if let Some(n) = count.as_mut() {
            *n += letters.len();
        }
        Ok(())
    }

    /// How many dead letters are stored, all destinations together.
    pub fn stored(&self) -> Result<usize, DeadLetterError> {
        let mut count = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = *count {
            return Ok(n);
        }
        let mut n = 0;
        for id in self.destination_ids()? {
            n += self.read(&id)?.len();
        }
        *count = Some(n);
        Ok(n)
    }

    /// Every dead letter, per destination id, oldest first.
    pub fn list(&self) -> Result<Vec<(String, DeadLetter)>, DeadLetterError> {
        let _g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for id in self.destination_ids()? {
            out.extend(self.read(&id)?.into_iter().map(|l| (id.clone(), l)));
        }
        Ok(out)
    }

    /// Dead letters held, per destination id.
    pub fn counts(&self) -> Result<Vec<(String, usize)>, DeadLetterError> {
        let _g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for id in self.destination_ids()? {
            out.push((id.clone(), self.read(&id)?.len()));
        }
        Ok(out)
    }

    fn destination_ids(&self) -> Result<Vec<String>, DeadLetterError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".jsonl"))
                    .map(str::to_owned)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn read(&self, id: &str) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let path = self.file(id);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut out = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line.map_err(io_err(&path))?;
            // A torn line (crash mid-append) or foreign text is skipped.
            if let Ok(l) = serde_json::from_str::<DeadLetter>(&line) {
                out.push(l);
            }
        }
        Ok(out)
    }

    /// Removes dead letters: all of them, or those `keep` says no to.
    /// Returns how many were removed.
    pub fn retain(
        &self,
        mut keep: impl FnMut(&str, &DeadLetter) -> bool,
    ) -> Result<usize, DeadLetterError> {
        let mut count = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Recounted on the next `stored`.
        *count = None;
        let mut removed = 0;
        for id in self.destination_ids()? {
            let letters = self.read(&id)?;
            let before = letters.len();
            let kept: Vec<DeadLetter> = letters.into_iter().filter(|l| keep(&id, l)).collect();
            removed += before - kept.len();
            if kept.len() == before {
                continue;
            }
            let path = self.file(&id);
            if kept.is_empty() {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let tmp = path.with_extension("jsonl.tmp");
            let mut text = Vec::new();
            for l in &kept {
                if serde_json::to_writer(&mut text, l).is_ok() {
                    text.push(b'\n');
                }
            }
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&text).map_err(io_err(&tmp))?;
            f.sync_data().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use simgate_control::SinkService;

    fn letter(n: u32) -> DeadLetter {
        DeadLetter {
            time: 1,
            accepted_at: 0,
            destination: Destination::new(
                SinkService::Kinesis,
                "https://kinesis.us-east-1.amazonaws.com/s",
            ),
            credentials_id: "c".into(),
            partition_key: "001010000000001".into(),
            data: DeadLetter::encode_data(format!("{{\"n\":{n}}}").as_bytes()),
            reason: "rejected".into(),
            detail: "ValidationException".into(),
            attempts: n,
        }
    }

    #[test]
    fn append_list_retain_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::new(dir.path().join("dl"));
        assert!(store.list().unwrap().is_empty());
        store.append("a", &[letter(1), letter(2)]).unwrap();
        store.append("b", &[letter(3)]).unwrap();
        // A crash in the middle of an append leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("dl/a.jsonl"))
            .unwrap();
        f.write_all(b"{\"time\":1,\"accep").unwrap();
        assert_eq!(store.list().unwrap().len(), 3);
        // The next append is not swallowed by the torn line.
        store.append("a", &[letter(4)]).unwrap();
        let all = store.list().unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.iter().any(|(id, l)| id == "a" && l.attempts == 4));
        assert_eq!(all[0].1.data_bytes().unwrap(), b"{\"n\":1}");
        assert_eq!(
            store.counts().unwrap(),
            vec![("a".into(), 3), ("b".into(), 1)]
        );
        assert_eq!(store.retain(|_, l| l.attempts != 2).unwrap(), 1);
        assert_eq!(store.list().unwrap().len(), 3);
        assert_eq!(store.retain(|_, _| false).unwrap(), 3);
        assert!(store.list().unwrap().is_empty());
    }
}
