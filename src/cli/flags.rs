//! Flags shared by `train`, `finetune` and `resume`, as clap groups flattened into each command, and
//! their conversion into the plain config structs.

use super::{open_unit_interval, parse_min_delta_flag};
use crate::callbacks::{EarlyStopping, LrSchedule, Monitor};
use crate::class_names::ClassNames;
use crate::data::{self, Selection, parse_labels};
use crate::device::DeviceSpec;
use crate::distributed::BackendChoice;
use crate::engine::{Engine, Precision};
use crate::fit::JobOutput;
use crate::frame::Frame;
use crate::jobs::{DataRequest, NewRunDir};
use crate::optimizer::AdamVariant;
use crate::preprocess::Framing;
use crate::progress::OutputMode;
use crate::run_dir::{ShiftRule, TrainConfig, TrainingDefaults};
use clap::Args;
use std::path::PathBuf;
use tch::Device;

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
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least_one)]
    pub limit: Option<u64>,

    /// Fraction of the training files held out for validation: the LAST part, before shuffling, as
    /// Keras's fit(validation_split=...) does (0.2 of 60,000 = the last 12,000).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true, default_value_t = 0.2, value_parser = open_unit_interval)]
    pub validation_split: f64,

    /// Class names stored with the model: auto (Fashion-MNIST's names when the data directory's
    /// path says "fashion", else the digits), digits, fashion, or a comma-separated list.
    #[arg(long, value_name = "NAMES", default_value = "auto")]
    pub class_names: ClassNames,

    /// The model's input frame, CxHxW (C: 1 grey, 3 RGB) or HxW (= 1xHxW). Pictures and CSV rows are
    /// made into it (grey pictures expanded to 3 channels, colour ones converted to grey, as it says);
    /// IDX and .npz data are used at their own size. Default: the data's own (1x28x28 for pictures);
    /// fine-tuning: the parent's.
    #[arg(long, value_name = "CxHxW", value_parser = crate::frame::parse_frame)]
    pub input: Option<Frame>,

    /// How a picture of a folder is fitted into the frame, recorded in the run (predict and serve fit
    /// pictures the same way): auto (a picture of the frame's size as it is; otherwise, grey frames the
    /// MNIST way — digits — and colour frames a plain resize), digits, fashion (grey frames only), or
    /// none (a plain resize).
    #[arg(long, value_parser = super::choices::fit(), default_value_t = Framing::Auto)]
    pub fit: Framing,

    /// Skip pictures that will not decode (counted in the header) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

impl DataFlags {
    /// The data set's path: --data, or the default data set (see [`data::resolve_data_path`]).
    pub fn data_path(&self) -> anyhow::Result<PathBuf> {
        data::resolve_data_path(self.data.as_deref(), &data::DataSearch::from_process())
    }

    pub fn selection(&self) -> Selection {
        Selection { labels: self.labels.clone(), limit: self.limit.map(|n| n as usize) }
    }

    /// The data request of these flags, with the data set's path resolved.
    pub fn request(&self) -> anyhow::Result<DataRequest> {
        Ok(DataRequest {
            path: self.data_path()?,
            selection: self.selection(),
            class_names: self.class_names.clone(),
            validation_split: self.validation_split,
            reading: data::Reading { frame: self.input, fit: self.fit, skip_bad: self.skip_bad },
        })
    }
}

/// How to train: the training settings of a new or a fine-tuned run.
#[derive(Debug, Args)]
pub struct TrainingFlags {
    /// Passes over the training set [default: 10].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = at_least_one)]
    pub epochs: Option<u64>,

