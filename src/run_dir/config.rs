//! `config.json`: everything needed to rebuild and reproduce a run's model — the tool, the model's
//! description, the data, the training settings — and where the run stands (its state and result).
//! Written after every epoch; read back through [`super::check`], which says in plain words what is wrong
//! with a file edited by hand.

use super::layout::CONFIG_FILE;
use super::training_config::TrainConfig;
use crate::callbacks::CallbackState;
use crate::engine::Engine;
use crate::files::write_bytes_atomically;
use crate::model::ModelConfig;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The tool that wrote a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
}

impl Default for ToolInfo {
    fn default() -> Self {
        ToolInfo { name: env!("CARGO_PKG_NAME").into(), version: env!("CARGO_PKG_VERSION").into() }
    }
}

/// Where the data came from and how it was prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    pub dir: PathBuf,
    pub class_names: Vec<String>,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub test_examples: usize,
    /// How pixels were turned into inputs (inference must do the same).
    pub normalization: String,
    /// The classes and the number of training images used, when not all.
    #[serde(default)]
    pub selection: crate::data::Selection,
    /// How pictures were fitted into the frame (`--fit`), for data read from pictures or CSV rows;
    /// absent for IDX and `.npz` data, whose images are frames already. predict and serve fit a picture
    /// the same way by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<crate::preprocess::Framing>,
    /// Pictures that would not decode were skipped (`--skip-bad`); resume reads the data the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_bad: bool,
}

/// Where a fine-tuned run came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The parent run directory.
    pub parent: PathBuf,
    /// The parent's architecture and data, as it described them.
    pub parent_model: String,
    pub parent_data: PathBuf,
    /// Variables kept fixed during fine-tuning (bit-identical to the parent's).
    pub frozen: Vec<String>,
    /// Whether the output layer was re-initialised instead of loaded.
    pub reinit_head: bool,
    /// Test accuracy on the new data before fine-tuning.
    pub accuracy_before: f64,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Being written by a training process (or killed while it was).
    #[default]
    Training,
    Completed,
    EarlyStopped,
    /// Stopped by Ctrl-C or SIGTERM after its last completed epoch.
    Interrupted,
    /// Stopped by an error (full disk, NaN loss) after its last completed epoch.
    Failed,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Training => "training",
            RunStatus::Completed => "completed",
            RunStatus::EarlyStopped => "early_stopped",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

/// What happened to the optimizer's state when a run was resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerResume {
    /// The moment estimates and step count came back from `optimizer.safetensors`.
    Restored,
    /// Adam started with fresh moment estimates: the run had no optimizer state for that epoch (a run
    /// of the autograd engine from before it saved its state).
    Fresh,
}

/// One `mnist-tch resume` of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// The last completed epoch it continued from.
    pub after_epoch: usize,
    pub engine: Engine,
    pub optimizer: OptimizerResume,
}

/// Where a run stands; rewritten after every epoch, so an interrupted run says how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunState {
    pub status: RunStatus,
    pub epochs_completed: usize,
    /// Epoch with the best monitored metric so far.
    pub best_epoch: Option<usize>,
    /// The learning-rate schedule's and early stopping's progress, continued by `mnist-tch resume`.
    #[serde(default)]
    pub callbacks: CallbackState,
    /// Each time the run was resumed, and whether the optimizer's state came back.
    #[serde(default)]
    pub resumes: Vec<ResumeRecord>,
}

/// The test-set outcome of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub epochs_completed: usize,
    pub device: String,
    pub test_loss: f64,
    pub test_accuracy: f64,
}

/// The contents of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub tool: ToolInfo,
    pub model: ModelConfig,
    pub data: DataInfo,
    pub training: TrainConfig,
    /// Set for runs made by `finetune`.
    #[serde(default)]
    pub lineage: Option<Lineage>,
    #[serde(default)]
    pub state: RunState,
    pub result: Option<RunResult>,
}

impl RunConfig {
    /// The tensors kept fixed (a fine-tuned run's `--freeze`).
    pub fn frozen_tensors(&self) -> Vec<String> {
        self.lineage.as_ref().map(|l| l.frozen.clone()).unwrap_or_default()
    }

    /// The epoch whose weights the run ended with instead of its last: the best epoch, when early stopping
    /// stopped the run, or when it was on and the run completed (its weights are restored either way).
    /// Runs still training, interrupted or failed hold their last epoch's weights: nothing was restored.
    pub fn restored_epoch(&self) -> Option<usize> {
        let state = &self.state;
        let restored = state.status == RunStatus::EarlyStopped
            || (state.status == RunStatus::Completed && self.training.early_stopping.is_some());
        if restored { state.best_epoch } else { None }
    }

    /// `(completed, planned)` epochs when the run stopped short of its planned epochs (interrupted, failed,
    /// or killed while training) and `mnist-tch resume` can continue it; `None` for a finished run.
    pub fn unfinished(&self) -> Option<(usize, usize)> {
        let state = &self.state;
        let stopped = matches!(state.status, RunStatus::Interrupted | RunStatus::Failed | RunStatus::Training);
        (stopped && state.epochs_completed < self.training.epochs)
            .then_some((state.epochs_completed, self.training.epochs))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        write_bytes_atomically(&dir.join(CONFIG_FILE), format!("{json}\n").as_bytes())
    }
}
