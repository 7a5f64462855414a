//! `mnist-tch summary --model RUN_DIR`: the model like Keras's `model.summary()`.

use crate::model;
use crate::run_dir::RunConfig;
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub run: super::run_arg::RunArg,
}

pub fn run(args: SummaryArgs) -> Result<()> {
    super::note_if_being_trained(args.run.path());
    super::note_if_unfinished(args.run.path());
    let config = RunConfig::load(args.run.path())?;
    let title = args.run.path().display().to_string();
    crate::say!("{}", model::summary(&config.model, &title, &config.frozen_tensors()).trim_end())?;
    Ok(())
}
