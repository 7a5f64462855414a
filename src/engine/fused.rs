//! The `fused` engine (opt-in, `--engine fused`): the MLP's training step with its backward pass written
//! out, and Adam over flat buffers. MLP and linear models only.
//!
//! Why, beside the `autograd` engine: for a model this small, the time of a step is mostly the
//! number of libtorch calls, not arithmetic. Autograd records and replays ~15 nodes per step, and
//! libtorch's Adam runs ~8 element-wise ops per parameter tensor (32 for this model). Here:
//!
//! - every parameter of the model lives in one flat buffer (the `VarStore`'s variables are views into
//!   it, so saving, evaluating and exporting see the same weights), and so do the gradients and Adam's two
//!   moment estimates — layer by layer, frozen tensors included, carved with `flat_buffer`'s [`Slots`]
//!   (the autograd engine's layout, [`FlatParameters`](super::flat_buffer::FlatParameters), differs: name
//!   order, frozen tensors outside, `.grad` views for autograd);
//! - the backward pass is the chain rule, layer by layer, with each weight gradient written straight into
//!   its slot of the flat gradient buffer (`mm_out`);
//! - one Adam step is 7 element-wise ops over the flat buffers, whatever the number of layers.
//!
//! The gradients are checked against libtorch's autograd by a test (`tests/gradients.rs`), the Adam
//! update against the textbook formula, and whole steps against the autograd engine (`tests/engines.rs`).
//! The optimizer state is plain tensors, so it is saved with each checkpoint (per tensor under its name,
//! as the autograd engine saves libtorch's: `saved_state.rs`) and a resumed run continues with it exactly.
//!
//! Shapes, for a batch of B examples: `x` `[B, D0]`; layer i has `W_i` `[D_i, D_{i-1}]`, `b_i` `[D_i]`;
//! activations `a_i` `[B, D_i]`; logits `[B, K]`.

use super::flat_buffer::{Slots, move_into};
use super::saved_state::{self, FlatState, Slot};
use super::{AdamSettings, Engine, Precision, StepOutput, StepSettings, TrainStep};
use crate::model::ModelConfig;
use anyhow::{Context, Result, bail, ensure};
use tch::{Kind, Reduction, Tensor, nn};

/// What the forward pass keeps for the backward pass.
struct Forward {
    /// Each layer's input: the images, then each hidden activation.
    inputs: Vec<Tensor>,
    /// Each layer's scaled dropout mask, when dropout is on.
    masks: Vec<Option<Tensor>>,
    /// `[B, K]`, float32.
    logits: Tensor,
}

/// Adam's bias corrections at step t: m̂ = m / `first`, v̂ = v / `second`. They undo the pull towards
/// the zeros m and v start from, which fades as t grows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BiasCorrections {
    /// 1 − β1ᵗ
    first: f64,
    /// 1 − β2ᵗ
    second: f64,
}

impl BiasCorrections {
    fn at(step: i64, beta1: f64, beta2: f64) -> BiasCorrections {
        let t = step as i32;
        BiasCorrections { first: 1.0 - beta1.powi(t), second: 1.0 - beta2.powi(t) }
    }
}

/// One Dense layer's views into the flat buffers: its weight and bias, and their gradients.
struct DenseViews {
    weight: Tensor,
    bias: Tensor,
    weight_grad: Tensor,
    bias_grad: Tensor,
    relu: bool,
}

/// The MLP's parameters, gradients and Adam state in flat buffers, and its training step.
pub struct FusedMlp {
    layers: Vec<DenseViews>,
    /// `[P]`: every weight and bias, layer by layer (weight then bias).
    params: Tensor,
    /// `[P]`: their gradients, written by `backward`.
    grads: Tensor,
    /// Adam's first and second moment estimates, `[P]` each.
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Adam steps taken so far (bias correction).
    pub steps: i64,
    adam: AdamSettings,
    /// The learning rate of the next steps.
    lr: f64,
    dropout: f64,
    /// Kind of the forward/backward arithmetic (Float, or BFloat16 for mixed precision).
    compute: Kind,
    /// Frozen tensors' slots in the flat buffers (their gradients are zeroed, so Adam never moves them).
    frozen: Vec<Tensor>,
    /// Trainable slots, for AdamW's decay when some tensors are frozen.
    trainable: Vec<Tensor>,
    /// `[B, 1]` of −1, kept between steps of the same batch size (the one-hot subtraction's source).
    minus_ones: Option<Tensor>,
    /// Which tensor sits where in the flat buffers.
    slots: Vec<Slot>,
}

