//! One writer per run directory: an advisory lock (`flock`) on `RUN/.lock`, held for the life of the
//! training process. A second `train --out RUN`, `resume RUN` or `finetune --out RUN` is refused
//! with the holder's PID instead of both writing the same files; readers (`evaluate`, `summary`, `plot`,
//! `predict`, `export`) keep working and can say that the run is still being trained.
//!
//! The kernel releases the lock when the process ends, however it ends (kill -9 included), so a stale
//! `.lock` file never blocks anyone; it only records the last writer's PID.
//!
//! The locking is std's (`File::try_lock`, `try_lock_shared`, `unlock`), which on Linux is `flock(2)`
//! itself: the same lock, and the same conflicts, as any process that calls `flock` on the file.

use super::layout::LOCK_FILE;
use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
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
    if !acquired(file.try_lock())? {
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
    match acquired(file.try_lock_shared()) {
        Ok(true) => {
            let _ = file.unlock();
            None
        }
        Ok(false) => read_pid(&mut file).filter(|&pid| pid != std::process::id()),
        Err(_) => None,
    }
}

/// A non-blocking lock attempt's outcome: `Ok(false)` when another holder has a conflicting lock.
fn acquired(attempt: Result<(), TryLockError>) -> Result<bool> {
    match attempt {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(err)) => Err(err).context("flock failed"),
    }
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

    /// `flock(2)` called directly on its own open of `dir`'s lock file, as mnist-tch binaries that
    /// called libc did (and any other program can): `Ok(false)` when it conflicts with a lock held.
    fn raw_flock(dir: &Path, operation: libc::c_int) -> (File, bool) {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(LOCK_FILE));
        let file = file.unwrap();
        // SAFETY: flock on a valid, open file descriptor; no memory is passed.
        let taken = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0;
        if !taken {
            assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EWOULDBLOCK));
        }
        (file, taken)
    }

    #[test]
    fn a_lock_taken_with_flock_itself_is_seen_and_vice_versa() {
        let dir = tempfile::tempdir().unwrap();
        // A writer that locked through libc: refused, and named by readers.
        let (mut old_writer, taken) = raw_flock(dir.path(), libc::LOCK_EX);
        assert!(taken);
        writeln!(old_writer, "4242").unwrap();
        let err = lock_for_writing(dir.path()).unwrap_err().to_string();
        assert!(err.contains("being trained by process 4242 (another mnist-tch train or finetune)"), "{err}");
        assert_eq!(writer(dir.path()), Some(4242));
        drop(old_writer);
        assert_eq!(writer(dir.path()), None, "released with its file");

        // A writer that locks through std: flock(2) sees it, exclusive and shared alike.
        let held = lock_for_writing(dir.path()).unwrap();
        assert!(!raw_flock(dir.path(), libc::LOCK_EX).1);
        assert!(!raw_flock(dir.path(), libc::LOCK_SH).1);
        drop(held);
        assert!(raw_flock(dir.path(), libc::LOCK_EX).1);

        // A shared flock (a reader) is no writer; and `writer` leaves no lock behind.
        let (reader, taken) = raw_flock(dir.path(), libc::LOCK_SH);
        assert!(taken);
        assert_eq!(writer(dir.path()), None);
        drop(reader);
        assert!(raw_flock(dir.path(), libc::LOCK_EX).1);
    }
}
