//! How a training job starts. The three kinds — a new run ([`NewRun`]), a resumed run ([`ResumeRun`]),
//! a fine-tuned run ([`FinetuneRun`]) — differ only in where the config, the data and the starting
//! weights come from: each becomes a [`Plan`] in one short function, and [`start`] takes every plan
//! through the same sequence: the model built from the config with its starting weights, the run
//! directory claimed, the header printed, then [`fit`].

use crate::callbacks::{self, EarlyStopping};
use crate::class_names::ClassNames;
use crate::data::{self, Selection, TrainingData};
use crate::device::device_name;
use crate::distributed;
use crate::engine::{self, Engine};
use crate::evaluation::evaluate;
use crate::fit::{FitJob, FitReport, JobOutput, ResumePoint, fit};
use crate::freeze::Freeze;
use crate::lock::RunLock;
use crate::model::{self, Arch, ModelConfig, Network};
use crate::progress::OutputMode;
use crate::run_dir::{self, DataInfo, Lineage, RunConfig, ToolInfo};
use crate::training::TrainConfig;
use anyhow::{Context, Result, bail, ensure};
use std::path::PathBuf;
use tch::Device;

/// How pixels become inputs; recorded in config.json so inference can do the same.
pub const NORMALIZATION: &str = "pixel / 255 (inputs in [0, 1])";

/// Which data a job reads, and which part of it.
#[derive(Debug, Clone)]
pub struct DataRequest {
    pub path: PathBuf,
    pub selection: Selection,
    pub class_names: ClassNames,
    pub validation_split: f64,
}

impl DataRequest {
    fn load(&self, num_classes: usize) -> Result<TrainingData> {
        data::load_training_data(
            &self.path,
            &self.selection,
            num_classes,
            self.class_names.clone(),
            self.validation_split,
        )
    }
}

/// Where a new run goes.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `None`: the first free `runs/<default_name>N`.
    pub out: Option<PathBuf>,
    pub overwrite: bool,
    /// `train` or `finetune`: the stem of the default directory's name.
    pub default_name: &'static str,
}

/// `mnist-tch train`: a model from scratch.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub data: DataRequest,
    /// Output units; every label must be below it (with `--labels`: their number instead).
    pub num_classes: usize,
    pub arch: Arch,
    /// The MLP's hidden widths (default: the Keras tutorial's 128).
    pub hidden: Option<Vec<i64>>,
    /// Default: the architecture's (0, or 0.5 for the convnet).
    pub dropout: Option<f64>,
    pub training: TrainConfig,
    pub device: Device,
    pub destination: Destination,
    pub save_initial: bool,
}

/// A job whose config is built and checked and whose data is loaded; no model yet, nothing written
/// (but a resumed run's lock).
pub struct Plan {
    /// The config the run writes. [`start`] fills in the device and, fine-tuning, the accuracy before.
    pub config: RunConfig,
    data: TrainingData,
    /// The device asked for; under torchrun each process takes its own (see [`distributed`]).
    device: Device,
    weights: StartingWeights,
    run_dir: RunDirectory,
    kind: Kind,
    save_initial: bool,
}

/// Where the weights of the first step come from.
enum StartingWeights {
    /// Drawn from the run's seed: a new run, or a resumed run stopped before its first epoch ended.
    Seeded,
    /// A run's weights file: every tensor (resumed), or every tensor but a new output layer, which is
    /// drawn from the seed (fine-tuned).
    File { path: PathBuf, except: Vec<String> },
}

/// Where the job writes.
enum RunDirectory {
    /// A new directory, created and locked by [`start`].
    New(Destination),
    /// A resumed run's own directory, locked when it was planned (by the process that writes it).
    Existing { dir: PathBuf, _lock: Option<RunLock> },
}

/// What the job continues, which decides what is said before it starts.
enum Kind {
    New,
    Resumed { point: ResumePoint, line: String },
    FineTuned { parent: PathBuf, note: Option<String> },
}

