//! `mnist-tch train`: load the data, build the model, train it, evaluate it on the test files and
//! write the run directory — or, with `--resume`, continue a run from its last completed epoch.

use super::flags::{DataFlags, FitFlags, OutputFlags};
use super::{positive_f64, unit_interval_from_zero};
use crate::callbacks;
use crate::data::{self, Selection};
use crate::device::device_name;
use crate::fit::{FitJob, JobData, fit};
use crate::model::{self, ModelConfig, parse_hidden};
use crate::progress::OutputMode;
use crate::run_dir::{self, DataInfo, RunConfig, ToolInfo};
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use std::path::{Path, PathBuf};
use tch::nn;

/// How pixels become inputs; recorded in config.json so inference can do the same.
pub const NORMALIZATION: &str = "pixel / 255 (inputs in [0, 1])";

/// `--hidden`'s value. An alias, because clap's derive would read a literal `Vec` field as a flag that
/// repeats; this is one flag whose value is a comma list.
type Widths = Vec<i64>;

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataFlags,

    /// Hidden layer widths, comma-separated: 128 is the seed's Dense(128, relu); 512,256 builds two.
    #[arg(long, value_name = "WIDTHS", default_value = "128", value_parser = parse_hidden)]
    pub hidden: Widths,

    /// Dropout rate after each hidden layer's ReLU, during training only (default 0: the seed's model).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = unit_interval_from_zero)]
    pub dropout: f64,

    /// Adam learning rate. Adam uses beta1 0.9, beta2 0.999 and Keras's epsilon 1e-7 (PyTorch's
    /// default is 1e-8).
    #[arg(long, value_name = "RATE", default_value_t = 1e-3, value_parser = positive_f64)]
    pub lr: f64,

    /// Number of classes (output units); every label in the data must be below it. With --labels,
    /// the number of labels given.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=256))]
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
    /// --epochs in total (default: the run's own epochs). Everything else comes from its config.json.
    /// Weights, Adam's state (optimizer.safetensors), epoch counter, learning-rate schedule and data
    /// order all continue.
    #[arg(
        long,
        value_name = "RUN_DIR",
        conflicts_with_all = ["hidden", "dropout", "lr", "num_classes", "labels", "limit", "print_config", "out", "overwrite"]
    )]
    pub resume: Option<PathBuf>,
}

pub fn run(args: TrainArgs) -> Result<()> {
    if let Some(dir) = &args.resume {
        return resume(dir, &args);
    }
    let device = args.output.device.resolve()?;
    let mode = args.output.mode();
    let selection = args.data.selection();
    let data_path = args.data.data_path()?;
    let prepared = data::prepare(
        &data_path,
        &selection,
        args.num_classes as usize,
        &args.data.class_names,
        args.data.validation_split,
    )?;
    let config = RunConfig {
        tool: ToolInfo::default(),
        model: ModelConfig {
            input_shape: [prepared.image_rows as i64, prepared.image_cols as i64],
            hidden: args.hidden.clone(),
            num_classes: prepared.num_classes as i64,
            dropout: args.dropout,
        },
        data: data_info(&data_path, &prepared, selection),
        training: args.fit.train_config(args.lr, args.data.validation_split, device_name(device)),
        lineage: None,
        state: Default::default(),
        result: None,
    };
    config.model.validate()?;
    callbacks::check(config.training.lr_schedule, config.training.epochs)?;
    check_batch(&config, &prepared)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let out = args.output.out.clone().unwrap_or_else(|| run_dir::next_free_run_dir(&PathBuf::from("runs")));
    // Before training, so a bad --out costs nothing.
    run_dir::prepare_new_run_dir(&out, args.output.overwrite)?;

    print_header(mode, &config, &prepared, device);
    tch::manual_seed(config.training.seed);
    let vs = nn::VarStore::new(device);
    let net = model::build(&vs.root(), &config.model);
    let data = JobData { train: prepared.train, valid: prepared.valid, test: &prepared.test };
    let report = fit(FitJob::new(config, data, vs, net, out, mode, args.output.plot, super::interrupt_flag()))?;
    super::exit_status(&report)
}

