//! Evaluation of a model on labelled examples: mean cross-entropy, accuracy and the confusion matrix,
//! computed under `no_grad` in large batches with a single read-back at the end.

use crate::data::{Examples, to_inputs};
use anyhow::Result;
use serde::Serialize;
use tch::{Kind, Reduction, Tensor, nn::ModuleT};

/// Examples per forward pass during evaluation: large enough to amortise op overhead, small enough
/// that the activations stay modest (the convnet's first layer is 86 KB per image: 86 MB per batch).
pub const EVAL_BATCH: i64 = 1000;

/// Metrics of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    /// `confusion[true_class][predicted_class]` = number of examples.
    pub confusion: Vec<Vec<i64>>,
}

impl Evaluation {
    /// Accuracy within each true class; `None` for a class with no examples.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(class, row)| {
                let total: i64 = row.iter().sum();
                (total > 0).then(|| row[class] as f64 / total as f64)
            })
            .collect()
    }

    pub fn class_counts(&self) -> Vec<i64> {
        self.confusion.iter().map(|row| row.iter().sum()).collect()
    }

    /// Precision, recall and F1 of each class, from the confusion matrix. Precision is `None` for a
    /// class never predicted, recall for a class with no examples; F1 needs both.
    pub fn per_class_scores(&self) -> Vec<ClassScores> {
        let k = self.confusion.len();
        (0..k)
            .map(|c| {
                let true_positives = self.confusion[c][c] as f64;
                let predicted: i64 = (0..k).map(|t| self.confusion[t][c]).sum();
                let actual: i64 = self.confusion[c].iter().sum();
                let precision = (predicted > 0).then(|| true_positives / predicted as f64);
                let recall = (actual > 0).then(|| true_positives / actual as f64);
                let f1 = match (precision, recall) {
                    (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
                    (Some(_), Some(_)) => Some(0.0),
                    _ => None,
                };
                ClassScores { precision, recall, f1, support: actual }
            })
            .collect()
    }
}

/// Per-class scores, as scikit-learn's classification_report gives them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// Number of examples of the class.
    pub support: i64,
}

/// Evaluates `net` (producing logits `[N, num_classes]`) on `examples`.
pub fn evaluate(net: &(impl ModuleT + ?Sized), examples: &Examples, num_classes: i64) -> Result<Evaluation> {
    let n = examples.len();
    let device = examples.images.device();
    let (loss_sum, confusion) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        // Flattened [num_classes * num_classes] counts: index = true * K + predicted.
        let mut confusion = Tensor::zeros([num_classes * num_classes], (Kind::Int64, device));
        let mut start = 0;
        while start < n {
            let len = EVAL_BATCH.min(n - start);
            let batch = examples.slice(start, len);
            let logits = net.forward_t(&to_inputs(&batch.images), false); // [len, K]
            let loss = logits.f_cross_entropy_loss::<Tensor>(&batch.labels, None, Reduction::Sum, -100, 0.0)?;
            loss_sum += loss.to_kind(Kind::Double);
            let predicted = logits.argmax(-1, false); // [len]
            let cells = &batch.labels * num_classes + predicted;
            confusion += cells.bincount::<Tensor>(None, num_classes * num_classes);
            start += len;
        }
        Ok((loss_sum, confusion))
    })?;
    let confusion: Vec<i64> = Vec::try_from(&confusion.to_device(tch::Device::Cpu))?;
    let confusion: Vec<Vec<i64>> = confusion.chunks(num_classes as usize).map(|row| row.to_vec()).collect();
    let correct: i64 = (0..confusion.len()).map(|c| confusion[c][c]).sum();
    Ok(Evaluation { loss: loss_sum.double_value(&[]) / n as f64, accuracy: correct as f64 / n as f64, confusion })
}

/// Logits `[N, num_classes]` of `net` for pixel bytes `images` `[N, ...]`, batched, without gradients.
pub fn logits(net: &(impl ModuleT + ?Sized), images: &Tensor) -> Tensor {
    let n = images.size()[0];
    tch::no_grad(|| {
        let batches: Vec<Tensor> = (0..n)
            .step_by(EVAL_BATCH as usize)
            .map(|start| net.forward_t(&to_inputs(&images.narrow(0, start, EVAL_BATCH.min(n - start))), false))
            .collect();
        Tensor::cat(&batches, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_from_the_confusion_matrix() {
        // true 0: 8 right, 2 called 1; true 1: 1 called 0, 4 right; class 2 never occurs nor is predicted.
        let e = Evaluation {
            loss: 0.0,
            accuracy: 12.0 / 15.0,
            confusion: vec![vec![8, 2, 0], vec![1, 4, 0], vec![0, 0, 0]],
        };
        let s = e.per_class_scores();
        assert_eq!(s[0].precision, Some(8.0 / 9.0));
        assert_eq!(s[0].recall, Some(0.8));
        let f1 = 2.0 * (8.0 / 9.0) * 0.8 / (8.0 / 9.0 + 0.8);
        assert!((s[0].f1.unwrap() - f1).abs() < 1e-12);
        assert_eq!(s[1].precision, Some(4.0 / 6.0));
        assert_eq!(s[1].support, 5);
        assert_eq!((s[2].precision, s[2].recall, s[2].f1), (None, None, None));
        assert_eq!(e.per_class_accuracy()[1], Some(0.8));
    }
}
