//! What Keras users know as callbacks, as plain state machines the training loop consults once per
//! epoch: learning-rate schedules (LearningRateScheduler, ReduceLROnPlateau), the monitored metric, and
//! early stopping with the best epoch remembered (EarlyStopping(restore_best_weights=True),
//! ModelCheckpoint(save_best_only=True)). Pure logic, unit-tested without training anything.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The metric that decides "better": early stopping, the best checkpoint and the plateau schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    #[default]
    ValLoss,
    ValAccuracy,
}

// Read under Keras's spellings too (`val_loss`, as [`Monitor::name`] gives them).
crate::spelling::named_values!(Monitor, "monitored metric", {
    ValLoss => "val-loss" | "val_loss",
    ValAccuracy => "val-accuracy" | "val_accuracy",
});

impl Monitor {
    /// Whether `value` beats `best` by more than `min_delta` (lower loss, higher accuracy).
    pub fn improves(self, value: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => value.is_finite(),
            Some(best) => match self {
                Monitor::ValLoss => value < best - min_delta,
                Monitor::ValAccuracy => value > best + min_delta,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
        }
    }
}

/// `--lr-schedule`: how the learning rate changes from epoch to epoch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LrSchedule {
    /// The base rate every epoch (the Keras tutorial).
    #[default]
    Constant,
    /// Multiply by `gamma` every `every` epochs (PyTorch StepLR).
    Step { every: usize, gamma: f64 },
    /// Cosine annealing from the base rate towards 0 over the run's epochs.
    Cosine,
    /// Multiply by `factor` after `patience` epochs without improvement (Keras ReduceLROnPlateau).
    Plateau { patience: usize, factor: f64 },
}

impl FromStr for LrSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            format!("'{s}' is not a schedule: expected constant, step:EVERY:GAMMA, cosine or plateau:PATIENCE:FACTOR")
        };
        // Each field's own message names it: which of the two numbers is wrong, and what it takes.
        let count = |field: &str, p: &str| {
            p.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("'{s}': {field} is '{p}', it must be a whole number of epochs of at least 1"))
        };
        let factor = |field: &str, p: &str| {
            p.parse::<f64>().ok().filter(|f| *f > 0.0 && *f < 1.0).ok_or_else(|| {
                format!("'{s}': {field} is '{p}', it must be a factor strictly between 0 and 1 (e.g. 0.5)")
            })
        };
        match parts.as_slice() {
            ["constant"] => Ok(LrSchedule::Constant),
            ["cosine"] => Ok(LrSchedule::Cosine),
            ["step", every, gamma] => {
                Ok(LrSchedule::Step { every: count("EVERY", every)?, gamma: factor("GAMMA", gamma)? })
            }
            ["plateau", patience, f] => {
                Ok(LrSchedule::Plateau { patience: count("PATIENCE", patience)?, factor: factor("FACTOR", f)? })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Cosine => write!(f, "cosine"),
            LrSchedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            LrSchedule::Plateau { patience, factor } => write!(f, "plateau:{patience}:{factor}"),
        }
    }
}

// Stored in config.json as its command-line spelling.
impl Serialize for LrSchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LrSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The learning rate of epoch `epoch` (1-based) of `epochs` for the schedules that depend on the epoch
/// alone. The plateau schedule depends on the metrics instead: see [`LrController`].
pub fn scheduled_lr(schedule: LrSchedule, base: f64, epoch: usize, epochs: usize) -> f64 {
    match schedule {
        LrSchedule::Constant | LrSchedule::Plateau { .. } => base,
        LrSchedule::Step { every, gamma } => base * gamma.powi(((epoch - 1) / every) as i32),
        LrSchedule::Cosine => {
            let progress = (epoch - 1) as f64 / epochs.max(1) as f64;
            base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

/// What the callbacks remember between epochs, saved in `config.json` after every epoch so that
/// `mnist-tch resume` continues them where they were (Keras's BackupAndRestore): a resumed run then
/// equals an uninterrupted one for every schedule, early stopping and the best checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CallbackState {
    /// ReduceLROnPlateau: the rate now, the best monitored value, epochs since it improved
    /// (`None` for the other schedules).
    #[serde(default)]
    pub plateau: Option<Progress>,
    /// The best epoch of the monitored metric and epochs since it (early stopping, `--save-best`).
    #[serde(default)]
    pub best: BestProgress,
}

/// The plateau schedule's progress.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub lr: f64,
    pub best: Option<f64>,
    pub wait: usize,
}

/// The best epoch so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BestProgress {
    pub value: Option<f64>,
    pub epoch: Option<usize>,
    pub wait: usize,
}