/// `train --resume RUN_DIR`: the same run, continued.
fn resume(dir: &Path, args: &TrainArgs) -> Result<()> {
    let device = args.output.device.resolve()?;
    let mode = args.output.mode();
    let mut config = RunConfig::load(dir)?;
    let completed = config.state.epochs_completed;
    if completed == 0 {
        bail!("{}: no completed epoch to resume from (start a new run instead)", dir.display());
    }
    let target = args.fit.epochs.map_or(config.training.epochs, |n| n as usize);
    ensure!(
        target > completed,
        "{}: already trained {completed} epochs; pass --epochs N with N > {completed} to train more",
        dir.display()
    );
    config.training.epochs = target;
    config.training.device = device_name(device);
    let prepared = data::prepare(
        &config.data.dir,
        &config.data.selection,
        config.model.num_classes as usize,
        "digits", // the names are already in config.json; this only avoids re-deriving them
        config.training.validation_split,
    )
    .with_context(|| format!("reloading the data of {}", dir.display()))?;
    let mut history = run_dir::load_metrics(dir)?;
    history.truncate(completed);
    let mut vs = nn::VarStore::new(device);
    let net = model::build(&vs.root(), &config.model);
    run_dir::load_weights(&mut vs, &dir.join(run_dir::WEIGHTS_FILE))?;
    // Adam continues where it was, when the run saved its state (runs of older versions did not).
    let optimizer_path = dir.join(run_dir::OPTIMIZER_FILE);
    let optimizer_state = if optimizer_path.exists() { Some(run_dir::load_tensors(&optimizer_path)?) } else { None };
    let config_frozen = config.lineage.as_ref().map(|l| l.frozen.clone()).unwrap_or_default();
    if mode != OutputMode::Quiet {
        println!(
            "Resuming {} after epoch {completed}, up to epoch {target} ({})",
            dir.display(),
            if optimizer_state.is_some() {
                "with its optimizer state"
            } else {
                "optimizer state not saved: Adam restarts"
            }
        );
    }
    print_header(mode, &config, &prepared, device);
    let data = JobData { train: prepared.train, valid: prepared.valid, test: &prepared.test };
    let out = dir.to_path_buf();
    let report = fit(FitJob {
        first_epoch: completed + 1,
        optimizer_state,
        frozen: config_frozen,
        previous_history: history,
        ..FitJob::new(config, data, vs, net, out, mode, args.output.plot, super::interrupt_flag())
    })?;
    super::exit_status(&report)
}

/// The `data` part of `config.json`.
pub fn data_info(dir: &Path, prepared: &data::Prepared, selection: Selection) -> DataInfo {
    DataInfo {
        // Absolute, so `evaluate` finds the data from any working directory.
        dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        class_names: prepared.class_names.clone(),
        train_examples: prepared.train.len() as usize,
        validation_examples: prepared.valid.len() as usize,
        test_examples: prepared.test.len() as usize,
        normalization: NORMALIZATION.into(),
        selection,
    }
}

/// A batch larger than the training part would make every epoch one partial step: refuse it.
pub fn check_batch(config: &RunConfig, prepared: &data::Prepared) -> Result<()> {
    let train_len = prepared.train.len();
    ensure!(
        config.training.batch_size as i64 <= train_len,
        "--batch-size {} is larger than the {train_len} training examples left after the validation split",
        config.training.batch_size
    );
    Ok(())
}

/// Device, data and model lines before training.
pub fn print_header(mode: OutputMode, config: &RunConfig, prepared: &data::Prepared, device: tch::Device) {
    if mode == OutputMode::Quiet {
        return;
    }
    println!("Device: {}", device_name(device));
    println!(
        "Data: {} - {} training, {} validation, {} test images of {}x{}, {} classes",
        config.data.dir.display(),
        prepared.train.len(),
        prepared.valid.len(),
        prepared.test.len(),
        prepared.image_rows,
        prepared.image_cols,
        prepared.num_classes
    );
    let frozen = config.lineage.as_ref().map(|l| l.frozen.clone()).unwrap_or_default();
    print!("{}", model::summary(&config.model, "new run", &frozen));
}
