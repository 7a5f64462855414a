//! The `mnist-tch` binary: sets up the process, runs the command line and turns how it ended into an
//! exit code — 0; 1 with one line on stderr for an error; 2 for flags that do not apply together; 130
//! for a run stopped by Ctrl-C or SIGTERM (a training run after saving its last epoch); 141 for a
//! training run whose standard output was closed (the code of a process a closed pipe would have
//! killed). Everything else lives in the library.

use mnist_tch::cli::{self, Finished, UsageError};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything can ask libtorch about CUDA: its first answer is final (see cuda_library).
    mnist_tch::cuda_library::load();
    // Past a file-size limit (ulimit -f) the kernel would kill the process with SIGXFSZ in the middle
    // of a write; ignored, the write fails with EFBIG instead and becomes an ordinary error that keeps
    // the previous checkpoint, as a full disk does.
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    mnist_tch::flush_denormals_to_zero();
    mnist_tch::keep_freed_memory();
    match cli::run() {
        Ok(Finished::Done) => ExitCode::SUCCESS,
        Ok(Finished::Interrupted) => ExitCode::from(130),
        Ok(Finished::OutputClosed) => ExitCode::from(141),
        Err(err) => {
            eprintln!("error: {}", mnist_tch::error_text::one_line(&err));
            if err.is::<UsageError>() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
