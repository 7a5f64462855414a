//! The cache of decoded pictures: a tree's frames' bytes and labels, with a fingerprint of what they
//! were made from — every file's path, size and modification time, the class folders, the frame and the
//! fit — so that a changed folder (a picture added, replaced or touched) is decoded again.
//!
//! It lives in the user's cache directory, never in the picture folder: `$MNIST_TCH_CACHE` when set,
//! else `$XDG_CACHE_HOME/mnist-tch` (`~/.cache/mnist-tch`), one file per tree, frame and fit under
//! `pictures/`, written atomically. A cache that is missing, stale or unreadable is only a slower start.

use super::{Listing, Options};
use crate::frame::Frame;
use anyhow::Result;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// The environment variable that names the cache directory.
pub const CACHE_ENV: &str = "MNIST_TCH_CACHE";

const MAGIC: &[u8; 8] = b"MNTCPIC1";

/// What a tree's frames were made from.
pub struct Key {
    /// Names the cache file: the tree's path, the frame and the fit.
    pub name: u64,
    /// Everything else: each file's path, size and modification time, the class folders.
    pub fingerprint: u64,
}

fn hash(value: impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The key of `listing` read with `options`.
pub fn key(tree: &Path, listing: &Listing, options: &Options) -> Result<Key> {
    let tree = std::fs::canonicalize(tree).unwrap_or_else(|_| tree.to_path_buf());
    let setting = (options.frame.dims(), options.fit.to_string(), options.skip_bad, options.class_names);
    let mut files = std::hash::DefaultHasher::new();
    for (path, label) in &listing.files {
        let meta = std::fs::metadata(path).ok();
        let modified =
            meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        (path, label, meta.map(|m| m.len()), modified).hash(&mut files);
    }
    Ok(Key { name: hash((&tree, &setting)), fingerprint: hash((files.finish(), &listing.classes, &setting)) })
}

/// The cache directory: `$MNIST_TCH_CACHE`, else `$XDG_CACHE_HOME/mnist-tch` (absolute only), else
/// `~/.cache/mnist-tch`; `None` without a home.
pub fn dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CACHE_ENV) {
        return Some(dir);
    }
    match var("XDG_CACHE_HOME") {
        Some(dir) if dir.is_absolute() => Some(dir.join("mnist-tch")),
        _ => Some(var("HOME")?.join(".cache").join("mnist-tch")),
    }
}

/// The cache file for `key`.
pub fn file_for(key: &Key) -> Option<PathBuf> {
    Some(dir()?.join("pictures").join(format!("{:016x}.bin", key.name)))
}

/// Reads a cache file front to back.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let part = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(part)
    }

    fn word(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The cached frames, labels and skipped pictures, when `path` holds them for `key` and `frame`.
pub fn read(path: &Path, key: &Key, frame: Frame) -> Option<(Vec<u8>, Vec<i64>, Vec<PathBuf>)> {
    let data = std::fs::read(path).ok()?;
    let mut cursor = Cursor { data: &data, at: 0 };
    if cursor.take(8)? != MAGIC || cursor.word()? != key.fingerprint {
        return None;
    }
    let dims = [cursor.word()?, cursor.word()?, cursor.word()?];
    if dims != frame.dims().map(|d| d as u64) {
        return None;
    }
    let (count, bad_count) = (cursor.word()? as usize, cursor.word()? as usize);
    let mut bad = Vec::new();
    for _ in 0..bad_count {
        let len = cursor.word()? as usize;
        bad.push(PathBuf::from(String::from_utf8(cursor.take(len)?.to_vec()).ok()?));
    }
    let labels = cursor.take(count.checked_mul(8)?)?;
    let labels: Vec<i64> =
        labels.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect();
    let bytes = cursor.take(count.checked_mul(frame.values()? as usize)?)?.to_vec();
    (cursor.at == data.len()).then_some((bytes, labels, bad))
}

/// Writes the frames, labels and skipped pictures of `key` to `path`, atomically.
pub fn write(path: &Path, key: &Key, frame: Frame, bytes: &[u8], labels: &[i64], bad: &[PathBuf]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut out = Vec::with_capacity(bytes.len() + labels.len() * 8 + 64);
    out.extend_from_slice(MAGIC);
    for word in [key.fingerprint, frame.channels as u64, frame.rows as u64, frame.cols as u64] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&(labels.len() as u64).to_le_bytes());
    out.extend_from_slice(&(bad.len() as u64).to_le_bytes());
    for path in bad {
        let name = path.to_string_lossy();
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    for label in labels {
        out.extend_from_slice(&label.to_le_bytes());
    }
    out.extend_from_slice(bytes);
    crate::files::write_bytes_atomically(path, &out)
}
