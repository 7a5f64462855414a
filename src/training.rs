//! The training loop: Adam on mini-batches of a freshly shuffled training set every epoch (the step
//! itself is in `fused_mlp.rs`), then a validation pass — Keras's `fit` with `validation_split` and its usual callbacks (learning-rate
//! schedule, early stopping, best checkpoint, TerminateOnNaN) — in one function that reads top to bottom.

use crate::callbacks::{BestTracker, EarlyStopping, LrController, LrSchedule, Monitor};
use crate::data::{Examples, to_inputs};
use crate::evaluation::evaluate;
use crate::fused_mlp::{AdamSettings, FusedMlp, Precision};
use crate::model::ModelConfig;
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

/// Every hyperparameter of a training run; stored in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// `adam`, or `adamw` when `weight_decay` > 0 (decoupled weight decay).
    pub optimizer: String,
    pub learning_rate: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    /// Keras's default (1e-7), not PyTorch's (1e-8): the seed is a Keras program.
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
    /// The last fraction of the training files, before shuffling, is held out for validation.
    pub validation_split: f64,
    pub seed: i64,
    /// Weight initialisation scheme of the Dense layers.
    pub weight_init: String,
    /// The device the run trained on (`cpu`, `cuda:0`, ...).
    pub device: String,
}

impl Default for TrainConfig {
    /// The seed's settings: 10 epochs, batch 32, Adam(1e-3), validation_split 0.2.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            optimizer: "adam".into(),
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
            validation_split: 0.2,
            seed: 42,
            weight_init: "pytorch-linear (kaiming-uniform a=sqrt(5), bias U(-1/sqrt(in), 1/sqrt(in)))".into(),
            device: "cpu".into(),
        }
    }
}

/// What one epoch measured. `loss`/`accuracy` are means over the epoch's training batches, as Keras
/// reports them; `val_*` come from a full pass over the validation set after the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub steps: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// The learning rate this epoch trained with.
    pub lr: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

impl EpochMetrics {
    pub fn monitored(&self, monitor: Monitor) -> f64 {
        match monitor {
            Monitor::ValLoss => self.val_loss,
            Monitor::ValAccuracy => self.val_accuracy,
        }
    }
}

/// Watches training: console progress, persistence of each epoch, interruption.
pub trait Observer {
    fn start_epoch(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// Every how many steps the running loss and accuracy should be read back from the device
    /// (a host synchronisation); `None` means never during the epoch.
    fn running_metrics_every(&self) -> Option<usize> {
        None
    }
    /// Called after each step; `running` is `(loss, accuracy)` on the steps asked for.
    fn step(&mut self, _step: usize, _running: Option<(f64, f64)>) {}
    /// Called after each epoch with that epoch's weights in `vs` and the optimizer's state;
    /// `improved` when the monitored metric is the best so far. An error stops training.
    fn end_epoch(
        &mut self,
        _metrics: &EpochMetrics,
        _vs: &nn::VarStore,
        _optimizer: &FusedMlp,
        _improved: bool,
    ) -> Result<()> {
        Ok(())
    }
    /// Polled after every step: `true` stops training once that step is done (Ctrl-C).
    fn interrupted(&self) -> bool {
        false
    }
}

/// How training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every epoch ran.
    Completed,
    /// Early stopping's patience ran out; the best epoch's weights were restored.
    EarlyStopped,
    /// The observer asked to stop (Ctrl-C) in the middle of an epoch. The variables hold the weights of
    /// the last step taken; `history` (and whatever the observer saved) ends at the last full epoch.
    Interrupted,
}

/// What `train` returns.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub history: Vec<EpochMetrics>,
    pub outcome: Outcome,
    /// Epoch with the best monitored metric (when validation ran at least once).
    pub best_epoch: Option<usize>,
    /// For an interruption: the epoch that was cut short (its partial steps are not in `history`).
    pub interrupted_in_epoch: Option<usize>,
}

/// The sets to train and validate on, already on the training device.
pub struct TrainSets<'a> {
    pub train: &'a Examples,
    pub valid: &'a Examples,
}

/// Where training starts: epoch 1 of a new run, or later in a resumed one (with the optimizer state
/// it saved, when there is one); and the tensors that must not change (fine-tuning).
#[derive(Default)]
pub struct Start {
    pub first_epoch: usize,
    pub optimizer_state: Option<Vec<(String, Tensor)>>,
    pub frozen: Vec<String>,
}

