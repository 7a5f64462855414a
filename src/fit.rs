//! A training job run end to end into its (already claimed) run directory — shared by `train`, `resume`
//! and `finetune` through `jobs::start`: build the engine's step, train with every epoch saved as it
//! completes, then either record the interruption or evaluate on the test set and write the final files.
//!
//! After every epoch the run directory is a complete, loadable run (weights, optimizer state, metrics,
//! config with its state), so an interrupted or crashed run loses at most the epoch in progress.
//!
//! Under torchrun only rank 0 (the leader) writes the run directory and prints; the other ranks receive
//! its weights, train their shard in step with it, and end without writing anything.

use crate::data::TrainingData;
use crate::device::device_name;
use crate::distributed::ProcessGroup;
use crate::engine::{self, StepSettings, TrainStep};
use crate::evaluation::{Evaluation, evaluate};
use crate::model::Network;
use crate::plot;
use crate::progress::{ConsoleProgress, OutputMode};
use crate::run_dir::{self, EpochMetrics, OptimizerResume, ResumeRecord, RunConfig, RunResult, RunStatus};
use crate::tensorboard::TensorBoard;
use crate::training::{self, EpochEnd, Observer, Outcome, TrainReport, Weights};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::Tensor;

/// Where a resumed run continues from.
pub struct ResumePoint {
    /// The epochs already in the run directory, kept in front of the new ones.
    pub history: Vec<EpochMetrics>,
    /// The optimizer state saved with the last completed epoch, when there is one.
    pub optimizer_state: Option<Vec<(String, Tensor)>>,
    /// With early stopping: the best epoch's weights so far (`best.safetensors`).
    pub best_weights: Option<Weights>,
}

/// How a job reports itself and where it can be stopped.
pub struct JobOutput {
    pub mode: OutputMode,
    pub plot: bool,
    /// Set by the Ctrl-C handler: finish the step, keep the last full epoch, stop.
    pub interrupt: Arc<AtomicBool>,
    /// `--tensorboard DIR`: also write TensorBoard event files there.
    pub tensorboard: Option<PathBuf>,
    /// The other processes training with this one (torchrun), if any.
    pub group: Option<Rc<ProcessGroup>>,
}

impl JobOutput {
    /// The output of a training job in this process: a rank other than 0 prints nothing (quiet, and it
    /// never reaches the lines that quiet keeps) and draws no plots.
    pub fn for_process(
        mode: OutputMode,
        plot: bool,
        tensorboard: Option<PathBuf>,
        group: Option<Rc<ProcessGroup>>,
    ) -> JobOutput {
        let leader = group.as_ref().is_none_or(|g| g.is_leader());
        JobOutput {
            mode: if leader { mode } else { OutputMode::Quiet },
            plot: plot && leader,
            interrupt: crate::signals::training_interrupt_flag(),
            tensorboard: tensorboard.filter(|_| leader),
            group,
        }
    }

    /// This process writes the run directory: a single process, or rank 0.
    pub fn writes_run(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.is_leader())
    }
}

/// What a finished job reports.
pub struct FitReport {
    pub outcome: Outcome,
    pub test: Option<Evaluation>,
    pub epochs_completed: usize,
}

/// Trains `model` as `config` describes, on `data`, into the claimed run directory `out` (continuing
/// `resume` when given); prints the epoch lines, the test result and where the run was saved. Under
/// torchrun every process trains the same way; only rank 0 records the run ([`RunRecorder`]), the
/// others follow ([`Follower`]).
pub fn fit(
    mut config: RunConfig,
    data: &TrainingData,
    model: &Network,
    out: &Path,
    resume: Option<ResumePoint>,
    output: &JobOutput,
) -> Result<FitReport> {
    config.training.distributed = output.group.as_ref().map(|g| g.info(config.training.batch_size));
    if let Some(group) = &output.group {
        group.broadcast_variables(&model.vs)?; // DDP's start: every process from rank 0's weights
    }
    let data = data.to_device(model.vs.device());
    let settings = StepSettings {
        adam: config.training.adam_settings(),
        precision: config.training.precision,
        frozen: config.frozen_tensors(),
        label_smoothing: config.training.label_smoothing,
        group: output.group.clone(),
    };
    let mut step = engine::new_step(config.training.engine, &model.vs, &model.net, &config.model, settings)?;
    if config.training.accumulate > 1 {
        step.accumulate_micro_batches(config.training.batch_size as i64)?;
    }
    let (history, best_weights) = continue_from(&mut config, &mut *step, resume, output.mode)?;
    let run = config.clone();
    let mut observer: Box<dyn JobObserver + '_> = if output.writes_run() {
        Box::new(RunRecorder::begin(config, out, history, output)?)
    } else {
        Box::new(Follower { config, interrupt: &output.interrupt })
    };
    let trained = training::train(&mut *step, model, &data, &run, best_weights, &mut *observer);
    observer.conclude(trained, model, &data)
}

