//! The training loop over any engine's [`TrainStep`]: Keras's `fit` with `validation_split` and its usual
//! callbacks (learning-rate schedule, early stopping, best checkpoint, TerminateOnNaN).
//!
//! [`train`] reads like pytorch/examples' `train()`: the epoch loop, with three phases per epoch, each a
//! function beside it: `train_epoch` walks the shuffled mini-batches and keeps the per-step losses and
//! predictions on the device; `validate` scores the held-out part; `Callbacks` takes the epoch's
//! metrics, and the [`Observer`] gets everything (it saves the checkpoint, or only listens for Ctrl-C).
//!
//! Under torchrun each process walks its [`distributed::shard`] of the epoch's order; the epoch's training
//! loss and accuracy are summed over the processes, and every process validates on the whole held-out
//! part, so all of them take the same callback decisions (early stopping, plateau) without talking.

use crate::augment::EpochShifts;
use crate::callbacks::{BestTracker, CallbackState, LrController, Monitor, Verdict};
use crate::data::{Examples, TrainingData, to_inputs};
use crate::distributed::{self, ProcessGroup};
use crate::engine::TrainStep;
use crate::evaluation::{Evaluation, evaluate};
use crate::model::Network;
use crate::run_dir::{EpochMetrics, RunConfig, TrainConfig};
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

