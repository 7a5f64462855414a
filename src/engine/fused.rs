//! The `fused` engine (opt-in, `--engine fused`): the MLP's training step with its backward pass written
//! out, and Adam over flat buffers. MLP and linear models only.
//!
//! Why, beside the `autograd` engine: for a model this small, the time of a step is mostly the
//! number of libtorch calls, not arithmetic. Autograd records and replays ~15 nodes per step, and
//! libtorch's Adam runs ~8 element-wise ops per parameter tensor (32 for this model). Here:
//!
//! - every parameter of the model lives in one flat buffer (the `VarStore`'s variables are views into
//!   it, so saving, evaluating and exporting see the same weights), and so do the gradients and Adam's two
//!   moment estimates;
//! - the backward pass is the chain rule, layer by layer, with each weight gradient written straight into
//!   its slot of the flat gradient buffer (`mm_out`);
//! - one Adam step is 7 element-wise ops over the flat buffers, whatever the number of layers.
//!
//! The gradients are checked against libtorch's autograd by a test (`tests/gradients.rs`), the Adam
//! update against the textbook formula, and whole steps against the autograd engine (`tests/engines.rs`).
//! The optimizer state is plain tensors, so it is saved with each checkpoint and a resumed run continues
//! with it exactly.
//!
//! Shapes, for a batch of B examples: `x` `[B, D0]`; layer i has `W_i` `[D_i, D_{i-1}]`, `b_i` `[D_i]`;
//! activations `a_i` `[B, D_i]`; logits `[B, K]`.

use super::{AdamSettings, Engine, Precision, StepOutput, StepSettings, TrainStep};
use crate::model::ModelConfig;
use anyhow::{Context, Result, bail, ensure};
use tch::{Kind, Reduction, Tensor, nn};

/// One Dense layer's views into the flat buffers.
struct Layer {
    weight: Tensor,
    bias: Tensor,
    weight_grad: Tensor,
    bias_grad: Tensor,
    relu: bool,
}

/// The MLP's parameters, gradients and Adam state in flat buffers, and its training step.
pub struct FusedMlp {
    layers: Vec<Layer>,
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
}

