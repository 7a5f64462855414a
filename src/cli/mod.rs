//! The command line: clap definitions (their `///` comments are the `--help` text) and dispatch to
//! one file per subcommand.

mod evaluate;
mod export;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Train, evaluate and fine-tune the Keras MNIST tutorial's MLP on libtorch.
#[derive(Debug, Parser)]
#[command(name = "mnist-tch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model from scratch, evaluate it on the test files and write a run directory.
    Train(train::TrainArgs),
    /// Evaluate a trained run on the test files of a data set.
    Evaluate(evaluate::EvaluateArgs),
    /// Export a trained run as a TorchScript module for Python (torch.jit.load) or C++.
    Export(export::ExportArgs),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Export(args) => export::run(args),
    }
}

/// The error and its context chain on one line (`{:#}`), cut to the first line of each part:
/// libtorch appends multi-line C++ backtraces to its messages.
pub fn one_line(err: &anyhow::Error) -> String {
    err.chain().map(|cause| crate::run_dir::first_line(&cause.to_string()).to_string()).collect::<Vec<_>>().join(": ")
}

/// Parses a strictly positive, finite number (learning rates).
fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// Parses a fraction strictly between 0 and 1 (the validation split).
fn open_unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction strictly between 0 and 1")),
    }
}