    /// Examples per optimisation step (the last step of an epoch may be smaller).
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 32, value_parser = at_least_one)]
    pub batch_size: u64,

    /// Gradient accumulation: N micro-batches of --batch-size per optimizer step, the loss scaled so
    /// that --batch-size B --accumulate N steps as one batch of B·N (Keras's gradient_accumulation_steps).
    /// Under torchrun the gradients are averaged once per step. Autograd engine only.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 1, value_parser = at_least_one)]
    pub accumulate: u64,

    /// Random seed for weight initialisation and shuffling; two CPU runs with the same seed print
    /// identical metrics.
    #[arg(long, value_name = "N", allow_negative_numbers = true, default_value_t = 42)]
    pub seed: i64,

    /// Decoupled weight decay: > 0 switches Adam to AdamW; 0 keeps plain Adam, as the Keras tutorial.
    /// Default: 0, 0.05 for a new --arch vit run.
    #[arg(long, value_name = "DECAY", allow_negative_numbers = true, value_parser = super::weight_decay)]
    pub weight_decay: Option<f64>,

    /// Learning-rate schedule: constant, step:EVERY:GAMMA (multiply by GAMMA every EVERY epochs),
    /// cosine (anneal towards 0 over the run), or plateau:PATIENCE:FACTOR (ReduceLROnPlateau on
    /// --monitor). Each epoch's rate is in the epoch line and metrics.csv. Default: constant (the Keras
    /// tutorial), cosine for a new --arch vit run.
    #[arg(long, value_name = "SCHEDULE")]
    pub lr_schedule: Option<LrSchedule>,

    /// Metric for early stopping, --save-best and the plateau schedule (Keras's spellings val_loss and
    /// val_accuracy work too).
    #[arg(long, value_parser = super::choices::monitor(), default_value_t = Monitor::ValLoss)]
    pub monitor: Monitor,

    #[command(flatten)]
    pub stopping: StoppingFlags,

    /// Arithmetic of training's forward and backward passes: f32, or bf16 (bfloat16 matrix products,
    /// float32 master weights, loss and Adam — mixed precision; fastest on GPUs and CPUs with bf16 units).
    /// Default: f32 for a new run, the parent's precision when fine-tuning.
    #[arg(long, value_parser = super::choices::precision())]
    pub precision: Option<Precision>,

    /// Which code computes a training step: autograd (libtorch's autograd and tch's nn::Adam, any
    /// architecture) or fused (hand-written MLP backward pass and flat Adam, MLP and linear only).
    /// Default: autograd for a new run, the run's own engine when continuing or fine-tuning one.
    #[arg(long, value_parser = super::choices::engine())]
    pub engine: Option<Engine>,

    /// Move each training picture by up to PIXELS pixels along each axis, a new move every epoch, the
    /// border filled with 0 (torchvision's RandomCrop(size, padding=PIXELS)). Default: 0 (none); for a
    /// new --arch vit run 1 where that loses nothing — where the training pictures' outer pixel ring is
    /// background (digit MNIST) — and 0 where they fill the frame (Fashion-MNIST).
    #[arg(long, value_name = "PIXELS", allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub random_shift: Option<u64>,

    /// Label smoothing of the training loss: the target puts 1 - EPS on the label and spreads EPS evenly
    /// over every class (PyTorch's CrossEntropyLoss(label_smoothing=EPS)); validation and test losses stay
    /// plain cross-entropy. Autograd engine only. Default: 0 (none), 0.1 for a new --arch vit run.
    #[arg(long, value_name = "EPS", allow_negative_numbers = true, value_parser = super::unit_interval_from_zero)]
    pub label_smoothing: Option<f64>,

    /// Walk the training part in file order every epoch instead of reshuffling it (Keras's
    /// fit(shuffle=False)); with --save-initial, PyTorch can replay the run step for step.
    #[arg(long)]
    pub no_shuffle: bool,

    /// Also write initial.safetensors into the run directory: the weights before the first step.
    #[arg(long)]
    pub save_initial: bool,
}

impl TrainingFlags {
    /// The training config for these flags, with `learning_rate` and `validation_split` from the
    /// command and `defaults` where the flags are silent (the device is filled in by the job).
    pub fn train_config(&self, learning_rate: f64, validation_split: f64, defaults: TrainingDefaults) -> TrainConfig {
        let weight_decay = self.weight_decay.unwrap_or(defaults.weight_decay);
        TrainConfig {
            epochs: self.epochs.map_or(TrainConfig::default().epochs, |n| n as usize),
            batch_size: self.batch_size as usize,
            accumulate: self.accumulate as usize,
            engine: self.engine.unwrap_or_default(),
            shuffle: !self.no_shuffle,
            random_shift: self.random_shift(defaults).most(),
            label_smoothing: self.label_smoothing.unwrap_or(defaults.label_smoothing),
            learning_rate,
            validation_split,
            seed: self.seed,
            optimizer: AdamVariant::for_weight_decay(weight_decay),
            weight_decay,
            lr_schedule: self.lr_schedule.unwrap_or(defaults.lr_schedule),
            monitor: self.monitor,
            early_stopping: self.stopping.early_stopping(),
            save_best: self.stopping.save_best,
            precision: self.precision.unwrap_or_default(),
            ..TrainConfig::default()
        }
    }

    /// How far the training pictures move: `--random-shift` as given, else `defaults`' rule (which a new
    /// run settles on its data, `jobs::plan_new_run`).
    pub fn random_shift(&self, defaults: TrainingDefaults) -> ShiftRule {
        self.random_shift.map_or(defaults.random_shift, |pixels| ShiftRule::Fixed(pixels as usize))
    }
}

/// Which epochs' weights a run keeps and when it stops early. `resume` takes them too: they act on the
/// remaining epochs.
#[derive(Debug, Args)]
pub struct StoppingFlags {
    /// Stop when --monitor has not improved by --min-delta for PATIENCE epochs, and end with the best
    /// epoch's weights (Keras EarlyStopping(restore_best_weights=True)).
    #[arg(long, value_name = "PATIENCE", allow_negative_numbers = true, value_parser = at_least_one)]
    pub early_stopping: Option<u64>,

