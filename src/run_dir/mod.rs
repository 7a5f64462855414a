//! The schema of a run, in one place: what a run directory holds, every file's name and format, how
//! each is written and read back. Everything that is saved is defined here or held by a type defined
//! here — `config.json` ([`RunConfig`], with [`TrainConfig`]), the weights and optimizer state
//! (safetensors), `metrics.csv`/`metrics.json` ([`EpochMetrics`]), `evaluation.json`
//! ([`EvaluationReport`]) — and the modules that do the work (training, plots, serving, export) import
//! from it, never the other way round.
//!
//! - `layout`: every file name, once ([`RUN_FILES`]);
//! - `config`, `training_config`, `metrics`, `evaluation_report`, `weights`: one file format each;
//! - `check`: a `config.json` read back, checked as a whole in plain words;
//! - [`lock`]: one writer per run directory; `replace`: `--overwrite` replaces a run as a whole.
//!
//! Every file is written atomically — a temporary file in the same directory, fsync, rename, fsync of
//! the directory — so an interrupted or failed write leaves the previous version in place.

mod check;
mod config;
mod evaluation_report;
mod layout;
pub mod lock;
mod metrics;
mod replace;
mod training_config;
mod weights;

pub use config::{
    DataInfo, Lineage, OptimizerResume, ResumeRecord, RunConfig, RunResult, RunState, RunStatus, ToolInfo,
};
pub use evaluation_report::{ClassReport, EvaluationReport};
pub use layout::{
    BEST_WEIGHTS_FILE, CONFIG_FILE, CONFUSION_FILE, CURVES_FILE, EVALUATION_FILE, INITIAL_WEIGHTS_FILE, LOCK_FILE,
    METRICS_FILE, METRICS_JSON_FILE, OPTIMIZER_FILE, RUN_FILES, WEIGHTS_FILE, is_run_dir, is_temporary,
    next_free_run_dir,
};
pub use metrics::{EpochMetrics, load_metrics, save_metrics};
pub use training_config::{ShiftRule, TrainConfig, TrainingDefaults};
pub use weights::{
    load_optimizer_state, load_tensors, load_weights, load_weights_except, save_optimizer_state, save_tensors,
    save_weights,
};

use crate::model::Network;
use anyhow::{Context, Result, bail};
use lock::RunLock;
use std::fs;
use std::path::Path;

/// A loaded run: its config and its model with the weights.
pub struct LoadedRun {
    pub config: RunConfig,
    pub model: Network,
}

/// Rebuilds the model of the run in `dir` from its `config.json` and loads its weights
/// (`model.safetensors`) onto `device`.
pub fn load_run(dir: &Path, device: tch::Device) -> Result<LoadedRun> {
    load_run_weights(dir, WEIGHTS_FILE, device)
}

/// Like [`load_run`], with another weights file of the run (e.g. `best.safetensors`).
pub fn load_run_weights(dir: &Path, weights_file: &str, device: tch::Device) -> Result<LoadedRun> {
    let config = RunConfig::load(dir)?;
    let weights = dir.join(weights_file);
    if config.state.epochs_completed == 0 && !weights.exists() {
        // Never advise resuming a run another process holds.
        if let Some(pid) = lock::writer(dir) {
            bail!(
                "{}: being trained by process {pid}, which has not completed an epoch yet; wait for it",
                dir.display()
            );
        }
        bail!(
            "{}: the run has no completed epoch yet (status: {}); continue it with `mnist-tch resume {}`",
            dir.display(),
            config.state.status.name(),
            dir.display()
        );
    }
    let mut model = Network::init(&config.model, device);
    load_weights(&mut model.vs, &weights)?;
    Ok(LoadedRun { config, model })
}

/// Creates `dir` for a new run and locks it for writing. mnist-tch writes a new run only into a new or
/// empty directory, or over its own run (one whose `config.json` it wrote) with `overwrite`, which
/// replaces that run as a whole ([`replace`]). Anything else — a file, a directory holding other files
/// (a user's `metrics.json`, their own `config.json`, `/`, a data set) — is refused whatever the flags,
/// and a run another process is writing in any case.
pub fn create_new_run_dir(dir: &Path, overwrite: bool) -> Result<RunLock> {
    // Said first: --overwrite would not help.
    if let Some(pid) = lock::writer(dir) {
        bail!("{}: being trained by process {pid}; wait for it to finish or choose another --out", dir.display());
    }
    if let Some(blocking) = dir.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
        if blocking == dir {
            bail!("{}: is a file, not a directory; give --out a new or empty directory", dir.display());
        }
        bail!(
            "{}: cannot be created: {} is a file, not a directory; choose another --out",
            dir.display(),
            blocking.display()
        );
    }
    if dir.is_dir() && holds_own_run(dir) {
        if !overwrite {
            bail!(
                "{}: already holds a run; choose another --out or pass --overwrite{}",
                dir.display(),
                resume_hint(dir)
            );
        }
        return replace::replace_run_dir(dir);
    }
    if dir.is_dir() {
        refuse_unless_empty(dir)?;
    }
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    take_for_writing(dir)
}

/// For a run that stopped short of its epochs, the way on that keeps its progress (--overwrite throws it away).
fn resume_hint(dir: &Path) -> String {
    match RunConfig::load(dir).ok().and_then(|config| config.unfinished()) {
        Some((completed, planned)) => format!(
            " (which starts afresh); it stopped after {} of {planned}: continue it with `mnist-tch resume {}`",
            crate::wording::epochs(completed),
            dir.display()
        ),
        None => String::new(),
    }
}

/// Whether `dir` holds a run of mnist-tch's own: a `config.json` that reads back as an mnist-tch config
/// (its values may have been edited; the file is still the run's) and names mnist-tch as its tool.
fn holds_own_run(dir: &Path) -> bool {
    let path = dir.join(CONFIG_FILE);
    fs::read_to_string(&path)
        .ok()
        .and_then(|text| check::parse(&text, &path).ok())
        .is_some_and(|config| config.tool.name == ToolInfo::default().name)
}

/// Refuses the existing directory `dir` unless it holds nothing but what an interrupted mnist-tch
/// start leaves (its `.lock`, temporary files).
fn refuse_unless_empty(dir: &Path) -> Result<()> {
    let shown = dir.display();
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("{shown}: cannot list"))? {
        let name = entry.with_context(|| format!("{shown}: cannot list"))?.file_name().to_string_lossy().into_owned();
        if name != LOCK_FILE && !is_temporary(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let not_ours =
        if names.iter().any(|n| n == CONFIG_FILE) { " (its config.json is not an mnist-tch run's)" } else { "" };
    bail!(
        "{shown}: is not empty and holds no mnist-tch run: {}{not_ours}; mnist-tch writes a run only into a new or \
         empty directory, or over its own run with --overwrite; choose another --out",
        listing(&names)
    )
}

/// Up to five names, then how many more.
fn listing(names: &[String]) -> String {
    const SHOWN: usize = 5;
    match names.len() {
        n if n <= SHOWN => names.join(", "),
        n => format!("{} and {} more", names[..SHOWN].join(", "), n - SHOWN),
    }
}

/// Locks the run directory `dir` for this process's writes, then removes the temporary files a
/// writer killed outright (kill -9) may have left there.
pub fn take_for_writing(dir: &Path) -> Result<RunLock> {
    let lock = lock::lock_for_writing(dir)?;
    crate::files::remove_stale(dir)?;
    Ok(lock)
}
