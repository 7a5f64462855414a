//! `mnist-tch export`: a run directory's model as a TorchScript file for Python or C++ serving.

use crate::device::{DeviceSpec, device_name};
use crate::export;
use crate::inference::{ExportInfo, ExportOutput, sidecar_path};
use crate::run_dir::load_run;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};

/// The contract of the exported module, shown by `mnist-tch export --help`.
const CONTRACT: &str = "\
The exported module's forward(x):
  x       float32, pixels scaled to [0, 1] (pixel / 255, as in training), shaped [N, 28, 28],
          [N, 1, 28, 28] or [N, 784] (the run's image size), any batch size N >= 1
  returns float32 [N, classes]: logits, or probabilities with --probabilities

Python:
  model = torch.jit.load(\"model.pt\")                        # traced on CPU: runs on CPU
  model = torch.jit.load(\"model.pt\", map_location=\"cuda\")   # moves the baked-in weights to the GPU
  probs = model(x).softmax(-1)

Tracing bakes the weights into the graph as constants: the module is for inference, not training.";

#[derive(Debug, Args)]
#[command(after_long_help = CONTRACT)]
pub struct ExportArgs {
    #[command(flatten)]
    pub run: super::run_arg::RunArg,

    /// TorchScript file to write; its description (class names, input shape, output kind) goes beside
    /// it as FILE.json (model.pt.json). Missing directories are created.
    #[arg(long, value_name = "FILE", default_value = "model.pt")]
    pub out: PathBuf,

    /// Replace an existing FILE and FILE.json instead of refusing (a run directory's own files are
    /// never replaced).
    #[arg(long)]
    pub overwrite: bool,

    /// Bake the softmax in: the module returns class probabilities instead of logits.
    #[arg(long)]
    pub probabilities: bool,

    /// Device to trace on (cpu, cuda, cuda:N); the module's constants live there until
    /// `torch.jit.load(..., map_location=...)` moves them.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceSpec::Cpu)]
    pub device: DeviceSpec,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let device = args.device.resolve()?;
    super::note_if_being_trained(args.run.path());
    super::note_if_unfinished(args.run.path());
    let mut run = load_run(args.run.path(), device)?;
    // A run directory's own files are the first refusal: that is what the user must hear about.
    let sidecar = sidecar_path(&args.out);
    crate::destination::check_files(&[&args.out, &sidecar], "--out", args.overwrite)?;
    refuse_a_name_predict_refuses(&args.out)?;
    // Frozen: the traced graph then holds plain constants with no autograd history.
    run.model.vs.freeze();
    let module = export::trace(&run, args.probabilities)?;
    export::save_and_verify(&module, &run, args.probabilities, &args.out)?;
    // The sidecar lets `predict --model model.pt` name the classes without the run directory.
    let info = ExportInfo {
        input_shape: run.config.model.input_shape,
        channels: run.config.model.channels,
        fit: run.config.data.fit,
        class_names: run.config.data.class_names.clone(),
        normalization: run.config.data.normalization.clone(),
        output: if args.probabilities { ExportOutput::Probabilities } else { ExportOutput::Logits },
        source: std::fs::canonicalize(args.run.path()).unwrap_or_else(|_| args.run.path().to_path_buf()),
    };
    let sidecar = info.save(&args.out)?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    crate::say!(
        "Exported {} ({}, {}, traced on {}) to {} ({}) and its description to {}",
        args.run.path().display(),
        run.config.model.describe(),
        info.output.name(),
        device_name(device),
        args.out.display(),
        human_size(size),
        sidecar.display()
    )?;
    Ok(())
}

/// A file size the way people read it: bytes, KB or MB (powers of 1024, one decimal).
fn human_size(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KB {
        format!("{bytes} B")
    } else if b < KB * KB {
        format!("{:.1} KB", b / KB)
    } else if b < KB * KB * KB {
        format!("{:.1} MB", b / (KB * KB))
    } else {
        format!("{:.2} GB", b / (KB * KB * KB))
    }
}

/// `--out` with an extension that `predict --model` and `serve` take for another kind of file (`.json`,
/// `.onnx`, `.pt2`, `.safetensors`) would write a module those then refuse; any other name (`.pt`, `.pth`,
/// `.ts`, none) is TorchScript to them and to `torch.jit.load`.
fn refuse_a_name_predict_refuses(out: &Path) -> Result<()> {
    let Some(what) = crate::inference::not_torchscript(out) else { return Ok(()) };
    let ext = out.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    let what = what.split(':').next().unwrap_or(what);
    Err(super::UsageError(format!(
        "--out {}: `predict --model` and `serve` take a .{ext} name for {what}, not TorchScript, and would \
         refuse it; name the module model.pt (or .pth)",
        out.display()
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(300), "300 B");
        assert_eq!(human_size(407_000), "397.5 KB");
        assert_eq!(human_size(80_153_907), "76.4 MB");
        assert_eq!(human_size(3 << 30), "3.00 GB");
    }
}
