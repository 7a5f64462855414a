//! `mnist-tch plot RUN_DIR`: the learning curves from `metrics.json` and the confusion matrix from
//! `evaluation.json`, drawn into the run directory (no data or model needed).

use crate::plot::draw_plots;
use crate::run_dir::{self, EvaluationReport, RunConfig, load_metrics};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directory written by `mnist-tch train`.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let config = RunConfig::load(&args.run)?;
    let history = load_metrics(&args.run)?;
    // An interrupted run has curves but no test evaluation yet.
    let test = EvaluationReport::load(&args.run)?.map(|report| report.evaluation());
    if test.is_none() {
        eprintln!(
            "note: {} is missing (run not finished): drawing the learning curves only",
            args.run.join(run_dir::EVALUATION_FILE).display()
        );
    }
    for path in draw_plots(&args.run, &config, &history, test.as_ref())? {
        println!("Wrote {}", path.display());
    }
    Ok(())
}
