//! A run directory and every file format in it, written and read here only: `config.json` (everything
//! needed to rebuild and reproduce the model), `model.safetensors` (the weights), `optimizer.safetensors`,
//! `metrics.csv`/`metrics.json` (one row per epoch) and `evaluation.json` (the final test evaluation).
//!
//! Every file is written atomically — a temporary file in the same directory, fsync, rename, fsync of
//! the directory — so an interrupted or failed write leaves the previous version in place.
//! Loading checks the weights against the architecture in `config.json` tensor by tensor, so a
//! checkpoint from another model is one clear error naming the tensor.

use crate::callbacks::CallbackState;
use crate::engine::Engine;
use crate::error_text::{io_reason, torch_error};
use crate::evaluation::Evaluation;
use crate::files::{write_atomically, write_bytes_atomically};
use crate::lock::{self, RunLock};
use crate::model::{ModelConfig, Network};
use crate::training::{EpochMetrics, TrainConfig};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use tch::{Tensor, nn};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const BEST_WEIGHTS_FILE: &str = "best.safetensors";
/// With `train --save-initial`: the weights before the first step (for parity checks against PyTorch).
pub const INITIAL_WEIGHTS_FILE: &str = "initial.safetensors";
/// The optimizer's state (the fused engine's Adam moments and step count), saved with every epoch so
/// `mnist-tch resume` continues them. Absent for the autograd engine, whose `nn::Adam` cannot export it.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The tensor of `optimizer.safetensors` that says which epoch its state belongs to.
const OPTIMIZER_EPOCH: &str = "epoch";
pub const METRICS_FILE: &str = "metrics.csv";
pub const METRICS_JSON_FILE: &str = "metrics.json";
pub const EVALUATION_FILE: &str = "evaluation.json";

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
    /// The moment estimates and step count came back from `optimizer.safetensors` (fused engine).
    Restored,
    /// Adam started with fresh moment estimates (the autograd engine's `nn::Adam` cannot save them).
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

    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        write_bytes_atomically(&dir.join(CONFIG_FILE), format!("{json}\n").as_bytes())
    }

    pub fn load(dir: &Path) -> Result<RunConfig> {
        let path = dir.join(CONFIG_FILE);
        if !dir.is_dir() {
            bail!("{}: not a run directory (it does not exist or is not a directory)", dir.display());
        }
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read (is {} a run directory written by mnist-tch train?)",
                path.display(),
                dir.display()
            )
        })?;
        let config = crate::config_check::parse(&text, &path)?;
        crate::config_check::check(&config, dir)?;
        Ok(config)
    }
}

/// Saves every variable of `vs` to `path` (safetensors, names as in the variable store).
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    write_atomically(path, |tmp| Ok(vs.save(tmp)?))
}

/// Saves named tensors to `path` (safetensors).
pub fn save_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let on_cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu))).collect();
    write_atomically(path, |tmp| Ok(Tensor::write_safetensors(&on_cpu, tmp)?))
}

/// Reads named tensors from a safetensors file. The file is checked first (present, readable, as long
/// as its header says), because the safetensors reader's own errors are Rust debug dumps
/// (`IoError(Os { code: 2, .. })`, `MetadataIncompleteBuffer`) that tell a user nothing.
pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    check_safetensors_file(path)?;
    Tensor::read_safetensors(path)
        .map_err(torch_error)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))
}

