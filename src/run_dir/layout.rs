//! The names of a run directory's files, written once: every module that reads or writes a run, the
//! write rule for other commands' files (`destination`), `--overwrite`'s replacement and the scripts
//! (through `mnist-tch describe`) take them from here.

use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const BEST_WEIGHTS_FILE: &str = "best.safetensors";
/// With `train --save-initial`: the weights before the first step (for parity checks against PyTorch).
pub const INITIAL_WEIGHTS_FILE: &str = "initial.safetensors";
/// The optimizer's state (the fused engine's Adam moments and step count), saved with every epoch so
/// `mnist-tch resume` continues them. Absent for the autograd engine, whose `nn::Adam` cannot export it.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const METRICS_FILE: &str = "metrics.csv";
pub const METRICS_JSON_FILE: &str = "metrics.json";
pub const EVALUATION_FILE: &str = "evaluation.json";
/// With `--plot` (or `mnist-tch plot`): the learning curves.
pub const CURVES_FILE: &str = "learning_curves.png";
/// With `--plot` (or `mnist-tch plot`): the test confusion matrix.
pub const CONFUSION_FILE: &str = "confusion_matrix.png";
/// The lock file of the process that writes the run ([`super::lock`]).
pub const LOCK_FILE: &str = ".lock";

/// The files a run directory is made of: no command but the training that owns the run writes them.
pub const RUN_FILES: [&str; 11] = [
    CONFIG_FILE,
    WEIGHTS_FILE,
    BEST_WEIGHTS_FILE,
    INITIAL_WEIGHTS_FILE,
    OPTIMIZER_FILE,
    METRICS_FILE,
    METRICS_JSON_FILE,
    EVALUATION_FILE,
    CURVES_FILE,
    CONFUSION_FILE,
    LOCK_FILE,
];

/// Whether `dir` holds a run (its `config.json`).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

/// Whether the entry `name` is the temporary file of a write in progress (or of one a kill interrupted):
/// `.NAME.tmp-PID`, or the `.probe-PID` a writability check creates.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && (name.contains(".tmp-") || name.contains(".probe-"))
}

/// Picks `runs/trainN` (`runs/finetuneN`, ...) with the smallest N not taken yet.
pub fn next_free_run_dir(parent: &Path, name: &str) -> PathBuf {
    (1..).map(|n| parent.join(format!("{name}{n}"))).find(|p| !p.exists()).unwrap_or_else(|| parent.join(name))
}
