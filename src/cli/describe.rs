//! `mnist-tch describe`: what scripts ask the binary instead of copying its rules (`crate::describe`):
//! the run-directory layout, a run's model, the model train's flags build, and the write rule.

use super::flags::class_count;
use super::{UsageError, unit_interval_from_zero};
use crate::describe::Description;
use crate::destination;
use crate::jobs;
use crate::model::{Arch, parse_hidden};
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

/// `--hidden`'s value (an alias, so clap reads one comma list; see train's).
type Widths = Vec<i64>;

/// The model flags: any one of them asks for the model train would build from them.
const MODEL_FLAGS: [&str; 10] =
    ["arch", "hidden", "input", "num_classes", "dropout", "patch", "width", "depth", "heads", "mlp_ratio"];

/// Everything that names a run or files, which the model flags do not go with.
const NAMED_PATHS: [&str; 2] = ["paths", "model"];

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Print JSON for scripts: {"tool": {"name", "version"}, "run_files": [every file of a run
    /// directory]}, with "run" and "model" (its "layers" filled in, also for runs written before
    /// config.json had them) for RUN_DIR or the model flags.
    #[arg(long, conflicts_with = "check_destination")]
    pub json: bool,

    /// A run directory: describe its model as every command reads it. With --check-destination: the
    /// files to check.
    #[arg(value_name = "RUN_DIR | FILE")]
    pub paths: Vec<PathBuf>,

    /// The run directory, as RUN_DIR (the spelling of the other commands that read a run).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["paths", "check_destination"])]
    pub model: Option<PathBuf>,

    /// Describe the model `train --arch` would build: mlp, linear, cnn or vit (the other model flags take
    /// train's defaults).
    #[arg(long, value_enum, conflicts_with_all = NAMED_PATHS)]
    pub arch: Option<Arch>,

    /// With the model flags: the MLP's hidden widths, as train's --hidden (default 128 for mlp).
    #[arg(long, value_name = "WIDTHS", value_parser = parse_hidden, conflicts_with_all = NAMED_PATHS)]
    pub hidden: Option<Widths>,

    /// With the model flags: the input frame, CxHxW or ROWSxCOLS (= 1xROWSxCOLS; default 1x28x28).
    #[arg(long, value_name = "CxHxW", value_parser = crate::frame::parse_frame, conflicts_with_all = NAMED_PATHS)]
    pub input: Option<crate::frame::Frame>,

    /// With the model flags: the number of classes (default 10).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = class_count, conflicts_with_all = NAMED_PATHS)]
    pub num_classes: Option<u64>,

    /// With the model flags: the dropout rate, as train's --dropout (default: the architecture's).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true, value_parser = unit_interval_from_zero, conflicts_with_all = NAMED_PATHS)]
    pub dropout: Option<f64>,

    /// With the model flags: the ViT's sizes, as train's.
    #[command(flatten)]
    pub vit: super::vit_flags::VitArgs,

    /// Check that the FILEs may be written by a command whose flag FLAG named them (e.g. --out), by the
    /// rule every mnist-tch command follows: never over a file of a run directory, never over an
    /// existing file without --overwrite, missing directories created. Exits 1 with one line naming
    /// FLAG when one may not; prints nothing when all may.
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true, requires = "paths", conflicts_with_all = MODEL_FLAGS)]
    pub check_destination: Option<String>,

    /// With --check-destination: existing files may be replaced (a run directory's own files never).
    #[arg(long, requires = "check_destination")]
    pub overwrite: bool,
}

pub fn run(args: DescribeArgs) -> Result<()> {
    if let Some(flag) = &args.check_destination {
        let files: Vec<&Path> = args.paths.iter().map(PathBuf::as_path).collect();
        return destination::check_files(&files, flag, args.overwrite);
    }
    let runs: Vec<&Path> = args.model.iter().chain(&args.paths).map(PathBuf::as_path).collect();
    let description = match runs.as_slice() {
        [] if model_flags_given(&args) => Description::of_model(jobs::new_model(
            args.arch.unwrap_or_default(),
            args.input.unwrap_or_default(),
            args.hidden,
            args.num_classes.unwrap_or(10) as i64,
            args.dropout,
            args.vit.flags(),
        )?),
        [] => Description::tool(),
        [run] => Description::of_run(run)?,
        _ => {
            return Err(UsageError(
                "describe takes one RUN_DIR (several files only with --check-destination FLAG)".into(),
            )
            .into());
        }
    };
    let text = if args.json { description.json()? } else { description.text() };
    crate::say!("{text}")?;
    Ok(())
}

fn model_flags_given(args: &DescribeArgs) -> bool {
    args.arch.is_some()
        || args.hidden.is_some()
        || args.input.is_some()
        || args.num_classes.is_some()
        || args.dropout.is_some()
        || args.vit.flags().first_given().is_some()
}

#[cfg(test)]
mod tests {
    use crate::frame::{Frame, parse_frame};

    #[test]
    fn input_shapes_are_rows_by_columns() {
        assert_eq!(parse_frame("28x28"), Ok(Frame::grey(28, 28)));
        assert_eq!(parse_frame("12X8"), Ok(Frame::grey(12, 8)));
        for bad in ["28", "0x28", "28x", "ax2", "-1x2"] {
            assert!(parse_frame(bad).is_err(), "{bad}");
        }
    }
}