/// Decides each epoch's learning rate, including ReduceLROnPlateau's, which needs the metrics.
#[derive(Debug, Clone)]
pub struct LrController {
    schedule: LrSchedule,
    base: f64,
    epochs: usize,
    monitor: Monitor,
    plateau: Progress,
}

impl LrController {
    pub fn new(schedule: LrSchedule, base: f64, epochs: usize, monitor: Monitor) -> LrController {
        LrController { schedule, base, epochs, monitor, plateau: Progress { lr: base, best: None, wait: 0 } }
    }

    /// Continues from a saved state (`None`: from the start).
    pub fn with_progress(mut self, progress: Option<Progress>) -> LrController {
        if let Some(progress) = progress {
            self.plateau = progress;
        }
        self
    }

    /// The state to save: the plateau schedule's progress, `None` for the others.
    pub fn progress(&self) -> Option<Progress> {
        matches!(self.schedule, LrSchedule::Plateau { .. }).then_some(self.plateau)
    }

    /// The rate to train epoch `epoch` with.
    pub fn lr_for(&self, epoch: usize) -> f64 {
        match self.schedule {
            LrSchedule::Plateau { .. } => self.plateau.lr,
            schedule => scheduled_lr(schedule, self.base, epoch, self.epochs),
        }
    }

    /// Feeds the monitored value of the epoch just finished.
    pub fn observe(&mut self, value: f64) {
        if let LrSchedule::Plateau { patience, factor } = self.schedule {
            let plateau = &mut self.plateau;
            if self.monitor.improves(value, plateau.best, 0.0) {
                plateau.best = Some(value);
                plateau.wait = 0;
            } else {
                plateau.wait += 1;
                if plateau.wait >= patience {
                    plateau.lr *= factor;
                    plateau.wait = 0;
                }
            }
        }
    }
}

/// `--early-stopping PATIENCE` settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub patience: usize,
    pub min_delta: f64,
}

/// Tracks the best epoch of the monitored metric and whether training should stop.
#[derive(Debug, Clone)]
pub struct BestTracker {
    monitor: Monitor,
    min_delta: f64,
    patience: Option<usize>,
    progress: BestProgress,
}

/// What the tracker concluded about one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// This epoch is the best so far (save it, remember its weights).
    pub improved: bool,
    /// Early stopping's patience has run out.
    pub stop: bool,
}

impl BestTracker {
    pub fn new(monitor: Monitor, early_stopping: Option<EarlyStopping>) -> BestTracker {
        BestTracker {
            monitor,
            min_delta: early_stopping.map_or(0.0, |e| e.min_delta),
            patience: early_stopping.map(|e| e.patience),
            progress: BestProgress::default(),
        }
    }

    /// Continues from a saved state.
    pub fn with_progress(mut self, progress: BestProgress) -> BestTracker {
        self.progress = progress;
        self
    }

    pub fn progress(&self) -> BestProgress {
        self.progress
    }

    pub fn best_epoch(&self) -> Option<usize> {
        self.progress.epoch
    }

    pub fn observe(&mut self, epoch: usize, value: f64) -> Verdict {
        let progress = &mut self.progress;
        let improved = self.monitor.improves(value, progress.value, self.min_delta);
        if improved {
            *progress = BestProgress { value: Some(value), epoch: Some(epoch), wait: 0 };
        } else {
            progress.wait += 1;
        }
        Verdict { improved, stop: self.patience.is_some_and(|p| progress.wait >= p) }
    }
}

/// Checks a min-delta from the command line.
pub fn parse_min_delta(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a non-negative number")),
    }
}

