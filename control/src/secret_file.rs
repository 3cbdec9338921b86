//! Small files holding a secret (the API token, the RADIUS shared secret):
//! read trimmed, written with mode 0600 to a temporary file that is fsynced
//! and renamed over the old one (a crash leaves the old secret or the new
//! one, never a torn or empty file; an old file's mode or hard links are not
//! inherited).
//!
//! Also the helpers that keep the data directory private: the directory
//! itself 0700 ([`create_private_dir`]), its database files 0600
//! ([`ensure_private_file`]).

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// The file's trimmed text; `None` if it is missing or blank.
pub fn read(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `secret` and a newline, readable by the owner only: to
/// `{path}.tmp` (mode 0600, fsynced), renamed over `path`, then the
/// directory fsynced so the rename is durable.
pub fn write(path: &Path, secret: &str) -> io::Result<()> {
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    // `create_new`: never write through a file (or link) someone left there.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            // The umask cannot widen 0600, but be explicit.
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(secret.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(path);
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Best effort: makes a rename in `path`'s directory durable.
fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates `dir` (and its parents) if need be and makes it accessible to
/// the owner only (0700), also when it existed with a wider mode.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
    }
}

/// Makes sure `path` exists and is readable and writable by the owner only
/// (0600): created empty if missing, tightened if it was wider. Called on a
/// database file before the database opens it (redb creates files with the
/// process umask, typically 0644).
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    drop(f);
    Ok(())
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

    /// The secret is written to a new file and renamed: an old file that
    /// was world-readable (or a hard link to elsewhere) is not written
    /// through, and no `.tmp` is left behind.
    #[cfg(unix)]
    #[test]
    fn replaced_by_rename_never_written_in_place() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.token");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("elsewhere");
        fs::hard_link(&path, &link).unwrap();
        write(&path, "new").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("new"));
        assert_eq!(fs::read_to_string(&link).unwrap(), "old\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!temp_path(&path).exists());
    }

    #[cfg(unix)]
    #[test]
    fn private_dir_and_file_modes() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/data");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("x.redb");
        ensure_private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        fs::write(&f, b"keep").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(fs::read(&f).unwrap(), b"keep");
    }
}
