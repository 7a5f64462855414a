//! Atomic file writes, and the temporary files they leave while in progress.
//!
//! Every file mnist-tch writes goes through [`write_atomically`]: a temporary file in the same
//! directory (`.NAME.tmp-PID.EXT`), fsync, rename over the target, fsync of the directory — so an
//! interrupted or failed write leaves the previous version in place. The temporary files of writes in
//! progress are registered, so that a process stopped by a signal removes them before it exits
//! ([`remove_pending`]); those of a process killed outright (kill -9) are removed by the next writer of
//! the directory ([`remove_stale`]).

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files being written by this process.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The marker in a temporary file's name.
const TEMPORARY_MARK: &str = ".tmp-";

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes `path` atomically: `write` fills a temporary file in the same directory, which is then
/// fsynced and renamed over `path`. The temporary name keeps `path`'s extension, because tch picks
/// the weights format from it.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}{TEMPORARY_MARK}{}.{}",
        file_name.to_string_lossy(),
        std::process::id(),
        path.extension().map(|e| e.to_string_lossy()).unwrap_or_default()
    ));
    pending().push(tmp.clone());
    let result = write(&tmp)
        .and_then(|()| File::open(&tmp)?.sync_all().context("fsync failed"))
        .and_then(|()| fs::rename(&tmp, path).context("rename failed"))
        .and_then(|()| {
            // The rename itself is durable only once the directory entry is.
            File::open(dir).and_then(|d| d.sync_all()).context("fsync of the directory failed")
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    pending().retain(|p| *p != tmp);
    result.with_context(|| format!("{}: write failed", path.display()))
}

/// Writes bytes atomically.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        Ok(())
    })
}

/// Removes the temporary files of this process's writes in progress (a signal is stopping it).
pub fn remove_pending() {
    // try_lock: a signal can arrive while a write holds the lock; the file is then left to remove_stale.
    if let Ok(pending) = PENDING.try_lock() {
        for path in pending.iter() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Removes temporary files left in `dir` by a writer that was killed outright. Call it only while
/// holding the directory's lock (`lock.rs`): then no other process is writing there.
pub fn remove_stale(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') && name.contains(TEMPORARY_MARK) && path.is_file() && !pending().contains(&path) {
            fs::remove_file(&path).with_context(|| format!("{}: cannot remove", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_bytes_atomically(&path, b"first").unwrap();
        let err = write_atomically(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("disk full")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        assert!(pending().is_empty());
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [".model.safetensors.tmp-12345.safetensors", "config.json", ".lock", "notes.tmp-1"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = remove_stale(dir.path()).unwrap();
        assert_eq!(removed, vec![dir.path().join(".model.safetensors.tmp-12345.safetensors")]);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec![".lock", "config.json", "notes.tmp-1"]);
    }
}
