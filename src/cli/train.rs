//! `mnist-tch train`: a new run from the flags (`jobs::plan_new_run`, then `jobs::start`). `--resume
//! RUN_DIR` is `mnist-tch resume RUN_DIR` under its older spelling: `cli::run` hands it to `resume_flags`.

use super::flags::{DataFlags, JobFlags, OutputFlags, TrainingFlags};
use super::{Finished, GivenFlags, UsageError, unit_interval_from_zero};
use crate::jobs::{self, NewRun};
use crate::model::{Arch, parse_hidden};
use crate::run_dir::TrainingDefaults;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `--hidden`'s value. An alias, because clap's derive would read a literal `Vec` field as a flag that
/// repeats; this is one flag whose value is a comma list.
type Widths = Vec<i64>;

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataFlags,

    /// The network: mlp (the Keras tutorial's Flatten → Dense(128, relu) → Dense(10)), linear (softmax
    /// regression), cnn (Keras's Simple MNIST convnet: two 3x3 conv + max-pool blocks, dropout, dense) or
    /// vit (a Vision Transformer: --patch --width --depth --heads --mlp-ratio).
    #[arg(long, value_parser = super::choices::arch(), default_value_t = Arch::Mlp)]
    pub arch: Arch,

    /// Hidden layer widths of --arch mlp, comma-separated: 128 (the default) is the tutorial's
    /// Dense(128, relu); 512,256 builds two.
    #[arg(long, value_name = "WIDTHS", value_parser = parse_hidden)]
    pub hidden: Option<Widths>,

    /// Dropout rate during training: after each hidden layer's ReLU (mlp) or before the output layer
    /// (cnn). Default: 0 for mlp (the tutorial's model), 0.5 for cnn (as in Keras's example).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true, value_parser = unit_interval_from_zero)]
    pub dropout: Option<f64>,

    #[command(flatten)]
    pub vit: super::vit_flags::VitArgs,

    /// Adam learning rate. Adam uses beta1 0.9, beta2 0.999 and Keras's epsilon 1e-7 (PyTorch's
    /// default is 1e-8).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true, default_value_t = 1e-3, value_parser = super::learning_rate)]
    pub lr: f64,

    /// Number of classes (output units); every label in the data must be below it. With --labels,
    /// the number of labels given.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 10, value_parser = super::flags::class_count)]
    pub num_classes: u64,

    #[command(flatten)]
    pub training: TrainingFlags,

    #[command(flatten)]
    pub output: OutputFlags,

    #[command(flatten)]
    pub job: JobFlags,

    /// Check the data and flags, print the config.json this run would write, and stop without
    /// training (scripts/baseline.py reads its hyperparameters from it).
    #[arg(long)]
    pub print_config: bool,

    /// Continue the run in RUN_DIR: the same as `mnist-tch resume RUN_DIR` (see its --help), up to
    /// --epochs in total (default: the run's own). Only resume's flags apply; any other flag is accepted
    /// when it repeats the run's own setting (--lr 0.001 on a run trained at 0.001).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
}

/// A new run from the flags (`train --resume` is dispatched to `resume` before this).
pub fn run(args: TrainArgs, given: &GivenFlags) -> Result<Finished> {
    if let Some(labels) = args.data.labels.as_ref().filter(|labels| labels.len() as u64 != args.num_classes)
        && given.has("--num-classes")
    {
        return Err(UsageError(format!(
            "--labels gives {} classes but --num-classes says {}: with --labels the number of classes is the \
             number of labels; drop --num-classes",
            labels.len(),
            args.num_classes
        ))
        .into());
    }
    let defaults = TrainingDefaults::for_arch(args.arch);
    let request = NewRun {
        data: args.data.request()?,
        num_classes: args.num_classes as usize,
        arch: args.arch,
        hidden: args.hidden.clone(),
        dropout: args.dropout,
        vit: args.vit.flags(),
        training: args.training.train_config(args.lr, args.data.validation_split, defaults),
        random_shift: args.training.random_shift(defaults),
        device: args.job.device.resolve()?,
        out: args.output.new_run_dir("train"),
        save_initial: args.training.save_initial,
    };
    let plan = jobs::plan_new_run(&request)?;
    if args.print_config {
        crate::say!("{}", serde_json::to_string_pretty(&plan.config)?)?;
        return Ok(Finished::Done);
    }
    let output = args.job.job_output(request.device)?;
    // Restarted by torchrun: the run this command began continues from its last completed epoch.
    let plan = match jobs::elastic_continuation(&plan, &request.out, request.device, output.group.as_deref())? {
        Some(resume) => jobs::plan_resume(&resume, output.writes_run())?,
        None => plan,
    };
    Ok(super::finished(&jobs::start(plan, output)?))
}
