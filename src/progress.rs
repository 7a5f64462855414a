//! Console output of training, like Keras `fit`: a progress bar per epoch on a terminal
//! (`verbose=1`), exactly one line per epoch otherwise (`verbose=2`, for CI and log files), or
//! nothing with `--quiet`.

use crate::run_dir::EpochMetrics;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// How training reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    Bar,
    Lines,
    Quiet,
}

impl OutputMode {
    /// A bar when stdout is a terminal, lines when it is a pipe or file.
    pub fn detect(quiet: bool) -> OutputMode {
        if quiet {
            OutputMode::Quiet
        } else if std::io::stdout().is_terminal() {
            OutputMode::Bar
        } else {
            OutputMode::Lines
        }
    }
}

/// The epoch line: `Epoch 3/10 - 1500 steps - 1.1s - loss: 0.3120 - accuracy: 0.8851 - val_loss: 0.3402 -
/// val_accuracy: 0.8770 - lr: 0.001`.
pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    format!(
        "Epoch {}/{} - {} steps - {:.1}s - loss: {:.4} - accuracy: {:.4} - val_loss: {:.4} - val_accuracy: {:.4} - lr: {:.3e}",
        m.epoch, epochs, m.steps, m.seconds, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.lr
    )
}

/// Training progress on the console.
pub struct ConsoleProgress {
    mode: OutputMode,
    epochs: usize,
    bar: Option<ProgressBar>,
}

impl ConsoleProgress {
    pub fn new(mode: OutputMode) -> ConsoleProgress {
        ConsoleProgress { mode, epochs: 0, bar: None }
    }

    pub fn start_epoch(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epochs = epochs;
        if self.mode == OutputMode::Bar {
            let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template("{prefix} {pos}/{len} {wide_bar} {elapsed} ETA {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("━━ "));
            bar.set_prefix(format!("Epoch {epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }

    pub fn running_metrics_every(&self) -> Option<usize> {
        // About ten reads a second at typical step rates; each one is a host synchronisation.
        (self.mode == OutputMode::Bar).then_some(50)
    }

    pub fn step(&mut self, step: usize, running: Option<(f64, f64)>) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            if let Some((loss, accuracy)) = running {
                bar.set_message(format!("- loss: {loss:.4} - accuracy: {accuracy:.4}"));
            }
        }
    }

    pub fn end_epoch(&mut self, metrics: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.mode != OutputMode::Quiet {
            // A closed stdout is remembered by `output` and stops training at the next step.
            let _ = crate::output::line(epoch_line(metrics, self.epochs));
        }
    }
}
