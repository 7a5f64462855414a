//! A training job run end to end into a run directory — shared by `train`, `train --resume` and
//! `finetune`: move the data to the device, train with every epoch saved as it completes, evaluate on
//! the test set, write the final files, and draw the plots when asked.
//!
//! After every epoch the run directory is a complete, loadable run (weights, metrics, config with its
//! state), so an interrupted or crashed run loses at most the epoch in progress.

use crate::data::Examples;
use crate::device::device_name;
use crate::evaluation::{Evaluation, evaluate};
use crate::fused_mlp::FusedMlp;
use crate::plot::draw_run_plots as draw_plots;
use crate::progress::{ConsoleProgress, OutputMode};
use crate::run_dir::{self, RunConfig, RunResult, RunState};
use crate::training::{self, EpochMetrics, Observer, Outcome, Start, TrainSets};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::nn;

/// The three parts of the data a job uses, on the CPU.
pub struct JobData<'a> {
    pub train: Examples,
    pub valid: Examples,
    pub test: &'a Examples,
}

/// Everything a training job needs.
pub struct FitJob<'a> {
    /// The config to write; `state` and `result` are filled in as training goes.
    pub config: RunConfig,
    pub data: JobData<'a>,
    pub vs: nn::VarStore,
    pub net: nn::SequentialT,
    pub out: PathBuf,
    /// 1 for a new run; the next epoch for a resumed one.
    pub first_epoch: usize,
    /// Adam's state saved by the run being resumed.
    pub optimizer_state: Option<Vec<(String, tch::Tensor)>>,
    /// Tensors kept fixed (fine-tuning).
    pub frozen: Vec<String>,
    /// Epochs already in the run directory (resume), kept in front of the new ones.
    pub previous_history: Vec<EpochMetrics>,
    pub mode: OutputMode,
    pub plot: bool,
    /// Set by the Ctrl-C handler: finish the step, keep the last full epoch, stop.
    pub interrupt: Arc<AtomicBool>,
}

impl<'a> FitJob<'a> {
    /// A new run from epoch 1 with nothing frozen; resuming and fine-tuning change the fields they need.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: RunConfig,
        data: JobData<'a>,
        vs: nn::VarStore,
        net: nn::SequentialT,
        out: PathBuf,
        mode: OutputMode,
        plot: bool,
        interrupt: Arc<AtomicBool>,
    ) -> FitJob<'a> {
        FitJob {
            config,
            data,
            vs,
            net,
            out,
            first_epoch: 1,
            optimizer_state: None,
            frozen: Vec::new(),
            previous_history: Vec::new(),
            mode,
            plot,
            interrupt,
        }
    }
}

/// What a finished job reports.
pub struct FitReport {
    pub outcome: Outcome,
    pub test: Option<Evaluation>,
    pub epochs_completed: usize,
}

/// Saves each completed epoch into the run directory and shows progress.
struct RunObserver<'a> {
    progress: ConsoleProgress,
    out: &'a Path,
    config: &'a mut RunConfig,
    history: Vec<EpochMetrics>,
    interrupt: &'a AtomicBool,
}

impl Observer for RunObserver<'_> {
    fn start_epoch(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.progress.start_epoch(epoch, epochs, steps);
    }

    fn running_metrics_every(&self) -> Option<usize> {
        self.progress.running_metrics_every()
    }

    fn step(&mut self, step: usize, running: Option<(f64, f64)>) {
        self.progress.step(step, running);
    }

    fn end_epoch(
        &mut self,
        metrics: &EpochMetrics,
        vs: &nn::VarStore,
        optimizer: &FusedMlp,
        improved: bool,
    ) -> Result<()> {
        self.progress.end_epoch(metrics);
        self.history.push(metrics.clone());
        // Weights and optimizer state, then metrics, then the config that says how far the run got:
        // whatever is cut off by a crash, the config never claims more than the files hold.
        run_dir::save_weights(vs, &self.out.join(run_dir::WEIGHTS_FILE))?;
        run_dir::save_tensors(&optimizer.optimizer_state(), &self.out.join(run_dir::OPTIMIZER_FILE))?;
        if improved && self.config.training.save_best {
            run_dir::save_weights(vs, &self.out.join(run_dir::BEST_WEIGHTS_FILE))?;
        }
        run_dir::save_metrics(self.out, &self.history)?;
        self.config.state.epochs_completed = metrics.epoch;
        if improved {
            self.config.state.best_epoch = Some(metrics.epoch);
        }
        self.config.save(self.out)
    }

    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }
}