/// A finished epoch, as the observer receives it.
pub struct EpochEnd<'a> {
    pub metrics: &'a EpochMetrics,
    /// The model's variables, holding this epoch's weights.
    pub vs: &'a nn::VarStore,
    /// The optimizer's state (empty when the engine cannot export it).
    pub optimizer_state: Vec<(String, Tensor)>,
    /// The callbacks' progress, to continue them on resume.
    pub callbacks: CallbackState,
    /// The monitored metric is the best so far.
    pub improved: bool,
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
    /// Called after each epoch. An error stops training.
    fn end_epoch(&mut self, _end: EpochEnd) -> Result<()> {
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

/// Trains the run `run` describes with `step` on `data` (already on the training device), from where its
/// state says — epoch 1 of a new run, or after the last completed epoch of a resumed one, with the
/// callbacks' saved progress and (early stopping) `best_weights`, the best epoch's weights so far — up to
/// `run.training.epochs`. Schedules count absolute epochs, so a resumed run continues where it stopped.
pub fn train(
    step: &mut dyn TrainStep,
    model: &Network,
    data: &TrainingData,
    run: &RunConfig,
    best_weights: Option<Weights>,
    observer: &mut dyn Observer,
) -> Result<TrainReport> {
    let config = &run.training;
    let first_epoch = check_trainable(run, data)?;
    let mut callbacks = Callbacks::resume(config, run.state.callbacks, best_weights);
    let mut buffers = EpochBuffers::for_shard(data, config, step.group());
    let mut report = TrainReport::new(callbacks.best.best_epoch());
    for epoch in first_epoch..=config.epochs {
        let started = Instant::now();
        let rate = callbacks.lr.lr_for(epoch);
        step.set_learning_rate(rate)?;
        observer.start_epoch(epoch, config.epochs, buffers.steps);
        let order = shard_order(config, epoch, data, step.group())?;
        let shifts = epoch_shifts(run, epoch, data);
        let batches = Batches { train: &data.train, order: &order, shifts: shifts.as_ref() };
        let Some((loss, accuracy)) = train_epoch(step, &batches, epoch, &mut buffers, observer)? else {
            return Ok(report.interrupted_in(epoch));
        };
        let validation = validate(&model.net, &data.valid, data.num_classes as i64)?;
        let (val_loss, val_accuracy, seconds) = (validation.loss, validation.accuracy, started.elapsed().as_secs_f64());
        let metrics =
            EpochMetrics { epoch, steps: buffers.steps, loss, accuracy, val_loss, val_accuracy, lr: rate, seconds };
        let verdict = callbacks.observe(&metrics, &model.vs);
        observer.end_epoch(callbacks.epoch_end(&metrics, &model.vs, step.optimizer_state()?, verdict))?;
        report.record(metrics, callbacks.best.best_epoch());
        if verdict.stop {
            report.outcome = Outcome::EarlyStopped;
            break;
        }
    }
    callbacks.restore_best_weights(&model.vs)?;
    Ok(report)
}

/// A copy of every variable of a model, by name.
pub type Weights = Vec<(String, Tensor)>;

/// The first epoch to train, after checking that there is one and something to train it on.
fn check_trainable(run: &RunConfig, data: &TrainingData) -> Result<usize> {
    let config = &run.training;
    let first_epoch = run.state.epochs_completed + 1;
    ensure!(config.epochs > 0, "--epochs must be at least 1");
    ensure!(config.batch_size > 0, "--batch-size must be at least 1");
    ensure!(first_epoch <= config.epochs, "nothing to train: epoch {first_epoch} of {}", config.epochs);
    ensure!(!data.train.is_empty(), "no training examples");
    Ok(first_epoch)
}

/// The callbacks the loop consults once per epoch: the learning rate, the best epoch and early stopping,
/// and (for Keras's restore_best_weights) a copy of the best epoch's weights.
struct Callbacks {
    lr: LrController,
    best: BestTracker,
    best_weights: Option<Weights>,
    early_stopping: bool,
    monitor: Monitor,
}

impl Callbacks {
    /// The callbacks of `config`, continuing the saved `progress`.
    fn resume(config: &TrainConfig, progress: CallbackState, best_weights: Option<Weights>) -> Callbacks {
        let lr = LrController::new(config.lr_schedule, config.learning_rate, config.epochs, config.monitor)
            .with_progress(progress.plateau);
        let best = BestTracker::new(config.monitor, config.early_stopping).with_progress(progress.best);
        let early_stopping = config.early_stopping.is_some();
        Callbacks { lr, best, best_weights, early_stopping, monitor: config.monitor }
    }

    /// Feeds an epoch's metrics to the schedule and the tracker; keeps the weights of a new best epoch
    /// when early stopping will want them back.
    fn observe(&mut self, metrics: &EpochMetrics, vs: &nn::VarStore) -> Verdict {
        let monitored = metrics.monitored(self.monitor);
        self.lr.observe(monitored);
        let verdict = self.best.observe(metrics.epoch, monitored);
        if verdict.improved && self.early_stopping {
            self.best_weights = Some(snapshot(vs));
        }
        verdict
    }

    /// The finished epoch as the observer receives it, with the callbacks' progress to save.
    fn epoch_end<'a>(
        &self,
        metrics: &'a EpochMetrics,
        vs: &'a nn::VarStore,
        optimizer_state: Weights,
        verdict: Verdict,
    ) -> EpochEnd<'a> {
        let callbacks = CallbackState { plateau: self.lr.progress(), best: self.best.progress() };
        EpochEnd { metrics, vs, optimizer_state, callbacks, improved: verdict.improved }
    }

    /// Keras's restore_best_weights: with early stopping the model ends with the best epoch's weights.
    fn restore_best_weights(&self, vs: &nn::VarStore) -> Result<()> {
        match self.best_weights.as_deref().filter(|_| self.early_stopping) {
            Some(weights) => restore(vs, weights),
            None => Ok(()),
        }
    }
}

impl TrainReport {
    fn new(best_epoch: Option<usize>) -> TrainReport {
        TrainReport { history: Vec::new(), outcome: Outcome::Completed, best_epoch, interrupted_in_epoch: None }
    }

    fn record(&mut self, metrics: EpochMetrics, best_epoch: Option<usize>) {
        self.history.push(metrics);
        self.best_epoch = best_epoch;
    }

    /// The report of a run stopped in the middle of `epoch`.
    fn interrupted_in(mut self, epoch: usize) -> TrainReport {
        self.outcome = Outcome::Interrupted;
        self.interrupted_in_epoch = Some(epoch);
        self
    }
}

/// This process's part of the training examples' order in `epoch` (all of it without torchrun).
fn shard_order(
    config: &TrainConfig,
    epoch: usize,
    data: &TrainingData,
    group: Option<&ProcessGroup>,
) -> Result<Tensor> {
    let order = epoch_order(config, epoch, data.train.len(), data.train.images.device());
    match group {
        Some(group) => distributed::shard(&order, group.rank(), group.world_size()),
        None => Ok(order),
    }
}