/// Where training picks up: nothing for a new run; for a resumed one its earlier epochs' metrics and
/// (early stopping) its best weights, with its optimizer state given back to `step` and the resume
/// recorded in the config's `resumes`.
fn continue_from(
    config: &mut RunConfig,
    step: &mut dyn TrainStep,
    resume: Option<ResumePoint>,
    mode: OutputMode,
) -> Result<(Vec<EpochMetrics>, Option<Weights>)> {
    let Some(point) = resume else { return Ok((Vec::new(), None)) };
    // A run stopped before its first epoch starts afresh: there is no optimizer state to speak of.
    let optimizer = if config.state.epochs_completed == 0 {
        OptimizerResume::Fresh
    } else {
        restore_optimizer(step, point.optimizer_state.as_deref(), mode)?
    };
    config.state.resumes.push(ResumeRecord {
        after_epoch: config.state.epochs_completed,
        engine: config.training.engine,
        optimizer,
    });
    Ok((point.history, point.best_weights))
}

/// Gives `step` the optimizer state the resumed run saved, and says in one line what happened to it.
fn restore_optimizer(
    step: &mut dyn TrainStep,
    state: Option<&[(String, Tensor)]>,
    mode: OutputMode,
) -> Result<OptimizerResume> {
    let restored = match state {
        Some(state) => step.restore_optimizer_state(state)?,
        None => false,
    };
    let line = if restored {
        "Optimizer: Adam's moment estimates and step count restored from optimizer.safetensors".to_string()
    } else {
        format!(
            "Optimizer: no saved {} optimizer state for this epoch (optimizer.safetensors is missing or of another \
             epoch): Adam continues with fresh moment estimates; weights, schedule and data order continue",
            step.engine().name()
        )
    };
    if mode != OutputMode::Quiet {
        crate::say!("{line}").or_else(crate::output::unless_closed)?;
    }
    Ok(if restored { OptimizerResume::Restored } else { OptimizerResume::Fresh })
}

/// What watches a job's training besides the loop's own callbacks, and ends the job.
trait JobObserver: Observer {
    /// The job's report once `trained` has returned, with whatever the observer still has to write.
    fn conclude(
        self: Box<Self>,
        trained: Result<TrainReport>,
        model: &Network,
        data: &TrainingData,
    ) -> Result<FitReport>;
}

/// A rank other than 0: trains in step with the others, listens for Ctrl-C, writes nothing.
struct Follower<'a> {
    config: RunConfig,
    interrupt: &'a AtomicBool,
}

impl Observer for Follower<'_> {
    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }
}

impl JobObserver for Follower<'_> {
    fn conclude(self: Box<Self>, trained: Result<TrainReport>, _: &Network, _: &TrainingData) -> Result<FitReport> {
        let report = trained?;
        let epochs_completed = self.config.state.epochs_completed + report.history.len();
        Ok(FitReport { outcome: report.outcome, test: None, epochs_completed })
    }
}

/// Saves each completed epoch into the run directory and shows progress; at the end records how the
/// run ended, and for a finished run evaluates it on the test set and writes the final files.
struct RunRecorder<'a> {
    progress: ConsoleProgress,
    out: &'a Path,
    config: RunConfig,
    history: Vec<EpochMetrics>,
    output: &'a JobOutput,
    tensorboard: Option<TensorBoard>,
}

