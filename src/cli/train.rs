//! `mnist-tch train`: load the data, build the model, train it, evaluate it on the test files and
//! write the run directory.

use super::{open_unit_interval, positive_f64, unit_interval_from_zero};
use crate::callbacks::{self, EarlyStopping, LrSchedule, Monitor, parse_min_delta};
use crate::data;
use crate::device::{DeviceSpec, device_name};
use crate::fit::{FitJob, JobData, fit};
use crate::model::{self, ModelConfig, parse_hidden};
use crate::progress::OutputMode;
use crate::run_dir::{self, DataInfo, RunConfig, ToolInfo};
use crate::training::TrainConfig;
use anyhow::{Result, ensure};
use clap::Args;
use std::path::PathBuf;
use tch::nn;

/// How pixels become inputs; recorded in config.json so inference can do the same.
pub const NORMALIZATION: &str = "pixel / 255 (inputs in [0, 1])";

/// `--hidden`'s value. An alias, because clap's derive would read a literal `Vec` field as a flag that
/// repeats; this is one flag whose value is a comma list.
type Widths = Vec<i64>;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Directory with the four MNIST-format files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
    /// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), raw or .gz. scripts/setup.sh prepares
    /// Fashion-MNIST in the default location.
    #[arg(long, value_name = "DIR", env = "MNIST_TCH_DATA", default_value = "data/fashion-mnist")]
    pub data: PathBuf,

    /// Hidden layer widths, comma-separated: 128 is the seed's Dense(128, relu); 512,256 builds two.
    #[arg(long, value_name = "WIDTHS", default_value = "128", value_parser = parse_hidden)]
    pub hidden: Widths,

    /// Passes over the training set.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: u64,

    /// Examples per optimisation step (the last step of an epoch may be smaller).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,

    /// Adam learning rate. Adam uses beta1 0.9, beta2 0.999 and Keras's epsilon 1e-7 (PyTorch's
    /// default is 1e-8).
    #[arg(long, value_name = "RATE", default_value_t = 1e-3, value_parser = positive_f64)]
    pub lr: f64,

    /// Fraction of the training files held out for validation: the LAST part, before shuffling, as
    /// Keras's fit(validation_split=...) does (0.2 of 60,000 = the last 12,000).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.2, value_parser = open_unit_interval)]
    pub validation_split: f64,

    /// Random seed for weight initialisation and shuffling; two CPU runs with the same seed print
    /// identical metrics.
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: i64,

    /// auto (CUDA when libtorch sees a GPU, else CPU), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceSpec::Auto)]
    pub device: DeviceSpec,

    /// Run directory to write (config.json, model.safetensors, metrics.csv). Default: the first free
    /// runs/trainN.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace the files of a previous run in --out instead of refusing.
    #[arg(long)]
    pub overwrite: bool,

    /// Number of classes (output units); every label in the data must be below it.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=256))]
    pub num_classes: u64,

    /// Class names stored with the model: auto (Fashion-MNIST's names when the data directory's
    /// path says "fashion", else the digits), digits, fashion, or a comma-separated list.
    #[arg(long, value_name = "NAMES", default_value = "auto")]
    pub class_names: String,

    /// Dropout rate after each hidden layer's ReLU, during training only (default 0: the seed's model).
    #[arg(long, value_name = "RATE", default_value_t = 0.0, value_parser = unit_interval_from_zero)]
    pub dropout: f64,

    /// Decoupled weight decay: > 0 switches Adam to AdamW (default 0: plain Adam, the seed).
    #[arg(long, value_name = "DECAY", default_value_t = 0.0, value_parser = parse_min_delta)]
    pub weight_decay: f64,

    /// Learning-rate schedule: constant, step:EVERY:GAMMA (multiply by GAMMA every EVERY epochs),
    /// cosine (anneal towards 0 over the run), or plateau:PATIENCE:FACTOR (ReduceLROnPlateau on
    /// --monitor). Each epoch's rate is in the epoch line and metrics.csv.
    #[arg(long, value_name = "SCHEDULE", default_value = "constant")]
    pub lr_schedule: LrSchedule,

    /// Stop when --monitor has not improved by --min-delta for PATIENCE epochs, and end with the best
    /// epoch's weights (Keras EarlyStopping(restore_best_weights=True)).
    #[arg(long, value_name = "PATIENCE", value_parser = clap::value_parser!(u64).range(1..))]
    pub early_stopping: Option<u64>,

    /// Metric for early stopping, --save-best and the plateau schedule.
    #[arg(long, value_enum, default_value_t = Monitor::ValLoss)]
    pub monitor: Monitor,

    /// Smallest change of --monitor that counts as an improvement for early stopping.
    #[arg(long, value_name = "DELTA", default_value_t = 0.0, value_parser = parse_min_delta)]
    pub min_delta: f64,

    /// Also keep the best epoch's weights (by --monitor) in best.safetensors; model.safetensors holds
    /// the last epoch's.
    #[arg(long)]
    pub save_best: bool,

    /// Draw learning_curves.png and confusion_matrix.png into the run directory at the end.
    #[arg(long)]
    pub plot: bool,

    /// Print only the final "Test accuracy" line.
    #[arg(long)]
    pub quiet: bool,

    /// Check the data and flags, print the config.json this run would write, and stop without
    /// training (scripts/baseline.py reads its hyperparameters from it).
    #[arg(long)]
    pub print_config: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let device = args.device.resolve()?;
    let mode = OutputMode::detect(args.quiet);
    let say = |line: String| {
        if mode != OutputMode::Quiet {
            println!("{line}");
        }
    };
    let num_classes = args.num_classes as usize;
    let data = data::load_dir(&args.data, num_classes)?;
    let class_names = data::class_names(&args.class_names, &args.data, num_classes)?;
    let (train_len, valid_len) = data::validation_split(data.train.len() as usize, args.validation_split)?;
    ensure!(
        args.batch_size as usize <= train_len,
        "--batch-size {} is larger than the {train_len} training examples left after the validation split",
        args.batch_size
    );

    let config = RunConfig {
        tool: ToolInfo::default(),
        model: ModelConfig {
            input_shape: [data.image_rows as i64, data.image_cols as i64],
            hidden: args.hidden.clone(),
            num_classes: num_classes as i64,
            dropout: args.dropout,
        },
        data: DataInfo {
            // Absolute, so `evaluate` finds the data from any working directory.
            dir: std::fs::canonicalize(&args.data).unwrap_or_else(|_| args.data.clone()),
            class_names,
            train_examples: train_len,
            validation_examples: valid_len,
            test_examples: data.test.len() as usize,
            normalization: NORMALIZATION.into(),
        },
        training: TrainConfig {
            epochs: args.epochs as usize,
            batch_size: args.batch_size as usize,
            learning_rate: args.lr,
            validation_split: args.validation_split,
            seed: args.seed,
            device: device_name(device),
            optimizer: if args.weight_decay > 0.0 { "adamw" } else { "adam" }.into(),
            weight_decay: args.weight_decay,
            lr_schedule: args.lr_schedule,
            monitor: args.monitor,
            early_stopping: args
                .early_stopping
                .map(|patience| EarlyStopping { patience: patience as usize, min_delta: args.min_delta }),
            save_best: args.save_best,
            ..TrainConfig::default()
        },
        state: Default::default(),
        result: None,
    };
    callbacks::check(config.training.lr_schedule, config.training.epochs)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let out = args.out.clone().unwrap_or_else(|| run_dir::next_free_run_dir(&PathBuf::from("runs")));
    // Before training, so a bad --out costs nothing.
    run_dir::prepare_new_run_dir(&out, args.overwrite)?;

    say(format!("Device: {}", device_name(device)));
    say(format!(
        "Data: {} - {train_len} training, {valid_len} validation, {} test images of {}x{}, {num_classes} classes",
        args.data.display(),
        data.test.len(),
        data.image_rows,
        data.image_cols,
    ));
    say(format!("Model: {} MLP, {} parameters", config.model.describe(), config.model.parameter_count()));

    tch::manual_seed(args.seed);
    let vs = nn::VarStore::new(device);
    let net = model::build(&vs.root(), &config.model);
    // The Keras split: the first part trains, the last part validates.
    let job_data = JobData {
        train: data.train.slice(0, train_len as i64),
        valid: data.train.slice(train_len as i64, valid_len as i64),
        test: &data.test,
    };
    let report = fit(FitJob {
        config,
        data: job_data,
        vs,
        net,
        out,
        first_epoch: 1,
        previous_history: Vec::new(),
        mode,
        plot: args.plot,
        interrupt: super::interrupt_flag(),
    })?;
    super::exit_status(&report)
}
