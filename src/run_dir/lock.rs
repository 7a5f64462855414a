//! One writer per run directory: an advisory lock (`flock`) on `RUN/.lock`, held for the life of the
//! training process. A second `train --out RUN`, `resume RUN` or `finetune --out RUN` is refused
//! with the holder's PID instead of both writing the same files; readers (`evaluate`, `summary`, `plot`,
//! `predict`, `export`) keep working and can say that the run is still being trained.
//!
//! The kernel releases the lock when the process ends, however it ends (kill -9 included), so a stale
//! `.lock` file never blocks anyone; it only records the last writer's PID.

use super::layout::LOCK_FILE;
use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held while a process writes a run directory; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the run directory `dir` (which must exist) for writing, or fails naming the process that has it.
pub fn lock_for_writing(dir: &Path) -> Result<RunLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("{}: cannot create the run's lock file", path.display()))?;
    if !try_flock(&file, libc::LOCK_EX)? {
        let holder = read_pid(&mut file).map_or("another process".to_string(), |pid| format!("process {pid}"));
        bail!(
            "{}: being trained by {holder} (another mnist-tch train or finetune); wait for it to finish or choose another --out",
            dir.display()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id()).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(RunLock { _file: file })
}

/// The PID of another process that is writing `dir` right now, if any.
pub fn writer(dir: &Path) -> Option<u32> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    // A shared lock is granted unless a writer holds the exclusive one.
    match try_flock(&file, libc::LOCK_SH) {
        Ok(true) => {
            // SAFETY: flock on a file descriptor this function owns.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            None
        }
        Ok(false) => read_pid(&mut file).filter(|&pid| pid != std::process::id()),
        Err(_) => None,
    }
}

/// `flock(operation | LOCK_NB)`: `Ok(false)` when another process holds a conflicting lock.
fn try_flock(file: &File, operation: libc::c_int) -> Result<bool> {
    // SAFETY: flock on a valid, open file descriptor; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(err).context("flock failed")
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_and_readers_see_the_first() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writer(dir.path()), None, "no lock file: nobody writes");
        let held = lock_for_writing(dir.path()).unwrap();
        // Another open file description conflicts even within this process, as another process would.
        let err = lock_for_writing(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("being trained by process {}", std::process::id())), "{err}");
        // The holder is this process, which `writer` does not report about itself.
        assert_eq!(writer(dir.path()), None);
        drop(held);
        let again = lock_for_writing(dir.path());
        assert!(again.is_ok(), "released when dropped");
    }
}
