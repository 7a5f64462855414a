//! `train --out DIR --overwrite` (and `finetune`) over an earlier run: the run directory is replaced as
//! a whole, so nothing of the earlier run (its `best.safetensors`, plots, optimizer state) survives to
//! be mistaken for the new run's.
//!
//! The new, empty directory is built beside the old one and locked, then the two are swapped in one
//! step (`renameat2(RENAME_EXCHANGE)`; two renames where the file system cannot exchange), and the
//! old contents are removed. A reader sees either the old run or the new empty one, never a mixture.
//! A directory holding files mnist-tch did not write is refused rather than deleted.

use super::layout::{RUN_FILES, is_temporary};
use super::lock::{self, RunLock};
use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Replaces the run directory `dir` by an empty one, locked for this process's writes.
pub fn replace_run_dir(dir: &Path) -> Result<RunLock> {
    let shown = dir.display();
    if dir.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("{shown}: is a symbolic link; give --out the directory itself to replace the run in it");
    }
    let absolute = fs::canonicalize(dir).with_context(|| format!("{shown}: cannot be resolved"))?;
    if std::env::current_dir().is_ok_and(|cwd| cwd.starts_with(&absolute)) {
        bail!("{shown}: is the current directory (or holds it): --overwrite cannot replace it; run from elsewhere");
    }
    // Held until the swap is done: no other process starts writing the old run meanwhile.
    let old_lock = lock::lock_for_writing(dir)?;
    let foreign = foreign_entries(dir)?;
    if !foreign.is_empty() {
        bail!(
            "{shown}: also holds {}, which mnist-tch did not write; --overwrite replaces the whole run directory, \
             so move them out or choose another --out",
            foreign.join(", ")
        );
    }
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let name = absolute.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let fresh = parent.join(format!(".{name}.new-{}", std::process::id()));
    fs::create_dir(&fresh)
        .with_context(|| format!("{shown}: cannot be replaced: cannot create {} beside it", fresh.display()))?;
    let new_lock = match lock::lock_for_writing(&fresh) {
        Ok(lock) => lock,
        Err(err) => {
            let _ = fs::remove_dir_all(&fresh);
            return Err(err);
        }
    };
    let old = swap(&fresh, &absolute).inspect_err(|_| {
        let _ = fs::remove_dir_all(&fresh);
    })?;
    drop(old_lock);
    fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove the earlier run", old.display()))?;
    Ok(new_lock)
}

/// Puts `fresh` in the place of `target`; returns where the old contents now are.
fn swap(fresh: &Path, target: &Path) -> Result<PathBuf> {
    if exchange(fresh, target).is_ok() {
        return Ok(fresh.to_path_buf());
    }
    // No RENAME_EXCHANGE on this file system: two renames, with a moment where `target` is absent.
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let old = target.with_file_name(format!(".{name}.old-{}", std::process::id()));
    fs::rename(target, &old).with_context(|| format!("{}: cannot be replaced", target.display()))?;
    if let Err(err) = fs::rename(fresh, target) {
        let _ = fs::rename(&old, target);
        return Err(err).with_context(|| format!("{}: cannot be replaced", target.display()));
    }
    Ok(old)
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: swaps two directory entries atomically.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two valid NUL-terminated paths; no memory is kept by the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The entries of `dir` that no mnist-tch run writes (run files and temporaries of interrupted
/// writes are its own), in name order.
fn foreign_entries(dir: &Path) -> Result<Vec<String>> {
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !RUN_FILES.contains(&name.as_str()) && !is_temporary(&name) {
            foreign.push(name);
        }
    }
    foreign.sort();
    Ok(foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_run_is_replaced_and_foreign_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        fs::create_dir(&run).unwrap();
        for name in ["config.json", "model.safetensors", "best.safetensors", "learning_curves.png"] {
            fs::write(run.join(name), "old").unwrap();
        }
        let lock = replace_run_dir(&run).unwrap();
        let left: Vec<_> = fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(".lock")], "only the new lock");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1, "no directory left beside it");
        // The lock moved with the new directory: this process holds it.
        assert!(lock::lock_for_writing(&run).is_err());
        drop(lock);
        fs::write(run.join("notes.txt"), "mine").unwrap();
        let err = replace_run_dir(&run).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("did not write"), "{err}");
        assert!(run.join("notes.txt").is_file());
    }
}
