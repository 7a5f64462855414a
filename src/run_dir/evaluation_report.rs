//! `evaluation.json`: the final test evaluation with its per-class scores and confusion matrix.

use super::layout::EVALUATION_FILE;
use crate::evaluation::Evaluation;
use crate::files::write_bytes_atomically;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

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