/// The order of the training examples in `epoch`: a permutation drawn on the CPU generator, seeded by the
/// run's seed and the epoch (so CPU and CUDA runs, and a resumed run, see the same order), or file order
/// without shuffling. A Python script reproduces it: `torch.manual_seed(seed * 1000003 + epoch);
/// torch.randperm(n)` (both use libtorch's CPU generator).
pub fn epoch_order(config: &TrainConfig, epoch: usize, n: i64, device: Device) -> Tensor {
    let order = if config.shuffle {
        tch::manual_seed(shuffle_seed(config.seed, epoch));
        Tensor::randperm(n, (Kind::Int64, Device::Cpu))
    } else {
        Tensor::arange(n, (Kind::Int64, Device::Cpu))
    };
    order.to_device(device)
}

/// The moves of `--random-shift` in `epoch`, for every example of the training part (`None` without it).
fn epoch_shifts(run: &RunConfig, epoch: usize, data: &TrainingData) -> Option<EpochShifts> {
    let config = &run.training;
    let device = data.train.images.device();
    (config.random_shift > 0).then(|| {
        EpochShifts::draw(config.seed, epoch, data.train.len(), config.random_shift, run.model.frame(), device)
    })
}

/// What an epoch's steps are cut from: the training part, this process's order of it, and the moves.
struct Batches<'a> {
    train: &'a Examples,
    order: &'a Tensor,
    shifts: Option<&'a EpochShifts>,
}

impl Batches<'_> {
    /// The network inputs of the examples `rows`, moved when the run shifts them.
    fn inputs(&self, rows: &Tensor) -> Result<Tensor> {
        // Each step gathers its own rows: as cheap as a view of a shuffled copy, without the copy.
        let images = self.train.images.f_index_select(0, rows)?; // [len, pixels] u8
        Ok(to_inputs(&match self.shifts {
            Some(shifts) => shifts.apply(&images, rows)?,
            None => images,
        }))
    }
}

/// The generator seed of an epoch's shuffle.
pub fn shuffle_seed(seed: i64, epoch: usize) -> i64 {
    seed.wrapping_mul(1_000_003).wrapping_add(epoch as i64)
}

/// Per-step losses and per-example predictions of the current epoch, on the device: the epoch's
/// metrics are read back once at its end instead of every step. Each step's slots are views made once,
/// so a step writes its results with two libtorch calls and makes no new view.
struct EpochBuffers {
    steps: usize,
    batch: i64,
    losses: Tensor,
    predictions: Tensor,
    /// `(losses[step], predictions[rows of step])` for every step.
    slots: Vec<(Tensor, Tensor)>,
}

impl EpochBuffers {
    /// The buffers of this process's shard of `data`'s training part.
    fn for_shard(data: &TrainingData, config: &TrainConfig, group: Option<&ProcessGroup>) -> EpochBuffers {
        let shard_len = distributed::shard_len(data.train.len(), group.map_or(1, |g| g.world_size()));
        let step_batch = config.batch_size.saturating_mul(config.accumulate.max(1));
        EpochBuffers::new(shard_len, step_batch as i64, data.train.images.device())
    }

    fn new(examples: i64, batch: i64, device: Device) -> EpochBuffers {
        let steps = ((examples + batch - 1) / batch) as usize;
        let losses = Tensor::zeros([steps as i64], (Kind::Float, device));
        let predictions = Tensor::zeros([examples], (Kind::Int64, device));
        let slots = (0..steps as i64)
            .map(|i| (losses.get(i), predictions.narrow(0, i * batch, batch.min(examples - i * batch))))
            .collect();
        EpochBuffers { steps, batch, losses, predictions, slots }
    }
}

/// A NaN loss is looked for every this many steps (one host read); the exact step is then found in the
/// per-step losses, which stay on the device.
const NAN_CHECK_EVERY: usize = 50;