/// Safetensors' own limit on the JSON header (100 MB): a larger length means "not safetensors".
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Checks that `path` is a whole safetensors file: an 8-byte little-endian header length, a JSON header,
/// and exactly as many data bytes as the header's largest `data_offsets` end. Each problem is one plain
/// sentence naming the file and what to do.
fn check_safetensors_file(path: &Path) -> Result<()> {
    use std::io::Read;
    let shown = path.display();
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let hint = match path.file_name().and_then(|n| n.to_str()) {
                Some(BEST_WEIGHTS_FILE) => {
                    "only `mnist-tch train --save-best` writes it (use model.safetensors, or retrain with --save-best)"
                }
                Some(WEIGHTS_FILE) => {
                    "the run has no weights yet (it has not completed an epoch) or the file was removed"
                }
                _ => "no such file",
            };
            bail!("{shown} is missing: {hint}");
        }
        Err(err) => bail!("{shown}: cannot be read: {}", io_reason(&err)),
    };
    let metadata = file.metadata().with_context(|| format!("{shown}: cannot be read"))?;
    if metadata.is_dir() {
        bail!("{shown}: is a directory, not a weights file");
    }
    let size = metadata.len();
    let truncated = |needed: u64| {
        anyhow::anyhow!(
            "{shown}: truncated ({size} of the {needed} bytes its header describes): it was cut off while being \
             written or copied; copy it again or retrain"
        )
    };
    let mut length = [0u8; 8];
    if size < 8 {
        bail!("{shown}: truncated or empty ({size} bytes): not a complete safetensors file; copy it again or retrain");
    }
    file.read_exact(&mut length).with_context(|| format!("{shown}: cannot be read"))?;
    let header_len = u64::from_le_bytes(length);
    if header_len > MAX_SAFETENSORS_HEADER {
        bail!("{shown}: not a safetensors file (its first 8 bytes are not a header length)");
    }
    if 8 + header_len > size {
        return Err(truncated(8 + header_len));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).with_context(|| format!("{shown}: cannot be read"))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|_| anyhow::anyhow!("{shown}: not a safetensors file (its header is not a JSON object)"))?;
    let data_len = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, tensor)| tensor.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let expected = 8 + header_len + data_len;
    if size < expected {
        return Err(truncated(expected));
    }
    ensure!(
        size == expected,
        "{shown}: {} bytes longer than its header describes: not a file written by mnist-tch",
        size - expected
    );
    Ok(())
}

/// Loads `path` into `vs`, which must already hold the architecture's variables. Every tensor must be
/// present with the same shape and dtype, and the file must hold nothing else.
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    load_weights_except(vs, path, &[])
}

/// Like [`load_weights`], leaving the variables named in `skip` as they are (a re-initialised head):
/// the file's tensors of those names are ignored, whatever their shape.
pub fn load_weights_except(vs: &mut nn::VarStore, path: &Path, skip: &[String]) -> Result<()> {
    let mut file_tensors = load_tensors(path)?;
    // In name order, so the tensor an error names does not depend on the file's layout.
    file_tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vs.variables();
    expected.retain(|name, _| !skip.contains(name));
    file_tensors.retain(|(name, _)| !skip.contains(name));
    for (name, tensor) in &file_tensors {
        let Some(var) = expected.remove(name) else {
            bail!(
                "{}: unexpected tensor '{name}' {:?}: not part of the architecture in {CONFIG_FILE}",
                path.display(),
                tensor.size()
            );
        };
        ensure!(
            var.size() == tensor.size(),
            "{}: tensor '{name}' has shape {:?}, the architecture in {CONFIG_FILE} needs {:?}",
            path.display(),
            tensor.size(),
            var.size()
        );
        ensure!(
            var.kind() == tensor.kind(),
            "{}: tensor '{name}' has dtype {:?}, expected {:?}",
            path.display(),
            tensor.kind(),
            var.kind()
        );
        let mut var = var;
        tch::no_grad(|| var.f_copy_(tensor)).with_context(|| format!("{}: copying '{name}'", path.display()))?;
    }
    if let Some(name) = expected.keys().min() {
        bail!("{}: tensor '{name}' is missing (the architecture in {CONFIG_FILE} needs it)", path.display());
    }
    Ok(())
}

/// Writes `metrics.csv` and `metrics.json`: one row (object) per epoch, the same numbers in both.
pub fn save_metrics(dir: &Path, metrics: &[EpochMetrics]) -> Result<()> {
    let mut csv = String::from("epoch,steps,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
    for m in metrics {
        csv += &format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:e},{:.3}\n",
            m.epoch, m.steps, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.lr, m.seconds
        );
    }
    write_bytes_atomically(&dir.join(METRICS_FILE), csv.as_bytes())?;
    let json = serde_json::to_string_pretty(metrics)?;
    write_bytes_atomically(&dir.join(METRICS_JSON_FILE), format!("{json}\n").as_bytes())
}

/// Reads `metrics.json` back (for plots and resumed runs).
pub fn load_metrics(dir: &Path) -> Result<Vec<EpochMetrics>> {
    let path = dir.join(METRICS_JSON_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid metrics", path.display()))
}

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

/// Saves the optimizer's state of `epoch`, tagged with the epoch so a state that does not belong to the
/// weights beside it is never restored. An engine without state (autograd) leaves no file: a stale one
/// from an earlier engine is removed.
pub fn save_optimizer_state(dir: &Path, state: &[(String, Tensor)], epoch: usize) -> Result<()> {
    let path = dir.join(OPTIMIZER_FILE);
    if state.is_empty() {
        return match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("{}: cannot remove the stale optimizer state", path.display()))
            }
            _ => Ok(()),
        };
    }
    let mut tagged: Vec<(String, Tensor)> = state.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    tagged.push((OPTIMIZER_EPOCH.into(), Tensor::from_slice(&[epoch as i64])));
    save_tensors(&tagged, &path)
}

