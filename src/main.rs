//! The `mnist-tch` binary: runs the command line and turns an error into one line on stderr and a
//! non-zero exit code. Everything else lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Past a file-size limit (ulimit -f) the kernel would kill the process with SIGXFSZ in the middle
    // of a write; ignored, the write fails with EFBIG instead and becomes an ordinary error that keeps
    // the previous checkpoint, as a full disk does.
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    mnist_tch::flush_denormals_to_zero();
    match mnist_tch::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", mnist_tch::cli::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
