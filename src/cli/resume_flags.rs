//! Which flags `train --resume` accepts: those it honours, and any other flag whose value is what the
//! run already has (`--lr 0.001` on a run trained at 0.001 changes nothing, so it is not refused).

use super::train::TrainArgs;
use crate::run_dir::RunConfig;

/// The flags `train --resume` honours; every other one is refused unless it repeats the run's setting.
pub const RESUME_FLAGS: [&str; 11] = [
    "--resume",
    "--epochs",
    "--device",
    "--engine",
    "--save-best",
    "--early-stopping",
    "--min-delta",
    "--plot",
    "--quiet",
    "--print-config",
    "--tensorboard",
];

/// Whether `flag`, as given in `args`, repeats what `config` already holds.
pub fn repeats_the_run(flag: &str, args: &TrainArgs, config: &RunConfig) -> bool {
    let t = &config.training;
    match flag {
        "--lr" => args.lr == t.learning_rate,
        "--batch-size" => args.fit.batch_size as usize == t.batch_size,
        "--seed" => args.fit.seed == t.seed,
        "--weight-decay" => args.fit.weight_decay == t.weight_decay,
        "--lr-schedule" => args.fit.lr_schedule == t.lr_schedule,
        "--monitor" => args.fit.monitor == t.monitor,
        "--precision" => args.fit.precision.unwrap_or_default() == t.precision,
        "--no-shuffle" => !t.shuffle,
        "--validation-split" => args.data.validation_split == t.validation_split,
        "--num-classes" => args.num_classes as i64 == config.model.num_classes,
        "--arch" => args.arch == config.model.arch,
        "--hidden" => args.hidden.as_ref() == Some(&config.model.hidden),
        "--data" => {
            args.data.data.as_ref().and_then(|d| std::fs::canonicalize(d).ok()) == Some(config.data.dir.clone())
        }
        _ => false,
    }
}
