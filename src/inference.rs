//! Inference from either form of a trained model — a run directory (config.json + weights, the model
//! rebuilt in Rust) or an exported TorchScript file (`CModule::load`) with its `.json` sidecar — behind one
//! type that answers class probabilities.

use crate::error_text::torch_error;
use crate::frame::Frame;
use crate::preprocess::Framing;
use crate::run_dir;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor, nn::ModuleT};

/// What an exported module returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportOutput {
    Logits,
    /// The softmax is part of the module (`export --probabilities`).
    Probabilities,
}

impl ExportOutput {
    pub fn name(self) -> &'static str {
        match self {
            ExportOutput::Logits => "logits",
            ExportOutput::Probabilities => "probabilities",
        }
    }
}

/// What `export` writes beside a TorchScript file (`model.pt` → `model.pt.json`), so the file can be used
/// without its run directory. Written and read here only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub input_shape: [i64; 2],
    /// The frame's channels, written only when not 1 (as in config.json).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub channels: i64,
    /// How the run fitted pictures into the frame, for runs trained on pictures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Framing>,
    pub class_names: Vec<String>,
    pub normalization: String,
    pub output: ExportOutput,
    /// The run directory it was exported from.
    pub source: PathBuf,
}

fn one() -> i64 {
    1
}

fn is_one(n: &i64) -> bool {
    *n == 1
}

impl ExportInfo {
    /// The frame the module takes.
    pub fn frame(&self) -> Frame {
        Frame { channels: self.channels, rows: self.input_shape[0], cols: self.input_shape[1] }
    }

    /// Writes the description of `module` beside it ([`sidecar_path`]), atomically.
    pub fn save(&self, module: &Path) -> Result<PathBuf> {
        let path = sidecar_path(module);
        let json = serde_json::to_string_pretty(self)?;
        crate::files::write_bytes_atomically(&path, format!("{json}\n").as_bytes())?;
        Ok(path)
    }