/// Loads the data and builds the config of a new run; nothing is written.
pub fn plan_new_run(request: &NewRun) -> Result<Plan> {
    let data = request.data.load(request.num_classes)?;
    let hidden = match (request.arch, &request.hidden) {
        (Arch::Mlp, None) => vec![128],
        (_, hidden) => hidden.clone().unwrap_or_default(),
    };
    let model = ModelConfig::new(
        request.arch,
        [data.image_rows as i64, data.image_cols as i64],
        hidden,
        data.num_classes as i64,
        request.dropout.unwrap_or(request.arch.default_dropout()),
    )?;
    let config = RunConfig {
        tool: ToolInfo::default(),
        model,
        data: data_info(&request.data, &data),
        training: TrainConfig { device: device_name(request.device), ..request.training.clone() },
        lineage: None,
        state: Default::default(),
        result: None,
    };
    check_settings(&config, &data)?;
    Ok(Plan {
        config,
        data,
        device: request.device,
        weights: StartingWeights::Seeded,
        run_dir: RunDirectory::New(request.destination.clone()),
        kind: Kind::New,
        save_initial: request.save_initial,
    })
}

/// Every job's sequence: the model from the config with its starting weights, the run directory
/// claimed, what is about to happen said, then [`fit`].
pub fn start(plan: Plan, output: JobOutput) -> Result<FitReport> {
    let Plan { mut config, data, device, weights, run_dir, kind, save_initial } = plan;
    let device = distributed::device_of_process(device, output.group.as_deref());
    config.training.device = device_name(device);
    let model = weights.load(&config, device)?;
    if let (Kind::FineTuned { .. }, Some(lineage)) = (&kind, &mut config.lineage) {
        lineage.accuracy_before =
            evaluate(&model.net, &data.test.to_device(device), config.model.num_classes)?.accuracy;
    }
    let (out, _lock) = run_dir.claim(&output)?;
    before_training(output.mode, || introduce(&config, &data, device, &kind))?;
    let resume = match kind {
        Kind::Resumed { point, .. } => Some(point),
        Kind::New | Kind::FineTuned { .. } => None,
    };
    fit(FitJob { config, data, model, out, resume, save_initial, output })
}

impl StartingWeights {
    /// The model of `config` on `device` with these weights; libtorch's generator is seeded with the
    /// run's seed first, so whatever is drawn is the same on every run (and every process).
    fn load(&self, config: &RunConfig, device: Device) -> Result<Network> {
        tch::manual_seed(config.training.seed);
        let mut model = Network::init(&config.model, device);
        if let StartingWeights::File { path, except } = self {
            run_dir::load_weights_except(&mut model.vs, path, except)?;
        }
        Ok(model)
    }
}

impl RunDirectory {
    /// The directory to write, locked. Under torchrun only rank 0 claims a new one: the others get the
    /// path it would have (they never write there) and no lock.
    fn claim(self, output: &JobOutput) -> Result<(PathBuf, Option<RunLock>)> {
        match self {
            RunDirectory::New(destination) => claim_new_run_dir(&destination, output),
            RunDirectory::Existing { dir, _lock } => Ok((dir, _lock)),
        }
    }
}

/// The lines before training: where a resumed run continues from, the header, what fine-tuning keeps.
fn introduce(config: &RunConfig, data: &TrainingData, device: Device, kind: &Kind) -> Result<()> {
    match kind {
        Kind::New => print_header(config, data, device, "new run"),
        Kind::Resumed { line, .. } => {
            crate::say!("{line}")?;
            print_header(config, data, device, "resumed run")
        }
        Kind::FineTuned { parent, note } => {
            print_header(config, data, device, &format!("fine-tuned from {}", parent.display()))?;
            let Some(lineage) = &config.lineage else { return Ok(()) };
            crate::say!(
                "Fine-tuning {}: {}, frozen: {}",
                parent.display(),
                if lineage.reinit_head { "new output layer" } else { "output layer from the parent" },
                if lineage.frozen.is_empty() { "nothing".to_string() } else { lineage.frozen.join(", ") }
            )?;
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            crate::say!("Test accuracy before fine-tuning: {:.4}", lineage.accuracy_before)
        }
    }
}

