//! The default training step, as tch's MNIST example and the PyTorch textbook write it: the model
//! `nn::seq_t` built (`forward_t(x, true)`), libtorch's cross-entropy (label smoothing optional), autograd (`backward`)
//! and the `torch::optim::Adam` (or `AdamW` with weight decay) that tch's `nn::Adam` drives. It trains whatever `ModelConfig::init`
//! builds: MLP, linear, CNN.
//!
//! One memory-layout choice makes it fast: every trainable variable is a view of one flat parameter and
//! every gradient a view of one flat gradient buffer ([`FlatParameters`], DistributedDataParallel's
//! `gradient_as_bucket_view` with one bucket), so `nn::Adam` updates one tensor instead of one per layer
//! and, under torchrun ([`crate::distributed`]), the gradients are averaged in one all-reduce between
//! `backward` and the update. Frozen tensors (fine-tuning) stay outside it and get no gradient.
//! `tests/engines.rs` checks the result against a plain `nn::Adam` over the separate variables.
//!
//! tch offers no way to read or restore `nn::Adam`'s moment estimates (tch-rs issue 360: no `ato_*`
//! function touches optimizer state), so the optimizer is held through the same C API by
//! [`LibtorchAdam`], which also reaches its state: it is saved with every checkpoint, per variable under
//! the variable's name (`saved_state.rs`), and a resumed run continues with it exactly.

use super::flat_buffer::FlatParameters;
use super::libtorch_adam::{LibtorchAdam, ParamState};
use super::saved_state::{self, FlatState};
use super::{Engine, StepOutput, StepSettings, TrainStep};
use crate::distributed::ProcessGroup;
use crate::optimizer;
use anyhow::{Result, ensure};
use std::rc::Rc;
use tch::{Tensor, nn, nn::ModuleT};

/// The autograd engine: the model, its flat parameters and gradients, the optimizer, and (under torchrun)
/// the process group.
pub struct AutogradStep<'a> {
    net: &'a nn::SequentialT,
    /// The model's trainable variables and their gradients, as views of two flat buffers.
    parameters: FlatParameters,
    /// libtorch's Adam (or AdamW) over the flat parameter, as `nn::Adam` builds it.
    optimizer: LibtorchAdam,
    /// The other processes whose gradients are averaged with ours (torchrun).
    group: Option<Rc<ProcessGroup>>,
    /// Adam's beta1, which bounds the learning rate libtorch can step with.
    beta1: f64,
    /// With gradient accumulation: the rows of each micro-batch.
    micro_batch: Option<i64>,
    /// The loss's label smoothing (0: plain cross-entropy).
    label_smoothing: f64,
}

impl<'a> AutogradStep<'a> {
    /// Prepares `net` (its variables in `vs`) for training: freezes `settings.frozen`, moves the other
    /// variables and their gradients into flat buffers, and builds `nn::Adam` (or `nn::AdamW`) over them.
    pub fn new(vs: &nn::VarStore, net: &'a nn::SequentialT, settings: StepSettings) -> Result<AutogradStep<'a>> {
        let parameters = FlatParameters::new(vs, &settings.frozen)?;
        // The learning rate is set by the loop before the first step.
        let optimizer = LibtorchAdam::over_store(settings.adam, parameters.var_store(), 0.0)?;
        Ok(AutogradStep {
            net,
            parameters,
            optimizer,
            group: settings.group,
            beta1: settings.adam.beta1,
            micro_batch: None,
            label_smoothing: settings.label_smoothing,
        })
    }

    /// Forward and backward over the micro-batches of `inputs`: each one's mean loss weighted by its
    /// rows over the batch's, so the summed gradients are those of the batch's mean loss. Returns that
    /// mean loss and the logits of every row.
    fn accumulated(&self, inputs: &Tensor, labels: &Tensor, micro_batch: i64) -> Result<(Tensor, Tensor)> {
        let total = labels.size().first().copied().unwrap_or(0).max(1) as f64;
        let mut loss = Tensor::zeros([], (tch::Kind::Float, inputs.device()));
        let mut logits = Vec::new();
        for (x, y) in inputs.f_split(micro_batch, 0)?.iter().zip(labels.f_split(micro_batch, 0)?) {
            let micro_logits = self.net.forward_t(x, true);
            let share = y.size().first().copied().unwrap_or(0) as f64 / total;
            let weighted = self.loss(&micro_logits, &y)?.f_mul_scalar(share)?;
            weighted.f_backward()?;
            loss = loss.f_add(&weighted.detach())?;
            logits.push(micro_logits.detach());
        }
        Ok((loss, Tensor::f_cat(&logits, 0)?))
    }

    /// The batch's mean cross-entropy, against targets smoothed by `label_smoothing` (libtorch's
    /// `cross_entropy_loss`, which is `log_softmax` then `nll_loss` when it is 0).
    fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        Ok(logits.f_cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, self.label_smoothing)?)
    }

    /// Under torchrun, the gradients' mean over every process, in place.
    fn all_reduce_gradients(&self) -> Result<()> {
        match &self.group {
            Some(group) => group.all_reduce_mean(self.parameters.gradients()),
            None => Ok(()),
        }
    }
}

