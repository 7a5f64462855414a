//! `metrics.csv` and `metrics.json`: one row (object) per completed epoch, the same numbers in both,
//! rewritten after every epoch.

use super::layout::{METRICS_FILE, METRICS_JSON_FILE};
use crate::callbacks::Monitor;
use crate::files::write_bytes_atomically;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// What one epoch measured. `loss`/`accuracy` are means over the epoch's training batches, as Keras
/// reports them; `val_*` come from a full pass over the validation set after the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub steps: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// The learning rate this epoch trained with.
    pub lr: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

impl EpochMetrics {
    pub fn monitored(&self, monitor: Monitor) -> f64 {
        match monitor {
            Monitor::ValLoss => self.val_loss,
            Monitor::ValAccuracy => self.val_accuracy,
        }
    }
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
