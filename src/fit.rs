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
use crate::training::{self, EpochEnd, Observer, Outcome, Start, TrainReport};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Tensor, nn};

/// Where a resumed run continues from.
pub struct ResumePoint {
    /// The epochs already in the run directory, kept in front of the new ones.
    pub history: Vec<EpochMetrics>,
    /// The optimizer state saved with the last completed epoch, when there is one.
    pub optimizer_state: Option<Vec<(String, Tensor)>>,
    /// With early stopping: the best epoch's weights so far (`best.safetensors`).
    pub best_weights: Option<Vec<(String, Tensor)>>,
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

/// Everything a training job needs.
pub struct FitJob {
    /// The config to write; `state` and `result` are filled in as training goes.
    pub config: RunConfig,
    /// The data, on the CPU.
    pub data: TrainingData,
    /// The model with its starting weights.
    pub model: Network,
    pub out: PathBuf,
    /// `None` for a new run (or fine-tuning).
    pub resume: Option<ResumePoint>,
    /// Write `initial.safetensors`: the weights before the first step.
    pub save_initial: bool,
    pub output: JobOutput,
}

/// What a finished job reports.
pub struct FitReport {
    pub outcome: Outcome,
    pub test: Option<Evaluation>,
    pub epochs_completed: usize,
}

/// Runs `job`; prints the epoch lines, the test result and where the run was saved.
pub fn fit(job: FitJob) -> Result<FitReport> {
    let FitJob { mut config, data, model, out, resume, save_initial, output } = job;
    config.training.distributed = output.group.as_ref().map(|g| g.info(config.training.batch_size));
    if let Some(group) = &output.group {
        group.broadcast_variables(&model.vs)?; // DDP's start: every process from rank 0's weights
    }
    let data = data.to_device(model.vs.device());
    if !output.writes_run() {
        return fit_without_writing(&mut config, &model, &data, resume, &output);
    }
    begin(&mut config, &out, save_initial.then_some(&model.vs))?;
    let (report, history, tensorboard) = match train_and_record(&mut config, &model, &data, resume, &out, &output) {
        Ok(trained) => trained,
        Err(err) => return Err(record_failure(&mut config, &out, err)),
    };
    if report.outcome == Outcome::Interrupted {
        return finish_interrupted(&mut config, &out, report.interrupted_in_epoch);
    }
    finish(config, &out, &model, &data, &history, report.outcome, &output, tensorboard)
}

/// Trains with every completed epoch saved into `out`; returns the report, every epoch's metrics (the
/// earlier sessions' too) and the TensorBoard writer to finish.
fn train_and_record(
    config: &mut RunConfig,
    model: &Network,
    data: &TrainingData,
    resume: Option<ResumePoint>,
    out: &Path,
    output: &JobOutput,
) -> Result<(TrainReport, Vec<EpochMetrics>, Option<TensorBoard>)> {
    let mut step = new_step(config, model, output)?;
    let (history, start) = starting_point(config, &mut *step, resume, output)?;
    let tensorboard = open_tensorboard(config, &start, output)?;
    let training = config.training.clone();
    let mut recorder = RunRecorder {
        progress: ConsoleProgress::new(output.mode),
        out,
        config,
        history,
        interrupt: &output.interrupt,
        tensorboard,
    };
    let report = training::train(&mut *step, model, data, &training, start, &mut recorder)?;
    Ok((report, recorder.history, recorder.tensorboard))
}

/// The engine's step for `model`, averaging gradients over the job's process group if there is one.
fn new_step<'a>(config: &RunConfig, model: &'a Network, output: &JobOutput) -> Result<Box<dyn TrainStep + 'a>> {
    let settings = StepSettings {
        adam: config.training.adam_settings(),
        precision: config.training.precision,
        frozen: config.frozen_tensors(),
        group: output.group.clone(),
    };
    engine::new_step(config.training.engine, &model.vs, &model.net, &config.model, settings)
}

