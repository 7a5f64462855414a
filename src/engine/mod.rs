//! How one optimisation step is computed: the seam between the training loop and the arithmetic.
//!
//! The loop (`training.rs`) only knows [`TrainStep`]: take a batch, update the weights, hand back the
//! batch's loss and logits (left on the device); set the learning rate; give and take the optimizer's
//! state for checkpoints. Two engines implement it:
//!
//! - [`Engine::Autograd`], the default, as tch's MNIST example trains: the model `nn::seq_t` builds,
//!   `forward_t`, `cross_entropy_for_logits`, libtorch's autograd (`backward`) and libtorch's Adam /
//!   AdamW as tch's `nn::Adam` / `nn::AdamW` drive it, held so that its state is saved
//!   (`libtorch_adam.rs`). It trains any architecture (`autograd.rs`).
//! - [`Engine::Fused`], opt-in: the MLP's backward pass written out and Adam over flat buffers, faster
//!   on small CPU batches, MLPs only (`fused.rs`).

pub mod autograd;
pub mod flat_buffer;
pub mod fused;
pub mod libtorch_adam;
pub mod saved_state;

use crate::distributed::ProcessGroup;
use crate::error_text::UsageError;
use crate::model::ModelConfig;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use tch::{Tensor, nn};

/// `--engine`: which code computes a training step, each described in [`Engine::HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Autograd,
    Fused,
}

crate::spelling::named_values!(Engine, "engine", {
    Autograd => "autograd": "libtorch's autograd and tch's nn::Adam, on any architecture (the default, as tch's \
        MNIST example trains)",
    Fused => "fused": "The MLP's backward pass written out and Adam over one flat buffer: fewer libtorch calls per \
        step; MLP and linear models only",
});

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Autograd => "autograd",
            Engine::Fused => "fused",
        }
    }
}

/// The arithmetic of the forward and backward passes, each described in [`Precision::HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

crate::spelling::named_values!(Precision, "precision", {
    F32 => "f32": "float32 throughout (the Keras tutorial)",
    Bf16 => "bf16": "bfloat16 matrix products and activations; master weights, loss, gradients and Adam in \
        float32 (mixed precision, as torch.autocast does). Fused engine only",
});

/// Adam's hyperparameters (from the run's training config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled (AdamW) weight decay; 0 for plain Adam.
    pub weight_decay: f64,
}

/// Everything an engine needs besides the model: Adam's settings, the arithmetic, the tensors that
/// must not change (fine-tuning's `--freeze`), and the processes it trains with.
#[derive(Clone)]
pub struct StepSettings {
    pub adam: AdamSettings,
    pub precision: Precision,
    pub frozen: Vec<String>,
    /// The training loss's label smoothing (0: plain cross-entropy).
    pub label_smoothing: f64,
    /// Under torchrun: the other processes, whose gradients are averaged with this one's before each
    /// update (all-reduce), as DistributedDataParallel does.
    pub group: Option<Rc<ProcessGroup>>,
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

    /// The optimizer's state as named tensors (`saved_state.rs`'s names), saved with every checkpoint;
    /// empty before the first step.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>>;

    /// Restores a state saved by [`optimizer_state`](Self::optimizer_state). `Ok(false)`: this engine
    /// cannot take it, and the optimizer starts afresh.
    fn restore_optimizer_state(&mut self, state: &[(String, Tensor)]) -> Result<bool>;

    /// The processes whose gradients this step averages with its own (torchrun), if any: the loop
    /// shards each epoch's examples over the same group and sums the epoch's metrics over it.
    fn group(&self) -> Option<&ProcessGroup> {
        None
    }

    /// Gradient accumulation: from now on each [`step`](Self::step) walks its batch in micro-batches of
    /// `micro_batch` rows, the gradients summed (each micro-batch's mean loss weighted by its share of
    /// the batch), then updates once. Engines that cannot say so.
    fn accumulate_micro_batches(&mut self, _micro_batch: i64) -> Result<()> {
        bail!("--accumulate is implemented by --engine autograd, not {}", self.engine().name())
    }
}

/// What an engine can train, in one place: the fused engine computes MLP and linear models only, in one
/// process only, with plain cross-entropy; bf16 is the fused engine's. Checked before a run directory is
/// created, and again when the step is made.
pub fn check_supported(
    engine: Engine,
    precision: Precision,
    label_smoothing: f64,
    model: &ModelConfig,
    distributed: bool,
) -> Result<()> {
    if engine == Engine::Fused && model.dense_layers().is_none() {
        bail!(UsageError(format!(
            "--engine fused trains MLP and linear models only, not a {}; use --engine autograd",
            model.arch.name()
        )));
    }
    if engine == Engine::Fused && distributed {
        bail!(UsageError(
            "--engine fused trains in one process only; under torchrun use --engine autograd (the default)".into()
        ));
    }
    if engine == Engine::Fused && label_smoothing != 0.0 {
        bail!(UsageError("--label-smoothing is implemented by --engine autograd, not fused".into()));
    }
    if engine == Engine::Autograd && precision == Precision::Bf16 {
        bail!(UsageError(
            "--precision bf16 is implemented by --engine fused (mixed precision with float32 master weights); \
             tch has no CPU autocast for the autograd engine"
                .into()
        ));
    }
    Ok(())
}

/// The step of `engine` for the model `net` (built by `ModelConfig::init` under `vs`).
pub fn new_step<'a>(
    engine: Engine,
    vs: &'a nn::VarStore,
    net: &'a nn::SequentialT,
    model: &ModelConfig,
    settings: StepSettings,
) -> Result<Box<dyn TrainStep + 'a>> {
    check_supported(engine, settings.precision, settings.label_smoothing, model, settings.group.is_some())?;
    Ok(match engine {
        Engine::Autograd => Box::new(autograd::AutogradStep::new(vs, net, settings)?),
        Engine::Fused => Box::new(fused::FusedMlp::new(vs, model, settings)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    #[test]
    fn one_check_says_what_each_engine_trains() {
        let mlp = ModelConfig::default();
        let cnn = ModelConfig::new(Arch::Cnn, [28, 28], vec![], 10, 0.5).unwrap();
        let refusal = |engine, precision, model: &ModelConfig, distributed| {
            check_supported(engine, precision, 0.0, model, distributed).err().map(|err| err.to_string())
        };
        assert_eq!(refusal(Engine::Autograd, Precision::F32, &cnn, true), None);
        assert_eq!(refusal(Engine::Fused, Precision::Bf16, &mlp, false), None);
        let fused_cnn = refusal(Engine::Fused, Precision::F32, &cnn, false).unwrap_or_default();
        assert!(fused_cnn.contains("MLP and linear models only, not a CNN"), "{fused_cnn}");
        let fused_torchrun = refusal(Engine::Fused, Precision::F32, &mlp, true).unwrap_or_default();
        assert!(fused_torchrun.contains("one process only") && fused_torchrun.contains("torchrun"), "{fused_torchrun}");
        let smoothed = check_supported(Engine::Fused, Precision::F32, 0.1, &mlp, false).unwrap_err().to_string();
        assert!(smoothed.contains("--label-smoothing") && smoothed.contains("--engine autograd"), "{smoothed}");
        assert!(check_supported(Engine::Autograd, Precision::F32, 0.1, &cnn, true).is_ok());
        let autograd_bf16 = refusal(Engine::Autograd, Precision::Bf16, &mlp, false).unwrap_or_default();
        assert!(
            autograd_bf16.contains("--precision bf16") && autograd_bf16.contains("--engine fused"),
            "{autograd_bf16}"
        );
    }
}
