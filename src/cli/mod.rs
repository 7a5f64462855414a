//! The command line: clap definitions (their `///` comments are the `--help` text) and dispatch to
//! one file per subcommand. Each subcommand file only turns flags into a request for the library and
//! says how the command ended; `main` maps that to an exit code.

mod choices;
mod describe;
mod evaluate;
mod export;
mod finetune;
mod flags;
mod plot;
mod predict;
mod resume;
mod resume_flags;
mod run_arg;
mod serve;
mod summary;
mod train;
mod vit_flags;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Train, evaluate, fine-tune and export the Keras MNIST tutorial's models on libtorch.
#[derive(Debug, Parser)]
#[command(name = "mnist-tch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Threads libtorch uses for the operations on the CPU (its intra-op pool, PyTorch's
    /// torch.set_num_threads). Default: libtorch's own choice (the number of cores, or OMP_NUM_THREADS).
    /// It changes speed, not what is trained, and is not recorded in the run. `serve` uses 1 unless told.
    #[arg(long, global = true, value_name = "N", allow_negative_numbers = true, value_parser = flags::at_least_one)]
    threads: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model from scratch, evaluate it on the test files and write a run directory.
    Train(train::TrainArgs),
    /// Continue a run from its last completed epoch, up to --epochs in total, with everything else from
    /// its config.json (`train --resume RUN_DIR` is the same).
    Resume(resume::ResumeArgs),
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
    /// Serve a model over HTTP: a draw-a-digit page, POST /predict for pictures, the Open Inference
    /// Protocol (v2) for tensors, Prometheus metrics.
    Serve(serve::ServeArgs),
    /// For scripts: the run-directory layout, a run's model or the one train's flags build, as JSON
    /// (--json); --check-destination applies mnist-tch's rule for the files a command writes.
    Describe(describe::DescribeArgs),
}

/// How a command ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Done,
    /// Training stopped at Ctrl-C or SIGTERM after saving its last completed epoch.
    Interrupted,
    /// Training stopped because nobody reads its output any more (`train | head`), after saving its last
    /// completed epoch.
    OutputClosed,
}

pub use crate::error_text::UsageError;

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<Finished> {
    let matches = Cli::command().try_get_matches().map_err(refuse_train_flag_on_resume)?;
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let given = matches.subcommand().map(|(name, sub)| GivenFlags::of(name, sub)).unwrap_or_default();
    if let Some(threads) = cli.threads {
        tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    }
    let training = matches!(cli.command, Command::Train(_) | Command::Resume(_) | Command::Finetune(_));
    // The server stops gracefully on its own (serve::shutdown).
    if !training && !matches!(cli.command, Command::Serve(_)) {
        crate::signals::stop_at_once();
    }
    let finished = match cli.command {
        Command::Train(args) if args.resume.is_some() => resume_flags::as_resume(args, &given).and_then(resume::run),
        Command::Train(args) => train::run(args, &given),
        Command::Resume(args) => resume::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Evaluate(args) => evaluate::run(args).map(|()| Finished::Done),
        Command::Export(args) => export::run(args).map(|()| Finished::Done),
        Command::Plot(args) => plot::run(args).map(|()| Finished::Done),
        Command::Predict(args) => predict::run(args).map(|()| Finished::Done),
        Command::Summary(args) => summary::run(args).map(|()| Finished::Done),
        Command::Serve(args) => serve::run(args, cli.threads).map(|()| Finished::Done),
        Command::Describe(args) => describe::run(args).map(|()| Finished::Done),
    };
    // A reader that stopped reading (`| head`) ends a reporting command quietly, as a success; a
    // training run it cut short is reported by its exit code.
    match finished {
        Err(err) if crate::output::is_stdout_closed(&err) => {
            Ok(if training { Finished::OutputClosed } else { Finished::Done })
        }
        other => other,
    }
}

/// A parse error as it ends the process, except a flag of `train` given to `resume` (`resume RUN --lr
/// 0.1`): clap would offer to pass it as a value; resume keeps the run's settings, so say that.
fn refuse_train_flag_on_resume(err: clap::Error) -> anyhow::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let command = Cli::command();
    let subcommand = std::env::args().skip(1).find(|a| command.find_subcommand(a).is_some());
    let on_resume = subcommand.as_deref() == Some("resume");
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if err.kind() == ErrorKind::UnknownArgument => arg.clone(),
        _ => err.exit(),
    };
    let name = flag.split('=').next().unwrap_or(&flag).to_string();
    let of_train = command
        .find_subcommand("train")
        .is_some_and(|train| train.get_arguments().any(|a| a.get_long().is_some_and(|l| format!("--{l}") == name)));
    if !on_resume || !of_train {
        err.exit()
    }
    UsageError(format!(
        "unexpected argument '{name}' for resume: resume keeps the run's settings (its config.json); start a new run with \
         `mnist-tch train`, or fine-tune it with `mnist-tch finetune --from RUN`, to change them"
    ))
    .into()
}

