//! `mnist-tch train`: a new run from the flags (`jobs::plan_new_run`, `jobs::start_new_run`), or with
//! `--resume` the continuation of a run whose config stays as it was (`jobs::resume`).

use super::flags::{DataFlags, FitFlags, OutputFlags};
use super::resume_flags::{RESUME_FLAGS, repeats_the_run};
use super::{Finished, GivenFlags, UsageError, positive_f64, unit_interval_from_zero};
use crate::fit::JobOutput;
use crate::jobs::{self, Destination, NewRun, ResumeRun};
use crate::model::{Arch, parse_hidden};
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
    /// regression) or cnn (Keras's Simple MNIST convnet: two 3x3 conv + max-pool blocks, dropout, dense).
    #[arg(long, value_enum, default_value_t = Arch::Mlp)]
    pub arch: Arch,

    /// Hidden layer widths of --arch mlp, comma-separated: 128 (the default) is the tutorial's
    /// Dense(128, relu); 512,256 builds two.
    #[arg(long, value_name = "WIDTHS", value_parser = parse_hidden)]
    pub hidden: Option<Widths>,

    /// Dropout rate during training: after each hidden layer's ReLU (mlp) or before the output layer
    /// (cnn). Default: 0 for mlp (the tutorial's model), 0.5 for cnn (as in Keras's example).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true, value_parser = unit_interval_from_zero)]
    pub dropout: Option<f64>,

    /// Adam learning rate. Adam uses beta1 0.9, beta2 0.999 and Keras's epsilon 1e-7 (PyTorch's
    /// default is 1e-8).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true, default_value_t = 1e-3, value_parser = positive_f64)]
    pub lr: f64,

    /// Number of classes (output units); every label in the data must be below it. With --labels,
    /// the number of labels given.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 10, value_parser = super::flags::class_count)]
    pub num_classes: u64,

    #[command(flatten)]
    pub fit: FitFlags,

    #[command(flatten)]
    pub output: OutputFlags,

    /// Check the data and flags, print the config.json this run would write, and stop without
    /// training (scripts/baseline.py reads its hyperparameters from it).
    #[arg(long)]
    pub print_config: bool,

    /// Continue the run in RUN_DIR from its last completed epoch, appending to its metrics, up to
    /// --epochs in total (default: the run's own). Everything else comes from its config.json: weights,
    /// epoch counter, learning-rate schedule and callbacks, data order, and (fused engine) Adam's state.
    /// Only --epochs, --device, --engine, --save-best, --early-stopping, --min-delta, --plot, --quiet and
    /// --tensorboard apply; other flags are accepted when they repeat the run's own setting (--lr 0.001 on
    /// a run trained at 0.001). With --print-config: the config it would continue with.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
}

pub fn run(args: TrainArgs, given: &GivenFlags) -> Result<Finished> {
    let device = args.output.device.resolve()?;
    if let Some(dir) = &args.resume {
        let mut refused = given.except(&RESUME_FLAGS);
        if !refused.is_empty() {
            let config = crate::run_dir::RunConfig::load(dir)?;
            refused.retain(|flag| !repeats_the_run(flag, &args, &config));
        }
        if !refused.is_empty() {
            return Err(UsageError(format!(
                "{} cannot change a resumed run: train --resume keeps the settings in {}/config.json (only {} apply); \
                 start a new run to change them",
                refused.join(", "),
                dir.display(),
                RESUME_FLAGS[1..RESUME_FLAGS.len() - 1].join(", ")
            ))
            .into());
        }
        if args.print_config {
            return print_resumed_config(dir, args.fit.epochs).map(|()| Finished::Done);
        }
        let group = crate::distributed::join_from_env()?;
        let output = JobOutput::for_process(
            args.output.mode(),
            args.output.plot,
            args.output.tensorboard.clone(),
            group.clone(),
        );
        let request = ResumeRun {
            dir: dir.clone(),
            epochs: args.fit.epochs.map(|n| n as usize),
            device: crate::distributed::device_of_process(device, group.as_deref()),
            engine: args.fit.engine,
            save_best: args.fit.save_best,
            early_stopping: args.fit.early_stopping(),
        };
        return Ok(super::finished(&jobs::resume(&request, output)?));
    }
    if let Some(labels) = args.data.labels.as_ref().filter(|labels| labels.len() as u64 != args.num_classes) {
        if given.has("--num-classes") {
            return Err(UsageError(format!(
                "--labels gives {} classes but --num-classes says {}: with --labels the number of classes is the \
                 number of labels; drop --num-classes",
                labels.len(),
                args.num_classes
            ))
            .into());
        }
    }
    let request = NewRun {
        data: args.data.request()?,
        num_classes: args.num_classes as usize,
        arch: args.arch,
        hidden: args.hidden.clone(),
        dropout: args.dropout,
        training: args.fit.train_config(args.lr, args.data.validation_split),
        device,
        destination: Destination {
            out: args.output.out.clone(),
            overwrite: args.output.overwrite,
            default_name: "train",
        },
        save_initial: args.fit.save_initial,
    };
    let planned = jobs::plan_new_run(&request)?;
    if args.print_config {
        crate::say!("{}", serde_json::to_string_pretty(&planned.config)?)?;
        return Ok(Finished::Done);
    }
    let group = crate::distributed::join_from_env()?;
    let output =
        JobOutput::for_process(args.output.mode(), args.output.plot, args.output.tensorboard.clone(), group.clone());
    let request = NewRun { device: crate::distributed::device_of_process(device, group.as_deref()), ..request };
    Ok(super::finished(&jobs::start_new_run(planned, &request, output)?))
}

/// `train --resume RUN --print-config`: the config the resumed run continues with (its own, with
/// `--epochs` applied), without training.
fn print_resumed_config(dir: &std::path::Path, epochs: Option<u64>) -> Result<()> {
    let mut config = crate::run_dir::RunConfig::load(dir)?;
    if let Some(epochs) = epochs {
        config.training.epochs = epochs as usize;
    }
    crate::say!("{}", serde_json::to_string_pretty(&config)?)?;
    Ok(())
}
