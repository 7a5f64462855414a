//! The `mnist-tch` binary: runs the command line and turns an error into one line on stderr and a
//! non-zero exit code. Everything else lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    match mnist_tch::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", mnist_tch::cli::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
