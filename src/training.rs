//! The training loop: Adam on mini-batches of a freshly shuffled training set every epoch, then a
//! validation pass — Keras's `fit` with `validation_split`, in one function that reads top to bottom.

use crate::data::Examples;
use crate::evaluation::evaluate;
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT, nn::OptimizerConfig};

/// Every hyperparameter of a training run; stored in `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: String,
    pub learning_rate: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    /// Keras's default (1e-7), not PyTorch's (1e-8): the seed is a Keras program.
    pub adam_epsilon: f64,
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
    pub seconds: f64,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// Receives training progress; implemented by the console output.
pub trait Progress {
    fn start_epoch(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// Every how many steps the running loss and accuracy should be read back from the device
    /// (a host synchronisation); `None` means never during the epoch.
    fn running_metrics_every(&self) -> Option<usize> {
        None
    }
    /// Called after each step; `running` is `(loss, accuracy)` on the steps asked for.
    fn step(&mut self, _step: usize, _running: Option<(f64, f64)>) {}
    fn end_epoch(&mut self, _metrics: &EpochMetrics) {}
}

/// Progress that shows nothing.
pub struct Silent;
impl Progress for Silent {}

/// Trains `net` (variables in `vs`, `num_classes` outputs) on `train` for `config.epochs` epochs, validating on `valid`
/// after each. Both sets must already be on `vs`'s device.
pub fn train(
    net: &impl ModuleT,
    vs: &nn::VarStore,
    train: &Examples,
    valid: &Examples,
    num_classes: i64,
    config: &TrainConfig,
    progress: &mut dyn Progress,
) -> Result<Vec<EpochMetrics>> {
    ensure!(config.epochs > 0, "--epochs must be at least 1");
    ensure!(config.batch_size > 0, "--batch-size must be at least 1");
    let n = train.len();
    ensure!(n > 0, "no training examples");
    let device = vs.device();
    let adam = nn::Adam {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        wd: 0.0,
        eps: config.adam_epsilon,
        amsgrad: false,
    };
    let mut optimizer = adam.build(vs, config.learning_rate)?;

    let batch = config.batch_size as i64;
    let steps = ((n + batch - 1) / batch) as usize;
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        let started = Instant::now();
        progress.start_epoch(epoch, config.epochs, steps);
        // One shuffle per epoch, drawn on the CPU generator so CPU and CUDA runs see the same order;
        // each step then takes a contiguous view instead of gathering its own rows.
        let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_device(device);
        let shuffled =
            Examples { images: train.images.index_select(0, &order), labels: train.labels.index_select(0, &order) };
        // Running sums stay on the device: reading them back every step would synchronise every step.
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut correct = Tensor::zeros([], (Kind::Int64, device));
        let mut seen = 0i64;
        for step in 0..steps {
            let start = step as i64 * batch;
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
            let running = progress
                .running_metrics_every()
                .filter(|every| (step + 1) % every == 0 || step + 1 == steps)
                .map(|_| (loss_sum.double_value(&[]) / seen as f64, correct.int64_value(&[]) as f64 / seen as f64));
            progress.step(step + 1, running);
        }
        let validation = evaluate(net, valid, num_classes)?;
        let metrics = EpochMetrics {
            epoch,
            steps,
            seconds: started.elapsed().as_secs_f64(),
            loss: loss_sum.double_value(&[]) / n as f64,
            accuracy: correct.int64_value(&[]) as f64 / n as f64,
            val_loss: validation.loss,
            val_accuracy: validation.accuracy,
        };
        progress.end_epoch(&metrics);
        history.push(metrics);
    }
    Ok(history)
}
