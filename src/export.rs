//! TorchScript export: the trained model traced into a self-contained module that Python loads with
//! `torch.jit.load` and C++ with `torch::jit::load`, no mnist-tch needed.
//!
//! The contract of the exported `forward(x)`:
//! - `x`: float32, pixels scaled to [0, 1] (pixel / 255, as in training), shaped `[N, rows, cols]`,
//!   `[N, 1, rows, cols]` or `[N, rows*cols]`, any `N >= 1`;
//! - returns float32 `[N, num_classes]`: logits, or probabilities (softmax) when exported with
//!   `probabilities`.
//!
//! Tracing records the operations run on an example input; the weights are captured as constants of
//! the graph, not parameters, so the module is for inference only. The batch size is not baked in:
//! the graph holds `flatten(1, -1)` and `linear`, which take any leading dimension.

use crate::files::write_atomically;
use crate::plot;
use crate::run_dir::{self, LoadedRun, io_reason, torch_error};
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::path::Path;
use tch::{CModule, Kind, Tensor, nn::ModuleT};

/// The files a run directory is made of: export never writes over them, even with `--overwrite`.
const RUN_FILES: [&str; 9] = [
    run_dir::CONFIG_FILE,
    run_dir::WEIGHTS_FILE,
    run_dir::BEST_WEIGHTS_FILE,
    run_dir::OPTIMIZER_FILE,
    run_dir::METRICS_FILE,
    run_dir::METRICS_JSON_FILE,
    run_dir::EVALUATION_FILE,
    plot::CURVES_FILE,
    plot::CONFUSION_FILE,
];

/// Checks, before any work, that every file of an export (the module and its description) can be
/// written at its path: not a directory, not a file of a run directory, not an existing file unless
/// `overwrite`; creates missing parent directories (as `train --out` does) and makes sure they are
/// writable, so a read-only place is one plain message instead of libtorch's.
pub fn check_destination(files: &[&Path], overwrite: bool) -> Result<()> {
    for &file in files {
        let shown = file.display();
        if file.is_dir() {
            bail!("{shown}: is a directory; give --out a file name such as model.pt");
        }
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if RUN_FILES.contains(&name) && parent.join(run_dir::CONFIG_FILE).is_file() {
            bail!(
                "{shown}: is a file of the run directory {}, which export never replaces (not even with \
                 --overwrite); choose another --out",
                parent.display()
            );
        }
        if file.exists() && !overwrite {
            bail!("{shown}: already exists; choose another --out or pass --overwrite to replace it");
        }
        // The deepest part of the path that exists must be a directory to create the rest in.
        if let Some(blocking) = parent.ancestors().find(|a| a.exists()).filter(|a| !a.is_dir()) {
            bail!("{shown}: cannot be written: {} is a file, not a directory", blocking.display());
        }
        fs::create_dir_all(parent).map_err(|err| {
            anyhow::anyhow!("{shown}: cannot create the directory {}: {}", parent.display(), io_reason(&err))
        })?;
        // A probe file: the reason (permission denied, read-only file system) comes from the OS here.
        let probe = parent.join(format!(".{name}.probe-{}", std::process::id()));
        match fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
            Ok(_) => {
                let _ = fs::remove_file(&probe);
            }
            Err(err) => bail!("{shown}: cannot be written ({}); choose another --out", io_reason(&err)),
        }
    }
    Ok(())
}

/// Traces `run`'s model (its variable store must be frozen) on `device`.
pub fn trace(run: &LoadedRun, probabilities: bool) -> Result<CModule> {
    let [rows, cols] = run.config.model.input_shape;
    let device = run.vs.device();
    // Batch 2, not 1, so no size-1 dimension can be specialised away by the tracer.
    let example = Tensor::rand([2, rows, cols], (Kind::Float, device));
    let mut forward = |inputs: &[Tensor]| {
        let logits = run.net.forward_t(&inputs[0], false);
        vec![if probabilities { logits.softmax(-1, Kind::Float) } else { logits }]
    };
    let module = CModule::create_by_tracing("MnistTch", "forward", &[example], &mut forward)
        .map_err(torch_error)
        .context("tracing the model")?;
    Ok(module)
}

/// Writes `module` to `path` atomically, then loads it back and checks that it reproduces the eager
/// model on a batch of every accepted input shape.
pub fn save_and_verify(module: &CModule, run: &LoadedRun, probabilities: bool, path: &Path) -> Result<()> {
    write_atomically(path, |tmp| Ok(module.save(tmp)?))?;
    let device = run.vs.device();
    let reloaded = CModule::load_on_device(path, device)
        .map_err(torch_error)
        .with_context(|| format!("{}: the exported file does not load back", path.display()))?;
    let [rows, cols] = run.config.model.input_shape;
    let images = Tensor::rand([5, rows, cols], (Kind::Float, device));
    let eager = tch::no_grad(|| run.net.forward_t(&images, false));
    let eager = if probabilities { eager.softmax(-1, Kind::Float) } else { eager };
    for input in [images.shallow_clone(), images.view([5, 1, rows, cols]), images.view([5, rows * cols])] {
        let traced = tch::no_grad(|| reloaded.forward_ts(&[&input]))?;
        let diff = (&traced - &eager).abs().max().double_value(&[]);
        ensure!(
            diff <= 1e-6,
            "{}: the exported module differs from the model by {diff} for input shape {:?}",
            path.display(),
            input.size()
        );
    }
    Ok(())
}