/// The optimizer state saved with `epoch`, if the run has one for that epoch.
pub fn load_optimizer_state(dir: &Path, epoch: usize) -> Result<Option<Vec<(String, Tensor)>>> {
    let path = dir.join(OPTIMIZER_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let mut state = load_tensors(&path)?;
    let tagged = state.iter().position(|(name, _)| name == OPTIMIZER_EPOCH);
    if let Some(index) = tagged {
        let (_, saved_epoch) = state.remove(index);
        let saved_epoch = saved_epoch.f_int64_value(&[0]).map_err(torch_error)?;
        if saved_epoch != epoch as i64 {
            return Ok(None);
        }
    }
    Ok(Some(state))
}

/// `evaluation.json`: the final test evaluation with its per-class scores and confusion matrix, so
/// `mnist-tch plot` needs neither data nor model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    pub loss: f64,
    pub accuracy: f64,
    pub classes: Vec<ClassReport>,
    /// `confusion_matrix[true_class][predicted_class]` = number of test images.
    pub confusion_matrix: Vec<Vec<i64>>,
}

/// One class's scores in `evaluation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub name: String,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub examples: i64,
}

impl EvaluationReport {
    pub fn new(evaluation: &Evaluation, class_names: &[String]) -> EvaluationReport {
        let classes = class_names
            .iter()
            .zip(evaluation.per_class_scores())
            .map(|(name, s)| ClassReport {
                name: name.clone(),
                precision: s.precision,
                recall: s.recall,
                f1: s.f1,
                examples: s.support,
            })
            .collect();
        EvaluationReport {
            loss: evaluation.loss,
            accuracy: evaluation.accuracy,
            classes,
            confusion_matrix: evaluation.confusion.clone(),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        write_bytes_atomically(&dir.join(EVALUATION_FILE), format!("{json}\n").as_bytes())
    }

    /// The run's final evaluation; `None` for a run that has not finished.
    pub fn load(dir: &Path) -> Result<Option<EvaluationReport>> {
        let path = dir.join(EVALUATION_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let report =
            serde_json::from_str(&text).with_context(|| format!("{}: not a valid evaluation", path.display()))?;
        Ok(Some(report))
    }

    /// The evaluation it records (loss, accuracy, confusion matrix).
    pub fn evaluation(&self) -> Evaluation {
        Evaluation { loss: self.loss, accuracy: self.accuracy, confusion: self.confusion_matrix.clone() }
    }
}

/// Picks `runs/trainN` (`runs/finetuneN`, ...) with the smallest N not taken yet.
pub fn next_free_run_dir(parent: &Path, name: &str) -> PathBuf {
    (1..).map(|n| parent.join(format!("{name}{n}"))).find(|p| !p.exists()).unwrap_or_else(|| parent.join(name))
}

/// Creates `dir` for a new run and locks it for writing, refusing to overwrite a previous run's files
/// unless asked to, and a run another process is writing in any case.
/// With `overwrite`, an earlier run there is replaced as a whole ([`crate::run_replace`]).
pub fn create_new_run_dir(dir: &Path, overwrite: bool) -> Result<RunLock> {
    // Said first: --overwrite would not help.
    if let Some(pid) = lock::writer(dir) {
        bail!("{}: being trained by process {pid}; wait for it to finish or choose another --out", dir.display());
    }
    let holds_run = [CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE].iter().any(|f| dir.join(f).exists());
    if holds_run && !overwrite {
        bail!("{}: already holds a run; choose another --out or pass --overwrite", dir.display());
    }
    if holds_run {
        return crate::run_replace::replace_run_dir(dir);
    }
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    take_for_writing(dir)
}

/// Locks the run directory `dir` for this process's writes, then removes the temporary files a
/// writer killed outright (kill -9) may have left there.
pub fn take_for_writing(dir: &Path) -> Result<RunLock> {
    let lock = lock::lock_for_writing(dir)?;
    crate::files::remove_stale(dir)?;
    Ok(lock)
}
