//! `mnist-tch resume RUN_DIR`: continue a run from its last completed epoch (`jobs::plan_resume`, then
//! `jobs::start`). Its flags are the only ones a resumed run honours; everything else comes from the
//! run's config.json, so clap refuses any other flag.

use super::Finished;
use super::flags::{JobFlags, StoppingFlags, at_least_one};
use crate::engine::Engine;
use crate::jobs::{self, ResumeRun};
use crate::run_dir::RunConfig;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run directory to continue (written by `mnist-tch train` or `finetune`). Its config.json gives
    /// everything else: weights, epoch counter, learning-rate schedule and callbacks, data and its order,
    /// and Adam's state (optimizer.safetensors).
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,

    /// Train up to N epochs in total, appending to the run's metrics [default: the run's own, to finish
    /// an interrupted run].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least_one)]
    pub epochs: Option<u64>,

    /// Which code computes a training step from now on: autograd or fused [default: the run's own].
    #[arg(long, value_parser = super::choices::engine())]
    pub engine: Option<Engine>,

    #[command(flatten)]
    pub stopping: StoppingFlags,

    #[command(flatten)]
    pub job: JobFlags,

    /// Print the config.json the run would continue with (its own, with --epochs applied), and stop
    /// without training.
    #[arg(long)]
    pub print_config: bool,
}

pub fn run(args: ResumeArgs) -> Result<Finished> {
    if args.print_config {
        return print_resumed_config(&args.run, args.epochs).map(|()| Finished::Done);
    }
    let device = args.job.device.resolve()?;
    let output = args.job.job_output(device)?;
    let request = ResumeRun {
        dir: args.run.clone(),
        epochs: args.epochs.map(|n| n as usize),
        device,
        engine: args.engine,
        save_best: args.stopping.save_best,
        early_stopping: args.stopping.early_stopping(),
    };
    let plan = jobs::plan_resume(&request, output.writes_run())?;
    Ok(super::finished(&jobs::start(plan, output)?))
}

/// The config the resumed run continues with (its own, with `--epochs` applied), without training.
fn print_resumed_config(dir: &Path, epochs: Option<u64>) -> Result<()> {
    let mut config = RunConfig::load(dir)?;
    if let Some(epochs) = epochs {
        config.training.epochs = epochs as usize;
    }
    crate::say!("{}", serde_json::to_string_pretty(&config)?)?;
    Ok(())
}