/// Trains `net` (variables in `vs`, built from `model`) for epochs `start.first_epoch..=config.epochs`.
/// Schedules count absolute epochs, so a resumed run continues where it stopped.
pub fn train(
    net: &impl ModuleT,
    vs: &nn::VarStore,
    model: &ModelConfig,
    sets: TrainSets,
    config: &TrainConfig,
    start: Start,
    observer: &mut dyn Observer,
) -> Result<TrainReport> {
    let first_epoch = start.first_epoch.max(1);
    ensure!(config.epochs > 0, "--epochs must be at least 1");
    ensure!(config.batch_size > 0, "--batch-size must be at least 1");
    ensure!(first_epoch <= config.epochs, "nothing to train: epoch {first_epoch} of {}", config.epochs);
    let n = sets.train.len();
    ensure!(n > 0, "no training examples");
    let device = vs.device();
    let adam = AdamSettings {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        eps: config.adam_epsilon,
        weight_decay: config.weight_decay,
    };
    let mut mlp = FusedMlp::new(vs, model, adam, config.precision, &start.frozen)?;
    if let Some(state) = &start.optimizer_state {
        mlp.load_optimizer_state(state)?;
    }
    let mut lr = LrController::new(config.lr_schedule, config.learning_rate, config.epochs, config.monitor);
    let mut best = BestTracker::new(config.monitor, config.early_stopping);
    // In memory for restore_best_weights: a copy of every variable at the best epoch.
    let mut best_weights: Option<Vec<(String, Tensor)>> = None;
    // A NaN loss is looked for every this many steps (one host read); the exact step is then found in
    // the per-step losses, which stay on the device.
    let nan_check_every = 50;

    let batch = config.batch_size as i64;
    let steps = ((n + batch - 1) / batch) as usize;
    let mut report =
        TrainReport { history: Vec::new(), outcome: Outcome::Completed, best_epoch: None, interrupted_in_epoch: None };
    // Per-step loss sums and per-example predictions of the current epoch, on the device: the epoch's
    // metrics are read back once at its end instead of every step.
    let losses = Tensor::zeros([steps as i64], (Kind::Float, device));
    let predictions = Tensor::zeros([n], (Kind::Int64, device));
    for epoch in first_epoch..=config.epochs {
        let started = Instant::now();
        let rate = lr.lr_for(epoch);
        observer.start_epoch(epoch, config.epochs, steps);
        // One shuffle per epoch, drawn on the CPU generator so CPU and CUDA runs see the same order.
        // Each step gathers its own rows (32 of them: as cheap as a view of a shuffled copy, without the
        // copy's 37 MB). Seeded by epoch, so a resumed run sees the same order in epoch k as an
        // uninterrupted one.
        tch::manual_seed(config.seed.wrapping_mul(1_000_003).wrapping_add(epoch as i64));
        let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_device(device);
        let shuffled_labels = sets.train.labels.index_select(0, &order); // [n]
        let mut checked = 0usize;
        for step in 1..=steps {
            let start = (step - 1) as i64 * batch;
            let len = batch.min(n - start);
            let rows = order.narrow(0, start, len);
            let images = sets.train.images.index_select(0, &rows); // [len, pixels] u8
            let labels = shuffled_labels.narrow(0, start, len);
            let out = mlp.forward_backward(&to_inputs(&images), &labels)?; // logits [len, classes]
            mlp.adam_step(rate)?;
            tch::no_grad(|| -> Result<()> {
                losses.get(step as i64 - 1).f_copy_(&out.loss_sum)?;
                let _ = out.logits.f_argmax_out(&predictions.narrow(0, start, len), -1, false)?;
                Ok(())
            })?;
            if step % nan_check_every == 0 || step == steps {
                check_finite(&losses, checked, step, epoch)?;
                checked = step;
            }
            let running =
                observer.running_metrics_every().filter(|every| step % every == 0 || step == steps).map(|_| {
                    let seen = start + len;
                    let loss = losses.narrow(0, 0, step as i64).sum(Kind::Double).double_value(&[]) / seen as f64;
                    let right =
                        predictions.narrow(0, 0, seen).eq_tensor(&shuffled_labels.narrow(0, 0, seen)).sum(Kind::Int64);
                    (loss, right.int64_value(&[]) as f64 / seen as f64)
                });
            observer.step(step, running);
            if observer.interrupted() {
                report.outcome = Outcome::Interrupted;
                report.interrupted_in_epoch = Some(epoch);
                return Ok(report);
            }
        }
        let correct = predictions.eq_tensor(&shuffled_labels).sum(Kind::Int64).int64_value(&[]);
        let loss_sum = losses.sum(Kind::Double).double_value(&[]);
        let validation = evaluate(net, sets.valid, model.num_classes)?;
        let metrics = EpochMetrics {
            epoch,
            steps,
            loss: loss_sum / n as f64,
            accuracy: correct as f64 / n as f64,
            val_loss: validation.loss,
            val_accuracy: validation.accuracy,
            lr: rate,
            seconds: started.elapsed().as_secs_f64(),
        };
        let monitored = metrics.monitored(config.monitor);
        lr.observe(monitored);
        let verdict = best.observe(epoch, monitored);
        if verdict.improved && config.early_stopping.is_some() {
            best_weights = Some(snapshot(vs));
        }
        observer.end_epoch(&metrics, vs, &mlp, verdict.improved)?;
        report.history.push(metrics);
        report.best_epoch = best.best_epoch;
        if verdict.stop {
            report.outcome = Outcome::EarlyStopped;
            break;
        }
    }
    // Keras's restore_best_weights: the model ends with the best epoch's weights.
    if let Some(weights) = best_weights {
        restore(vs, &weights)?;
    }
    Ok(report)
}

/// Fails, naming the first bad step, if a loss among steps `from+1..=to` of `epoch` is NaN or infinite
/// (Keras's TerminateOnNaN).
fn check_finite(losses: &Tensor, from: usize, to: usize, epoch: usize) -> Result<()> {
    let window = losses.narrow(0, from as i64, (to - from) as i64);
    if window.isfinite().all().int64_value(&[]) == 1 {
        return Ok(());
    }
    let values = Vec::<f32>::try_from(&window.to_device(Device::Cpu))?;
    let (offset, value) =
        values.iter().enumerate().find(|(_, v)| !v.is_finite()).map_or((0, f32::NAN), |(i, v)| (i, *v));
    bail!(
        "loss became {value} in epoch {epoch} at step {}; training stopped (TerminateOnNaN). Try a lower --lr",
        from + offset + 1
    )
}

/// A detached copy of every variable.
fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    vs.variables().into_iter().map(|(name, t)| (name, t.detach().copy())).collect()
}

fn restore(vs: &nn::VarStore, weights: &[(String, Tensor)]) -> Result<()> {
    let variables = vs.variables();
    for (name, saved) in weights {
        if let Some(var) = variables.get(name) {
            let mut var = var.shallow_clone();
            tch::no_grad(|| var.f_copy_(saved))?;
        }
    }
    Ok(())
}
