//! A local directory tree that sweep may delete in, and nowhere else (SPEC §5 rule 1).
//!
//! Every path comes in relative to the root (or absolute but inside it) and is checked before
//! anything is touched: `..`, absolute paths elsewhere, and parents that resolve outside the
//! root through a symlink are refused. The last component is never followed: a symlink is
//! deleted as a link, and directory trees are removed without following links inside them.

use crate::names;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// Why a path was refused or a deletion failed; each names the path and the cause.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("refused {path:?}: {why} (it would leave {root})")]
    Outside { path: String, root: String, why: &'static str },
    #[error("refused {path:?}: it is a directory, not a file")]
    IsDir { path: String },
    #[error("unable to delete {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("root {root} is not usable: {source}")]
    Root { root: String, source: io::Error },
}

/// What a deletion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// It was there and is gone.
    Deleted,
    /// It was already gone (a success: deletion is idempotent).
    Missing,
    /// A directory to remove only when empty was not empty: left as it is.
    NotEmpty,
}

/// Facts about one entry, read without following a final symlink.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub bytes: u64,
    pub modified: SystemTime,
    pub is_dir: bool,
    pub is_symlink: bool,
}

/// Parent directories already checked in this batch, and what was found.
#[derive(Debug, Default)]
pub struct ParentCache {
    states: std::collections::HashMap<PathBuf, ParentState>,
    /// Directories opened without following links, by path relative to the root (Unix);
    /// shared by the caches of one run (`SharedDirs`).
    #[cfg(unix)]
    dirs: std::sync::Arc<dirfd::DirFds>,
}

