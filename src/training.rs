//! The training loop: Adam on mini-batches of a freshly shuffled training set every epoch, then a
//! validation pass — Keras's `fit` with `validation_split` and its usual callbacks (learning-rate
//! schedule, early stopping, best checkpoint, TerminateOnNaN) — in one function that reads top to bottom.

use crate::callbacks::{BestTracker, EarlyStopping, LrController, LrSchedule, Monitor};
use crate::data::Examples;
use crate::evaluation::evaluate;
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT, nn::OptimizerConfig};

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
    /// Called after each epoch with that epoch's weights in `vs`; `improved` when the monitored metric
    /// is the best so far. An error stops training.
    fn end_epoch(&mut self, _metrics: &EpochMetrics, _vs: &nn::VarStore, _improved: bool) -> Result<()> {
        Ok(())
    }
    /// Polled after every step: `true` stops training once that step is done (Ctrl-C).
    fn interrupted(&self) -> bool {
        false
    }
}

/// An observer that shows and keeps nothing.
pub struct Silent;
impl Observer for Silent {}

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

/// Trains `net` (variables in `vs`, `num_classes` outputs) for epochs `first_epoch..=config.epochs`.
///
/// `first_epoch` is 1 for a new run and later for a resumed one (schedules count absolute epochs).
pub fn train(
    net: &impl ModuleT,
    vs: &nn::VarStore,
    sets: TrainSets,
    num_classes: i64,
    config: &TrainConfig,
    first_epoch: usize,
    observer: &mut dyn Observer,
) -> Result<TrainReport> {
    ensure!(config.epochs > 0, "--epochs must be at least 1");
    ensure!(config.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        first_epoch >= 1 && first_epoch <= config.epochs,
        "nothing to train: epoch {first_epoch} of {}",
        config.epochs
    );
    let n = sets.train.len();
    ensure!(n > 0, "no training examples");
    let device = vs.device();
    let mut optimizer = if config.weight_decay > 0.0 {
        nn::AdamW {
            beta1: config.adam_beta1,
            beta2: config.adam_beta2,
            wd: config.weight_decay,
            eps: config.adam_epsilon,
            amsgrad: false,
        }
        .build(vs, config.learning_rate)?
    } else {
        nn::Adam {
            beta1: config.adam_beta1,
            beta2: config.adam_beta2,
            wd: 0.0,
            eps: config.adam_epsilon,
            amsgrad: false,
        }
        .build(vs, config.learning_rate)?
    };
    let mut lr = LrController::new(config.lr_schedule, config.learning_rate, config.epochs, config.monitor);
    let mut best = BestTracker::new(config.monitor, config.early_stopping);
    // In memory for restore_best_weights: a copy of every variable at the best epoch.
    let mut best_weights: Option<Vec<(String, Tensor)>> = None;
    // A NaN loss is found by reading it back: every step on the CPU (where reading is free, the
    // computation being synchronous anyway), every 50 steps on a GPU so it is not synchronised each step.
    let nan_check_every = if device == Device::Cpu { 1 } else { 50 };

    let batch = config.batch_size as i64;
    let steps = ((n + batch - 1) / batch) as usize;
    let mut report =
        TrainReport { history: Vec::new(), outcome: Outcome::Completed, best_epoch: None, interrupted_in_epoch: None };
    for epoch in first_epoch..=config.epochs {
        let started = Instant::now();
        let rate = lr.lr_for(epoch);
        optimizer.set_lr(rate);
        observer.start_epoch(epoch, config.epochs, steps);
        // One shuffle per epoch, drawn on the CPU generator so CPU and CUDA runs see the same order;
        // each step then takes a contiguous view instead of gathering its own rows. Seeded by epoch, so
        // a resumed run sees the same order in epoch k as an uninterrupted one.
        tch::manual_seed(config.seed.wrapping_mul(1_000_003).wrapping_add(epoch as i64));
        let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_device(device);
        let shuffled = Examples {
            images: sets.train.images.index_select(0, &order),
            labels: sets.train.labels.index_select(0, &order),
        };
        // Running sums stay on the device: reading them back every step would synchronise every step.
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut seen = 0i64;
        for step in 1..=steps {
            let start = (step - 1) as i64 * batch;
            let len = batch.min(n - start);
            let xy = shuffled.slice(start, len);
            let logits = net.forward_t(&xy.images, true); // [len, classes]
            let loss = logits.cross_entropy_for_logits(&xy.labels); // mean over the batch
            optimizer.backward_step(&loss);
            tch::no_grad(|| {
                loss_sum += loss.to_kind(Kind::Double) * len as f64;
                correct += logits.argmax(-1, false).eq_tensor(&xy.labels).sum(Kind::Int64);
            });
            seen += len;
            if step % nan_check_every == 0 || step == steps {
                let total = loss_sum.double_value(&[]);
                if !total.is_finite() {
                    bail!(
                        "loss became {total} in epoch {epoch} {} step {step}; training stopped (TerminateOnNaN). \
                         Try a lower --lr",
                        if nan_check_every == 1 { "at" } else { "by" }
                    );
                }
            }
            let running = observer
                .running_metrics_every()
                .filter(|every| step % every == 0 || step == steps)
                .map(|_| (loss_sum.double_value(&[]) / seen as f64, correct.int64_value(&[]) as f64 / seen as f64));
            observer.step(step, running);
            if observer.interrupted() {
                report.outcome = Outcome::Interrupted;
                report.interrupted_in_epoch = Some(epoch);
                return Ok(report);
            }
        }
        let validation = evaluate(net, sets.valid, num_classes)?;
        let metrics = EpochMetrics {
            epoch,
            steps,
            loss: loss_sum.double_value(&[]) / n as f64,
            accuracy: correct.int64_value(&[]) as f64 / n as f64,
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
        observer.end_epoch(&metrics, vs, verdict.improved)?;
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
