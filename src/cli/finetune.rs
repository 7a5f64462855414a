//! `mnist-tch finetune`: the Keras tutorial's "how to fine-tune it" (`jobs::plan_finetune`, then
//! `jobs::start`). The architecture and weights come from the parent run's directory (never from flags);
//! `--freeze` keeps layers bit-identical; the output layer is re-initialised when the new data has another
//! number of classes, or on `--reinit-head`.

use super::Finished;
use super::flags::{DataFlags, JobFlags, OutputFlags, TrainingFlags};
use crate::freeze::Freeze;
use crate::jobs::{self, FinetuneRun};
use crate::run_dir::TrainingDefaults;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// The parent run directory: its config.json gives the architecture, its model.safetensors the
    /// starting weights.
    #[arg(long, value_name = "RUN_DIR")]
    pub from: PathBuf,

    #[command(flatten)]
    pub data: DataFlags,

    /// What stays fixed: none, hidden (every layer with weights but the output layer: an MLP's hidden
    /// layers, a CNN's convolutions), or a comma-separated list of layer names ("1", the first Dense
    /// layer) or tensor names ("1.weight"). Frozen tensors come out bit-identical to the parent's.
    #[arg(long, value_name = "WHAT", default_value = "none")]
    pub freeze: Freeze,

    /// Re-initialise the output layer even when the number of classes is unchanged (a new task with
    /// as many classes).
    #[arg(long)]
    pub reinit_head: bool,

    /// Adam learning rate; lower than training's 1e-3, as fine-tuning should move the weights
    /// gently (Keras's guide uses 1e-5 for full unfreezing).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true, default_value_t = 1e-4, value_parser = super::learning_rate)]
    pub lr: f64,

    #[command(flatten)]
    pub training: TrainingFlags,

    #[command(flatten)]
    pub output: OutputFlags,

    #[command(flatten)]
    pub job: JobFlags,
}

pub fn run(args: FinetuneArgs) -> Result<Finished> {
    if let Some(out) = &args.output.out {
        refuse_parent_as_out(&args.from, out)?;
    }
    let device = args.job.device.resolve()?;
    let output = args.job.job_output(device)?;
    let request = FinetuneRun {
        from: args.from.clone(),
        data: args.data.request()?,
        freeze: args.freeze.clone(),
        reinit_head: args.reinit_head,
        engine: args.training.engine,
        precision: args.training.precision,
        // Fine-tuning moves trained weights gently: the tutorial's constant rate, pictures as they are.
        training: args.training.train_config(args.lr, args.data.validation_split, TrainingDefaults::KERAS),
        device,
        out: args.output.new_run_dir("finetune"),
        save_initial: args.training.save_initial,
    };
    Ok(super::finished(&jobs::start(jobs::plan_finetune(&request)?, output)?))
}

/// Fine-tuning writes a new run: `--out` naming the parent would replace the weights it starts from.
fn refuse_parent_as_out(from: &Path, out: &Path) -> Result<()> {
    let same = match (std::fs::canonicalize(from), std::fs::canonicalize(out)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        anyhow::bail!(
            "{}: is the parent run (--from); fine-tuning writes a new run and never replaces its parent; choose another --out",
            out.display()
        );
    }
    Ok(())
}