    /// Smallest change of --monitor that counts as an improvement for early stopping.
    #[arg(long, value_name = "DELTA", allow_negative_numbers = true, default_value_t = 0.0, value_parser = parse_min_delta_flag)]
    pub min_delta: f64,

    /// Also keep the best epoch's weights (by --monitor) in best.safetensors; model.safetensors holds
    /// the last epoch's.
    #[arg(long)]
    pub save_best: bool,
}

impl StoppingFlags {
    /// The early-stopping settings these flags ask for.
    pub fn early_stopping(&self) -> Option<EarlyStopping> {
        self.early_stopping.map(|patience| EarlyStopping { patience: patience as usize, min_delta: self.min_delta })
    }
}

/// Where a new run goes.
#[derive(Debug, Args)]
pub struct OutputFlags {
    /// Run directory to write (config.json, model.safetensors, metrics.csv, ...). Default: the first
    /// free runs/trainN (finetune: runs/finetuneN).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace a previous run in --out instead of refusing: the directory is replaced as a whole (none
    /// of the earlier run's files are kept); a directory that also holds other files is refused.
    #[arg(long)]
    pub overwrite: bool,
}

impl OutputFlags {
    /// Where the run goes; `default_name` is the stem of the default directory (`train`, `finetune`).
    pub fn new_run_dir(&self, default_name: &'static str) -> NewRunDir {
        NewRunDir { out: self.out.clone(), overwrite: self.overwrite, default_name }
    }
}

/// Where a training job runs and what it shows: every training command, `resume` included.
#[derive(Debug, Args)]
pub struct JobFlags {
    /// auto (CUDA when libtorch sees a GPU, else CPU), cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceSpec::Auto)]
    pub device: DeviceSpec,

    /// Draw learning_curves.png and confusion_matrix.png into the run directory at the end.
    #[arg(long)]
    pub plot: bool,

    /// Print only the final "Test accuracy" line.
    #[arg(long)]
    pub quiet: bool,

    /// Also write TensorBoard event files into DIR, as Keras's TensorBoard callback lays them out
    /// (DIR/train, DIR/validation: epoch_loss, epoch_accuracy, epoch_learning_rate), plus the config as
    /// text and the test confusion matrix (DIR/test); steps continue across sessions. See
    /// docs/tensorboard.md.
    #[arg(long, value_name = "DIR", value_parser = crate::tensorboard::parse_dir)]
    pub tensorboard: Option<PathBuf>,

    /// Under torchrun, what the ranks all-reduce with (recorded in config.json's
    /// training.distributed.backend).
    #[arg(long, value_name = "BACKEND", default_value = "auto", value_parser = super::choices::dist_backend())]
    pub dist_backend: BackendChoice,
}

impl JobFlags {
    /// The output of this process's training job on `device` (`--device`, resolved); under torchrun it
    /// joins the other processes first (only rank 0 then prints and writes).
    pub fn job_output(&self, device: Device) -> anyhow::Result<JobOutput> {
        let group = crate::distributed::join_from_env(self.dist_backend, device)?;
        let mode = OutputMode::detect(self.quiet);
        Ok(JobOutput::for_process(mode, self.plot, self.tensorboard.clone(), group))
    }
}

/// Parses a whole number of at least 1 (epochs, batch size, patience, --limit, --top-k): clap's own
/// range parser says `0 is not in 1..18446744073709551615`.
pub fn at_least_one(s: &str) -> Result<u64, String> {
    whole_number_in(s, 1, u64::MAX)
}

/// Parses a number of classes: 2 to 256 (labels are bytes).
pub fn class_count(s: &str) -> Result<u64, String> {
    whole_number_in(s, 2, 256)
}

/// Parses a TCP port: 0 (a free one) to 65535.
pub fn port(s: &str) -> Result<u16, String> {
    whole_number_in(s, 0, u64::from(u16::MAX)).and_then(|port| u16::try_from(port).map_err(|_| "too large".into()))
}

/// A whole number in `min..=max`, or a plain sentence saying what is wrong with it.
fn whole_number_in(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let wanted =
        if max == u64::MAX { format!("must be at least {min}") } else { format!("must be between {min} and {max}") };
    let value: i128 = s.trim().parse().map_err(|_| format!("not a whole number ({wanted})"))?;
    if value < i128::from(min) || value > i128::from(max) {
        return Err(if value > i128::from(u64::MAX) { "too large".into() } else { wanted });
    }
    Ok(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_checked_with_plain_messages() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert_eq!(at_least_one("0"), Err("must be at least 1".into()));
        assert_eq!(at_least_one("-1"), Err("must be at least 1".into()));
        assert_eq!(at_least_one("x"), Err("not a whole number (must be at least 1)".into()));
        assert_eq!(at_least_one("99999999999999999999"), Err("too large".into()));
        assert_eq!(class_count("1"), Err("must be between 2 and 256".into()));
        assert_eq!(class_count("257"), Err("must be between 2 and 256".into()));
        assert_eq!(class_count("10"), Ok(10));
    }
}