impl FusedMlp {
    /// Moves the variables of `vs` (built by `model::build` for `config`) into flat buffers; the variables
    /// become views of them. `settings.frozen` names tensors that must not change.
    pub fn new(vs: &nn::VarStore, config: &ModelConfig, settings: StepSettings) -> Result<FusedMlp> {
        super::check_supported(Engine::Fused, settings.precision, config)?;
        let Some(dense) = config.dense_layers() else { bail!("no Dense layers in a {}", config.arch.name()) };
        let StepSettings { adam, precision, frozen } = settings;
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
        let (mut frozen_views, mut trainable) = (Vec::new(), Vec::new());
        let mut offset = 0;
        for layer in &dense {
            let mut slot = |name: &str, shape: &[i64]| -> Result<(Tensor, Tensor)> {
                let numel: i64 = shape.iter().product();
                let mut param = params.narrow(0, offset, numel).view(shape);
                let grad = grads.narrow(0, offset, numel).view(shape);
                offset += numel;
                let full_name = format!("{}.{name}", layer.name);
                let mut var = variables
                    .get(&full_name)
                    .with_context(|| format!("the model has no variable {full_name}"))?
                    .shallow_clone();
                ensure!(var.size() == shape, "{full_name} has shape {:?}, expected {shape:?}", var.size());
                tch::no_grad(|| param.f_copy_(&var))?;
                // The variable now reads and writes the flat buffer.
                var.set_data(&param);
                if frozen.contains(&full_name) {
                    frozen_views.push(grad.shallow_clone());
                } else {
                    trainable.push(param.shallow_clone());
                }
                Ok((param, grad))
            };
            let (weight, weight_grad) = slot("weight", &[layer.outputs, layer.inputs])?;
            let (bias, bias_grad) = slot("bias", &[layer.outputs])?;
            layers.push(Layer { weight, bias, weight_grad, bias_grad, relu: layer.relu });
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
        })
    }

    /// Forward and backward for one batch: `x` `[B, D0]` (or `[B, rows, cols]`) float, `y` `[B]` int64. Fills the flat
    /// gradient buffer with the gradient of the batch's **mean** cross-entropy.
    pub fn forward_backward(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput> {
        tch::no_grad(|| self.forward_backward_inner(x, y))
    }

    fn forward_backward_inner(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutput> {
        let x = &x.f_flatten(1, -1)?; // [B, rows, cols] or [B, D0] → [B, D0] (a view)
        let batch = x.size()[0];
        let mixed = self.compute != Kind::Float;
        // In mixed precision, one cast of the whole flat buffer per step gives low-precision views.
        let low_params = if mixed { Some(self.params.f_to_kind(self.compute)?) } else { None };
        let mut offset = 0;
        let mut weights = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (w, b) = match &low_params {
                Some(flat) => {
                    let (wn, bn) = (layer.weight.numel() as i64, layer.bias.numel() as i64);
                    let w = flat.narrow(0, offset, wn).view(layer.weight.size().as_slice());
                    let b = flat.narrow(0, offset + wn, bn);
                    offset += wn + bn;
                    (w, b)
                }
                None => (layer.weight.shallow_clone(), layer.bias.shallow_clone()),
            };
            weights.push((w, b));
        }
        // Forward, keeping each layer's input (and dropout mask) for the backward pass.
        let mut inputs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let mut masks: Vec<Option<Tensor>> = Vec::with_capacity(self.layers.len());
        let mut a = if mixed { x.f_to_kind(self.compute)? } else { x.shallow_clone() };
        for (layer, (weight, bias)) in self.layers.iter().zip(&weights) {
            let z = bias.f_addmm(&a, &weight.tr())?; // [B, out] = b + a·Wᵀ
            inputs.push(a);
            a = if layer.relu {
                let mut h = z;
                let _ = h.f_relu_()?;
                if self.dropout > 0.0 {
                    // Inverted dropout: keep with probability 1-p, scale by 1/(1-p).
                    let keep = 1.0 - self.dropout;
                    let mut mask = h.empty_like();
                    let _ = mask.f_bernoulli_float_(keep)?;
                    let _ = mask.f_div_scalar_(keep)?;
                    let _ = h.f_mul_(&mask)?;
                    masks.push(Some(mask));
                } else {
                    masks.push(None);
                }
                h
            } else {
                masks.push(None);
                z
            };
        }
        let logits = if mixed { a.f_to_kind(Kind::Float)? } else { a }; // [B, K], float32

        // Softmax cross-entropy: loss = -log p[y]; d(mean loss)/d logits = (p - onehot(y)) / B.
        let log_probs = logits.f_log_softmax(-1, Kind::Float)?;
        let loss_sum = log_probs.f_nll_loss::<Tensor>(y, None, Reduction::Sum, -100)?;
        let mut grad = log_probs.f_exp()?;
        if self.minus_ones.as_ref().is_none_or(|m| m.size()[0] != batch) {
            self.minus_ones = Some(Tensor::full([batch, 1], -1.0, (Kind::Float, x.device())));
        }
        let minus_ones = self.minus_ones.as_ref().map(|m| m.shallow_clone()).unwrap_or_default();
        let _ = grad.f_scatter_add_(1, &y.unsqueeze(1), &minus_ones)?;
        let _ = grad.f_div_scalar_(batch as f64)?;

        if mixed {
            grad = grad.f_to_kind(self.compute)?;
        }
        // Backward, last layer first: dW = gradᵀ·input, db = Σ_batch grad, then through W and the ReLU.
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let input = &inputs[i];
            if mixed {
                // Products in low precision, stored into the float32 gradient buffer.
                let _ = layer.weight_grad.shallow_clone().f_copy_(&grad.tr().f_mm(input)?)?;
            } else {
                let _ = grad.tr().f_mm_out(&layer.weight_grad, input)?;
            }
            let _ = grad.f_sum_intlist_out(&layer.bias_grad, [0i64].as_slice(), false, Kind::Float)?;
            if i == 0 {
                break; // the images need no gradient
            }
            let mut upstream = grad.f_mm(&weights[i].0)?; // [B, in]
            if let Some(mask) = &masks[i - 1] {
                let _ = upstream.f_mul_(mask)?;
            }
            // ReLU: pass the gradient where the activation was positive.
            grad = input.f_threshold_backward(&upstream, 0.0)?;
        }
        for frozen in &self.frozen {
            let mut frozen = frozen.shallow_clone();
            let _ = frozen.f_zero_()?;
        }
        Ok(StepOutput { loss_sum, logits })
    }

    /// One Adam (or AdamW) step with learning rate `lr` over the flat buffers:
    /// m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  θ ← θ − lr·m̂ / (√v̂ + ε),
    /// with m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ). Frozen slots have g = 0 forever, hence m = v = 0 and no move.
    pub fn adam_step(&mut self, lr: f64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            let AdamSettings { beta1, beta2, eps, weight_decay } = self.adam;
            self.steps += 1;
            let t = self.steps as i32;
            let (correction1, correction2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
            if weight_decay > 0.0 {
                // AdamW: decay the weights themselves, before the gradient step; never the frozen ones.
                let decay = 1.0 - lr * weight_decay;
                if self.frozen.is_empty() {
                    let _ = self.params.f_mul_scalar_(decay)?;
                } else {
                    for view in &self.trainable {
                        let _ = view.shallow_clone().f_mul_scalar_(decay)?;
                    }
                }
            }
            let _ = self.exp_avg.f_lerp_(&self.grads, 1.0 - beta1)?;
            let _ = self.exp_avg_sq.f_lerp_(&self.grads.f_square()?, 1.0 - beta2)?;
            // θ −= lr/c1 · m / (√v/√c2 + ε) = m / ((√v + ε·√c2) · (−c1 / (lr·√c2))): the bias corrections
            // folded into two scalars and the step into the denominator of one addcdiv_.
            let mut denom = self.exp_avg_sq.f_sqrt()?;
            let _ = denom.f_add_scalar_(eps * correction2.sqrt())?;
            let _ = denom.f_mul_scalar_(-correction1 / (lr * correction2.sqrt()))?;
            let _ = self.params.f_addcdiv_(&self.exp_avg, &denom)?;
            Ok(())
        })
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

    /// Adam's moment estimates and step count.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![
            ("exp_avg".into(), self.exp_avg.shallow_clone()),
            ("exp_avg_sq".into(), self.exp_avg_sq.shallow_clone()),
            ("steps".into(), Tensor::from_slice(&[self.steps])),
        ])
    }

    /// Restores a state saved by [`optimizer_state`](TrainStep::optimizer_state); shapes must match.
    fn restore_optimizer_state(&mut self, state: &[(String, Tensor)]) -> Result<bool> {
        let get = |name: &str| {
            state
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .with_context(|| format!("no '{name}' in the optimizer state"))
        };
        let (m, v, steps) = (get("exp_avg")?, get("exp_avg_sq")?, get("steps")?);
        ensure!(
            m.size() == self.exp_avg.size() && v.size() == self.exp_avg_sq.size(),
            "optimizer state of {:?} values for a model of {:?} parameters",
            m.size(),
            self.exp_avg.size()
        );
        tch::no_grad(|| -> Result<()> {
            self.exp_avg.f_copy_(m)?;
            self.exp_avg_sq.f_copy_(v)?;
            Ok(())
        })?;
        self.steps = steps.f_int64_value(&[0])?;
        Ok(true)
    }
}
