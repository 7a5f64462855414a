//! How the process stops early on Ctrl-C or SIGTERM.
//!
//! - Training (`train`, `finetune`): the first signal sets a flag; training finishes its step, the run
//!   directory keeps the last completed epoch, and the process exits with 130. A second signal ends it
//!   at once (exit 130), for when a user really means it.
//! - Every other command stops at once with exit code 130.
//!
//! Either way the temporary files of writes in progress are removed first (`files::remove_pending`),
//! so no partial output file is left. The handlers also take over a SIGINT that the parent set to be
//! ignored (a shell's background job), so Ctrl-C and `kill -INT` act the same everywhere.

use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The exit code of a process stopped by a signal (128 + SIGINT), as shells report Ctrl-C.
pub const INTERRUPTED_EXIT_CODE: i32 = 130;

/// For commands that only read and report: a signal stops the process at once.
pub fn stop_at_once() {
    on_signal(|| false);
}

/// For training: the flag the first signal sets (the loop polls it after every step); a second
/// signal stops the process at once.
pub fn training_interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let first = flag.clone();
    // `swap` answers whether the flag was already set: the first signal is handled, the second is not.
    on_signal(move || !first.swap(true, Ordering::SeqCst));
    flag
}

/// Runs `handled` on a thread of its own for every SIGINT or SIGTERM; when it returns false, removes the
/// pending temporary files and ends the process with [`INTERRUPTED_EXIT_CODE`].
fn on_signal(handled: impl Fn() -> bool + Send + 'static) {
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("warning: cannot handle Ctrl-C ({err}); it will end the process without cleaning up");
            return;
        }
    };
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if !handled() {
                crate::files::remove_pending();
                // SAFETY: _exit ends the process without running destructors, which could race with
                // libtorch's threads still computing; everything durable is already on disk.
                unsafe { libc::_exit(INTERRUPTED_EXIT_CODE) };
            }
        }
    });
}
