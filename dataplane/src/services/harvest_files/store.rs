//! Harvest Files on disk, under `{data_dir}/harvest-files/{scope}/`: one
//! file per stored file, at its own path, so the tree is what a listing
//! shows. Each file is the content followed by a trailer (the metadata as
//! JSON, its length as a little-endian `u32`, `SGHF`), so content and
//! metadata are replaced together by one `rename`.
//!
//! Writes go to `.tmp/` first, are fsynced, then renamed into place (and
//! the directory fsynced): a reader sees the old file or the new one, and
//! a crash leaves at most a temp file, removed at the next start. The
//! bytes stored (content and trailers) count against a budget, checked at
//! the rename; each file against a size limit, checked while it arrives.
//!
//! Paths are [`FilePath`]s, which cannot hold `..` or separators, and the
//! store never follows a symlink it finds (it makes none), so nothing
//! outside the scope's directory is ever read or written. Every call
//! blocks: callers run them on the blocking pool.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::path::FilePath;

const MAGIC: &[u8; 4] = b"SGHF";
/// The trailer's length and magic.
const TAIL: u64 = 8;
const TMP_DIR: &str = ".tmp";

/// SORACOM's scopes: `private` holds what devices and operators upload;
/// `public` is SORACOM's own (read-only here, and empty unless an operator
/// puts files in its directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Private,
    Public,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "private" => Some(Self::Private),
            "public" => Some(Self::Public),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
        }
    }
}

/// What is known of a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub content_type: String,
    pub content_length: u64,
    /// Unix ms of the first upload to this path (kept on overwrite).
    pub created_time: u64,
    /// Unix ms of the latest upload.
    pub last_modified_time: u64,
    /// Lowercase hex SHA-256 of the content.
    pub etag: String,
}

/// Whether a PUT made the file or replaced it (SORACOM: 201 or 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such file")]
    NotFound,
    #[error("no such directory")]
    NoSuchDirectory,
    #[error("the file is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("the Harvest Files disk budget ({budget} bytes) is used up")]
    BudgetExceeded { budget: u64 },
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the directory is not empty")]
    NotEmpty,
    #[error("a stored file is damaged")]
    Corrupt,
    #[error("storage I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: FilePath,
    /// `None` for a directory.
    pub meta: Option<Meta>,
}

/// The files of both scopes, with their limits.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    max_file_bytes: u64,
    /// 0: no limit.
    budget_bytes: u64,
    /// Bytes stored; also the lock every change of the tree holds, so that
    /// the budget check, the rename and the pruning of empty directories
    /// never interleave.
    used: Mutex<u64>,
}

