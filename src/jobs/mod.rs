//! How a training job starts. The three kinds — a new run ([`NewRun`]), a resumed run ([`ResumeRun`]),
//! a fine-tuned run ([`FinetuneRun`]) — differ only in where the config, the data and the starting
//! weights come from: each becomes a [`Plan`] in one short function, and [`start`] takes every plan
//! through the same sequence: the model built from the config with its starting weights, the run
//! directory claimed, the header printed, then [`fit`].

mod elastic;
mod finetune;
mod new_run;
mod resume;

pub use elastic::continuation as elastic_continuation;
pub use finetune::{FinetuneRun, plan_finetune};
pub use new_run::{NewRun, new_model, plan_new_run};
pub use resume::{ResumeRun, plan_resume};

use crate::callbacks;
use crate::class_names::ClassNames;
use crate::data::{self, Selection, TrainingData};
use crate::device::device_name;
use crate::distributed;
use crate::engine;
use crate::evaluation::evaluate;
use crate::fit::{FitReport, JobOutput, ResumePoint, fit};
use crate::model::{self, Network};
use crate::progress::OutputMode;
use crate::run_dir::lock::RunLock;
use crate::run_dir::{self, DataInfo, RunConfig};
use anyhow::{Result, bail, ensure};
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
    /// The frame, fit and `--skip-bad` the data is read with.
    pub reading: data::Reading,
}

impl DataRequest {
    fn load(&self, num_classes: usize) -> Result<TrainingData> {
        let Self { path, selection, class_names, validation_split, reading } = self;
        data::load_training_data_as(path, selection, num_classes, class_names, *validation_split, reading)
    }
}

/// Where a new run goes.
#[derive(Debug, Clone)]
pub struct NewRunDir {
    /// `None`: the first free `runs/<default_name>N`.
    pub out: Option<PathBuf>,
    pub overwrite: bool,
    /// `train` or `finetune`: the stem of the default directory's name.
    pub default_name: &'static str,
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
    origin: Origin,
    save_initial: bool,
}

/// Where the weights of the first step come from.
enum StartingWeights {
    /// Drawn from the run's seed: a new run, or a resumed run stopped before its first epoch ended.
    Seeded,
    /// A run's weights file: every tensor (resumed), or every tensor but a new output layer, which is
    /// drawn from the run's seed (fine-tuned).
    File { path: PathBuf, except: Vec<String> },
}

/// Where the job writes.
enum RunDirectory {
    /// A new directory, created and locked by [`start`].
    New(NewRunDir),
    /// A resumed run's own directory, locked when it was planned (by the process that writes it).
    Existing { dir: PathBuf, lock: Option<RunLock> },
}

/// What the job continues, which decides what is said before it starts.
enum Origin {
    New,
    Resumed { point: ResumePoint, line: String },
    FineTuned { parent: PathBuf, note: Option<String> },
}

/// Every job's sequence: the model from the config with its starting weights, the run directory
/// claimed (with `--save-initial`, the weights before the first step written into it), what is about to
/// happen said, then [`fit`].
pub fn start(plan: Plan, output: JobOutput) -> Result<FitReport> {
    let Plan { mut config, data, device, weights, run_dir, origin, save_initial } = plan;
    let device = distributed::device_of_process(device, output.group.as_deref());
    config.training.device = device_name(device);
    let model = weights.load(&config, device)?;
    if let (Origin::FineTuned { .. }, Some(lineage)) = (&origin, &mut config.lineage) {
        lineage.accuracy_before =
            evaluate(&model.net, &data.test.to_device(device), config.model.num_classes)?.accuracy;
    }
    let (out, _lock) = run_dir.claim(&output)?;
    if save_initial && output.writes_run() {
        run_dir::save_weights(&model.vs, &out.join(run_dir::INITIAL_WEIGHTS_FILE))?;
    }
    before_training(output.mode, || introduce(&config, &data, device, &origin))?;
    let resume = match origin {
        Origin::Resumed { point, .. } => Some(point),
        Origin::New | Origin::FineTuned { .. } => None,
    };
    fit(config, &data, &model, &out, resume, &output)
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
            RunDirectory::New(new_dir) => claim_new_run_dir(&new_dir, output),
            RunDirectory::Existing { dir, lock } => Ok((dir, lock)),
        }
    }
}

/// The lines before training: where a resumed run continues from, the header, what fine-tuning keeps.
fn introduce(config: &RunConfig, data: &TrainingData, device: Device, origin: &Origin) -> Result<()> {
    match origin {
        Origin::New => print_header(config, data, device, "new run"),
        Origin::Resumed { line, .. } => {
            crate::say!("{line}")?;
            print_header(config, data, device, "resumed run")
        }
        Origin::FineTuned { parent, note } => {
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

/// Refuses settings that cannot train: a schedule that never acts, a batch larger than the training part,
/// a shift as large as the picture, an engine that cannot train this model this way.
fn check_settings(config: &RunConfig, data: &TrainingData) -> Result<()> {
    callbacks::check_schedule_acts(config.training.lr_schedule, config.training.epochs)?;
    let train_len = data.train.len();
    ensure!(
        config.training.batch_size as i64 <= train_len,
        "--batch-size {} is larger than the {train_len} training examples left after the validation split",
        config.training.batch_size
    );
    if config.training.accumulate != 1 && config.training.engine != engine::Engine::Autograd {
        bail!(crate::error_text::UsageError(format!(
            "--accumulate is implemented by --engine autograd, not {}",
            config.training.engine.name()
        )));
    }
    let frame = config.model.frame();
    if config.training.random_shift as i64 >= frame.rows.min(frame.cols) {
        bail!(crate::error_text::UsageError(format!(
            "--random-shift {} would move a {}x{} picture out of its frame: give fewer pixels than its shorter side",
            config.training.random_shift, frame.rows, frame.cols
        )));
    }
    let distributed = distributed::WorkerEnv::from_env()?.is_some();
    let t = &config.training;
    engine::check_supported(t.engine, t.precision, t.label_smoothing, &config.model, distributed)
}

/// Creates the directory of a new run and takes its lock before anything is trained, so a bad `--out`
/// costs nothing and no other process writes it meanwhile. Under `--quiet`, a directory chosen here is
/// named on stderr (stdout keeps its one line). Under torchrun only rank 0 claims it: the others get
/// the path it would have (they never write there) and no lock.
fn claim_new_run_dir(new_dir: &NewRunDir, output: &JobOutput) -> Result<(PathBuf, Option<RunLock>)> {
    let mode = output.mode;
    if !output.writes_run() {
        return Ok((new_dir.out.clone().unwrap_or_else(|| PathBuf::from("runs")), None));
    }
    let out = match &new_dir.out {
        Some(out) => out.clone(),
        None => {
            let out = run_dir::next_free_run_dir(&PathBuf::from("runs"), new_dir.default_name);
            if mode == OutputMode::Quiet {
                eprintln!("Run directory: {}", out.display());
            }
            out
        }
    };
    let lock = run_dir::create_new_run_dir(&out, new_dir.overwrite)?;
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
        fit: data.fit,
        skip_bad: request.reading.skip_bad,
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
        "Data: {} - {} training, {} validation, {} test images of {}{}, {} classes",
        config.data.dir.display(),
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        data.frame.size_text(),
        if data.frame.channels == 1 { String::new() } else { format!(" ({})", data.frame.colour_name()) },
        data.num_classes
    )?;
    for note in &data.notes {
        crate::say!("{note}")?;
    }
    crate::say!("{}", model::summary(&config.model, title, &config.frozen_tensors()).trim_end())?;
    crate::say!("Engine: {}", config.training.engine.name())
}
