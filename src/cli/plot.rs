//! `mnist-tch plot --model RUN_DIR` (or `plot RUN_DIR`): the learning curves from `metrics.json` and the
//! confusion matrix from `evaluation.json`, drawn into the run directory (no data or model needed).

use crate::plot::draw_run_plots;
use crate::run_dir::{self, EvaluationReport, RunConfig, load_metrics};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directory written by `mnist-tch train` (as every other subcommand takes it).
    #[arg(long, value_name = "RUN_DIR", required_unless_present = "run")]
    pub model: Option<PathBuf>,

    /// The run directory, given without --model.
    #[arg(value_name = "RUN_DIR", conflicts_with = "model")]
    pub run: Option<PathBuf>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    // clap makes sure exactly one of the two is given.
    let Some(run) = args.model.or(args.run) else {
        anyhow::bail!("no run directory: give --model RUN_DIR");
    };
    super::note_if_being_trained(&run);
    let config = RunConfig::load(&run)?;
    let history = load_metrics(&run)?;
    // An interrupted run has curves but no test evaluation yet.
    let test = EvaluationReport::load(&run)?.map(|report| report.evaluation());
    if test.is_none() {
        eprintln!(
            "note: {} is missing (run not finished): drawing the learning curves only",
            run.join(run_dir::EVALUATION_FILE).display()
        );
    }
    for path in draw_run_plots(&run, &config, &history, test.as_ref())? {
        crate::say!("Wrote {}", path.display())?;
    }
    Ok(())
}