impl FileStore {
    /// Opens (or creates) the store at `root`, removes temp files a crash
    /// left, and counts what is stored.
    pub fn open(root: &Path, max_file_bytes: u64, budget_bytes: u64) -> io::Result<Self> {
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp)?;
        for e in fs::read_dir(&tmp)? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::remove_file(e.path())?;
            }
        }
        let mut used = 0;
        for scope in [Scope::Private, Scope::Public] {
            let dir = root.join(scope.as_str());
            fs::create_dir_all(&dir)?;
            used += tree_bytes(&dir)?;
        }
        Ok(Self {
            root: root.to_owned(),
            max_file_bytes,
            budget_bytes,
            used: Mutex::new(used),
        })
    }

    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Bytes stored now (content and trailers).
    pub fn used_bytes(&self) -> u64 {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // The count is only ever replaced whole; a panic elsewhere does not
        // leave it half-written.
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn scope_dir(&self, scope: Scope) -> PathBuf {
        self.root.join(scope.as_str())
    }

    fn place(&self, scope: Scope, path: &FilePath) -> PathBuf {
        let mut p = self.scope_dir(scope);
        for part in path.parts() {
            p.push(part);
        }
        p
    }

    /// Starts an upload into a fresh temp file.
    pub fn begin(&self) -> io::Result<Upload> {
        let path = self
            .root
            .join(TMP_DIR)
            .join(format!("{:032x}", rand::random::<u128>()));
        let file = File::create_new(&path)?;
        Ok(Upload {
            path,
            file,
            hasher: Sha256::new(),
            len: 0,
            limit: self.max_file_bytes,
            committed: false,
        })
    }

    /// Finishes `upload` and puts it at `path`, replacing a file there.
    pub fn commit(
        &self,
        mut upload: Upload,
        scope: Scope,
        path: &FilePath,
        content_type: &str,
        now_ms: u64,
    ) -> Result<PutOutcome, StoreError> {
        if path.is_root() {
            return Err(StoreError::Conflict("the root is a directory"));
        }
        let target = self.place(scope, path);
        // Outside the lock: at worst a concurrent first upload's time is
        // taken for the other's.
        let created_time = match File::open(&target).map_err(StoreError::from) {
            Ok(mut f) => read_meta(&mut f).map_or(now_ms, |m| m.created_time),
            Err(_) => now_ms,
        };
        let etag = hex::encode(upload.hasher.finalize_reset());
        let meta = Meta {
            content_type: content_type.to_owned(),
            content_length: upload.len,
            created_time,
            last_modified_time: now_ms,
            etag,
        };
        let json = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        let json_len = u32::try_from(json.len()).map_err(|_| StoreError::Corrupt)?;
        upload.file.write_all(&json)?;
        upload.file.write_all(&json_len.to_le_bytes())?;
        upload.file.write_all(MAGIC)?;
        upload.file.sync_all()?;
        let size = upload.len + u64::from(json_len) + TAIL;

        let mut used = self.lock();
        let scope_dir = self.scope_dir(scope);
        let parent = self.make_dirs(&scope_dir, &path.parent())?;
        let old = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => Some(m.len()),
            Ok(_) => {
                prune_empty(&scope_dir, &parent);
                return Err(StoreError::Conflict(
                    "a directory already has this path; delete it first",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let next = used.saturating_sub(old.unwrap_or(0)) + size;
        if self.budget_bytes > 0 && next > self.budget_bytes {
            prune_empty(&scope_dir, &parent);
            return Err(StoreError::BudgetExceeded {
                budget: self.budget_bytes,
            });
        }
        fs::rename(&upload.path, &target)?;
        upload.committed = true;
        sync_dir(&parent)?;
        *used = next;
        Ok(if old.is_some() {
            PutOutcome::Replaced
        } else {
            PutOutcome::Created
        })
    }

    /// Makes the directories of `dir` under `scope_dir`; a file in the way
    /// is a conflict (on disk a name is a file or a directory, not both).
    fn make_dirs(&self, scope_dir: &Path, dir: &FilePath) -> Result<PathBuf, StoreError> {
        let mut p = scope_dir.to_owned();
        for part in dir.parts() {
            p.push(part);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(StoreError::Conflict(
                        "a file already has the name of a directory in this path",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&p)?;
                    if let Some(up) = p.parent() {
                        sync_dir(up)?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(p)
    }

    /// Opens a file for reading: its metadata, and the handle positioned at
    /// the start of the content (`content_length` bytes, then the trailer).
    pub fn open_file(&self, scope: Scope, path: &FilePath) -> Result<(Meta, File), StoreError> {
        if path.is_root() {
            return Err(StoreError::NotFound);
        }
        let target = self.place(scope, path);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(StoreError::NotFound),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        }
        // One handle for metadata and content: a rename in between cannot
        // pair one upload's metadata with another's bytes.
        let mut f = match File::open(&target) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let meta = read_meta(&mut f)?;
        f.seek(SeekFrom::Start(0))?;
        Ok((meta, f))
    }

    /// Deletes a file; directories it leaves empty go too.
    pub fn delete(&self, scope: Scope, path: &FilePath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::NotFound);
        }
        let target = self.place(scope, path);
        let mut used = self.lock();
        let len = match fs::symlink_metadata(&target) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Err(StoreError::NotFound),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        fs::remove_file(&target)?;
        *used = used.saturating_sub(len);
        let scope_dir = self.scope_dir(scope);
        let parent = self.place(scope, &path.parent());
        sync_dir(&parent)?;
        prune_empty(&scope_dir, &parent);
        Ok(())
    }

    /// Deletes an empty directory (SORACOM: `400` when it is not empty).
    pub fn delete_dir(&self, scope: Scope, path: &FilePath) -> Result<(), StoreError> {
        if path.is_root() {
            return Err(StoreError::Conflict("the root cannot be deleted"));
        }
        let target = self.place(scope, path);
        let _used = self.lock();
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(StoreError::NoSuchDirectory),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchDirectory)
            }
            Err(e) => return Err(e.into()),
        }
        match fs::remove_dir(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                return Err(StoreError::NotEmpty)
            }
            Err(e) => return Err(e.into()),
        }
        let scope_dir = self.scope_dir(scope);
        let parent = self.place(scope, &path.parent());
        sync_dir(&parent)?;
        prune_empty(&scope_dir, &parent);
        Ok(())
    }

    /// A page of the directory `dir`: entries named after `after`, in
    /// ascending byte order of their names, at most `limit`; and the key of
    /// the next page when more follow.
    pub fn list(
        &self,
        scope: Scope,
        dir: &FilePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Listed>, Option<String>), StoreError> {
        let at = self.place(scope, dir);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(StoreError::NoSuchDirectory),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoSuchDirectory)
            }
            Err(e) => return Err(e.into()),
        }
        let mut names = Vec::new();
        for e in fs::read_dir(&at)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let kind = e.file_type()?;
            if kind.is_dir() || kind.is_file() {
                names.push((name, kind.is_dir()));
            }
        }
        let (names, next) = page(names, after, limit);
        let mut out = Vec::with_capacity(names.len());
        for (name, is_dir) in names {
            // Names not made through a FilePath (someone else's files) are
            // left out rather than shown with a path that cannot be asked for.
            let Ok(path) = dir.child(&name) else {
                continue;
            };
            if is_dir {
                out.push(Listed { path, meta: None });
                continue;
            }
            let meta = File::open(at.join(&name))
                .map_err(StoreError::from)
                .and_then(|mut f| read_meta(&mut f));
            match meta {
                Ok(meta) => out.push(Listed {
                    path,
                    meta: Some(meta),
                }),
                // Gone since read_dir, or not ours: not listed.
                Err(e) => tracing::debug!(file = %path, error = %e, "harvest files: entry skipped"),
            }
        }
        Ok((out, next))
    }
}