/// `mnist-tch resume RUN_DIR` (or `train --resume RUN_DIR`): the same run, continued.
#[derive(Debug, Clone)]
pub struct ResumeRun {
    pub dir: PathBuf,
    /// The new total number of epochs (default: the run's own, to finish an interrupted run).
    pub epochs: Option<usize>,
    pub device: Device,
    /// Default: the run's own engine.
    pub engine: Option<Engine>,
    /// Keep the best epoch's weights from now on.
    pub save_best: bool,
    /// Stop early on the remaining epochs.
    pub early_stopping: Option<EarlyStopping>,
}

/// Locks the run (when this process writes it), reads its config, data, metrics and optimizer state
/// back, and applies what the request changes.
pub fn plan_resume(request: &ResumeRun, writes_run: bool) -> Result<Plan> {
    let dir = &request.dir;
    if !dir.join(run_dir::CONFIG_FILE).is_file() {
        RunConfig::load(dir)?; // says why this is not a run directory, before anything is written there
    }
    // Under torchrun only rank 0 writes; the others read the same files.
    let lock = if writes_run { Some(run_dir::take_for_writing(dir)?) } else { None };
    let mut config = RunConfig::load(dir)?;
    let completed = config.state.epochs_completed;
    // Early stopping ended the run with an earlier epoch's weights: training continues from those.
    let restored = crate::plot::restored_epoch(&config).filter(|&best| best != completed);
    let target = request.epochs.unwrap_or(config.training.epochs);
    ensure!(
        target > completed,
        "{}: already trained {}; pass --epochs N with N > {completed} to train more",
        dir.display(),
        crate::progress::epochs(completed)
    );
    apply_resume_request(&mut config, request, target);
    let same_data = DataRequest {
        path: config.data.dir.clone(),
        selection: config.data.selection.clone(),
        class_names: ClassNames::Listed(config.data.class_names.clone()),
        validation_split: config.training.validation_split,
    };
    let data = same_data
        .load(config.model.num_classes as usize)
        .with_context(|| format!("reloading the data of {}", dir.display()))?;
    check_settings(&config, &data)?;
    let point = resume_point(dir, &config)?;
    let line = resume_line(dir, completed, target, restored, config.training.engine);
    // A run killed before its first epoch ended has saved nothing but its config: it starts from
    // epoch 1 with the initial weights of its seed, as it did the first time.
    let weights = match completed {
        0 => StartingWeights::Seeded,
        _ => StartingWeights::File { path: dir.join(run_dir::WEIGHTS_FILE), except: Vec::new() },
    };
    Ok(Plan {
        config,
        data,
        device: request.device,
        weights,
        run_dir: RunDirectory::Existing { dir: dir.clone(), _lock: lock },
        kind: Kind::Resumed { point, line },
        save_initial: false,
    })
}

/// The run's config as the resumed run continues it: the new epoch target, device and engine, and the
/// callbacks added now.
fn apply_resume_request(config: &mut RunConfig, request: &ResumeRun, target: usize) {
    config.training.epochs = target;
    config.training.device = device_name(request.device);
    config.training.engine = request.engine.unwrap_or(config.training.engine);
    // --save-best and --early-stopping added on resume act on the remaining epochs: the best epoch is
    // looked for among them (earlier ones have no saved weights to restore).
    let newly_watched = (request.save_best && !config.training.save_best)
        || (request.early_stopping.is_some() && config.training.early_stopping.is_none());
    config.training.save_best |= request.save_best;
    if request.early_stopping.is_some() {
        config.training.early_stopping = request.early_stopping;
    }
    if newly_watched {
        config.state.callbacks.best = Default::default();
        config.state.best_epoch = None;
    }
}