/// Where training starts: epoch 1, or after a resumed run's last completed epoch, with its callbacks'
/// progress and its optimizer state given back to `step` (recorded in the config's `resumes`).
fn starting_point(
    config: &mut RunConfig,
    step: &mut dyn TrainStep,
    resume: Option<ResumePoint>,
    output: &JobOutput,
) -> Result<(Vec<EpochMetrics>, Start)> {
    let group = output.group.clone();
    let Some(point) = resume else { return Ok((Vec::new(), Start { group, ..Start::default() })) };
    // A run stopped before its first epoch starts afresh: there is no optimizer state to speak of.
    let optimizer = if config.state.epochs_completed == 0 {
        OptimizerResume::Fresh
    } else {
        restore_optimizer(step, point.optimizer_state.as_deref(), output.mode)?
    };
    config.state.resumes.push(ResumeRecord {
        after_epoch: config.state.epochs_completed,
        engine: config.training.engine,
        optimizer,
    });
    let start = Start {
        first_epoch: config.state.epochs_completed + 1,
        callbacks: config.state.callbacks,
        best_weights: point.best_weights,
        group,
    };
    Ok((point.history, start))
}

/// `--tensorboard DIR`'s event files for this session, and the line saying where they go.
fn open_tensorboard(config: &RunConfig, start: &Start, output: &JobOutput) -> Result<Option<TensorBoard>> {
    let Some(dir) = &output.tensorboard else { return Ok(None) };
    let tensorboard = TensorBoard::start(dir, config, start.first_epoch.max(1))?;
    if output.mode != OutputMode::Quiet {
        crate::say!("TensorBoard: {} (tensorboard --logdir {})", dir.display(), dir.display())
            .or_else(crate::output::unless_closed)?;
    }
    Ok(Some(tensorboard))
}

/// A rank other than 0: trains in step with the others and writes nothing; rank 0 reports.
fn fit_without_writing(
    config: &mut RunConfig,
    model: &Network,
    data: &TrainingData,
    resume: Option<ResumePoint>,
    output: &JobOutput,
) -> Result<FitReport> {
    let mut step = new_step(config, model, output)?;
    let (_, start) = starting_point(config, &mut *step, resume, output)?;
    let completed_before = start.first_epoch.saturating_sub(1);
    let mut observer = PeerObserver { interrupt: &output.interrupt };
    let report = training::train(&mut *step, model, data, &config.training, start, &mut observer)?;
    let epochs_completed = completed_before + report.history.len();
    Ok(FitReport { outcome: report.outcome, test: None, epochs_completed })
}

/// Marks the run as training in its config before the first step, and writes `initial.safetensors`
/// when asked for.
fn begin(config: &mut RunConfig, out: &Path, save_initial: Option<&nn::VarStore>) -> Result<()> {
    config.state.status = RunStatus::Training;
    config.result = None;
    config.save(out)?;
    match save_initial {
        Some(vs) => run_dir::save_weights(vs, &out.join(run_dir::INITIAL_WEIGHTS_FILE)),
        None => Ok(()),
    }
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
    let line = match (restored, step.engine()) {
        (true, _) => "Optimizer: Adam's moment estimates and step count restored from optimizer.safetensors".into(),
        (false, engine::Engine::Autograd) => "Optimizer: nn::Adam continues with fresh moment estimates: tch cannot save \
                                              or restore them (tch-rs issue 360); weights, schedule and data order continue"
            .to_string(),
        (false, engine) => {
            format!("Optimizer: no saved {} optimizer state for this epoch: Adam continues with fresh moment estimates", engine.name())
        }
    };
    if mode != OutputMode::Quiet {
        crate::say!("{line}").or_else(crate::output::unless_closed)?;
    }
    Ok(if restored { OptimizerResume::Restored } else { OptimizerResume::Fresh })
}

/// The files still hold the last completed epoch; says in the config that the run failed (best effort:
/// the failure may be the disk itself).
fn record_failure(config: &mut RunConfig, out: &Path, err: anyhow::Error) -> anyhow::Error {
    config.state.status = RunStatus::Failed;
    let _ = config.save(out);
    err.context(format!("{} keeps the last completed epoch ({})", out.display(), config.state.epochs_completed))
}

