//! `train --resume RUN_DIR`, the older spelling of `mnist-tch resume RUN_DIR`: it takes resume's flags
//! (clap's definition of `resume` says which), and any other flag of `train` whose value is what the run
//! already has (`--lr 0.001` on a run trained at 0.001 changes nothing, so it is not refused).

use super::resume::ResumeArgs;
use super::train::TrainArgs;
use super::{Cli, GivenFlags, UsageError};
use crate::run_dir::RunConfig;
use anyhow::Result;
use clap::CommandFactory;

/// The flags `mnist-tch resume` takes, as `--flag` spellings, from its clap definition.
pub fn resume_flags() -> Vec<String> {
    let command = Cli::command();
    let Some(resume) = command.find_subcommand("resume") else { return Vec::new() };
    resume.get_arguments().filter_map(|arg| arg.get_long()).map(|long| format!("--{long}")).collect()
}

/// `train --resume` as the `resume` command it means, or a usage error naming the flags it cannot honour.
pub fn as_resume(args: TrainArgs, given: &GivenFlags) -> Result<ResumeArgs> {
    let Some(dir) = args.resume.clone() else { anyhow::bail!("train: --resume is missing") };
    let honoured = resume_flags();
    let mut allowed: Vec<&str> = honoured.iter().map(String::as_str).collect();
    allowed.push("--resume");
    let mut refused = given.except(&allowed);
    if !refused.is_empty() {
        let config = RunConfig::load(&dir)?;
        refused.retain(|flag| !repeats_the_run(flag, &args, &config));
    }
    if !refused.is_empty() {
        return Err(UsageError(format!(
            "{} cannot change a resumed run: train --resume keeps the settings in {}/config.json (only {} apply); \
             start a new run to change them",
            refused.join(", "),
            dir.display(),
            honoured.join(", ")
        ))
        .into());
    }
    Ok(ResumeArgs {
        run: dir,
        epochs: args.training.epochs,
        engine: args.training.engine,
        stopping: args.training.stopping,
        job: args.job,
        print_config: args.print_config,
    })
}

/// Whether `flag`, as given in `args`, repeats what `config` already holds.
fn repeats_the_run(flag: &str, args: &TrainArgs, config: &RunConfig) -> bool {
    let t = &config.training;
    match flag {
        "--lr" => args.lr == t.learning_rate,
        "--batch-size" => args.training.batch_size as usize == t.batch_size,
        "--accumulate" => args.training.accumulate as usize == t.accumulate,
        "--seed" => args.training.seed == t.seed,
        "--weight-decay" => args.training.weight_decay == Some(t.weight_decay),
        "--lr-schedule" => args.training.lr_schedule == Some(t.lr_schedule),
        "--monitor" => args.training.monitor == t.monitor,
        "--precision" => args.training.precision.unwrap_or_default() == t.precision,
        "--no-shuffle" => !t.shuffle,
        "--label-smoothing" => args.training.label_smoothing == Some(t.label_smoothing),
        "--random-shift" => args.training.random_shift.map(|p| p as usize) == Some(t.random_shift),
        "--validation-split" => args.data.validation_split == t.validation_split,
        "--num-classes" => args.num_classes as i64 == config.model.num_classes,
        "--arch" => args.arch == config.model.arch,
        "--hidden" => args.hidden.as_ref() == Some(&config.model.hidden),
        "--patch" | "--width" | "--depth" | "--heads" | "--mlp-ratio" => {
            config.model.vit.is_some_and(|vit| args.vit.flags().config() == vit)
        }
        "--data" => {
            args.data.data.as_ref().and_then(|d| std::fs::canonicalize(d).ok()) == Some(config.data.dir.clone())
        }
        _ => false,
    }
}