/// Sorts `names` by their bytes and takes the page after `after`.
pub fn page(
    mut names: Vec<(String, bool)>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<(String, bool)>, Option<String>) {
    names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let start = after.map_or(0, |a| {
        names.partition_point(|(n, _)| n.as_bytes() <= a.as_bytes())
    });
    let rest = names.len() - start;
    let mut page: Vec<_> = names.into_iter().skip(start).take(limit).collect();
    let next = (rest > limit && limit > 0)
        .then(|| page.last().map(|(n, _)| n.clone()))
        .flatten();
    page.truncate(limit);
    (page, next)
}

/// A file being received.
#[derive(Debug)]
pub struct Upload {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
    limit: u64,
    committed: bool,
}

impl Upload {
    /// Appends `chunk`, refusing to grow past the size limit.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let len = self.len + chunk.len() as u64;
        if len > self.limit {
            return Err(StoreError::TooLarge { limit: self.limit });
        }
        self.file.write_all(chunk)?;
        self.hasher.update(chunk);
        self.len = len;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reads the trailer of an open file.
fn read_meta(f: &mut File) -> Result<Meta, StoreError> {
    let total = f.metadata()?.len();
    if total < TAIL {
        return Err(StoreError::Corrupt);
    }
    f.seek(SeekFrom::Start(total - TAIL))?;
    let mut tail = [0u8; TAIL as usize];
    f.read_exact(&mut tail)?;
    let (len, magic) = tail.split_at(4);
    if magic != MAGIC {
        return Err(StoreError::Corrupt);
    }
    let json_len = u64::from(u32::from_le_bytes(
        len.try_into().map_err(|_| StoreError::Corrupt)?,
    ));
    let content_len = total
        .checked_sub(TAIL + json_len)
        .ok_or(StoreError::Corrupt)?;
    f.seek(SeekFrom::Start(content_len))?;
    let mut json = vec![0u8; usize::try_from(json_len).map_err(|_| StoreError::Corrupt)?];
    f.read_exact(&mut json)?;
    let meta: Meta = serde_json::from_slice(&json).map_err(|_| StoreError::Corrupt)?;
    if meta.content_length != content_len {
        return Err(StoreError::Corrupt);
    }
    Ok(meta)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `dir` and its ancestors while they are empty, stopping at
/// `scope_dir` (which stays).
fn prune_empty(scope_dir: &Path, dir: &Path) {
    let mut d = dir.to_owned();
    while d != scope_dir && d.starts_with(scope_dir) {
        if fs::remove_dir(&d).is_err() {
            break;
        }
        if let Some(up) = d.parent() {
            let _ = sync_dir(up);
            d = up.to_owned();
        } else {
            break;
        }
    }
}

fn tree_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let kind = e.file_type()?;
        if kind.is_dir() {
            total += tree_bytes(&e.path())?;
        } else if kind.is_file() {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FilePath {
        FilePath::from_decoded(s).unwrap()
    }

    fn put(store: &FileStore, path: &str, body: &[u8], now: u64) -> Result<PutOutcome, StoreError> {
        let mut up = store.begin()?;
        up.write(body)?;
        store.commit(up, Scope::Private, &p(path), "text/plain", now)
    }

    fn read(store: &FileStore, path: &str) -> (Meta, Vec<u8>) {
        let (meta, mut f) = store.open_file(Scope::Private, &p(path)).unwrap();
        let mut buf = vec![0; usize::try_from(meta.content_length).unwrap()];
        f.read_exact(&mut buf).unwrap();
        (meta, buf)
    }

    #[test]
    fn put_get_replace_delete_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), 1000, 0).unwrap();
        assert_eq!(
            put(&store, "/a/b/c.txt", b"one", 10).unwrap(),
            PutOutcome::Created
        );
        let (meta, body) = read(&store, "/a/b/c.txt");
        assert_eq!(body, b"one");
        assert_eq!(meta.content_length, 3);
        assert_eq!(meta.etag, hex::encode(Sha256::digest(b"one")));
        assert_eq!(
            put(&store, "/a/b/c.txt", b"second", 20).unwrap(),
            PutOutcome::Replaced
        );
        let (meta, body) = read(&store, "/a/b/c.txt");
        assert_eq!(body, b"second");
        assert_eq!((meta.created_time, meta.last_modified_time), (10, 20));
        let used = store.used_bytes();
        assert_eq!(used, tree_bytes(&dir.path().join("private")).unwrap());
        // Reopening counts the same bytes.
        assert_eq!(
            FileStore::open(dir.path(), 1000, 0).unwrap().used_bytes(),
            used
        );

