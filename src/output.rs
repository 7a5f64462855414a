//! Standard output that a reader may close early (`mnist-tch predict ... | head -1`).
//!
//! Rust ignores SIGPIPE, so writing to a closed pipe is an error (EPIPE), and `println!` would panic on
//! it. Every line goes through [`line`] instead: a closed stdout becomes the error [`StdoutClosed`]
//! (remembered in [`stdout_closed`]), which ends a reporting command quietly, and makes a training run
//! stop like Ctrl-C and record itself as interrupted.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// The reader of stdout went away.
#[derive(Debug, Clone, Copy)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether a write to stdout has found it closed.
pub fn stdout_closed() -> bool {
    CLOSED.load(Ordering::SeqCst)
}

/// Whether `err` (or anything in its chain) is a closed stdout.
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<StdoutClosed>())
}

/// For output that may be lost: `Ok` when `err` is a closed stdout (remembered, so training stops at its
/// next step and records why), the error itself otherwise.
pub fn unless_closed(err: anyhow::Error) -> anyhow::Result<()> {
    if is_stdout_closed(&err) { Ok(()) } else { Err(err) }
}

/// Writes `text` and a newline to stdout.
pub fn line(text: impl fmt::Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::SeqCst);
            Err(StdoutClosed.into())
        }
        Err(err) => Err(anyhow::Error::new(err).context("writing to standard output")),
    }
}

/// `println!` that returns an error instead of panicking: `say!("{x}")?`.
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::line("")
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
