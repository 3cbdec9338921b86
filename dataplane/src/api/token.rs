//! The API bearer token: generated on first start into
//! `{data_dir}/api.token` (mode 0600) and compared in constant time.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// A token the API accepts. Only its SHA-256 is kept in memory.
#[derive(Debug)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl ApiToken {
    pub fn from_secret(secret: &str) -> Self {
        Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// Constant-time comparison (of digests, so length leaks nothing either).
    pub fn verify(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Where the token lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api.token")
}

/// Reads the token, creating it on first start. Returns the token text and
/// whether it was just created.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<(String, bool)> {
    let path = token_path(data_dir);
    match fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("sgt_{}", hex::encode(raw));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok((token, true))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let (t2, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(t1, t2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(token_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let tok = ApiToken::from_secret(&t1);
        assert!(tok.verify(&t1));
        assert!(!tok.verify("sgt_wrong"));
    }
}