        assert!(matches!(
            store.delete_dir(Scope::Private, &p("/a/b")),
            Err(StoreError::NotEmpty)
        ));
        store.delete(Scope::Private, &p("/a/b/c.txt")).unwrap();
        assert_eq!(store.used_bytes(), 0);
        assert!(!dir.path().join("private/a").exists(), "empty dirs pruned");
        assert!(matches!(
            store.open_file(Scope::Private, &p("/a/b/c.txt")),
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete(Scope::Private, &p("/a/b/c.txt")),
            Err(StoreError::NotFound)
        ));
        assert!(
            dir.path()
                .join(TMP_DIR)
                .read_dir()
                .unwrap()
                .next()
                .is_none(),
            "no temp files left"
        );
    }

    #[test]
    fn file_and_directory_names_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), 1000, 0).unwrap();
        put(&store, "/a", b"x", 1).unwrap();
        assert!(matches!(
            put(&store, "/a/b", b"y", 2),
            Err(StoreError::Conflict(_))
        ));
        put(&store, "/d/e", b"x", 1).unwrap();
        assert!(matches!(
            put(&store, "/d", b"y", 2),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn limits_and_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), 10, 200).unwrap();
        let mut up = store.begin().unwrap();
        up.write(b"0123456789").unwrap();
        assert!(matches!(
            up.write(b"x"),
            Err(StoreError::TooLarge { limit: 10 })
        ));
        drop(up);
        let mut n = 0;
        let err = loop {
            match put(&store, &format!("/f{n}"), b"0123456789", 1) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, StoreError::BudgetExceeded { budget: 200 }),
            "{err}"
        );
        assert!(n > 0);
        assert!(store.used_bytes() <= 200);
        // A replacement of the same size still fits.
        put(&store, "/f0", b"abcdefghij", 2).unwrap();
        // Deleting makes room again.
        store.delete(Scope::Private, &p("/f0")).unwrap();
        put(&store, &format!("/f{n}"), b"0123456789", 3).unwrap();
        assert!(dir
            .path()
            .join(TMP_DIR)
            .read_dir()
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn listing_pages_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), 1000, 0).unwrap();
        for name in ["b", "a", "C", "d/x"] {
            put(&store, &format!("/top/{name}"), b"1", 1).unwrap();
        }
        let (first, next) = store.list(Scope::Private, &p("/top"), None, 2).unwrap();
        let names: Vec<_> = first.iter().map(|l| l.path.to_string()).collect();
        assert_eq!(names, ["/top/C", "/top/a"]);
        assert_eq!(next.as_deref(), Some("a"));
        let (second, next) = store
            .list(Scope::Private, &p("/top"), Some("a"), 2)
            .unwrap();
        let names: Vec<_> = second
            .iter()
            .map(|l| (l.path.to_string(), l.meta.is_none()))
            .collect();
        assert_eq!(names, [("/top/b".into(), false), ("/top/d".into(), true)]);
        assert_eq!(next, None);
        assert!(matches!(
            store.list(Scope::Private, &p("/nope"), None, 10),
            Err(StoreError::NoSuchDirectory)
        ));
        assert!(store
            .list(Scope::Public, &FilePath::root(), None, 10)
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn paging_edges() {
        let names = |v: &[&str]| {
            v.iter()
                .map(|n| ((*n).to_owned(), false))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            page(names(&["a", "b"]), None, 2),
            (names(&["a", "b"]), None)
        );
        assert_eq!(
            page(names(&["a", "b", "c"]), Some("a"), 1),
            (names(&["b"]), Some("b".into()))
        );
        assert_eq!(page(names(&["a"]), Some("zz"), 5), (vec![], None));
        assert_eq!(
            page(names(&["a", "c"]), Some("b"), 5),
            (names(&["c"]), None)
        );
    }

    #[test]
    fn damaged_files_are_refused_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), 1000, 0).unwrap();
        fs::write(dir.path().join("private/raw"), b"no trailer").unwrap();
        assert!(matches!(
            store.open_file(Scope::Private, &p("/raw")),
            Err(StoreError::Corrupt)
        ));
        assert!(store
            .list(Scope::Private, &FilePath::root(), None, 10)
            .unwrap()
            .0
            .is_empty());
    }
}