impl<'a> RunRecorder<'a> {
    /// Marks the run as training in its config before the first step and opens `--tensorboard`'s files.
    fn begin(
        mut config: RunConfig,
        out: &'a Path,
        history: Vec<EpochMetrics>,
        output: &'a JobOutput,
    ) -> Result<RunRecorder<'a>> {
        config.state.status = RunStatus::Training;
        config.result = None;
        config.save(out)?;
        let tensorboard = open_tensorboard(&config, output)?;
        Ok(RunRecorder { progress: ConsoleProgress::new(output.mode), out, config, history, output, tensorboard })
    }

    /// The files still hold the last completed epoch; says in the config that the run failed (best
    /// effort: the failure may be the disk itself).
    fn record_failure(mut self, err: anyhow::Error) -> anyhow::Error {
        self.config.state.status = RunStatus::Failed;
        let _ = self.config.save(self.out);
        let completed = self.config.state.epochs_completed;
        let out = self.out.display();
        // A run with epochs behind it goes on from them (a peer killed under torchrun, a disk since freed).
        let resume = if completed > 0 { format!("; continue with `mnist-tch resume {out}`") } else { String::new() };
        err.context(format!("{out} keeps the last completed epoch ({completed}){resume}"))
    }

    /// Ctrl-C: the run directory holds the last completed epoch; says how to continue.
    fn finish_interrupted(mut self, in_epoch: Option<usize>) -> Result<FitReport> {
        self.config.state.status = RunStatus::Interrupted;
        self.config.save(self.out)?;
        let epochs_completed = self.config.state.epochs_completed;
        let out = self.out.display();
        let cause = if crate::output::stdout_closed() { "Stopped (standard output was closed)" } else { "Interrupted" };
        eprintln!(
            "{cause} in epoch {}: {out} holds the last completed epoch ({epochs_completed}); continue with \
             `mnist-tch resume {out}`",
            in_epoch.unwrap_or(epochs_completed + 1),
        );
        Ok(FitReport { outcome: Outcome::Interrupted, test: None, epochs_completed })
    }

    /// The end of a run that trained to its last epoch or stopped early: keep the model it ends with,
    /// evaluate it on the test set, write the result and the plots, print the summary lines.
    fn finish(mut self, model: &Network, data: &TrainingData, outcome: Outcome) -> Result<FitReport> {
        if outcome == Outcome::EarlyStopped {
            self.say(early_stopping_line(&self.config))?;
        }
        // The model the run ends with (the best epoch's with early stopping) is the one evaluated and kept.
        if self.config.training.early_stopping.is_some() {
            run_dir::save_weights(&model.vs, &self.out.join(run_dir::WEIGHTS_FILE))?;
        }
        let test = evaluate(&model.net, &data.test, self.config.model.num_classes)?;
        self.record_result(&test, outcome, device_name(model.vs.device()))?;
        self.write_extras(&test)?;
        self.say(format!("Saved run to {}", self.out.display()))?;
        self.say(format!("Test loss: {:.4}", test.loss))?;
        crate::say!("Test accuracy: {:.4}", test.accuracy)?;
        let epochs_completed = self.config.state.epochs_completed;
        Ok(FitReport { outcome, test: Some(test), epochs_completed })
    }

    /// `evaluation.json`, and the config with the run's status and result.
    fn record_result(&mut self, test: &Evaluation, outcome: Outcome, device: String) -> Result<()> {
        let out = self.out;
        run_dir::EvaluationReport::new(test, &self.config.data.class_names).save(out)?;
        self.config.state.status = match outcome {
            Outcome::EarlyStopped => RunStatus::EarlyStopped,
            _ => RunStatus::Completed,
        };
        let (test_loss, test_accuracy) = (test.loss, test.accuracy);
        let epochs_completed = self.config.state.epochs_completed;
        self.config.result = Some(RunResult { epochs_completed, device, test_loss, test_accuracy });
        self.config.save(out).with_context(|| format!("saving the run to {}", out.display()))
    }

    /// `--plot`'s pictures and the end of `--tensorboard`'s files.
    fn write_extras(&mut self, test: &Evaluation) -> Result<()> {
        let out = self.out;
        if self.output.plot {
            let written = plot::draw_run_plots(out, &self.config, &self.history, Some(test))?;
            let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
            self.say(format!("Plots: {}", names.join(", ")))?;
        }
        if let Some(tensorboard) = self.tensorboard.take() {
            let name = out.file_name().map_or_else(|| out.display().to_string(), |n| n.to_string_lossy().into_owned());
            tensorboard.finish(&self.config, test, &name)?;
        }
        Ok(())
    }

    /// A summary line, unless `--quiet`.
    fn say(&self, line: String) -> Result<()> {
        if self.output.mode != OutputMode::Quiet {
            crate::say!("{line}")?;
        }
        Ok(())
    }
}

