//! A resumed run: the config, metrics and optimizer state read back from its directory, the weights of
//! its last completed epoch, the same data in the same order.

use super::{DataRequest, Origin, Plan, RunDirectory, StartingWeights, check_settings};
use crate::callbacks::EarlyStopping;
use crate::class_names::ClassNames;
use crate::device::device_name;
use crate::engine::Engine;
use crate::fit::ResumePoint;
use crate::run_dir::{self, RunConfig};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use tch::Device;

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
    // Says why this is not a run (no config.json, or one that is not mnist-tch's) before anything, the
    // lock included, is written there; read again once locked.
    RunConfig::load(dir)?;
    // Under torchrun only rank 0 writes; the others read the same files.
    // Said first, in resume's words: the lock's own refusal suggests another --out, which resume has not.
    if writes_run && let Some(pid) = run_dir::lock::writer(dir) {
        bail!("{}: being trained by process {pid}; wait for it to finish, then resume it", dir.display());
    }
    let lock = if writes_run { Some(run_dir::take_for_writing(dir)?) } else { None };
    let mut config = RunConfig::load(dir)?;
    let completed = config.state.epochs_completed;
    // Early stopping ended the run with an earlier epoch's weights: training continues from those.
    let restored = config.restored_epoch().filter(|&best| best != completed);
    let target = request.epochs.unwrap_or(config.training.epochs);
    ensure!(
        target > completed,
        "{}: already trained {}; pass --epochs N with N > {completed} to train more",
        dir.display(),
        crate::wording::epochs(completed)
    );
    apply_resume_request(&mut config, request, target);
    let same_data = DataRequest {
        path: config.data.dir.clone(),
        selection: config.data.selection.clone(),
        class_names: ClassNames::Listed(config.data.class_names.clone()),
        validation_split: config.training.validation_split,
        reading: crate::data::Reading {
            frame: Some(config.model.frame()),
            fit: config.data.fit.unwrap_or_default(),
            skip_bad: config.data.skip_bad,
        },
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
        run_dir: RunDirectory::Existing { dir: dir.clone(), lock },
        origin: Origin::Resumed { point, line },
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
fn resume_point(dir: &Path, config: &RunConfig) -> Result<ResumePoint> {
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
fn resume_line(dir: &Path, completed: usize, target: usize, restored: Option<usize>, engine: Engine) -> String {
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
