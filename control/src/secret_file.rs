//! Small files holding a secret (the API token, the RADIUS shared secret):
//! read trimmed, written with mode 0600 and fsynced.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

/// The file's trimmed text; `None` if it is missing or blank.
pub fn read(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `secret` and a newline, readable by the owner only.
pub fn write(path: &Path, secret: &str) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        // `mode` applies only when the file is created; tighten an old one.
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Reads the secret, or creates it with `generate` on first use.
pub fn load_or_create(path: &Path, generate: impl FnOnce() -> String) -> io::Result<String> {
    if let Some(s) = read(path)? {
        return Ok(s);
    }
    let s = generate();
    write(path, &s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("simgate-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = fs::remove_file(&path);
        assert_eq!(read(&path).unwrap(), None);
        assert_eq!(load_or_create(&path, || "abc".into()).unwrap(), "abc");
        assert_eq!(load_or_create(&path, || "other".into()).unwrap(), "abc");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