/// Refuses settings that cannot work together.
pub fn check_schedule_acts(schedule: LrSchedule, epochs: usize) -> Result<()> {
    if let LrSchedule::Step { every, .. } = schedule
        && every > epochs
    {
        bail!("--lr-schedule {schedule}: the rate would never change in {}", crate::wording::epochs(epochs));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_error_names_the_wrong_field() {
        let err = "plateau:1:1".parse::<LrSchedule>().unwrap_err();
        assert!(err.contains("FACTOR is '1'") && err.contains("between 0 and 1"), "{err}");
        let err = "plateau:0:0.5".parse::<LrSchedule>().unwrap_err();
        assert!(err.contains("PATIENCE is '0'"), "{err}");
        let err = "step:2:-0.5".parse::<LrSchedule>().unwrap_err();
        assert!(err.contains("GAMMA is '-0.5'"), "{err}");
        assert!("step:2:0.5".parse::<LrSchedule>().is_ok());
    }

    fn sequence(schedule: &str, epochs: usize, val_losses: &[f64]) -> Vec<f64> {
        let mut lr = LrController::new(schedule.parse().unwrap(), 0.1, epochs, Monitor::ValLoss);
        (1..=epochs)
            .map(|epoch| {
                let rate = lr.lr_for(epoch);
                lr.observe(val_losses.get(epoch - 1).copied().unwrap_or(1.0));
                rate
            })
            .collect()
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn constant_keeps_the_base_rate() {
        assert!(close(&sequence("constant", 3, &[]), &[0.1, 0.1, 0.1]));
    }

    #[test]
    fn step_multiplies_every_n_epochs() {
        assert!(close(&sequence("step:2:0.5", 5, &[]), &[0.1, 0.1, 0.05, 0.05, 0.025]));
    }

    #[test]
    fn cosine_starts_at_the_base_and_falls_towards_zero() {
        let s = sequence("cosine", 4, &[]);
        let expected: Vec<f64> = (0..4).map(|i| 0.05 * (1.0 + (std::f64::consts::PI * i as f64 / 4.0).cos())).collect();
        assert!(close(&s, &expected), "{s:?}");
        assert_eq!(s[0], 0.1);
        assert!((s[2] - 0.05).abs() < 1e-12);
    }

    #[test]
    fn plateau_reduces_after_patience_epochs_without_improvement() {
        // Improves, improves, then flat for 4 epochs: with patience 2 the rate halves after epochs 4 and 6.
        let losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.5];
        let s = sequence("plateau:2:0.5", 7, &losses);
        assert!(close(&s, &[0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025]), "{s:?}");
    }

    #[test]
    fn schedules_parse_print_and_reject() {
        for spec in ["constant", "cosine", "step:3:0.1", "plateau:2:0.5"] {
            assert_eq!(spec.parse::<LrSchedule>().unwrap().to_string(), spec);
        }
        for bad in ["linear", "step:0:0.5", "step:2:1.5", "plateau:2", "step:a:0.5"] {
            assert!(bad.parse::<LrSchedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn early_stopping_stops_after_patience_and_remembers_the_best() {
        let mut tracker = BestTracker::new(Monitor::ValLoss, Some(EarlyStopping { patience: 2, min_delta: 0.01 }));
        let verdicts: Vec<Verdict> =
            [0.5, 0.4, 0.395, 0.41].iter().enumerate().map(|(i, &v)| tracker.observe(i + 1, v)).collect();
        assert!(verdicts[0].improved && verdicts[1].improved);
        // 0.395 is better, but not by min_delta 0.01.
        assert!(!verdicts[2].improved && !verdicts[2].stop);
        assert!(!verdicts[3].improved && verdicts[3].stop);
        assert_eq!(tracker.best_epoch(), Some(2));
    }

    #[test]
    fn saved_progress_continues_exactly() {
        // Plateau schedule and early stopping cut after epoch 3 and resumed equal an uninterrupted run.
        let losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.5];
        let schedule: LrSchedule = "plateau:2:0.5".parse().unwrap();
        let early = Some(EarlyStopping { patience: 3, min_delta: 0.0 });
        let run = |cut: Option<usize>| {
            let mut lr = LrController::new(schedule, 0.1, 7, Monitor::ValLoss);
            let mut best = BestTracker::new(Monitor::ValLoss, early);
            let mut rates = Vec::new();
            for epoch in 1..=7 {
                if cut == Some(epoch) {
                    let saved = CallbackState { plateau: lr.progress(), best: best.progress() };
                    let json = serde_json::to_string(&saved).unwrap();
                    let restored: CallbackState = serde_json::from_str(&json).unwrap();
                    lr = LrController::new(schedule, 0.1, 7, Monitor::ValLoss).with_progress(restored.plateau);
                    best = BestTracker::new(Monitor::ValLoss, early).with_progress(restored.best);
                }
                rates.push(lr.lr_for(epoch));
                lr.observe(losses[epoch - 1]);
                if best.observe(epoch, losses[epoch - 1]).stop {
                    break;
                }
            }
            (rates, best.best_epoch())
        };
        let straight = run(None);
        assert_eq!(run(Some(4)), straight);
        assert_eq!(run(Some(6)), straight);
        assert_ne!(straight.0.last(), Some(&0.1), "the schedule did reduce the rate");
        // Without the saved state, a resumed plateau schedule starts again from the base rate.
        let mut fresh = LrController::new(schedule, 0.1, 7, Monitor::ValLoss);
        fresh.observe(1.0);
        assert_eq!(fresh.lr_for(6), 0.1);
    }

    #[test]
    fn accuracy_is_better_when_higher() {
        let mut tracker = BestTracker::new(Monitor::ValAccuracy, None);
        assert!(tracker.observe(1, 0.8).improved);
        assert!(!tracker.observe(2, 0.7).improved);
        assert!(tracker.observe(3, 0.9).improved);
        assert!(!tracker.observe(4, f64::NAN).stop, "without early stopping nothing stops");
    }
}