impl FusedMlp {
    /// Moves the variables of `vs` (built by `config.init`) into flat buffers; the variables
    /// become views of them. `settings.frozen` names tensors that must not change.
    pub fn new(vs: &nn::VarStore, config: &ModelConfig, settings: StepSettings) -> Result<FusedMlp> {
        let Some(dense) = config.dense_layers() else {
            bail!("--engine fused trains MLP and linear models only, not a {}", config.arch.name())
        };
        let StepSettings { adam, precision, frozen, .. } = settings;
        for name in &frozen {
            let known =
                dense.iter().any(|l| *name == format!("{}.weight", l.name) || *name == format!("{}.bias", l.name));
            ensure!(known, "the model has no tensor '{name}' to freeze");
        }
        let variables = vs.variables();
        let total: i64 = dense.iter().map(|l| l.inputs * l.outputs + l.outputs).sum();
        let device = vs.device();
        let params = Tensor::zeros([total], (Kind::Float, device));
        let grads = Tensor::zeros([total], (Kind::Float, device));
        let mut layers = Vec::with_capacity(dense.len());
        let (mut frozen_views, mut trainable, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        let (mut param_slots, mut grad_slots) = (Slots::new(&params), Slots::new(&grads));
        for layer in &dense {
            let mut slot = |name: &str, shape: &[i64]| -> Result<(Tensor, Tensor)> {
                let (param, grad) = (param_slots.next(shape)?, grad_slots.next(shape)?);
                let full_name = format!("{}.{name}", layer.name);
                let var =
                    variables.get(&full_name).with_context(|| format!("the model has no variable {full_name}"))?;
                ensure!(var.size() == shape, "{full_name} has shape {:?}, expected {shape:?}", var.size());
                // The variable now reads and writes the flat buffer.
                move_into(var, &param)?;
                let is_trainable = !frozen.contains(&full_name);
                slots.push(Slot { name: full_name, shape: shape.to_vec(), trainable: is_trainable });
                if !is_trainable {
                    frozen_views.push(grad.shallow_clone());
                } else {
                    trainable.push(param.shallow_clone());
                }
                Ok((param, grad))
            };
            let (weight, weight_grad) = slot("weight", &[layer.outputs, layer.inputs])?;
            let (bias, bias_grad) = slot("bias", &[layer.outputs])?;
            layers.push(DenseViews { weight, bias, weight_grad, bias_grad, relu: layer.relu });
        }
        Ok(FusedMlp {
            layers,
            exp_avg: params.zeros_like(),
            exp_avg_sq: params.zeros_like(),
            params,
            grads,
            steps: 0,
            adam,
            lr: 0.0,
            dropout: config.dropout,
            compute: match precision {
                Precision::F32 => Kind::Float,
                Precision::Bf16 => Kind::BFloat16,
            },
            frozen: frozen_views,
            trainable,
            minus_ones: None,
            slots,
        })
    }

    /// Forward and backward for one batch: `x` `[B, D0]` (or `[B, rows, cols]`) float, `y` `[B]` int64. Fills the flat
    /// gradient buffer with the gradient of the batch's **mean** cross-entropy.
    pub fn forward_backward(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput> {
        tch::no_grad(|| self.forward_backward_inner(x, y))
    }

    fn forward_backward_inner(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput> {
        let x = &x.f_flatten(1, -1)?; // [B, rows, cols] or [B, D0] → [B, D0] (a view)
        let weights = self.compute_weights()?;
        let forward = self.forward(x, &weights)?;
        let (loss_sum, logits_grad) = self.loss_and_logits_grad(&forward.logits, y)?;
        self.backward(logits_grad, &forward, &weights)?;
        self.zero_frozen_grads()?;
        Ok(StepOutput { loss_sum, logits: forward.logits })
    }

    /// Each layer's `(W, b)` in the arithmetic's kind: views of the flat buffer in float32; in mixed
    /// precision, views of one low-precision copy of it (one cast per step).
    fn compute_weights(&self) -> Result<Vec<(Tensor, Tensor)>> {
        if self.compute == Kind::Float {
            return Ok(self.layers.iter().map(|l| (l.weight.shallow_clone(), l.bias.shallow_clone())).collect());
        }
        let flat = self.params.f_to_kind(self.compute)?;
        let mut slots = Slots::new(&flat);
        let mut weights = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            weights.push((slots.next(&layer.weight.size())?, slots.next(&layer.bias.size())?));
        }
        Ok(weights)
    }

    /// Forward, keeping each layer's input (and dropout mask) for the backward pass.
    fn forward(&self, x: &Tensor, weights: &[(Tensor, Tensor)]) -> Result<Forward> {
        let mixed = self.compute != Kind::Float;
        let mut inputs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let mut masks: Vec<Option<Tensor>> = Vec::with_capacity(self.layers.len());
        let mut a = if mixed { x.f_to_kind(self.compute)? } else { x.shallow_clone() };
        for (layer, (weight, bias)) in self.layers.iter().zip(weights) {
            let z = bias.f_addmm(&a, &weight.tr())?; // [B, out] = b + a·Wᵀ
            inputs.push(a);
            let (h, mask) = if layer.relu { self.relu_and_dropout(z)? } else { (z, None) };
            masks.push(mask);
            a = h;
        }
        let logits = if mixed { a.f_to_kind(Kind::Float)? } else { a }; // [B, K], float32
        Ok(Forward { inputs, masks, logits })
    }

    /// ReLU in place, then (training with `--dropout`) inverted dropout: keep with probability 1−p and
    /// scale by 1/(1−p); returns the activation and the scaled mask, which the backward pass reuses.
    fn relu_and_dropout(&self, z: Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let mut h = z;
        let _ = h.f_relu_()?;
        if self.dropout <= 0.0 {
            return Ok((h, None));
        }
        let keep = 1.0 - self.dropout;
        let mut mask = h.empty_like();
        let _ = mask.f_bernoulli_float_(keep)?;
        let _ = mask.f_div_scalar_(keep)?;
        let _ = h.f_mul_(&mask)?;
        Ok((h, Some(mask)))
    }

    /// Softmax cross-entropy: the batch's summed loss −Σ log p[y], and the gradient of the **mean** loss
    /// with respect to the logits, (p − onehot(y)) / B — in the arithmetic's kind, for the backward pass.
    fn loss_and_logits_grad(&mut self, logits: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let batch = logits.size()[0];
        let log_probs = logits.f_log_softmax(-1, Kind::Float)?;
        let loss_sum = log_probs.f_nll_loss::<Tensor>(y, None, Reduction::Sum, -100)?;
        let mut grad = log_probs.f_exp()?;
        if self.minus_ones.as_ref().is_none_or(|m| m.size()[0] != batch) {
            self.minus_ones = Some(Tensor::full([batch, 1], -1.0, (Kind::Float, logits.device())));
        }
        let minus_ones = self.minus_ones.as_ref().map(|m| m.shallow_clone()).unwrap_or_default();
        let _ = grad.f_scatter_add_(1, &y.unsqueeze(1), &minus_ones)?;
        let _ = grad.f_div_scalar_(batch as f64)?;
        if self.compute != Kind::Float {
            grad = grad.f_to_kind(self.compute)?;
        }
        Ok((loss_sum, grad))
    }

    /// The chain rule, last layer first: dW = gradᵀ·input and db = Σ_batch grad, written into the flat
    /// gradient buffer; then the gradient goes back through W, the dropout mask and the ReLU.
    fn backward(&self, logits_grad: Tensor, forward: &Forward, weights: &[(Tensor, Tensor)]) -> Result<()> {
        let mut grad = logits_grad;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let input = &forward.inputs[i];
            if self.compute != Kind::Float {
                // Products in low precision, stored into the float32 gradient buffer.
                layer.weight_grad.shallow_clone().f_copy_(&grad.tr().f_mm(input)?)?;
            } else {
                let _ = grad.tr().f_mm_out(&layer.weight_grad, input)?;
            }
            let _ = grad.f_sum_intlist_out(&layer.bias_grad, [0i64].as_slice(), false, Kind::Float)?;
            if i == 0 {
                break; // the images need no gradient
            }
            let mut upstream = grad.f_mm(&weights[i].0)?; // [B, in]
            if let Some(mask) = &forward.masks[i - 1] {
                let _ = upstream.f_mul_(mask)?;
            }
            // ReLU: pass the gradient where the activation was positive.
            grad = input.f_threshold_backward(&upstream, 0.0)?;
        }
        Ok(())
    }

    /// Frozen tensors get a zero gradient, so Adam never moves them.
    fn zero_frozen_grads(&self) -> Result<()> {
        for frozen in &self.frozen {
            let _ = frozen.shallow_clone().f_zero_()?;
        }
        Ok(())
    }

    /// One Adam (or AdamW) step with learning rate `lr` over the flat buffers — Algorithm 1 of Kingma &
    /// Ba, "Adam: A Method for Stochastic Optimization" (2015), with g the gradient and t the step:
    ///
    /// ```text
    /// m ← β1·m + (1−β1)·g            exp_avg
    /// v ← β2·v + (1−β2)·g²           exp_avg_sq
    /// m̂ = m / (1−β1ᵗ)                BiasCorrections::first
    /// v̂ = v / (1−β2ᵗ)                BiasCorrections::second
    /// θ ← θ − lr·m̂ / (√v̂ + ε)
    /// ```
    ///
    /// Frozen slots have g = 0 forever, hence m = v = 0 and no move.
    pub fn adam_step(&mut self, lr: f64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            self.steps += 1;
            let corrections = BiasCorrections::at(self.steps, self.adam.beta1, self.adam.beta2);
            self.decay_weights(lr)?;
            self.update_moments()?;
            self.apply_update(lr, corrections)
        })
    }

    /// AdamW (`--weight-decay` > 0): θ ← θ·(1 − lr·decay) before the gradient step; never the frozen ones.
    fn decay_weights(&mut self, lr: f64) -> Result<()> {
        if self.adam.weight_decay <= 0.0 {
            return Ok(());
        }
        let decay = 1.0 - lr * self.adam.weight_decay;
        if self.frozen.is_empty() {
            let _ = self.params.f_mul_scalar_(decay)?;
        } else {
            for view in &self.trainable {
                let _ = view.shallow_clone().f_mul_scalar_(decay)?;
            }
        }
        Ok(())
    }

    /// m ← β1·m + (1−β1)·g and v ← β2·v + (1−β2)·g², written as `lerp` (m + (1−β1)·(g − m) is the same).
    fn update_moments(&mut self) -> Result<()> {
        let _ = self.exp_avg.f_lerp_(&self.grads, 1.0 - self.adam.beta1)?;
        let _ = self.exp_avg_sq.f_lerp_(&self.grads.f_square()?, 1.0 - self.adam.beta2)?;
        Ok(())
    }

    /// θ ← θ − lr·m̂ / (√v̂ + ε), without materialising m̂ and v̂ (two passes over the buffers fewer).
    /// With m̂ = m/c1 and √v̂ = √v/√c2 (c1, c2 the bias corrections), multiplying through by √c2:
    ///
    /// ```text
    /// lr·m̂ / (√v̂ + ε) = m / ((√v + ε·√c2) · c1/(lr·√c2))
    /// ```
    ///
    /// so the step is √v, + ε·√c2, × −c1/(lr·√c2) (the minus sign folded in), then θ += m / that.
    fn apply_update(&mut self, lr: f64, corrections: BiasCorrections) -> Result<()> {
        let BiasCorrections { first: c1, second: c2 } = corrections;
        let mut denom = self.exp_avg_sq.f_sqrt()?;
        let _ = denom.f_add_scalar_(self.adam.eps * c2.sqrt())?;
        let _ = denom.f_mul_scalar_(-c1 / (lr * c2.sqrt()))?;
        let _ = self.params.f_addcdiv_(&self.exp_avg, &denom)?;
        Ok(())
    }

    /// The gradient buffer `[P]` (for tests and diagnostics).
    pub fn flat_grads(&self) -> &Tensor {
        &self.grads
    }
}