/// Open directories under one root, shared by every batch of a run: each directory is opened
/// once, not once per batch. An open directory cannot be swapped for a symlink under sweep (the
/// descriptor keeps naming the directory it opened).
#[derive(Debug, Clone, Default)]
pub struct SharedDirs(#[cfg(unix)] std::sync::Arc<dirfd::DirFds>);

impl ParentCache {
    /// A cache that opens directories through `dirs`.
    pub fn sharing(#[allow(unused_variables)] dirs: &SharedDirs) -> ParentCache {
        ParentCache {
            states: Default::default(),
            #[cfg(unix)]
            dirs: dirs.0.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ParentState {
    Inside,
    Missing,
    Outside,
}

/// A confined root directory.
#[derive(Debug, Clone)]
pub struct LocalRoot {
    name: String,
    root: PathBuf,
}

impl LocalRoot {
    /// Open an existing directory as a root; `name` appears in targets (`media:path`).
    pub fn open(name: &str, dir: &Path) -> Result<LocalRoot, LocalError> {
        let root =
            fs::canonicalize(dir).map_err(|source| LocalError::Root { root: dir.display().to_string(), source })?;
        if !root.is_dir() {
            return Err(LocalError::Root {
                root: dir.display().to_string(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(LocalRoot { name: name.to_string(), root })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `name:rel`, the target string used in plans and reports.
    pub fn target(&self, rel: &str) -> String {
        format!("{}:{}", self.name, rel)
    }

    /// Normalise a stored path into one relative to the root, or refuse it. Absolute paths are
    /// accepted only when they lie inside the root.
    pub fn relativize(&self, stored: &str) -> Result<String, LocalError> {
        let refuse = |why| LocalError::Outside { path: stored.to_string(), root: self.root.display().to_string(), why };
        if stored.is_empty() || stored.contains('\0') {
            return Err(refuse("empty or holds a NUL byte"));
        }
        let p = Path::new(stored);
        let rel: PathBuf = if p.is_absolute() || stored.starts_with('/') || stored.starts_with('\\') {
            match p.strip_prefix(&self.root) {
                Ok(r) => r.to_path_buf(),
                Err(_) => return Err(refuse("an absolute path outside the root")),
            }
        } else {
            p.to_path_buf()
        };
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                // A name written in escaped form (not UTF-8 on disk) must decode to one name.
                Component::Normal(s) if s.to_str().is_some_and(|t| t.starts_with(names::ESCAPED)) => {
                    let t = s.to_str().unwrap_or_default();
                    if names::decode_component(t).is_none() {
                        return Err(refuse("an escaped name that does not decode to one name"));
                    }
                    parts.push(t.to_string())
                }
                Component::Normal(s) => parts.push(names::encode_component(s)),
                Component::CurDir => {}
                Component::ParentDir => return Err(refuse("it contains '..'")),
                Component::RootDir | Component::Prefix(_) => return Err(refuse("an absolute path")),
            }
        }
        if parts.is_empty() {
            return Err(refuse("it names the root itself"));
        }
        if parts.iter().any(|s| s.contains('\\')) && cfg!(windows) {
            return Err(refuse("it contains a backslash"));
        }
        Ok(parts.join("/"))
    }

    /// The path on disk of a normalised relative path (escaped names decoded); not checked.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        match names::decode_rel(rel) {
            Some(p) => self.root.join(p),
            None => self.root.join(rel),
        }
    }

    /// The absolute path for a relative one, after checking that its parent directory resolves
    /// inside the root (no symlinked parent leads out). `Ok(None)` when the parent is missing.
    pub fn resolve(&self, rel: &str) -> Result<Option<PathBuf>, LocalError> {
        self.resolve_with(rel, &mut ParentCache::default())
    }

    /// `resolve`, checking each distinct parent directory once per cache. Many files share a
    /// few directories, so a batch costs one `canonicalize` per directory, not per file.
    pub fn resolve_with(&self, rel: &str, cache: &mut ParentCache) -> Result<Option<PathBuf>, LocalError> {
        let rel = self.relativize(rel)?;
        let full = self.path_of(&rel);
        let parent = full.parent().expect("a joined relative path has a parent").to_path_buf();
        let state = match cache.states.get(&parent) {
            Some(s) => *s,
            None => {
                let s = match fs::canonicalize(&parent) {
                    Ok(real) if real.starts_with(&self.root) => ParentState::Inside,
                    Ok(_) => ParentState::Outside,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => ParentState::Missing,
                    Err(source) => return Err(LocalError::Io { path: full.display().to_string(), source }),
                };
                cache.states.insert(parent, s);
                s
            }
        };
        match state {
            ParentState::Inside => Ok(Some(full)),
            ParentState::Missing => Ok(None),
            ParentState::Outside => Err(LocalError::Outside {
                path: rel,
                root: self.root.display().to_string(),
                why: "a parent directory is a symlink that leads out",
            }),
        }
    }

    /// The parent directory of `rel`, opened from the root without following links (once per
    /// run through the cache), and `rel` normalised.
    #[cfg(unix)]
    fn open_parent(&self, rel: &str, cache: &mut ParentCache) -> Result<(dirfd::Dir, String), LocalError> {
        let rel = self.relativize(rel)?;
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        let dir = cache.dirs.open(&self.root, parent).map_err(|e| self.io_error(&rel, e))?;
        Ok((dir, rel))
    }

    #[cfg(unix)]
    fn io_error(&self, rel: &str, source: io::Error) -> LocalError {
        LocalError::Io { path: self.path_of(rel).display().to_string(), source }
    }

    /// Facts about an entry (not following a final symlink); `None` if it does not exist.
    pub fn stat(&self, rel: &str) -> Result<Option<Entry>, LocalError> {
        self.stat_with(rel, &mut ParentCache::default())
    }

    /// `stat` with a shared parent-directory cache (for batches).
    pub fn stat_with(&self, rel: &str, cache: &mut ParentCache) -> Result<Option<Entry>, LocalError> {
        #[cfg(unix)]
        {
            // As for deletion: relative to the parent opened without following links.
            let (dir, rel) = self.open_parent(rel, cache)?;
            match dir {
                dirfd::Dir::Open(fd) => {
                    use rustix::fs::{statat, AtFlags, FileType};
                    return match statat(&*fd, file_name(&rel).as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => {
                            let t = FileType::from_raw_mode(st.st_mode);
                            let modified = SystemTime::UNIX_EPOCH
                                + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
                            Ok(Some(Entry {
                                bytes: if t.is_file() { st.st_size as u64 } else { 0 },
                                modified,
                                is_dir: t.is_dir(),
                                is_symlink: t.is_symlink(),
                            }))
                        }
                        Err(rustix::io::Errno::NOENT) => Ok(None),
                        Err(e) => Err(self.io_error(&rel, e.into())),
                    };
                }
                dirfd::Dir::Missing => return Ok(None),
                dirfd::Dir::Linked => {}
            }
        }
        Ok(self.existing(rel, cache)?.map(|(_, m)| Entry {
            bytes: if m.is_file() { m.len() } else { 0 },
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            is_dir: m.is_dir(),
            is_symlink: m.file_type().is_symlink(),
        }))
    }

    /// The checked absolute path and its metadata (a final symlink not followed), or `None`
    /// when nothing is there.
    fn existing(&self, rel: &str, cache: &mut ParentCache) -> Result<Option<(PathBuf, fs::Metadata)>, LocalError> {
        let Some(full) = self.resolve_with(rel, cache)? else {
            return Ok(None);
        };
        match fs::symlink_metadata(&full) {
            Ok(m) => Ok(Some((full, m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LocalError::Io { path: full.display().to_string(), source }),
        }
    }

    /// Delete a file, or a symlink as a link. A directory is refused.
    pub fn delete_file(&self, rel: &str) -> Result<Removed, LocalError> {
        self.delete_file_with(rel, &mut ParentCache::default())
    }

    /// `delete_file` with a shared parent-directory cache (for batches).
    pub fn delete_file_with(&self, rel: &str, cache: &mut ParentCache) -> Result<Removed, LocalError> {
        #[cfg(unix)]
        {
            // The fast path: the parent is opened component by component from the root without
            // following any link (once per directory per batch), then the file is unlinked
            // relative to it. No path is resolved again at deletion time.
            let (dir, rel) = self.open_parent(rel, cache)?;
            let name = file_name(&rel);
            match dir {
                dirfd::Dir::Open(fd) => {
                    return match rustix::fs::unlinkat(&*fd, name.as_os_str(), rustix::fs::AtFlags::empty()) {
                        Ok(()) => Ok(Removed::Deleted),
                        Err(rustix::io::Errno::NOENT) => Ok(Removed::Missing),
                        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM)
                            if rustix::fs::statat(&*fd, name.as_os_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir()) =>
                        {
                            Err(LocalError::IsDir { path: rel })
                        }
                        Err(e) => Err(self.io_error(&rel, e.into())),
                    };
                }
                dirfd::Dir::Missing => return Ok(Removed::Missing),
                // A symlinked parent: the checked path below decides whether it stays inside.
                dirfd::Dir::Linked => {}
            }
        }
        let Some(full) = self.resolve_with(rel, cache)? else {
            return Ok(Removed::Missing);
        };
        // unlink(2) never follows a symlink and refuses a directory, so no stat is needed first:
        // only a failure is looked at more closely.
        match remove_link_or_file(&full) {
            Ok(()) => Ok(Removed::Deleted),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::Missing),
            Err(_) if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) => {
                Err(LocalError::IsDir { path: rel.to_string() })
            }
            Err(source) => Err(LocalError::Io { path: full.display().to_string(), source }),
        }
    }

    /// Delete a directory tree without following any link in it; a symlink is removed as a
    /// link, a plain file as a file.
    pub fn delete_dir(&self, rel: &str) -> Result<Removed, LocalError> {
        self.delete_dir_with(rel, &mut ParentCache::default())
    }

    /// `delete_dir` with a shared parent-directory cache (for batches).
    pub fn delete_dir_with(&self, rel: &str, cache: &mut ParentCache) -> Result<Removed, LocalError> {
        let Some((full, meta)) = self.existing(rel, cache)? else {
            return Ok(Removed::Missing);
        };
        let io_err = |source| LocalError::Io { path: full.display().to_string(), source };
        let result = if meta.file_type().is_symlink() {
            remove_link_or_file(&full)
        } else if meta.is_dir() {
            // std's remove_dir_all does not follow symlinks inside the tree.
            fs::remove_dir_all(&full)
        } else {
            // A file where a directory was expected (a bundle stored as one file): remove it.
            remove_link_or_file(&full)
        };
        match result {
            Ok(()) => Ok(Removed::Deleted),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::Missing),
            Err(e) => Err(io_err(e)),
        }
    }

    /// The entries of a directory under the root: (name, is a directory), never following
    /// links (a link is listed as not a directory). Names that are not UTF-8 are escaped
    /// (`names`).
    pub fn list_dir(&self, rel: &str) -> Result<Vec<(String, bool)>, LocalError> {
        let Some(full) = self.resolve(rel)? else {
            return Ok(Vec::new());
        };
        let io_err = |source| LocalError::Io { path: full.display().to_string(), source };
        let mut out = Vec::new();
        for e in fs::read_dir(&full).map_err(io_err)? {
            let e = e.map_err(io_err)?;
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            out.push((names::encode_component(&e.file_name()), is_dir));
        }
        Ok(out)
    }

    /// Remove a directory only if it is empty (`rmdir`: never a file, never through a link).
    pub fn remove_empty_dir_with(&self, rel: &str, cache: &mut ParentCache) -> Result<Removed, LocalError> {
        let Some((full, meta)) = self.existing(rel, cache)? else {
            return Ok(Removed::Missing);
        };
        if !meta.is_dir() || full == self.root {
            return Err(LocalError::Io {
                path: full.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a directory under the root: left alone"),
            });
        }
        match fs::remove_dir(&full) {
            Ok(()) => Ok(Removed::Deleted),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::Missing),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(Removed::NotEmpty),
            Err(source) => Err(LocalError::Io { path: full.display().to_string(), source }),
        }
    }

    /// Replace a file with `<file>.gz` (same modification time) and remove the original. The
    /// copy is written beside it under a temporary name and renamed into place, so a crash
    /// leaves either the original or both, never a truncated log.
    pub fn gzip_file_with(&self, rel: &str, cache: &mut ParentCache) -> Result<Removed, LocalError> {
        let Some((full, meta)) = self.existing(rel, cache)? else {
            return Ok(Removed::Missing);
        };
        if !meta.is_file() {
            return Err(LocalError::IsDir { path: rel.to_string() });
        }
        let io_err = |source| LocalError::Io { path: full.display().to_string(), source };
        let mut gz_name = full.file_name().unwrap_or_default().to_os_string();
        gz_name.push(".gz");
        let gz = full.with_file_name(&gz_name);
        let mut tmp_name = gz_name.clone();
        tmp_name.push(".tmp");
        let tmp = full.with_file_name(tmp_name);
        let write = || -> io::Result<()> {
            let mut input = fs::File::open(&full)?;
            let out = fs::File::create(&tmp)?;
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            io::copy(&mut input, &mut enc)?;
            let out = enc.finish()?;
            out.sync_all()?;
            out.set_modified(meta.modified()?)?;
            drop(out);
            fs::rename(&tmp, &gz)?;
            fs::remove_file(&full)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(e)
        })?;
        Ok(Removed::Deleted)
    }

    /// Remove empty directories under `rel` (deepest first), never the root itself.
    pub fn prune_empty_dirs(&self, rel: &str) -> usize {
        let Ok(Some(start)) = self.resolve(rel) else {
            return 0;
        };
        let mut removed = 0;
        let dirs: Vec<PathBuf> = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .contents_first(true)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        for d in dirs {
            if d != self.root && d.starts_with(&self.root) && fs::remove_dir(&d).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// Copy a file, or a directory tree (never following links; links are not copied), to `dst`.
/// With `keep_mtime` each file keeps its modification time: a backup put back is as old as the
/// original, so age rules treat it as they did before. (cleanup-ops' own backups are aged by
/// their copy time instead: seed 002 prunes them 7 days after they are made.)
pub fn copy_tree(src: &Path, dst: &Path, keep_mtime: bool) -> io::Result<()> {
    let copy_file = |from: &Path, to: &Path| -> io::Result<()> {
        fs::copy(from, to)?;
        if keep_mtime {
            let mtime = fs::metadata(from)?.modified()?;
            fs::File::options().write(true).open(to)?.set_modified(mtime)?;
        }
        Ok(())
    };
    if fs::symlink_metadata(src)?.is_dir() {
        for e in walkdir::WalkDir::new(src).follow_links(false) {
            let e = e.map_err(io::Error::other)?;
            let to = dst.join(e.path().strip_prefix(src).expect("walked under src"));
            if e.file_type().is_dir() {
                fs::create_dir_all(&to)?;
            } else if e.file_type().is_file() {
                copy_file(e.path(), &to)?;
            }
        }
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    copy_file(src, dst)
}

/// The last component of a normalised relative path, as the name on disk.
#[cfg(unix)]
fn file_name(rel: &str) -> std::ffi::OsString {
    let name = rel.rsplit_once('/').map_or(rel, |(_, name)| name);
    names::decode_component(name).unwrap_or_else(|| name.into())
}

#[cfg(unix)]
mod dirfd {
    //! Directories under a root opened with `openat(O_NOFOLLOW | O_DIRECTORY)`, one component
    //! at a time: a symlink anywhere on the way is seen, never followed.

    use rustix::fs::{openat, Mode, OFlags, CWD};
    use rustix::io::Errno;
    use std::collections::HashMap;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::sync::Arc;

    /// Open directories by relative path ("" is the root), and those found missing or linked.
    #[derive(Debug, Default)]
    pub struct DirFds(std::sync::Mutex<HashMap<String, Dir>>);

    #[derive(Debug, Clone)]
    pub enum Dir {
        Open(Arc<OwnedFd>),
        Missing,
        /// A component is a symlink (or not a directory): left to the path-checking code.
        Linked,
    }

    /// At most this many directories stay open per cache (a batch rarely touches more).
    const MAX_OPEN: usize = 512;

    impl DirFds {
        pub fn open(&self, root: &Path, rel: &str) -> std::io::Result<Dir> {
            if let Some(d) = self.0.lock().expect("not poisoned").get(rel) {
                return Ok(d.clone());
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let d = match rel.rsplit_once('/') {
                _ if rel.is_empty() => Dir::Open(Arc::new(openat(CWD, root, flags, Mode::empty())?)),
                split => {
                    let (parent, name) = split.unwrap_or(("", rel));
                    let name = crate::names::decode_component(name).unwrap_or_else(|| name.into());
                    match self.open(root, parent)? {
                        Dir::Open(p) => match openat(&*p, name.as_os_str(), flags, Mode::empty()) {
                            Ok(fd) => Dir::Open(Arc::new(fd)),
                            Err(Errno::NOENT) => Dir::Missing,
                            Err(Errno::LOOP) | Err(Errno::NOTDIR) => Dir::Linked,
                            Err(e) => return Err(e.into()),
                        },
                        other => other,
                    }
                }
            };
            let mut map = self.0.lock().expect("not poisoned");
            if map.len() >= MAX_OPEN {
                map.clear();
            }
            map.insert(rel.to_string(), d.clone());
            Ok(d)
        }
    }
}

/// The smallest chunk worth a blocking task of its own: the attachment purge's batches of 100
/// files took about 4% less time in two tasks than in four (seven interleaved pairs).
const MIN_CHUNK: usize = 50;

/// Run `f` over `items` in at most `parallel` blocking tasks, each taking a contiguous chunk of
/// at least `MIN_CHUNK` items; results come back in input order. Filesystem work is done this
/// way rather than one task per file: a task per file costs more in thread hand-offs than the
/// syscall it wraps.
pub async fn in_blocking_chunks<T, R, F>(items: Vec<T>, parallel: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Vec<R> + Send + Sync + 'static,
{
    if items.is_empty() {
        return Vec::new();
    }
    let f = std::sync::Arc::new(f);
    let per = items.len().div_ceil(parallel.max(1)).max(MIN_CHUNK);
    let mut items = items;
    let mut handles = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(per.min(items.len()));
        let chunk = std::mem::replace(&mut items, rest);
        let f = f.clone();
        handles.push(tokio::task::spawn_blocking(move || f(chunk)));
    }
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.expect("a filesystem task panicked"));
    }
    out
}

fn remove_link_or_file(p: &Path) -> io::Result<()> {
    // On Windows a symlink to a directory is removed with remove_dir.
    #[cfg(windows)]
    {
        if let Ok(m) = fs::symlink_metadata(p) {
            if m.file_type().is_symlink() && fs::metadata(p).map(|t| t.is_dir()).unwrap_or(false) {
                return fs::remove_dir(p);
            }
        }
    }
    fs::remove_file(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, LocalRoot) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("media/a")).unwrap();
        fs::write(d.path().join("media/a/x.png"), b"12345").unwrap();
        fs::write(d.path().join("secret.txt"), b"keep me").unwrap();
        let r = LocalRoot::open("media", &d.path().join("media")).unwrap();
        (d, r)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_chunks_keep_the_order_and_are_never_smaller_than_min_chunk() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for (n, parallel, tasks) in [(0, 4, 0), (10, 4, 1), (100, 4, 2), (101, 4, 3), (1000, 4, 4), (1000, 1, 1)] {
            let calls = std::sync::Arc::new(AtomicUsize::new(0));
            let c = calls.clone();
            let out = in_blocking_chunks((0..n).collect::<Vec<usize>>(), parallel, move |chunk| {
                c.fetch_add(1, Ordering::SeqCst);
                chunk.into_iter().map(|i| i * 2).collect()
            })
            .await;
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n} items in order");
            assert_eq!(calls.load(Ordering::SeqCst), tasks, "{n} items, {parallel} at most: tasks");
        }
    }

    #[test]
    fn traversal_and_foreign_absolute_paths_are_refused() {
        let (d, r) = root();
        for bad in ["../secret.txt", "a/../../secret.txt", "/etc/passwd", "", ".", "a/.."] {
            assert!(matches!(r.delete_file(bad), Err(LocalError::Outside { .. })), "{bad:?} must be refused");
        }
        assert!(d.path().join("secret.txt").exists());
        let inside = r.path().join("a/x.png");
        assert_eq!(r.relativize(inside.to_str().unwrap()).unwrap(), "a/x.png");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_deleted_as_links_and_never_lead_out() {
        let (d, r) = root();
        std::os::unix::fs::symlink(d.path().join("secret.txt"), r.path().join("link.txt")).unwrap();
        std::os::unix::fs::symlink(d.path(), r.path().join("out")).unwrap();
        // A file reached through a symlinked parent that leads out is refused.
        assert!(matches!(r.delete_file("out/secret.txt"), Err(LocalError::Outside { .. })));
        // A link is removed as a link; its target survives.
        assert_eq!(r.delete_file("link.txt").unwrap(), Removed::Deleted);
        assert_eq!(r.delete_dir("out").unwrap(), Removed::Deleted);
        assert!(d.path().join("secret.txt").exists());
        assert!(!r.path().join("out").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_shared_directory_cache_deletes_inside_and_refuses_links_that_lead_out() {
        let (d, r) = root();
        fs::create_dir_all(r.path().join("b/c")).unwrap();
        fs::write(r.path().join("b/c/y.png"), b"y").unwrap();
        fs::write(r.path().join("a/z.png"), b"z").unwrap();
        // A symlinked parent that stays inside the root is allowed (through the checked path).
        std::os::unix::fs::symlink(r.path().join("b"), r.path().join("alias")).unwrap();
        std::os::unix::fs::symlink(d.path(), r.path().join("out")).unwrap();
        let shared = SharedDirs::default();
        let mut c1 = ParentCache::sharing(&shared);
        assert_eq!(r.delete_file_with("a/x.png", &mut c1).unwrap(), Removed::Deleted);
        assert_eq!(r.delete_file_with("alias/c/y.png", &mut c1).unwrap(), Removed::Deleted);
        assert!(matches!(r.delete_file_with("out/secret.txt", &mut c1), Err(LocalError::Outside { .. })));
        // A directory swapped for a link after it was opened: the open directory is used, and
        // nothing outside is reached.
        let mut c2 = ParentCache::sharing(&shared);
        fs::rename(r.path().join("a"), r.path().join("a-old")).unwrap();
        std::os::unix::fs::symlink(d.path(), r.path().join("a")).unwrap();
        fs::write(d.path().join("z.png"), b"outside").unwrap();
        assert_eq!(r.delete_file_with("a/z.png", &mut c2).unwrap(), Removed::Deleted);
        assert!(d.path().join("z.png").exists(), "the file outside the root survives");
        assert!(!r.path().join("a-old/z.png").exists(), "the open directory's file went");
        assert!(d.path().join("secret.txt").exists());
        // The link itself is deleted as a link; what it points to survives.
        assert_eq!(r.delete_file_with("a", &mut c2).unwrap(), Removed::Deleted);
        assert!(d.path().join("secret.txt").exists() && d.path().join("z.png").exists());
    }

    #[test]
    fn deleting_what_is_gone_is_a_success() {
        let (_d, r) = root();
        assert_eq!(r.delete_file("a/x.png").unwrap(), Removed::Deleted);
        assert_eq!(r.delete_file("a/x.png").unwrap(), Removed::Missing);
        assert_eq!(r.delete_file("nope/x.png").unwrap(), Removed::Missing);
        assert!(matches!(r.delete_file("a"), Err(LocalError::IsDir { .. })));
    }
}

/// Property tests: whatever a database row or a name on disk says, nothing outside the root is
/// ever resolved, stat'ed as inside, or deleted.
#[cfg(all(test, unix))]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Path segments an attacker or a broken row might hold.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just("".to_string()),
            Just("out".to_string()),
            Just("in".to_string()),
            Just("x.json".to_string()),
            Just("sentinel".to_string()),
            "[a-z./\\\\ %~-]{1,6}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        (proptest::option::of(Just("/")), proptest::collection::vec(segment(), 1..6))
            .prop_map(|(lead, segs)| format!("{}{}", lead.unwrap_or(""), segs.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]
        #[test]
        fn nothing_outside_the_root_is_resolved_or_deleted(paths in proptest::collection::vec(path(), 1..12)) {
            let top = tempfile::tempdir().unwrap();
            let root_dir = top.path().join("root");
            let outside = top.path().join("outside");
            fs::create_dir_all(root_dir.join("a/b")).unwrap();
            fs::create_dir_all(&outside).unwrap();
            fs::write(outside.join("sentinel"), "keep").unwrap();
            fs::write(outside.join("x.json"), "keep").unwrap();
            fs::write(top.path().join("sentinel"), "keep").unwrap();
            fs::write(root_dir.join("a/x.json"), "in").unwrap();
            // A link inside the root that leads out, and one that stays in.
            std::os::unix::fs::symlink(&outside, root_dir.join("out")).unwrap();
            std::os::unix::fs::symlink(root_dir.join("a"), root_dir.join("in")).unwrap();
            let root = LocalRoot::open("t", &root_dir).unwrap();
            let canon_root = fs::canonicalize(&root_dir).unwrap();
            for p in &paths {
                let Ok(rel) = root.relativize(p) else { continue };
                prop_assert!(!rel.split('/').any(|s| s == ".." || s.is_empty()), "{p:?} -> {rel:?}");
                if let Ok(Some(full)) = root.resolve(&rel) {
                    let parent = fs::canonicalize(full.parent().unwrap()).unwrap();
                    prop_assert!(parent.starts_with(&canon_root), "{p:?} resolved out to {}", full.display());
                }
                let _ = root.delete_file(&rel);
                let _ = root.delete_dir_with(&rel, &mut ParentCache::default());
            }
            prop_assert!(outside.join("sentinel").exists() && outside.join("x.json").exists());
            prop_assert!(top.path().join("sentinel").exists());
        }
    }
}