/// What the run directory holds besides the weights: the epochs so far, the optimizer state, and with
/// early stopping the best epoch's weights.
fn resume_point(dir: &std::path::Path, config: &RunConfig) -> Result<ResumePoint> {
    let completed = config.state.epochs_completed;
    let mut history =
        run_dir::load_metrics(dir).or_else(|err| if completed == 0 { Ok(Vec::new()) } else { Err(err) })?;
    history.truncate(completed);
    let best_weights = match (config.training.early_stopping, config.state.best_epoch) {
        (Some(_), Some(_)) => Some(run_dir::load_tensors(&dir.join(run_dir::BEST_WEIGHTS_FILE))?),
        _ => None,
    };
    let optimizer_state = run_dir::load_optimizer_state(dir, completed)?;
    Ok(ResumePoint { history, optimizer_state, best_weights })
}

/// The first line of a resumed run: where it continues from, and with which weights.
fn resume_line(
    dir: &std::path::Path,
    completed: usize,
    target: usize,
    restored: Option<usize>,
    engine: Engine,
) -> String {
    let dir = dir.display();
    let engine = engine.name();
    match restored {
        _ if completed == 0 => format!(
            "Restarting {dir} from epoch 1, up to epoch {target}: it was stopped before completing an epoch (engine: {engine})"
        ),
        Some(best) => format!(
            "Resuming {dir} after epoch {completed}, up to epoch {target}, from the weights of epoch {best} that early \
             stopping restored (engine: {engine})"
        ),
        None => format!("Resuming {dir} after epoch {completed}, up to epoch {target} (engine: {engine})"),
    }
}

/// `mnist-tch finetune --from RUN_DIR`: a new run that starts from a trained one.
#[derive(Debug, Clone)]
pub struct FinetuneRun {
    pub from: PathBuf,
    pub data: DataRequest,
    pub freeze: Freeze,
    pub reinit_head: bool,
    /// Default: the parent's engine.
    pub engine: Option<Engine>,
    /// Default: the parent's precision.
    pub precision: Option<engine::Precision>,
    pub training: TrainConfig,
    pub device: Device,
    pub destination: Destination,
    pub save_initial: bool,
}

/// Loads the new data and builds the config of a run that starts from the parent's architecture and
/// weights, with a new output layer when the classes change (or on `--reinit-head`).
pub fn plan_finetune(request: &FinetuneRun) -> Result<Plan> {
    let parent = RunConfig::load(&request.from)?;
    let data = request.data.load(parent.model.num_classes as usize)?;
    let image_shape = [data.image_rows as i64, data.image_cols as i64];
    if image_shape != parent.model.input_shape {
        bail!(
            "{}: images are {}x{}, the model in {} takes {}x{}",
            request.data.path.display(),
            image_shape[0],
            image_shape[1],
            request.from.display(),
            parent.model.input_shape[0],
            parent.model.input_shape[1]
        );
    }
    let model = parent.model.with_classes(data.num_classes as i64)?;
    let head = model.weight_layers().last().cloned().unwrap_or_default();
    let reinit_head = request.reinit_head || model.num_classes != parent.model.num_classes;
    let head_tensors = if reinit_head { vec![format!("{head}.weight"), format!("{head}.bias")] } else { vec![] };
    let frozen = request.freeze.tensors(&model)?;
    let training = TrainConfig {
        device: device_name(request.device),
        engine: request.engine.unwrap_or(parent.training.engine),
        precision: request.precision.unwrap_or(parent.training.precision),
        ..request.training.clone()
    };
    let config = RunConfig {
        tool: ToolInfo::default(),
        data: data_info(&request.data, &data),
        training,
        lineage: Some(Lineage {
            parent: std::fs::canonicalize(&request.from).unwrap_or_else(|_| request.from.clone()),
            parent_model: format!("{}, {} classes", parent.model.describe(), parent.model.num_classes),
            parent_data: parent.data.dir.clone(),
            frozen,
            reinit_head,
            accuracy_before: 0.0, // measured by `start` once the model has the parent's weights
        }),
        model,
        state: Default::default(),
        result: None,
    };
    check_settings(&config, &data)?;
    let note = (!reinit_head && config.data.class_names != parent.data.class_names).then(|| {
        format!(
            "the classes ({}) are not the parent's ({}) but keep its output layer; --reinit-head starts the head afresh",
            config.data.class_names.join(", "),
            parent.data.class_names.join(", ")
        )
    });
    Ok(Plan {
        config,
        data,
        device: request.device,
        weights: StartingWeights::File { path: request.from.join(run_dir::WEIGHTS_FILE), except: head_tensors },
        run_dir: RunDirectory::New(request.destination.clone()),
        kind: Kind::FineTuned { parent: request.from.clone(), note },
        save_initial: request.save_initial,
    })
}

