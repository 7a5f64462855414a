//! `mnist-tch plot --model RUN_DIR` (or `plot RUN_DIR`): the learning curves from `metrics.json` and the
//! confusion matrix from `evaluation.json`, drawn into the run directory (no data or model needed).

use crate::evaluation::Evaluation;
use crate::plot::draw_run_plots;
use crate::run_dir::{self, RunConfig, load_metrics};
use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
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

/// The part of `evaluation.json` the plots need.
#[derive(Deserialize)]
struct SavedEvaluation {
    loss: f64,
    accuracy: f64,
    confusion_matrix: Vec<Vec<i64>>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    // clap makes sure exactly one of the two is given.
    let Some(run) = args.model.or(args.run) else {
        anyhow::bail!("no run directory: give --model RUN_DIR");
    };
    let config = RunConfig::load(&run)?;
    let history = load_metrics(&run)?;
    let evaluation_path = run.join(run_dir::EVALUATION_FILE);
    // An interrupted run has curves but no test evaluation yet.
    let test = if evaluation_path.exists() {
        let text = std::fs::read_to_string(&evaluation_path)
            .with_context(|| format!("{}: cannot read", evaluation_path.display()))?;
        let saved: SavedEvaluation = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid evaluation", evaluation_path.display()))?;
        Some(Evaluation { loss: saved.loss, accuracy: saved.accuracy, confusion: saved.confusion_matrix })
    } else {
        eprintln!(
            "note: {} is missing (run not finished): drawing the learning curves only",
            evaluation_path.display()
        );
        None
    };
    for path in draw_run_plots(&run, &config, &history, test.as_ref())? {
        println!("Wrote {}", path.display());
    }
    Ok(())
}
