//! Flags shared by `train` and `finetune`, as clap groups flattened into each command, and their
//! conversion into the plain config structs.

use super::{open_unit_interval, parse_min_delta_flag};
use crate::callbacks::{EarlyStopping, LrSchedule, Monitor};
use crate::data::{self, Selection, parse_labels};
use crate::device::DeviceSpec;
use crate::fused_mlp::Precision;
use crate::progress::OutputMode;
use crate::training::TrainConfig;
use clap::Args;
use std::path::PathBuf;

/// `--labels`'s value; an alias so clap's derive reads one comma list, not a repeated flag.
type LabelList = Vec<u8>;

/// Which data, and which part of it.
#[derive(Debug, Args)]
pub struct DataFlags {
    /// Data set: a directory with the four MNIST-format files (train-images-idx3-ubyte,
    /// train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), raw or .gz, or a
    /// Keras-style .npz file (x_train, y_train, x_test, y_test). Default: $MNIST_TCH_DATA when set,
    /// else digit MNIST from ./data/mnist or else $XDG_DATA_HOME/mnist-tch/mnist
    /// (~/.local/share/mnist-tch/mnist), whichever exists first; scripts/setup.sh installs it in both.
    /// Fashion-MNIST: --data data/fashion-mnist.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,

    /// Use only these classes, comma-separated (e.g. 0,1,2,3,4), relabelled 0..k in this order, in the
    /// training and the test files.
    #[arg(long, value_name = "LABELS", value_parser = parse_labels)]
    pub labels: Option<LabelList>,

    /// Use only the first N training images (after --labels), validation split included.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Fraction of the training files held out for validation: the LAST part, before shuffling, as
    /// Keras's fit(validation_split=...) does (0.2 of 60,000 = the last 12,000).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.2, value_parser = open_unit_interval)]
    pub validation_split: f64,

    /// Class names stored with the model: auto (Fashion-MNIST's names when the data directory's
    /// path says "fashion", else the digits), digits, fashion, or a comma-separated list.
    #[arg(long, value_name = "NAMES", default_value = "auto")]
    pub class_names: String,
}

impl DataFlags {
    /// The data set's path: --data, or the default data set (see [`data::resolve_data_path`]).
    pub fn data_path(&self) -> anyhow::Result<PathBuf> {
        data::resolve_data_path(self.data.as_deref(), &data::DataSearch::from_process())
    }

    pub fn selection(&self) -> Selection {
        Selection { labels: self.labels.clone(), limit: self.limit.map(|n| n as usize) }
    }
}

/// How to train.
#[derive(Debug, Args)]
pub struct FitFlags {
    /// Passes over the training set [default: 10]. With --resume: the new total number of epochs
    /// (default: the run's own, to finish an interrupted run).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,

    /// Examples per optimisation step (the last step of an epoch may be smaller).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,

    /// Random seed for weight initialisation and shuffling; two CPU runs with the same seed print
    /// identical metrics.
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: i64,

    /// Decoupled weight decay: > 0 switches Adam to AdamW (default 0: plain Adam, the seed).
    #[arg(long, value_name = "DECAY", default_value_t = 0.0, value_parser = parse_min_delta_flag)]
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
    #[arg(long, value_name = "DELTA", default_value_t = 0.0, value_parser = parse_min_delta_flag)]
    pub min_delta: f64,

    /// Also keep the best epoch's weights (by --monitor) in best.safetensors; model.safetensors holds
    /// the last epoch's.
    #[arg(long)]
    pub save_best: bool,

    /// Arithmetic of training's forward and backward passes: f32, or bf16 (bfloat16 matrix products,
    /// float32 master weights, loss and Adam — mixed precision; fastest on GPUs and CPUs with bf16 units).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

impl FitFlags {
    /// The training config for these flags, with `learning_rate` and `validation_split` and the
    /// device name from the command.
    pub fn train_config(&self, learning_rate: f64, validation_split: f64, device: String) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs.map_or(TrainConfig::default().epochs, |n| n as usize),
            batch_size: self.batch_size as usize,
            learning_rate,
            validation_split,
            seed: self.seed,
            device,
            optimizer: if self.weight_decay > 0.0 { "adamw" } else { "adam" }.into(),
            weight_decay: self.weight_decay,
            lr_schedule: self.lr_schedule,
            monitor: self.monitor,
            early_stopping: self
                .early_stopping
                .map(|patience| EarlyStopping { patience: patience as usize, min_delta: self.min_delta }),
            save_best: self.save_best,
            precision: self.precision,
            ..TrainConfig::default()
        }
    }
}

/// Where the run goes and what is shown.
#[derive(Debug, Args)]
pub struct OutputFlags {
    /// auto (CUDA when libtorch sees a GPU, else CPU), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceSpec::Auto)]
    pub device: DeviceSpec,

    /// Run directory to write (config.json, model.safetensors, metrics.csv, ...). Default: the first
    /// free runs/trainN.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace the files of a previous run in --out instead of refusing.
    #[arg(long)]
    pub overwrite: bool,

    /// Draw learning_curves.png and confusion_matrix.png into the run directory at the end.
    #[arg(long)]
    pub plot: bool,

    /// Print only the final "Test accuracy" line.
    #[arg(long)]
    pub quiet: bool,
}

impl OutputFlags {
    pub fn mode(&self) -> OutputMode {
        OutputMode::detect(self.quiet)
    }
}
