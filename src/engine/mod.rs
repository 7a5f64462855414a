//! How one optimisation step is computed: the seam between the training loop and the arithmetic.
//!
//! The loop (`training.rs`) only knows [`TrainStep`]: take a batch, update the weights, hand back the
//! batch's loss and logits (left on the device); set the learning rate; give and take the optimizer's
//! state for checkpoints. Two engines implement it:
//!
//! - [`Engine::Autograd`], the default and the design card's path: the model `nn::seq_t` builds,
//!   `forward_t`, `cross_entropy_for_logits`, libtorch's autograd (`backward`) and tch's `nn::Adam` /
//!   `nn::AdamW`. It trains any architecture (`autograd.rs`).
//! - [`Engine::Fused`], opt-in: the MLP's backward pass written out and Adam over flat buffers, faster
//!   on small CPU batches, MLPs only (`fused.rs`).

pub mod autograd;
pub mod flat_buffer;
pub mod fused;

use crate::distributed::ProcessGroup;
use crate::model::ModelConfig;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use tch::{Tensor, nn};

/// `--engine`: which code computes a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// libtorch's autograd and tch's nn::Adam, on any architecture (the design card's path).
    #[default]
    Autograd,
    /// The MLP's backward pass written out and Adam over one flat buffer: fewer libtorch calls per step;
    /// MLP and linear models only.
    Fused,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Autograd => "autograd",
            Engine::Fused => "fused",
        }
    }
}

/// The arithmetic of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 throughout (the Keras tutorial).
    #[default]
    F32,
    /// bfloat16 matrix products and activations; master weights, loss, gradients and Adam in float32
    /// (mixed precision, as torch.autocast does). Fused engine only.
    Bf16,
}

/// Adam's hyperparameters (from the run's training config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled (AdamW) weight decay; 0 for plain Adam.
    pub weight_decay: f64,
}

/// Everything an engine needs besides the model: Adam's settings, the arithmetic, and the tensors that
/// must not change (fine-tuning's `--freeze`).
#[derive(Debug, Clone)]
pub struct StepSettings {
    pub adam: AdamSettings,
    pub precision: Precision,
    pub frozen: Vec<String>,
}

/// What one step produced, kept on the device so the loop reads it back once per epoch.
pub struct StepOutput {
    /// Sum of the per-example losses of the batch (a `[]` float tensor).
    pub loss_sum: Tensor,
    /// Logits `[B, classes]`.
    pub logits: Tensor,
}

/// One optimisation step of some engine.
pub trait TrainStep {
    /// The engine's name, as `config.json` records it.
    fn engine(&self) -> Engine;

    /// The learning rate of the steps that follow (the loop sets it once per epoch).
    fn set_learning_rate(&mut self, lr: f64) -> Result<()>;

    /// Forward, loss (mean cross-entropy), backward and optimizer update on one batch: `inputs`
    /// float `[B, ...]`, `labels` int64 `[B]`.
    fn step(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<StepOutput>;

    /// The optimizer's state as named tensors, saved with every checkpoint; empty when the engine cannot
    /// export it.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>>;

    /// Restores a state saved by [`optimizer_state`](Self::optimizer_state). `Ok(false)`: this engine
    /// cannot take it, and the optimizer starts afresh.
    fn restore_optimizer_state(&mut self, state: &[(String, Tensor)]) -> Result<bool>;

    /// From now on, average the gradients over every process of `group` (all-reduce) before each update,
    /// as DistributedDataParallel does. Engines that cannot refuse.
    fn average_gradients_over(&mut self, _group: Rc<ProcessGroup>) -> Result<()> {
        bail!("--engine {} trains in one process only; under torchrun use --engine autograd", self.engine().name())
    }
}

/// Refuses the combinations no engine can train: a model the fused engine cannot compute (anything but an
/// MLP or a linear model), bf16 without the fused engine. Checked before a run is created, and again here.
pub fn check_supported(engine: Engine, precision: Precision, model: &ModelConfig) -> Result<()> {
    if engine == Engine::Fused && model.dense_layers().is_none() {
        bail!("--engine fused trains MLP and linear models only, not a {}; use --engine autograd", model.arch.name());
    }
    if engine == Engine::Autograd && precision == Precision::Bf16 {
        bail!(
            "--precision bf16 is implemented by --engine fused (mixed precision with float32 master weights); \
             tch has no CPU autocast for the autograd engine"
        );
    }
    Ok(())
}

/// The step of `engine` for the model `net` (built by `model::build` for `model` under `vs`).
pub fn build<'a>(
    engine: Engine,
    vs: &'a nn::VarStore,
    net: &'a nn::SequentialT,
    model: &ModelConfig,
    settings: StepSettings,
) -> Result<Box<dyn TrainStep + 'a>> {
    check_supported(engine, settings.precision, model)?;
    Ok(match engine {
        Engine::Autograd => Box::new(autograd::AutogradStep::new(vs, net, settings)?),
        Engine::Fused => Box::new(fused::FusedMlp::new(vs, model, settings)?),
    })
}