/// The flags a subcommand was given on the command line itself (not defaults, not the environment),
/// as `--flag` spellings.
#[derive(Debug, Default)]
pub struct GivenFlags(Vec<String>);

impl GivenFlags {
    fn of(subcommand: &str, matches: &ArgMatches) -> GivenFlags {
        let command = Cli::command();
        let Some(command) = command.find_subcommand(subcommand) else { return GivenFlags::default() };
        let flags = command
            .get_arguments()
            .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect();
        GivenFlags(flags)
    }

    /// Whether `flag` was given.
    pub fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|given| given == flag)
    }

    /// The given flags that are not in `allowed`.
    pub fn except(&self, allowed: &[&str]) -> Vec<String> {
        self.0.iter().filter(|flag| !allowed.contains(&flag.as_str())).cloned().collect()
    }
}

/// For the commands that read a run: a note on stderr when another process is still training it (they
/// read its last completed epoch).
fn note_if_being_trained(run: &std::path::Path) {
    if let Some(pid) = crate::run_dir::lock::writer(run) {
        eprintln!("note: {} is still being trained by process {pid}: reading its last completed epoch", run.display());
    }
}

/// For `evaluate`, `summary`, `export` and `plot`: a note on stderr when the run stopped short of its
/// epochs (interrupted, failed, killed), so its numbers are not taken for a finished run's. A run another
/// process is training has [`note_if_being_trained`]'s note instead.
fn note_if_unfinished(run: &std::path::Path) {
    if crate::run_dir::lock::writer(run).is_some() {
        return;
    }
    let config = crate::run_dir::RunConfig::load(run).ok();
    let Some(config) = config.filter(|c| c.state.epochs_completed > 0) else { return };
    if let Some((completed, planned)) = config.unfinished() {
        eprintln!(
            "note: {} is incomplete ({} after epoch {completed} of {planned}): reading its last completed epoch; \
             `mnist-tch resume {}` continues it",
            run.display(),
            match config.state.status {
                crate::run_dir::RunStatus::Training => "stopped",
                status => status.name(),
            },
            run.display()
        );
    }
}

/// Parses a strictly positive, finite number (learning rates).
fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// Parses a learning rate: a positive number Adam can step with (its first step, lr / (1 - beta1), is
/// a 32-bit float in libtorch).
fn learning_rate(s: &str) -> Result<f64, String> {
    let lr = positive_f64(s)?;
    let beta1 = crate::run_dir::TrainConfig::default().adam_beta1;
    if !crate::optimizer::learning_rate_fits(lr, beta1) {
        return Err(format!(
            "'{s}' is too large: Adam's first step, lr / (1 - beta1) with beta1 {beta1}, must fit a 32-bit float, \
             so the learning rate can be at most {}",
            crate::optimizer::largest_learning_rate(beta1)
        ));
    }
    Ok(lr)
}

/// Parses a non-negative number (min-delta).
fn parse_min_delta_flag(s: &str) -> Result<f64, String> {
    crate::callbacks::parse_min_delta(s)
}

/// Parses a weight decay: a non-negative number that fits a 32-bit float, as the weights it scales.
fn weight_decay(s: &str) -> Result<f64, String> {
    let decay = crate::callbacks::parse_min_delta(s)?;
    if decay > crate::optimizer::LARGEST_FLOAT {
        return Err(format!("'{s}' is too large: the weight decay must fit a 32-bit float (at most 3.4e38)"));
    }
    Ok(decay)
}

/// Parses a rate in [0, 1) (dropout).
fn unit_interval_from_zero(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a rate in [0, 1)")),
    }
}

/// How a training job ended, for `main`.
fn finished(report: &crate::fit::FitReport) -> Finished {
    match report.outcome {
        crate::training::Outcome::Interrupted if crate::output::stdout_closed() => Finished::OutputClosed,
        crate::training::Outcome::Interrupted => Finished::Interrupted,
        _ => Finished::Done,
    }
}

/// Parses a fraction strictly between 0 and 1 (the validation split).
fn open_unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction strictly between 0 and 1")),
    }
}
