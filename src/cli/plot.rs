//! `mnist-tch plot RUN_DIR` (or `plot --model RUN_DIR`): the learning curves from `metrics.json` and the
//! confusion matrix from `evaluation.json`, drawn into the run directory or `--out DIR` (no data or
//! model needed).

use super::run_arg::RunArg;
use crate::destination;
use crate::plot::draw_run_plots_into;
use crate::run_dir::{self, CONFUSION_FILE, CURVES_FILE, EvaluationReport, RunConfig, load_metrics};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub run: RunArg,

    /// Directory to draw learning_curves.png and confusion_matrix.png into (created when missing).
    /// Default: the run directory itself, whose plots are redrawn.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace existing plots in --out instead of refusing (another run's plots are never replaced).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let run = args.run.path().to_path_buf();
    super::note_if_being_trained(&run);
    super::note_if_unfinished(&run);
    let config = RunConfig::load(&run)?;
    let history = load_metrics(&run)?;
    // An interrupted run has curves but no test evaluation yet.
    let test = EvaluationReport::load(&run)?.map(|report| report.evaluation());
    let out = args.out.clone().unwrap_or_else(|| run.clone());
    if same_dir(&out, &run) {
        // The run's own plots are drawn from its own files: redrawing them is what plot is for.
        destination::check_dir(&out, &format!("{}: the plots cannot be written", out.display()), "--out")?;
    } else {
        let files = [out.join(CURVES_FILE), out.join(CONFUSION_FILE)];
        let files: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
        destination::check_files(&files, "--out", args.overwrite)?;
    }
    if test.is_none() {
        eprintln!(
            "note: {} is missing (run not finished): drawing the learning curves only",
            run.join(run_dir::EVALUATION_FILE).display()
        );
    }
    for path in draw_run_plots_into(&out, &run_name(&run), &config, &history, test.as_ref())? {
        crate::say!("Wrote {}", path.display())?;
    }
    Ok(())
}

/// Whether two paths name the same existing directory.
fn same_dir(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The run's name in the plots' titles: its directory's name.
fn run_name(run: &std::path::Path) -> String {
    let absolute = std::fs::canonicalize(run).unwrap_or_else(|_| run.to_path_buf());
    absolute.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned())
}
