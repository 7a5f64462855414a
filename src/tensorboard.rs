//! `--tensorboard DIR`: a run's epochs as TensorBoard event files, laid out the way Keras's TensorBoard
//! callback lays them out, so `tensorboard --logdir DIR` shows what a Keras user expects:
//! - `DIR/train`: `epoch_loss`, `epoch_accuracy`, `epoch_learning_rate`;
//! - `DIR/validation`: `epoch_loss`, `epoch_accuracy` (Keras's `val_loss`, `val_accuracy`);
//! - steps counted from 0: epoch N of metrics.csv is step N - 1.
//!
//! Beyond Keras: the run's config.json as text (tag `config`, train run, at each session's first step),
//! and at the end the test evaluation in `DIR/test`: `epoch_loss` and `epoch_accuracy` at the last step
//! (a point on the same charts) and the confusion matrix picture (tag `confusion_matrix`).
//!
//! Every session — a new run, a resumed one, a fine-tuned one — writes new files that begin with
//! `SessionLog.START` at its first step, as TensorFlow does when a job restarts: TensorBoard then shows
//! a resumed run as one continuous curve, without the epochs a crash left behind after the last
//! checkpoint, and a new run written into the same DIR replaces the old one on the charts (its files
//! stay on disk).

use crate::evaluation::Evaluation;
use crate::event_file::EventFile;
use crate::plot;
use crate::run_dir::{EpochMetrics, RunConfig};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The runs (subdirectories) and tags, as Keras names them.
pub const TRAIN_RUN: &str = "train";
pub const VALIDATION_RUN: &str = "validation";
pub const TEST_RUN: &str = "test";
pub const LOSS_TAG: &str = "epoch_loss";
pub const ACCURACY_TAG: &str = "epoch_accuracy";
pub const LEARNING_RATE_TAG: &str = "epoch_learning_rate";
pub const CONFIG_TAG: &str = "config";
pub const CONFUSION_TAG: &str = "confusion_matrix";

/// `--tensorboard DIR`: refused before anything is written when DIR (or one of its runs' directories)
/// exists and is not a directory.
pub fn parse_dir(value: &str) -> Result<PathBuf, String> {
    let dir = PathBuf::from(value);
    for path in [dir.clone(), dir.join(TRAIN_RUN), dir.join(VALIDATION_RUN), dir.join(TEST_RUN)] {
        if path.exists() && !path.is_dir() {
            return Err(format!("{} exists and is not a directory", path.display()));
        }
    }
    Ok(dir)
}

/// The event files of one training session.
pub struct TensorBoard {
    dir: PathBuf,
    train: EventFile,
    validation: EventFile,
}

/// The TensorBoard step of an epoch numbered from 1 (metrics.csv's numbering).
pub fn step_of(epoch: usize) -> usize {
    epoch.saturating_sub(1)
}

impl TensorBoard {
    /// Opens new event files under `dir` for a session whose first epoch is `first_epoch` (1 for a new
    /// run), and records the run's config.
    pub fn start(dir: &Path, config: &RunConfig, first_epoch: usize) -> Result<TensorBoard> {
        let step = step_of(first_epoch);
        let mut train = EventFile::create(&dir.join(TRAIN_RUN))?;
        let mut validation = EventFile::create(&dir.join(VALIDATION_RUN))?;
        for events in [&mut train, &mut validation] {
            events.session_start(step)?;
        }
        train.text(step, CONFIG_TAG, &as_markdown_code(&serde_json::to_string_pretty(config)?))?;
        Ok(TensorBoard { dir: dir.to_path_buf(), train, validation })
    }

    /// Records one finished epoch.
    pub fn epoch(&mut self, metrics: &EpochMetrics) -> Result<()> {
        let step = step_of(metrics.epoch);
        self.train.scalar(step, LOSS_TAG, metrics.loss)?;
        self.train.scalar(step, ACCURACY_TAG, metrics.accuracy)?;
        self.train.scalar(step, LEARNING_RATE_TAG, metrics.lr)?;
        self.validation.scalar(step, LOSS_TAG, metrics.val_loss)?;
        self.validation.scalar(step, ACCURACY_TAG, metrics.val_accuracy)
    }

    /// Records the test evaluation of the model the run ended with, after its last epoch.
    pub fn finish(self, config: &RunConfig, test: &Evaluation, run_name: &str) -> Result<()> {
        let step = step_of(config.state.epochs_completed);
        let dir = self.dir.join(TEST_RUN);
        let mut events = EventFile::create(&dir)?;
        events.session_start(step)?;
        events.scalar(step, LOSS_TAG, test.loss)?;
        events.scalar(step, ACCURACY_TAG, test.accuracy)?;
        let png = confusion_png(&dir, config, test, run_name)?;
        events.image(step, CONFUSION_TAG, &png, plot::CONFUSION_SIZE)
    }
}

/// The confusion matrix as PNG bytes, drawn by the same code as `--plot`'s confusion_matrix.png (which
/// draws into a file: a temporary one beside the event files, removed again).
fn confusion_png(dir: &Path, config: &RunConfig, test: &Evaluation, run_name: &str) -> Result<Vec<u8>> {
    let path = dir.join(format!(".{CONFUSION_TAG}.tmp-{}.png", std::process::id()));
    let drawn = plot::confusion_matrix(&test.confusion, &config.data.class_names, run_name, &path)
        .and_then(|()| std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display())));
    let _ = std::fs::remove_file(&path);
    drawn
}

/// `text` as a Markdown code block (TensorBoard renders text summaries as Markdown).
fn as_markdown_code(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_not_a_tensorboard_directory() {
        let file = std::env::temp_dir().join(format!("mnist-tch-tensorboard-test-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let refused = parse_dir(file.to_str().unwrap());
        std::fs::remove_file(&file).unwrap();
        assert_eq!(refused, Err(format!("{} exists and is not a directory", file.display())));
        assert_eq!(parse_dir("runs/tb"), Ok(PathBuf::from("runs/tb")));
    }

    #[test]
    fn steps_count_epochs_from_zero_as_keras_does() {
        assert_eq!(step_of(1), 0);
        assert_eq!(step_of(10), 9);
        assert_eq!(step_of(0), 0);
    }

    #[test]
    fn config_text_is_a_markdown_code_block() {
        assert_eq!(as_markdown_code("{\n  \"a\": 1\n}"), "    {\n      \"a\": 1\n    }\n");
    }
}