/// `Early stopping: val_loss did not improve for 3 epochs; restored the weights of epoch 4`.
fn early_stopping_line(config: &RunConfig) -> String {
    let training = &config.training;
    format!(
        "Early stopping: {} did not improve for {}; restored the weights of epoch {}",
        training.monitor.name(),
        crate::wording::epochs(training.early_stopping.map_or(0, |e| e.patience)),
        config.state.best_epoch.unwrap_or(config.state.epochs_completed)
    )
}

/// `--tensorboard DIR`'s event files for this session, and the line saying where they go.
fn open_tensorboard(config: &RunConfig, output: &JobOutput) -> Result<Option<TensorBoard>> {
    let Some(dir) = &output.tensorboard else { return Ok(None) };
    let tensorboard = TensorBoard::start(dir, config, config.state.epochs_completed + 1)?;
    if output.mode != OutputMode::Quiet {
        crate::say!("TensorBoard: {} (tensorboard --logdir {})", dir.display(), dir.display())
            .or_else(crate::output::unless_closed)?;
    }
    Ok(Some(tensorboard))
}

impl JobObserver for RunRecorder<'_> {
    fn conclude(
        self: Box<Self>,
        trained: Result<TrainReport>,
        model: &Network,
        data: &TrainingData,
    ) -> Result<FitReport> {
        match trained {
            Err(err) => Err(self.record_failure(err)),
            Ok(report) if report.outcome == Outcome::Interrupted => {
                self.finish_interrupted(report.interrupted_in_epoch)
            }
            Ok(report) => self.finish(model, data, report.outcome),
        }
    }
}

impl Observer for RunRecorder<'_> {
    fn start_epoch(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.progress.start_epoch(epoch, epochs, steps);
    }

    fn running_metrics_every(&self) -> Option<usize> {
        self.progress.running_metrics_every()
    }

    fn step(&mut self, step: usize, running: Option<(f64, f64)>) {
        self.progress.step(step, running);
    }

    fn end_epoch(&mut self, end: EpochEnd) -> Result<()> {
        let epoch = end.metrics.epoch;
        self.progress.end_epoch(end.metrics);
        self.history.push(end.metrics.clone());
        // Weights and optimizer state, then metrics, then the config that says how far the run got:
        // whatever is cut off by a crash, the config never claims more than the files hold.
        run_dir::save_weights(end.vs, &self.out.join(run_dir::WEIGHTS_FILE))?;
        run_dir::save_optimizer_state(self.out, &end.optimizer_state, epoch)?;
        let training = &self.config.training;
        // Early stopping keeps its restore point on disk too, so a resumed run can restore it.
        if end.improved && (training.save_best || training.early_stopping.is_some()) {
            run_dir::save_weights(end.vs, &self.out.join(run_dir::BEST_WEIGHTS_FILE))?;
        }
        run_dir::save_metrics(self.out, &self.history)?;
        let state = &mut self.config.state;
        state.epochs_completed = epoch;
        state.best_epoch = end.callbacks.best.epoch;
        state.callbacks = end.callbacks;
        self.config.save(self.out)?;
        // After the checkpoint: an epoch logged but not saved would be replaced on resume anyway.
        match &mut self.tensorboard {
            Some(tensorboard) => tensorboard.epoch(end.metrics),
            None => Ok(()),
        }
    }

    /// Ctrl-C or SIGTERM, or nobody reads stdout any more (`train | head`).
    fn interrupted(&self) -> bool {
        self.output.interrupt.load(Ordering::SeqCst) || crate::output::stdout_closed()
    }
}
