//! How every subcommand that reads a run names it: `--model RUN_DIR` or, the same, RUN_DIR as its
//! argument (`mnist-tch summary runs/train1`). `predict`, whose arguments are pictures, takes
//! `--model` only.

use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
#[group(id = "run_dir", required = true, multiple = false)]
pub struct RunArg {
    /// Run directory written by `mnist-tch train` or `finetune` (or give it without --model).
    #[arg(long, value_name = "RUN_DIR")]
    model: Option<PathBuf>,

    /// The run directory, as --model takes it.
    #[arg(value_name = "RUN_DIR")]
    run: Option<PathBuf>,
}

impl RunArg {
    /// The run directory (clap makes sure exactly one of the two spellings is given).
    pub fn path(&self) -> &Path {
        self.model.as_deref().or(self.run.as_deref()).unwrap_or(Path::new("."))
    }
}
