//! TorchScript export: the trained model traced into a self-contained module that Python loads with
//! `torch.jit.load` and C++ with `torch::jit::load`, no mnist-tch needed.
//!
//! The contract of the exported `forward(x)`:
//! - `x`: float32, pixels scaled to [0, 1] (pixel / 255, as in training), shaped `[N, rows, cols]`,
//!   `[N, 1, rows, cols]` or `[N, rows*cols]`, any `N >= 1` (a colour frame: `[N, C, rows, cols]` or
//!   `[N, C*rows*cols]`, channel-major); traced at the run's frame;
//! - returns float32 `[N, num_classes]`: logits, or probabilities (softmax) when exported with
//!   `probabilities`.
//!
//! Tracing records the operations run on an example input; the weights are captured as constants of
//! the graph, not parameters, so the module is for inference only. The batch size is not baked in:
//! the graph holds `flatten(1, -1)` and `linear`, which take any leading dimension.

use crate::error_text::torch_error;
use crate::files::write_atomically;
use crate::run_dir::LoadedRun;
use anyhow::{Context, Result, ensure};
use std::path::Path;
use tch::{CModule, Kind, Tensor, nn::ModuleT};

/// Traces `run`'s model (its variable store must be frozen) on `device`.
pub fn trace(run: &LoadedRun, probabilities: bool) -> Result<CModule> {
    let frame = run.config.model.frame();
    let device = run.model.vs.device();
    // Batch 2, not 1, so no size-1 dimension can be specialised away by the tracer.
    let example = Tensor::rand(frame.batch_shape(2), (Kind::Float, device));
    let mut forward = |inputs: &[Tensor]| {
        let logits = run.model.net.forward_t(&inputs[0], false);
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
    write_atomically(path, |tmp| module.save(tmp).map_err(crate::error_text::torch_write_error))?;
    let device = run.model.vs.device();
    let reloaded = CModule::load_on_device(path, device)
        .map_err(torch_error)
        .with_context(|| format!("{}: the exported file does not load back", path.display()))?;
    let frame = run.config.model.frame();
    let (channels, rows, cols) = (frame.channels, frame.rows, frame.cols);
    let images = Tensor::rand(frame.batch_shape(5), (Kind::Float, device));
    let eager = tch::no_grad(|| run.model.net.forward_t(&images, false));
    let eager = if probabilities { eager.softmax(-1, Kind::Float) } else { eager };
    let shapes = [images.view([5, channels, rows, cols]), images.view([5, channels * rows * cols])];
    let grey = (channels == 1).then(|| images.view([5, rows, cols]));
    for input in grey.into_iter().chain(shapes) {
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
