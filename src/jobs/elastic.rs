//! torchrun's elastic restarts: after a worker dies, `torchrun --max-restarts N` starts every worker
//! again with the same command line and `TORCHELASTIC_RESTART_COUNT` set to the attempt's number, and
//! PyTorch's elastic guide expects the script to load its last checkpoint (Keras's `BackupAndRestore`
//! does the same for a restarted job). So under a restart, `train --out RUN` whose RUN holds an
//! unfinished run of the same configuration continues it from its last completed epoch, as `resume`
//! would; completed epochs are never lost, the epoch being trained when the worker died is trained again.
//!
//! Outside a restart the write rule stands: an existing run is refused without `--overwrite`. Under a
//! restart a run of another configuration, or one that finished, is treated by that rule too, and
//! `--overwrite` does not replace the unfinished run: the first attempt already replaced the old one,
//! and replacing again would lose the epochs it completed.
//!
//! Every rank decides from the same files before any rank writes (rank 0 writes only after the group
//! has agreed), and the decision is then checked over the group: a rank that sees otherwise stops every
//! rank in one line instead of training a different run.

use super::{NewRunDir, Plan, ResumeRun};
use crate::distributed::{self, ProcessGroup};
use crate::run_dir::{RunConfig, RunStatus};
use anyhow::{Result, bail};
use std::path::Path;
use tch::Device;

/// torchrun's attempt counter: 0 for the first start (or without torchrun).
pub const RESTART_VARIABLE: &str = "TORCHELASTIC_RESTART_COUNT";

/// The restart number torchrun gave this worker (0 when unset or unreadable).
pub fn restart_count() -> usize {
    std::env::var(RESTART_VARIABLE).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Under a torchrun restart, the `resume` that continues the run `plan` would start anew in `out`,
/// if `out` holds an unfinished run of the same configuration; `None` otherwise (the new run's rules
/// apply). Checked over `group`: every rank must decide alike.
pub fn continuation(
    plan: &Plan,
    out: &NewRunDir,
    device: Device,
    group: Option<&ProcessGroup>,
) -> Result<Option<ResumeRun>> {
    let restart = restart_count();
    let found = match &out.out {
        Some(dir) if restart > 0 => unfinished_run_of(dir, &plan.config),
        _ => None,
    };
    agree(group, found)?;
    let (Some(completed), Some(dir)) = (found, &out.out) else { return Ok(None) };
    if group.is_none_or(|g| g.is_leader()) {
        eprintln!(
            "note: torchrun restart {restart}: {} holds this run's {}; continuing it from there (as `mnist-tch \
             resume` does)",
            dir.display(),
            crate::wording::epochs(completed)
        );
    }
    Ok(Some(ResumeRun {
        dir: dir.clone(),
        epochs: Some(plan.config.training.epochs),
        device,
        engine: None,
        save_best: false,
        early_stopping: None,
    }))
}

/// The epochs completed by the unfinished run in `dir`, when it is one of `planned`'s configuration.
fn unfinished_run_of(dir: &Path, planned: &RunConfig) -> Option<usize> {
    let existing = RunConfig::load(dir).ok()?;
    let unfinished = matches!(existing.state.status, RunStatus::Training | RunStatus::Interrupted | RunStatus::Failed)
        && existing.state.epochs_completed < planned.training.epochs;
    (unfinished && same_configuration(&existing, planned)).then_some(existing.state.epochs_completed)
}

/// Whether `existing` trains what `planned` would: the same model, data and training settings; the
/// device each process took and the group it trained in may differ.
fn same_configuration(existing: &RunConfig, planned: &RunConfig) -> bool {
    let mut training = existing.training.clone();
    training.device = planned.training.device.clone();
    training.distributed = planned.training.distributed.clone();
    existing.lineage.is_none()
        && existing.model == planned.model
        && existing.data == planned.data
        && training == planned.training
}

/// Every rank found the same thing (`Some(epochs completed)` or `None`), or every rank stops: the
/// decision and its square summed over the group say whether any rank differs.
fn agree(group: Option<&ProcessGroup>, found: Option<usize>) -> Result<()> {
    let Some(group) = group else { return Ok(()) };
    let value = found.map(|completed| completed as f64 + 1.0).unwrap_or(0.0);
    let sums = distributed::sum_over_group(Some(group), &[value, value * value])?;
    let world = group.world_size() as f64;
    let (mean, mean_square) = (sums[0] / world, sums[1] / world);
    if (mean_square - mean * mean).abs() > 1e-9 {
        bail!(
            "torchrun restart {}: the processes do not see the same run directory (rank {} {}); give every \
             process the same --out on a shared file system",
            restart_count(),
            group.rank(),
            match found {
                Some(completed) => format!("sees an unfinished run after {}", crate::wording::epochs(completed)),
                None => "sees no run to continue".into(),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_dir::{DataInfo, ToolInfo, TrainConfig};

    fn config() -> RunConfig {
        RunConfig {
            tool: ToolInfo::default(),
            model: Default::default(),
            data: DataInfo {
                dir: "data".into(),
                class_names: (0..10).map(|i| i.to_string()).collect(),
                train_examples: 8,
                validation_examples: 2,
                test_examples: 2,
                normalization: super::super::NORMALIZATION.into(),
                selection: Default::default(),
                fit: None,
                skip_bad: false,
            },
            training: TrainConfig::default(),
            lineage: None,
            state: Default::default(),
            result: None,
        }
    }

    #[test]
    fn a_run_of_the_same_configuration_is_one_whatever_its_device_and_group() {
        let planned = config();
        let mut existing = planned.clone();
        existing.training.device = "cuda:1".into();
        assert!(same_configuration(&existing, &planned));
        existing.training.learning_rate *= 2.0;
        assert!(!same_configuration(&existing, &planned));
        let mut other_data = planned.clone();
        other_data.data.train_examples = 9;
        assert!(!same_configuration(&other_data, &planned));
    }

    #[test]
    fn only_an_unfinished_run_of_the_planned_epochs_is_continued() {
        let dir = tempfile::tempdir().unwrap();
        let planned = config();
        assert_eq!(unfinished_run_of(dir.path(), &planned), None, "no run there");
        // Killed in its first epoch (a run with epochs would need its metrics and weights beside it).
        let mut existing = planned.clone();
        existing.save(dir.path()).unwrap();
        assert_eq!(unfinished_run_of(dir.path(), &planned), Some(0));
        existing.training.epochs += 1;
        existing.save(dir.path()).unwrap();
        assert_eq!(unfinished_run_of(dir.path(), &planned), None, "another configuration");
        existing.training.epochs -= 1;
        existing.state.status = RunStatus::Completed;
        existing.save(dir.path()).unwrap();
        assert_eq!(unfinished_run_of(dir.path(), &planned), None, "a finished run is the write rule's");
    }
}
