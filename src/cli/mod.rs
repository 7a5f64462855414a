//! The command line: clap definitions (their `///` comments are the `--help` text) and dispatch to
//! one file per subcommand.

mod evaluate;
mod export;
mod finetune;
mod flags;
mod plot;
mod predict;
mod summary;
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
    /// Fine-tune a trained run on new data: architecture and weights from the parent, some layers frozen,
    /// the head re-initialised when the classes change.
    Finetune(finetune::FinetuneArgs),
    /// Evaluate a trained run on the test files of a data set.
    Evaluate(evaluate::EvaluateArgs),
    /// Export a trained run as a TorchScript module for Python (torch.jit.load) or C++.
    Export(export::ExportArgs),
    /// Draw a run's learning curves and test confusion matrix as PNG files.
    Plot(plot::PlotArgs),
    /// Classify picture files, directories of them or IDX images with a run or an exported model.
    Predict(predict::PredictArgs),
    /// Show a run's model like Keras's model.summary(): layers, output shapes, parameter counts.
    Summary(summary::SummaryArgs),
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Export(args) => export::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Summary(args) => summary::run(args),
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

/// Parses a non-negative number (weight decay, min-delta).
fn parse_min_delta_flag(s: &str) -> Result<f64, String> {
    crate::callbacks::parse_min_delta(s)
}

/// Parses a rate in [0, 1) (dropout).
fn unit_interval_from_zero(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a rate in [0, 1)")),
    }
}

/// The Ctrl-C flag: SIGINT or SIGTERM sets it, and training finishes its step, keeps the last
/// completed epoch and stops. A second signal while the flag is set ends the process at once (exit 1),
/// for when a user really means it.
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the shutdown check must see the flag as it was before this signal set it.
        let registered = signal_hook::flag::register_conditional_shutdown(signal, 1, flag.clone())
            .and_then(|_| signal_hook::flag::register(signal, flag.clone()));
        if let Err(err) = registered {
            eprintln!("warning: cannot handle signal {signal} ({err}); Ctrl-C will end training without a checkpoint");
        }
    }
    flag
}

/// A training job that was interrupted ends the process with an error status (130, like a shell's
/// Ctrl-C) after its checkpoint was written; anything else that returned is a success.
fn exit_status(report: &crate::fit::FitReport) -> Result<()> {
    if report.outcome == crate::training::Outcome::Interrupted {
        std::process::exit(130);
    }
    Ok(())
}

/// Parses a fraction strictly between 0 and 1 (the validation split).
fn open_unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction strictly between 0 and 1")),
    }
}
