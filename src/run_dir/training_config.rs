//! The `training` part of `config.json`: every hyperparameter of a run, with the Keras tutorial's
//! settings as the default.

use crate::callbacks::{EarlyStopping, LrSchedule, Monitor};
use crate::distributed::DistributedInfo;
use crate::engine::{AdamSettings, Engine, Precision};
use crate::model::{Arch, WeightInit};
use crate::optimizer::AdamVariant;
use serde::{Deserialize, Serialize};

/// Every hyperparameter of a training run; stored in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Micro-batches of `batch_size` per optimizer step (gradient accumulation): a step sees
    /// `batch_size × accumulate` examples. 1, the default, is not written.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub accumulate: usize,
    /// Which code computes a step (runs of earlier versions trained with the fused engine).
    #[serde(default = "fused_for_old_runs")]
    pub engine: Engine,
    /// `adam`, or `adamw` when `weight_decay` > 0 (decoupled weight decay).
    pub optimizer: AdamVariant,
    pub learning_rate: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    /// Keras's default (1e-7), not PyTorch's (1e-8): the tutorial is a Keras program.
    pub adam_epsilon: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// The metric for early stopping, the best checkpoint and the plateau schedule.
    #[serde(default)]
    pub monitor: Monitor,
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// Keep the best epoch's weights in `best.safetensors` beside the last ones.
    #[serde(default)]
    pub save_best: bool,
    /// Arithmetic of the forward and backward passes (`f32`, or `bf16` mixed precision).
    #[serde(default)]
    pub precision: Precision,
    /// Reshuffle the training part every epoch (Keras's `fit(shuffle=True)`); false walks it in file order.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Each training picture is moved by up to this many pixels along each axis every epoch
    /// (`--random-shift`, [`crate::augment`]); 0, no augmentation, is not written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub random_shift: usize,
    /// The training loss's target puts `1 - label_smoothing` on the label and spreads `label_smoothing`
    /// evenly over every class (`--label-smoothing`); 0, plain cross-entropy, is not written.
    #[serde(default, skip_serializing_if = "is_zero_rate")]
    pub label_smoothing: f64,
    /// The last fraction of the training files, before shuffling, is held out for validation.
    pub validation_split: f64,
    pub seed: i64,
    /// Weight initialisation scheme of the layers.
    pub weight_init: WeightInit,
    /// The device the run trained on (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// Set when several processes trained it (torchrun): how many, and the batch of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<DistributedInfo>,
}

impl TrainConfig {
    pub fn adam_settings(&self) -> AdamSettings {
        AdamSettings {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
        }
    }
}

/// What a new run trains with where its flags are silent: the Keras tutorial's constant rate, plain Adam
/// and cross-entropy and pictures as they are, except for the Vision Transformer, which gets what ViT
/// recipes train with (DeiT's regularisers without its augmentations) — a cosine schedule, AdamW's decay
/// 0.05, label smoothing 0.1 — and random shifts of one pixel where they lose nothing (measured in
/// docs/vit.md). Fine-tuning keeps the tutorial's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingDefaults {
    pub lr_schedule: LrSchedule,
    pub random_shift: ShiftRule,
    pub label_smoothing: f64,
    pub weight_decay: f64,
}

/// How far a new run moves its training pictures: as `--random-shift` says, or, where it is silent, by
/// the architecture's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShiftRule {
    /// Up to this many pixels (0: not at all, the Keras tutorial).
    Fixed(usize),
    /// Up to `pixels`, when the moves push (almost) nothing out of the frame: when the training pictures'
    /// outer ring of that width holds under [`crate::augment::LOST_INK_LIMIT`] of their ink, as digit
    /// MNIST's does. Pictures that fill their frame (Fashion-MNIST's clothes) are not moved.
    WhereNothingIsLost { pixels: usize },
}

impl TrainingDefaults {
    /// The Keras tutorial's: a constant rate, plain Adam and cross-entropy, no augmentation.
    pub const KERAS: TrainingDefaults = TrainingDefaults {
        lr_schedule: LrSchedule::Constant,
        random_shift: ShiftRule::Fixed(0),
        label_smoothing: 0.0,
        weight_decay: 0.0,
    };

    /// A new run's of `arch`.
    pub fn for_arch(arch: Arch) -> TrainingDefaults {
        match arch {
            Arch::Vit => TrainingDefaults {
                lr_schedule: LrSchedule::Cosine,
                random_shift: ShiftRule::WhereNothingIsLost { pixels: 1 },
                label_smoothing: 0.1,
                weight_decay: 0.05,
            },
            Arch::Mlp | Arch::Linear | Arch::Cnn => TrainingDefaults::KERAS,
        }
    }
}

impl ShiftRule {
    /// The most pixels it may move a picture.
    pub fn most(self) -> usize {
        match self {
            ShiftRule::Fixed(pixels) | ShiftRule::WhereNothingIsLost { pixels } => pixels,
        }
    }
}

fn fused_for_old_runs() -> Engine {
    Engine::Fused
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_rate(rate: &f64) -> bool {
    *rate == 0.0
}

impl Default for TrainConfig {
    /// The Keras tutorial's settings: 10 epochs, batch 32, Adam(1e-3), validation_split 0.2.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            accumulate: 1,
            engine: Engine::Autograd,
            optimizer: AdamVariant::Adam,
            learning_rate: 1e-3,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-7,
            weight_decay: 0.0,
            lr_schedule: LrSchedule::Constant,
            monitor: Monitor::ValLoss,
            early_stopping: None,
            save_best: false,
            precision: Precision::F32,
            shuffle: true,
            random_shift: 0,
            label_smoothing: 0.0,
            validation_split: 0.2,
            seed: 42,
            weight_init: WeightInit::PytorchDefault,
            device: "cpu".into(),
            distributed: None,
        }
    }
}
