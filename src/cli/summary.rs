//! `mnist-tch summary --model RUN_DIR`: the model like Keras's `model.summary()`.

use crate::model;
use crate::run_dir::RunConfig;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Run directory written by `mnist-tch train` or `finetune`.
    #[arg(long, value_name = "RUN_DIR")]
    pub model: PathBuf,
}

pub fn run(args: SummaryArgs) -> Result<()> {
    super::note_if_being_trained(&args.model);
    let config = RunConfig::load(&args.model)?;
    let title = args.model.display().to_string();
    crate::say!("{}", model::summary(&config.model, &title, &config.frozen_tensors()).trim_end())?;
    Ok(())
}