    /// The description of `module` ([`existing_sidecar_path`]).
    pub fn load(module: &Path) -> Result<ExportInfo> {
        let sidecar = existing_sidecar_path(module);
        let text = std::fs::read_to_string(&sidecar).map_err(|err| {
            anyhow::anyhow!(
                "{}: cannot be read ({}): mnist-tch export writes it beside the TorchScript file; export again",
                sidecar.display(),
                crate::error_text::io_reason(&err)
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a valid export description", sidecar.display()))
    }
}

/// The sidecar's path for a TorchScript file: the module's whole file name plus `.json`
/// (`model.pt` → `model.pt.json`), so it can never be the module itself (`--out model.json`) nor
/// another file of the same stem (`--out RUN/config.pt` next to `RUN/config.json`).
pub fn sidecar_path(module: &Path) -> PathBuf {
    let mut name = module.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".json");
    module.with_file_name(name)
}

/// The sidecar to read for a TorchScript file: [`sidecar_path`], or, for files exported by earlier
/// versions, the module's name with its extension replaced (`model.pt` → `model.json`).
pub fn existing_sidecar_path(module: &Path) -> PathBuf {
    let current = sidecar_path(module);
    let legacy = module.with_extension("json");
    if !current.exists() && legacy != module && legacy.is_file() { legacy } else { current }
}

/// What `--model` takes, for the messages about anything else.
const MODEL_INPUTS: &str =
    "--model takes a run directory (from train or finetune) or a TorchScript file from `mnist-tch export` (model.pt)";

/// Files people give `--model` that are known not to be TorchScript, by their extension.
pub fn not_torchscript(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_string_lossy().to_lowercase();
    Some(match ext.as_str() {
        "pt2" => "a torch.export archive (scripts/export.py --format pt2, for torch.export.load)",
        "onnx" => "an ONNX file (scripts/export.py --format onnx, for ONNX Runtime)",
        "safetensors" => "a weights file: give the run directory that holds it",
        "json" => "a JSON file: give the run directory or the TorchScript file it describes",
        _ => return None,
    })
}

/// What classifies: a run directory's model (boxed: its config makes it the larger variant by far) or a
/// TorchScript module.
enum Model {
    Run(Box<run_dir::LoadedRun>),
    TorchScript { module: CModule, outputs_probabilities: bool },
}

/// A model ready to classify images.
pub struct Predictor {
    model: Model,
    /// The frame the model takes: channels, rows, columns.
    pub frame: Frame,
    /// How the run fitted pictures into the frame when it was trained on pictures; `None` for IDX data.
    pub fit: Option<Framing>,
    pub class_names: Vec<String>,
    pub device: Device,
}

impl Predictor {
    /// Loads a run directory, or a TorchScript file (anything that is not a directory).
    pub fn load(path: &Path, device: Device) -> Result<Predictor> {
        Predictor::load_weights(path, run_dir::WEIGHTS_FILE, device)
    }

    /// [`Predictor::load`] with another weights file of a run directory (`best.safetensors`).
    pub fn load_weights(path: &Path, weights_file: &str, device: Device) -> Result<Predictor> {
        if path.is_dir() {
            let run = run_dir::load_run_weights(path, weights_file, device)?;
            let (frame, fit) = (run.config.model.frame(), run.config.data.fit);
            let class_names = run.config.data.class_names.clone();
            return Ok(Predictor { model: Model::Run(Box::new(run)), frame, fit, class_names, device });
        }
        if !path.exists() {
            bail!("{}: no such run directory or TorchScript file", path.display());
        }
        if let Some(kind) = not_torchscript(path) {
            bail!("{}: {kind}, which mnist-tch cannot run; {MODEL_INPUTS}", path.display());
        }
        let module = CModule::load_on_device(path, device).map_err(|_| {
            anyhow::anyhow!("{}: not a TorchScript file (libtorch cannot load it); {MODEL_INPUTS}", path.display())
        })?;
        let info = ExportInfo::load(path)?;
        Ok(Predictor {
            model: Model::TorchScript { module, outputs_probabilities: info.output == ExportOutput::Probabilities },
            frame: info.frame(),
            fit: info.fit,
            class_names: info.class_names,
            device,
        })
    }

    /// The run directory's model, when it is one (not a TorchScript file).
    pub fn run(&self) -> Option<&run_dir::LoadedRun> {
        match &self.model {
            Model::Run(run) => Some(run),
            Model::TorchScript { .. } => None,
        }
    }

    /// Class probabilities `[N, classes]` for images `[N, rows, cols]` in [0, 1].
    pub fn probabilities(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.outputs(images)?.probabilities)
    }

    /// Logits and class probabilities `[N, classes]` for images `[N, rows, cols]` in [0, 1], on the CPU.
    pub fn outputs(&self, images: &Tensor) -> Result<Outputs> {
        let images = images.to_device(self.device);
        let (logits, probabilities) = tch::no_grad(|| -> Result<(Option<Tensor>, Tensor)> {
            Ok(match &self.model {
                Model::Run(run) => {
                    let logits = run.model.net.forward_t(&images, false);
                    let probabilities = logits.softmax(-1, Kind::Float);
                    (Some(logits), probabilities)
                }
                Model::TorchScript { module, outputs_probabilities } => {
                    let out =
                        module.forward_ts(&[&images]).map_err(torch_error).context("running the TorchScript module")?;
                    if *outputs_probabilities {
                        (None, out)
                    } else {
                        let probabilities = out.softmax(-1, Kind::Float);
                        (Some(out), probabilities)
                    }
                }
            })
        })?;
        let classes = probabilities.size().last().copied().unwrap_or(0);
        if classes != self.class_names.len() as i64 {
            bail!("the model outputs {classes} classes but describes {}", self.class_names.len());
        }
        let cpu = |t: Tensor| t.to_device(Device::Cpu);
        Ok(Outputs { logits: logits.map(cpu), probabilities: cpu(probabilities) })
    }
}

/// What a model answers for a batch of images.
pub struct Outputs {
    /// `[N, classes]`; `None` for a TorchScript module exported with the softmax in it.
    pub logits: Option<Tensor>,
    /// `[N, classes]`.
    pub probabilities: Tensor,
}

/// The `k` most likely classes of each row of `probabilities` `[N, classes]`, as (class, probability)
/// pairs, most likely first.
pub fn top_k(probabilities: &Tensor, k: u64) -> Result<Vec<Vec<(i64, f32)>>> {
    let classes = probabilities.size().last().copied().unwrap_or(0);
    let k = (k as i64).min(classes).max(1);
    let (top_p, top_i) = probabilities.f_topk(k, -1, true, true).map_err(torch_error)?;
    let top_p: Vec<f32> = Vec::try_from(&top_p.reshape(-1)).map_err(torch_error)?;
    let top_i: Vec<i64> = Vec::try_from(&top_i.reshape(-1)).map_err(torch_error)?;
    Ok(top_i
        .chunks(k as usize)
        .zip(top_p.chunks(k as usize))
        .map(|(labels, probabilities)| labels.iter().copied().zip(probabilities.iter().copied()).collect())
        .collect())
}

/// Why a picture's answer is "unknown" rather than its most likely class: content too small to be a
/// digit (its `warning`), or a top probability under `min_confidence` (0: never). `None`: the top class is
/// the answer.
pub fn unknown_reason(best: &[(i64, f32)], warning: Option<&str>, min_confidence: f32) -> Option<String> {
    if warning.is_some() {
        return Some("too little ink to be a digit".to_string());
    }
    let top = best.first().map_or(0.0, |&(_, p)| p);
    (top < min_confidence)
        .then(|| format!("the top probability {top:.2} is below the minimum confidence {min_confidence}"))
}

/// Parses `--min-confidence` (and the `min_confidence` query value): a probability from 0 to 1.
pub fn parse_min_confidence(text: &str) -> Result<f32, String> {
    let value: f32 =
        text.trim().parse().map_err(|_| format!("'{text}' is not a number (a probability from 0 to 1)"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{text} is not a probability: give a number from 0 to 1"));
    }
    Ok(value)
}

/// One picture's answer as `predict --json` prints it and `serve`'s `/predict` starts from.
/// `inverted`, `framing` and `warning` say how the picture was prepared; `label` and `name` are the answer:
/// the most likely class, or `null` and "unknown" with an `unknown` key saying why ([`unknown_reason`]),
/// the top classes listed either way.
pub fn prediction_json(
    input: &str,
    inverted: bool,
    framing: Framing,
    warning: Option<&str>,
    best: &[(i64, f32)],
    class_names: &[String],
    min_confidence: f32,
) -> serde_json::Value {
    let predictions: Vec<_> = best
        .iter()
        .map(|&(label, p)| json!({"label": label, "name": class_names[label as usize], "probability": p}))
        .collect();
    let mut answer =
        json!({"input": input, "inverted": inverted, "fit": framing.to_string(), "predictions": predictions});
    match (unknown_reason(best, warning, min_confidence), best.first()) {
        (None, Some(&(label, _))) => {
            answer["label"] = json!(label);
            answer["name"] = json!(class_names[label as usize]);
        }
        (reason, _) => {
            answer["label"] = serde_json::Value::Null;
            answer["name"] = json!("unknown");
            answer["unknown"] = json!(reason.unwrap_or_else(|| "the model gave no answer".to_string()));
        }
    }
    if let Some(warning) = warning {
        answer["warning"] = json!(warning);
    }
    answer
}