impl TrainStep for FusedMlp {
    fn engine(&self) -> Engine {
        Engine::Fused
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        self.lr = lr;
        Ok(())
    }

    fn step(&mut self, inputs: &Tensor, labels: &Tensor) -> Result<StepOutput> {
        let output = self.forward_backward(inputs, labels)?;
        self.adam_step(self.lr)?;
        Ok(output)
    }

    /// Adam's moment estimates and step count, per trainable tensor under its name; none before the
    /// first step.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        if self.steps == 0 {
            return Ok(Vec::new());
        }
        let state = FlatState {
            step: self.steps,
            exp_avg: self.exp_avg.shallow_clone(),
            exp_avg_sq: self.exp_avg_sq.shallow_clone(),
        };
        saved_state::to_named(&self.slots, &state)
    }

    /// Restores a state saved by [`optimizer_state`](TrainStep::optimizer_state), by either engine, or in
    /// the flat layout earlier runs of this engine saved (`exp_avg`, `exp_avg_sq`, `steps`); shapes must
    /// match.
    fn restore_optimizer_state(&mut self, state: &[(String, Tensor)]) -> Result<bool> {
        let FlatState { step, exp_avg, exp_avg_sq } = match saved_state::from_named(&self.slots, state)? {
            Some(named) => named,
            None => match flat_layout(state)? {
                Some(flat) => flat,
                None => return Ok(false),
            },
        };
        ensure!(
            exp_avg.size() == self.exp_avg.size() && exp_avg_sq.size() == self.exp_avg_sq.size(),
            "optimizer state of {:?} values for a model of {:?} parameters",
            exp_avg.size(),
            self.exp_avg.size()
        );
        tch::no_grad(|| -> Result<()> {
            self.exp_avg.f_copy_(&exp_avg)?;
            self.exp_avg_sq.f_copy_(&exp_avg_sq)?;
            Ok(())
        })?;
        self.steps = step;
        Ok(true)
    }
}

/// The flat layout of this engine's earlier optimizer files: `exp_avg` and `exp_avg_sq` `[P]`, `steps`;
/// `None` when `state` is not in it.
fn flat_layout(state: &[(String, Tensor)]) -> Result<Option<FlatState>> {
    let get = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone());
    let (Some(exp_avg), Some(exp_avg_sq), Some(steps)) = (get("exp_avg"), get("exp_avg_sq"), get("steps")) else {
        return Ok(None);
    };
    Ok(Some(FlatState { step: steps.f_int64_value(&[0])?, exp_avg, exp_avg_sq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_corrections_are_one_minus_beta_to_the_t() {
        let first = BiasCorrections::at(1, 0.9, 0.999);
        assert!((first.first - 0.1).abs() < 1e-15 && (first.second - 0.001).abs() < 1e-15, "{first:?}");
        let later = BiasCorrections::at(1500, 0.9, 0.999);
        assert!((later.first - 1.0).abs() < 1e-15, "{later:?}");
        assert!((later.second - (1.0 - 0.999f64.powi(1500))).abs() < 1e-15, "{later:?}");
    }
}
