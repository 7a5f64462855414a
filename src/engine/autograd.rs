//! The design card's training step: the model `nn::seq_t` built (`forward_t(x, true)`),
//! `cross_entropy_for_logits`, libtorch's autograd (`backward`) and tch's `nn::Adam` (or `nn::AdamW`
//! with weight decay). It trains whatever ``ModelConfig::init` builds: MLP, linear, CNN.
//!
//! One memory-layout choice makes it fast: every trainable variable lives in one flat buffer (the
//! variables' storage is set to views of it) and so does every gradient, so `nn::Adam` updates one
//! tensor instead of one per layer — ~8 element-wise libtorch calls per step instead of ~8 per tensor.
//! Autograd accumulates each layer's gradient in place into its slot of the flat gradient buffer
//! (libtorch adds into an existing `.grad` when one is defined), which this step zeroes before each
//! backward pass instead of calling `zero_grad` (that would drop the `.grad` tensors, and with them the
//! views). `tests/engines.rs` checks the result against a plain `nn::Adam` over the separate variables.
//!
//! Frozen tensors (fine-tuning) get `requires_grad = false`: autograd computes no gradient for them and
//! they stay outside the flat buffer, so Adam (and AdamW's decay) never touches them.
//!
//! Under torchrun ([`crate::distributed`]), the flat gradient buffer is all-reduced and averaged over the
//! processes between `backward` and the update: one collective per step, what DistributedDataParallel's
//! `gradient_as_bucket_view` does with a single bucket.
//!
//! tch offers no way to read or restore `nn::Adam`'s moment estimates (tch-rs issue 360: no `ato_*`
//! function touches optimizer state), so this engine saves no optimizer state: a resumed run continues
//! with fresh moments.

use super::{Engine, StepOutput, StepSettings, TrainStep};
use crate::distributed::ProcessGroup;
use anyhow::{Context, Result, ensure};
use std::rc::Rc;
use tch::{Kind, Tensor, nn, nn::ModuleT, nn::OptimizerConfig};

/// Name of the flat parameter in the optimizer's own variable store.
const FLAT_PARAMETERS: &str = "parameters";

pub struct AutogradStep<'a> {
    net: &'a nn::SequentialT,
    optimizer: nn::Optimizer,
    /// `[P]`: the gradient of every trainable variable, which are views of it.
    gradients: Tensor,
    /// Holds the flat parameter `[P]` that `optimizer` updates; the model's variables read and write it.
    _flat_store: nn::VarStore,
    /// The other processes whose gradients are averaged with ours (torchrun).
    group: Option<Rc<ProcessGroup>>,
}

impl<'a> AutogradStep<'a> {
    /// Prepares `net` (its variables in `vs`) for training: freezes `settings.frozen`, moves the other
    /// variables and their gradients into flat buffers, and builds `nn::Adam` (or `nn::AdamW`) over them.
    pub fn new(vs: &nn::VarStore, net: &'a nn::SequentialT, settings: StepSettings) -> Result<AutogradStep<'a>> {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for name in &settings.frozen {
            ensure!(variables.iter().any(|(n, _)| n == name), "the model has no tensor '{name}' to freeze");
        }
        let (frozen, trainable): (Vec<_>, Vec<_>) =
            variables.into_iter().partition(|(name, _)| settings.frozen.contains(name));
        for (_, variable) in &frozen {
            let _ = variable.set_requires_grad(false);
        }
        let total: i64 = trainable.iter().map(|(_, v)| v.numel() as i64).sum();
        ensure!(total > 0, "nothing to train: every tensor is frozen");

        let flat_store = nn::VarStore::new(vs.device());
        let flat = flat_store.root().f_zeros(FLAT_PARAMETERS, &[total])?;
        // One backward pass through zero gives the flat parameter and every variable a `.grad` tensor,
        // whose storage is then pointed at the flat gradient buffer.
        let mut touch = flat.f_sum(Kind::Float)?;
        for (_, variable) in &trainable {
            touch = touch.f_add(&variable.f_sum(Kind::Float)?)?;
        }
        touch.f_mul_scalar(0.0)?.f_backward()?;
        let gradients = flat.grad();
        let mut offset = 0;
        for (name, variable) in &trainable {
            let numel = variable.numel() as i64;
            let shape = variable.size();
            let param = flat.f_narrow(0, offset, numel)?.f_view(shape.as_slice())?.detach();
            tch::no_grad(|| param.shallow_clone().f_copy_(variable)).with_context(|| format!("copying {name}"))?;
            variable.shallow_clone().set_data(&param);
            let mut gradient = variable.grad();
            gradient.set_data(&gradients.f_narrow(0, offset, numel)?.f_view(shape.as_slice())?);
            offset += numel;
        }
        let _ = gradients.shallow_clone().f_zero_()?;

        let adam = settings.adam;
        // The learning rate is set by the loop before the first step.
        let optimizer = if adam.weight_decay > 0.0 {
            nn::AdamW { beta1: adam.beta1, beta2: adam.beta2, wd: adam.weight_decay, eps: adam.eps, amsgrad: false }
                .build(&flat_store, 0.0)?
        } else {
            nn::Adam { beta1: adam.beta1, beta2: adam.beta2, wd: 0.0, eps: adam.eps, amsgrad: false }
                .build(&flat_store, 0.0)?
        };
        Ok(AutogradStep { net, optimizer, gradients, _flat_store: flat_store, group: settings.group })
    }
}

impl TrainStep for AutogradStep<'_> {
    fn engine(&self) -> Engine {
        Engine::Autograd
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        self.optimizer.set_lr(lr);
        Ok(())
    }

    fn step(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<StepOutput> {
        let logits = self.net.forward_t(inputs, true);
        let loss = logits.cross_entropy_for_logits(labels);
        let _ = self.gradients.f_zero_()?;
        loss.f_backward()?;
        if let Some(group) = &self.group {
            group.all_reduce_mean(&self.gradients)?;
        }
        self.optimizer.step();
        let batch = labels.size().first().copied().unwrap_or(0);
        Ok(StepOutput { loss_sum: loss.detach().f_mul_scalar(batch)?, logits: logits.detach() })
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    fn restore_optimizer_state(&mut self, _state: &[(String, Tensor)]) -> Result<bool> {
        Ok(false)
    }
}