/// The step's output: the batch's summed loss (from the mean `loss`) and the logits, off the graph.
fn output(loss: &Tensor, logits: &Tensor, labels: &Tensor) -> Result<StepOutput> {
    let batch = labels.size().first().copied().unwrap_or(0);
    Ok(StepOutput { loss_sum: loss.detach().f_mul_scalar(batch)?, logits: logits.detach() })
}

impl TrainStep for AutogradStep<'_> {
    fn engine(&self) -> Engine {
        Engine::Autograd
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        // Above this bound tch's step would panic; every path that sets a rate is checked before, this
        // is the last word.
        ensure!(
            optimizer::learning_rate_fits(lr, self.beta1),
            "the learning rate {} is more than Adam can step with: lr / (1 - beta1) must fit a 32-bit float, so \
             at most {}",
            crate::wording::number(lr),
            optimizer::largest_learning_rate(self.beta1)
        );
        self.optimizer.set_learning_rate(lr)
    }

    fn step(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<StepOutput> {
        let rows = labels.size().first().copied().unwrap_or(0);
        let (loss, logits) = match self.micro_batch.filter(|&micro| rows > micro) {
            Some(micro) => {
                self.parameters.zero_gradients()?;
                self.accumulated(inputs, labels, micro)?
            }
            None => {
                let logits = self.net.forward_t(inputs, true);
                let loss = self.loss(&logits, labels)?;
                self.parameters.zero_gradients()?;
                loss.f_backward()?;
                (loss, logits)
            }
        };
        // Once per optimizer step, however many micro-batches it took.
        self.all_reduce_gradients()?;
        self.optimizer.step()?;
        output(&loss, &logits, labels)
    }

    /// libtorch's Adam state of the flat parameter, per variable under its name.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        let Some(state) = self.optimizer.state(&self.parameters.flat_parameter()?)? else { return Ok(Vec::new()) };
        let ParamState { step, exp_avg, exp_avg_sq } = state;
        saved_state::to_named(self.parameters.slots(), &FlatState { step, exp_avg, exp_avg_sq })
    }

    /// Gives libtorch's Adam a saved state back; `Ok(false)` when it names none of this model's variables.
    fn restore_optimizer_state(&mut self, state: &[(String, Tensor)]) -> Result<bool> {
        let Some(FlatState { step, exp_avg, exp_avg_sq }) = saved_state::from_named(self.parameters.slots(), state)?
        else {
            return Ok(false);
        };
        let flat = self.parameters.flat_parameter()?;
        self.optimizer.set_state(&flat, &ParamState { step, exp_avg, exp_avg_sq })?;
        Ok(true)
    }

    fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_deref()
    }

    fn accumulate_micro_batches(&mut self, micro_batch: i64) -> Result<()> {
        ensure!(micro_batch > 0, "--batch-size must be at least 1");
        self.micro_batch = Some(micro_batch);
        Ok(())
    }
}