/// Runs `job`; prints the epoch lines, the test result and where the run was saved.
pub fn fit(job: FitJob) -> Result<FitReport> {
    let FitJob {
        mut config,
        data,
        vs,
        net,
        out,
        first_epoch,
        optimizer_state,
        frozen,
        previous_history,
        mode,
        plot,
        interrupt,
    } = job;
    let device = vs.device();
    let say = |line: String| {
        if mode != OutputMode::Quiet {
            println!("{line}");
        }
    };
    let train_set = data.train.to_device(device);
    let valid_set = data.valid.to_device(device);
    let test_set = data.test.to_device(device);
    let num_classes = config.model.num_classes;

    config.state = RunState { status: "training".into(), ..config.state.clone() };
    config.result = None;
    config.save(&out)?;
    let training = config.training.clone();
    let model = config.model.clone();
    let mut observer = RunObserver {
        progress: ConsoleProgress::new(mode),
        out: &out,
        config: &mut config,
        history: previous_history,
        interrupt: &interrupt,
    };
    let report = training::train(
        &net,
        &vs,
        &model,
        TrainSets { train: &train_set, valid: &valid_set },
        &training,
        Start { first_epoch, optimizer_state, frozen },
        &mut observer,
    );
    let report = match report {
        Ok(report) => report,
        Err(err) => {
            // The files still hold the last completed epoch; say in the config that the run failed
            // (best effort: the failure may be the disk itself).
            config.state.status = "failed".into();
            let _ = config.save(&out);
            return Err(err.context(format!(
                "{} keeps the last completed epoch ({})",
                out.display(),
                config.state.epochs_completed
            )));
        }
    };
    let history = observer.history;
    let epochs_completed = config.state.epochs_completed;

    if report.outcome == Outcome::Interrupted {
        config.state.status = "interrupted".into();
        config.save(&out)?;
        eprintln!(
            "Interrupted in epoch {}: {} holds the last completed epoch ({epochs_completed}); continue with \
             `mnist-tch train --resume {}`",
            report.interrupted_in_epoch.unwrap_or(first_epoch),
            out.display(),
            out.display()
        );
        return Ok(FitReport { outcome: report.outcome, test: None, epochs_completed });
    }
    if report.outcome == Outcome::EarlyStopped {
        say(format!(
            "Early stopping: {} did not improve for {} epochs; restored the weights of epoch {}",
            training.monitor.name(),
            training.early_stopping.map_or(0, |e| e.patience),
            report.best_epoch.unwrap_or(epochs_completed)
        ));
    }
    // The model the run ends with (the best epoch's after early stopping) is the one evaluated and kept.
    if training.early_stopping.is_some() {
        run_dir::save_weights(&vs, &out.join(run_dir::WEIGHTS_FILE))?;
    }
    let test = evaluate(&net, &test_set, num_classes)?;
    save_evaluation(&out, &config, &test)?;
    config.state.status = match report.outcome {
        Outcome::EarlyStopped => "early_stopped",
        _ => "completed",
    }
    .into();
    config.result = Some(RunResult {
        epochs_completed,
        device: device_name(device),
        test_loss: test.loss,
        test_accuracy: test.accuracy,
    });
    config.save(&out).with_context(|| format!("saving the run to {}", out.display()))?;
    if plot {
        let written = draw_plots(&out, &config, &history, Some(&test))?;
        say(format!("Plots: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")));
    }
    say(format!("Saved run to {}", out.display()));
    say(format!("Test loss: {:.4}", test.loss));
    println!("Test accuracy: {:.4}", test.accuracy);
    Ok(FitReport { outcome: report.outcome, test: Some(test), epochs_completed })
}

/// `evaluation.json`: the final test evaluation with its confusion matrix and per-class scores, so
/// `mnist-tch plot` needs no data.
pub fn save_evaluation(out: &Path, config: &RunConfig, test: &Evaluation) -> Result<()> {
    let classes: Vec<_> = config
        .data
        .class_names
        .iter()
        .zip(test.per_class_scores())
        .map(|(name, s)| json!({"name": name, "precision": s.precision, "recall": s.recall, "f1": s.f1, "examples": s.support}))
        .collect();
    let report = json!({
        "loss": test.loss,
        "accuracy": test.accuracy,
        "classes": classes,
        "confusion_matrix": test.confusion,
    });
    run_dir::write_bytes_atomically(&out.join(run_dir::EVALUATION_FILE), format!("{report:#}\n").as_bytes())
}