/// Ctrl-C: the run directory holds the last completed epoch; says how to continue.
fn finish_interrupted(config: &mut RunConfig, out: &Path, in_epoch: Option<usize>) -> Result<FitReport> {
    config.state.status = RunStatus::Interrupted;
    config.save(out)?;
    let epochs_completed = config.state.epochs_completed;
    let cause = if crate::output::stdout_closed() { "Stopped (standard output was closed)" } else { "Interrupted" };
    eprintln!(
        "{cause} in epoch {}: {} holds the last completed epoch ({epochs_completed}); continue with \
         `mnist-tch resume {}`",
        in_epoch.unwrap_or(epochs_completed + 1),
        out.display(),
        out.display()
    );
    Ok(FitReport { outcome: Outcome::Interrupted, test: None, epochs_completed })
}

/// The end of a run that trained to its last epoch or stopped early: keep the model it ends with,
/// evaluate it on the test set, write the result and the plots, print the summary lines.
#[allow(clippy::too_many_arguments)]
fn finish(
    mut config: RunConfig,
    out: &Path,
    model: &Network,
    data: &TrainingData,
    history: &[EpochMetrics],
    outcome: Outcome,
    output: &JobOutput,
    tensorboard: Option<TensorBoard>,
) -> Result<FitReport> {
    let say = |line: String| -> Result<()> {
        if output.mode != OutputMode::Quiet {
            crate::say!("{line}")?;
        }
        Ok(())
    };
    let training = &config.training;
    let epochs_completed = config.state.epochs_completed;
    if outcome == Outcome::EarlyStopped {
        say(format!(
            "Early stopping: {} did not improve for {}; restored the weights of epoch {}",
            training.monitor.name(),
            crate::wording::epochs(training.early_stopping.map_or(0, |e| e.patience)),
            config.state.best_epoch.unwrap_or(epochs_completed)
        ))?;
    }
    // The model the run ends with (the best epoch's with early stopping) is the one evaluated and kept.
    if training.early_stopping.is_some() {
        run_dir::save_weights(&model.vs, &out.join(run_dir::WEIGHTS_FILE))?;
    }
    let test = evaluate(&model.net, &data.test, config.model.num_classes)?;
    run_dir::EvaluationReport::new(&test, &config.data.class_names).save(out)?;
    config.state.status = match outcome {
        Outcome::EarlyStopped => RunStatus::EarlyStopped,
        _ => RunStatus::Completed,
    };
    config.result = Some(RunResult {
        epochs_completed,
        device: device_name(model.vs.device()),
        test_loss: test.loss,
        test_accuracy: test.accuracy,
    });
    config.save(out).with_context(|| format!("saving the run to {}", out.display()))?;
    if output.plot {
        let written = plot::draw_run_plots(out, &config, history, Some(&test))?;
        say(format!("Plots: {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")))?;
    }
    if let Some(tensorboard) = tensorboard {
        let name = out.file_name().map_or_else(|| out.display().to_string(), |n| n.to_string_lossy().into_owned());
        tensorboard.finish(&config, &test, &name)?;
    }
    say(format!("Saved run to {}", out.display()))?;
    say(format!("Test loss: {:.4}", test.loss))?;
    crate::say!("Test accuracy: {:.4}", test.accuracy)?;
    Ok(FitReport { outcome, test: Some(test), epochs_completed })
}

/// A rank other than 0 only listens for Ctrl-C.
struct PeerObserver<'a> {
    interrupt: &'a AtomicBool,
}

impl Observer for PeerObserver<'_> {
    fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }
}

/// Saves each completed epoch into the run directory and shows progress.
struct RunRecorder<'a> {
    progress: ConsoleProgress,
    out: &'a Path,
    config: &'a mut RunConfig,
    history: Vec<EpochMetrics>,
    interrupt: &'a AtomicBool,
    tensorboard: Option<TensorBoard>,
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
        self.interrupt.load(Ordering::SeqCst) || crate::output::stdout_closed()
    }
}
