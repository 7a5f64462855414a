//! Where a command may write a file the user named (`export --out`, `evaluate --dump-logits`,
//! `predict --show-input`, `plot --out`): the one rule every such command follows, checked before any
//! work so a bad place costs nothing.
//!
//! - never over a file of a run directory (its weights, config, metrics, plots), not even with
//!   `--overwrite`: those are written only by the training that owns them;
//! - never over an existing file without `--overwrite`;
//! - missing parent directories are created;
//! - a place that cannot be written is one plain line (permission denied, read-only file system, a
//!   file where a directory should be), not libtorch's or the image library's text.
//!
//! The Python scripts apply the same rule to their outputs by asking the binary
//! (`mnist-tch describe --check-destination`, through `check_destination` in `scripts/common.py`).

use crate::error_text::io_reason;
use crate::run_dir::{RUN_FILES, is_run_dir};
use anyhow::{Result, bail};
use std::fs;
use std::path::Path;

/// Checks that every one of `files` may be written by a command whose flag `flag` named them: not a
/// directory, not a file of a run directory, not an existing file unless `overwrite`. Creates missing
/// parent directories and makes sure they are writable.
pub fn check_files(files: &[&Path], flag: &str, overwrite: bool) -> Result<()> {
    for &file in files {
        let shown = file.display();
        if file.is_dir() {
            bail!("{shown}: is a directory; give {flag} a file name");
        }
        let parent = parent_of(file);
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if RUN_FILES.contains(&name) && is_run_dir(parent) {
            bail!(
                "{shown}: is a file of the run directory {}, which {flag} never replaces (not even with \
                 --overwrite); choose another {flag}",
                parent.display()
            );
        }
        if file.exists() && !overwrite {
            bail!("{shown}: already exists; choose another {flag} or pass --overwrite to replace it");
        }
        check_dir(parent, &format!("{shown}: cannot be written"), flag)?;
    }
    Ok(())
}

/// Creates `dir` (and its parents) when missing and checks that files can be created in it; `what`
/// starts the message when not (`FILE: cannot be written`).
pub fn check_dir(dir: &Path, what: &str, flag: &str) -> Result<()> {
    // The deepest part of the path that exists must be a directory to create the rest in.
    if let Some(blocking) = dir.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
        bail!("{what}: {} is a file, not a directory", blocking.display());
    }
    fs::create_dir_all(dir)
        .map_err(|err| anyhow::anyhow!("{what}: cannot create the directory {}: {}", dir.display(), io_reason(&err)))?;
    // A probe file: the reason (permission denied, read-only file system) comes from the OS here.
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    match fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => bail!("{what} ({} in {}); choose another {flag}", io_reason(&err), dir.display()),
    }
}

/// The directory a file goes into (`.` for a bare file name).
fn parent_of(file: &Path) -> &Path {
    file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_dir;

    #[test]
    fn a_run_file_is_never_replaced_and_other_files_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        fs::create_dir(&run).unwrap();
        fs::write(run.join(run_dir::CONFIG_FILE), "{}").unwrap();
        let weights = run.join(run_dir::WEIGHTS_FILE);
        for overwrite in [false, true] {
            let err = check_files(&[&weights], "--dump-logits", overwrite).unwrap_err().to_string();
            assert!(err.contains("is a file of the run directory"), "{err}");
            assert!(err.contains("--dump-logits never replaces"), "{err}");
        }
        // A file of the same name outside a run directory is an ordinary file.
        let elsewhere = tmp.path().join(run_dir::WEIGHTS_FILE);
        fs::write(&elsewhere, "x").unwrap();
        let err = check_files(&[&elsewhere], "--out", false).unwrap_err().to_string();
        assert!(err.contains("already exists") && err.contains("--overwrite"), "{err}");
        assert!(check_files(&[&elsewhere], "--out", true).is_ok());
        // A new file in the run directory is fine.
        assert!(check_files(&[&run.join("logits.npy")], "--dump-logits", false).is_ok());
    }

    #[test]
    fn missing_directories_are_created_and_a_file_in_the_way_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/out.npy");
        check_files(&[&deep], "--dump-logits", false).unwrap();
        assert!(tmp.path().join("a/b").is_dir());
        assert_eq!(fs::read_dir(tmp.path().join("a/b")).unwrap().count(), 0, "the probe is removed");
        fs::write(tmp.path().join("f"), "x").unwrap();
        let err = check_files(&[&tmp.path().join("f/out.npy")], "--out", false).unwrap_err().to_string();
        assert!(err.contains("is a file, not a directory"), "{err}");
    }
}