/// One pass over `train` in `order`, a step per mini-batch (the last one takes the remainder, as Keras
/// does). Returns the epoch's mean loss and accuracy (over every process of `group`), or `None` when the
/// observer asked to stop.
fn train_epoch(
    step: &mut dyn TrainStep,
    batches: &Batches,
    epoch: usize,
    buffers: &mut EpochBuffers,
    observer: &mut dyn Observer,
) -> Result<Option<(f64, f64)>> {
    let n = batches.order.size().first().copied().unwrap_or(0);
    let labels = batches.train.labels.f_index_select(0, batches.order)?; // [n], in this epoch's order
    let mut checked = 0;
    for index in 1..=buffers.steps {
        let start = (index - 1) as i64 * buffers.batch;
        let len = buffers.batch.min(n - start);
        let rows = batches.order.narrow(0, start, len);
        let out = match step.step(&batches.inputs(&rows)?, &labels.narrow(0, start, len)) {
            // Stopped by a signal while the other processes were stopping too: a collective they left
            // fails, and the stop is what counts.
            Err(_) if observer.interrupted() => return Ok(None),
            out => out?,
        };
        tch::no_grad(|| -> Result<()> {
            let (loss_slot, predictions_slot) = &buffers.slots[index - 1];
            loss_slot.shallow_clone().f_copy_(&out.loss_sum)?;
            let _ = out.logits.f_argmax_out(predictions_slot, -1, false)?;
            Ok(())
        })?;
        if index % NAN_CHECK_EVERY == 0 || index == buffers.steps {
            check_finite(&buffers.losses, checked, index, epoch)?;
            checked = index;
        }
        let running = observer
            .running_metrics_every()
            .filter(|every| index % every == 0 || index == buffers.steps)
            .map(|_| running_metrics(buffers, &labels, index, start + len))
            .transpose()?;
        observer.step(index, running);
        if observer.interrupted() {
            return Ok(None);
        }
    }
    let correct = buffers.predictions.f_eq_tensor(&labels)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    let loss_sum = buffers.losses.f_sum(Kind::Double)?.f_double_value(&[])?;
    let totals = distributed::sum_over_group(step.group(), &[loss_sum, correct as f64, n as f64])?;
    Ok(Some((totals[0] / totals[2], totals[1] / totals[2])))
}

/// Mean loss and accuracy over the first `steps` steps (`seen` examples) of the epoch.
fn running_metrics(buffers: &EpochBuffers, labels: &Tensor, steps: usize, seen: i64) -> Result<(f64, f64)> {
    let loss = buffers.losses.narrow(0, 0, steps as i64).f_sum(Kind::Double)?.f_double_value(&[])? / seen as f64;
    let right = buffers.predictions.narrow(0, 0, seen).f_eq_tensor(&labels.narrow(0, 0, seen))?.f_sum(Kind::Int64)?;
    Ok((loss, right.f_int64_value(&[])? as f64 / seen as f64))
}

/// Scores the held-out part of the training files after an epoch.
fn validate(net: &dyn ModuleT, valid: &Examples, num_classes: i64) -> Result<Evaluation> {
    evaluate(net, valid, num_classes)
}

/// Fails, naming the first bad step, if a loss among steps `from+1..=to` of `epoch` is NaN or infinite
/// (Keras's TerminateOnNaN).
fn check_finite(losses: &Tensor, from: usize, to: usize, epoch: usize) -> Result<()> {
    let window = losses.narrow(0, from as i64, (to - from) as i64);
    if window.f_isfinite()?.f_all()?.f_int64_value(&[])? == 1 {
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
pub fn snapshot(vs: &nn::VarStore) -> Weights {
    vs.variables().into_iter().map(|(name, t)| (name, t.detach().copy())).collect()
}

/// Copies `weights` into the variables of the same names.
pub fn restore(vs: &nn::VarStore, weights: &[(String, Tensor)]) -> Result<()> {
    let variables = vs.variables();
    for (name, saved) in weights {
        if let Some(var) = variables.get(name) {
            let mut var = var.shallow_clone();
            tch::no_grad(|| var.f_copy_(saved))?;
        }
    }
    Ok(())
}