/// Refuses settings that cannot train: a schedule that never acts, a batch larger than the training part,
/// an engine that cannot train this model this way.
fn check_settings(config: &RunConfig, data: &TrainingData) -> Result<()> {
    callbacks::check(config.training.lr_schedule, config.training.epochs)?;
    let train_len = data.train.len();
    ensure!(
        config.training.batch_size as i64 <= train_len,
        "--batch-size {} is larger than the {train_len} training examples left after the validation split",
        config.training.batch_size
    );
    let distributed = distributed::WorkerEnv::from_env()?.is_some();
    engine::check_supported(config.training.engine, config.training.precision, &config.model, distributed)
}

/// Creates the directory of a new run and takes its lock before anything is trained, so a bad `--out`
/// costs nothing and no other process writes it meanwhile. Under `--quiet`, a directory chosen here is
/// named on stderr (stdout keeps its one line). Under torchrun only rank 0 claims it: the others get
/// the path it would have (they never write there) and no lock.
fn claim_new_run_dir(destination: &Destination, output: &JobOutput) -> Result<(PathBuf, Option<RunLock>)> {
    let mode = output.mode;
    if !output.writes_run() {
        return Ok((destination.out.clone().unwrap_or_else(|| PathBuf::from("runs")), None));
    }
    let out = match &destination.out {
        Some(out) => out.clone(),
        None => {
            let out = run_dir::next_free_run_dir(&PathBuf::from("runs"), destination.default_name);
            if mode == OutputMode::Quiet {
                eprintln!("Run directory: {}", out.display());
            }
            out
        }
    };
    let lock = run_dir::create_new_run_dir(&out, destination.overwrite)?;
    Ok((out, Some(lock)))
}

/// The `data` part of `config.json`.
fn data_info(request: &DataRequest, data: &TrainingData) -> DataInfo {
    DataInfo {
        // Absolute, so `evaluate` finds the data from any working directory.
        dir: std::fs::canonicalize(&request.path).unwrap_or_else(|_| request.path.clone()),
        class_names: data.class_names.clone(),
        train_examples: data.train.len() as usize,
        validation_examples: data.valid.len() as usize,
        test_examples: data.test.len() as usize,
        normalization: NORMALIZATION.into(),
        selection: request.selection.clone(),
    }
}

/// Lines printed before training, unless `--quiet`. They are lost quietly when nobody reads stdout any
/// more: training then stops at its first step and records why.
fn before_training(mode: OutputMode, print: impl FnOnce() -> Result<()>) -> Result<()> {
    if mode == OutputMode::Quiet {
        return Ok(());
    }
    print().or_else(crate::output::unless_closed)
}

/// Device, data and model lines before training.
fn print_header(config: &RunConfig, data: &TrainingData, device: Device, title: &str) -> Result<()> {
    crate::say!("Device: {}", device_name(device))?;
    if device == Device::Cpu {
        crate::say!("Threads: {} (libtorch's CPU threads; --threads N)", tch::get_num_threads())?;
    }
    crate::say!(
        "Data: {} - {} training, {} validation, {} test images of {}x{}, {} classes",
        config.data.dir.display(),
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        data.image_rows,
        data.image_cols,
        data.num_classes
    )?;
    crate::say!("{}", model::summary(&config.model, title, &config.frozen_tensors()).trim_end())?;
    crate::say!("Engine: {}", config.training.engine.name())
}
