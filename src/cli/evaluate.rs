//! `mnist-tch evaluate`: rebuild a run's model from its `config.json` (never from flags), load its
//! weights and report loss, accuracy, per-class accuracy and the confusion matrix on test files.

use crate::data;
use crate::device::{DeviceSpec, device_name};
use crate::evaluation::{Evaluation, evaluate, logits};
use crate::files::write_atomically;
use crate::run_dir::load_run_weights;
use anyhow::{Result, ensure};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub run: super::run_arg::RunArg,

    /// Data set whose test files to use: a directory of MNIST-format files or a Keras .npz file.
    /// Default: the one the run was trained on.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,

    /// Weights file of the run directory, by name: model.safetensors (the run's final model) or
    /// best.safetensors (written by train --save-best). It is named in the report; a path to a file
    /// elsewhere is refused (its architecture would be read from a config.json it does not belong to).
    #[arg(long, value_name = "FILE", default_value = crate::run_dir::WEIGHTS_FILE)]
    pub weights: String,

    /// auto, cpu, cuda or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value_t = DeviceSpec::Auto)]
    pub device: DeviceSpec,

    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,

    /// Also write the logits of every test image, float32 [N, classes] in file order, as a NumPy
    /// .npy file (for parity checks against Python). Missing directories are created; a run
    /// directory's own files are never replaced.
    #[arg(long, value_name = "FILE.npy")]
    pub dump_logits: Option<PathBuf>,

    /// Replace an existing --dump-logits file instead of refusing.
    #[arg(long)]
    pub overwrite: bool,

    /// With a picture folder as --data: skip pictures that will not decode (counted) instead of stopping
    /// at the first.
    #[arg(long)]
    pub skip_bad: bool,
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    let device = args.device.resolve()?;
    let weights = weights_name(args.run.path(), &args.weights)?;
    if let Some(path) = &args.dump_logits {
        crate::destination::check_files(&[path], "--dump-logits", args.overwrite)?;
    }
    super::note_if_being_trained(args.run.path());
    super::note_if_unfinished(args.run.path());
    let run = load_run_weights(args.run.path(), &weights, device)?;
    let model = &run.config.model;
    let data_dir = args.data.clone().unwrap_or_else(|| run.config.data.dir.clone());
    let selection = &run.config.data.selection;
    let reading = data::Reading {
        frame: Some(model.frame()),
        fit: run.config.data.fit.unwrap_or_default(),
        skip_bad: args.skip_bad,
    };
    let data = data::load_test_as(&data_dir, selection, model.num_classes as usize, &reading)?;
    if args.data.is_some() {
        note_if_other_classes(&data_dir, &run.config.data.class_names, data.class_names.as_deref());
    }
    if let Some(labels) = &selection.labels {
        eprintln!(
            "note: the test images of classes {} only, relabelled as the run was trained (data.selection in config.json)",
            labels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    ensure!(
        data.frame == model.frame(),
        "{}: images are {}, the model in {} takes {}",
        data_dir.display(),
        data.frame.size_text(),
        args.run.path().display(),
        model.frame().size_text()
    );
    let test = data.test.to_device(device);
    let started = std::time::Instant::now();
    let result = evaluate(&run.model.net, &test, model.num_classes)?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.dump_logits {
        let logits = logits(&run.model.net, &test.images);
        write_atomically(path, |tmp| Ok(logits.write_npy(tmp)?))?;
    }
    let names = &run.config.data.class_names;
    if args.json {
        let mut report = report_json(args.run.path(), &data_dir, device, names, &result);
        report["seconds"] = json!(seconds);
        report["threads"] = json!(tch::get_num_threads());
        report["weights"] = json!(args.run.path().join(&weights));
        crate::say!("{report}")?;
    } else {
        print_report(&weights, args.run.path(), &data_dir, device, model.describe(), names, &result)?;
        crate::say!("\nEvaluated {} images in {:.1} ms", test.len(), seconds * 1e3)?;
    }
    Ok(())
}

fn report_json(run: &Path, data: &Path, device: tch::Device, names: &[String], e: &Evaluation) -> serde_json::Value {
    let classes: Vec<_> = names
        .iter()
        .zip(e.per_class_accuracy())
        .zip(e.per_class_scores())
        .enumerate()
        .map(|(index, ((name, accuracy), scores))| {
            json!({
                "index": index, "name": name, "accuracy": accuracy, "precision": scores.precision,
                "recall": scores.recall, "f1": scores.f1, "examples": scores.support,
            })
        })
        .collect();
    json!({
        "model": run,
        "data": data,
        "device": device_name(device),
        "examples": e.class_counts().iter().sum::<i64>(),
        "loss": e.loss,
        "accuracy": e.accuracy,
        "classes": classes,
        "confusion_matrix": e.confusion,
    })
}

/// The report as tables: what was evaluated, the test loss and accuracy, per-class metrics and the
/// confusion matrix.
fn print_report(
    weights: &str,
    run: &Path,
    data: &Path,
    device: tch::Device,
    architecture: String,
    names: &[String],
    e: &Evaluation,
) -> Result<()> {
    crate::say!("Model: {} ({architecture})", run.display())?;
    crate::say!("Weights: {}", run.join(weights).display())?;
    crate::say!("Data: {} ({} test images)", data.display(), e.class_counts().iter().sum::<i64>())?;
    crate::say!("Device: {}", device_name(device))?;
    if device == tch::Device::Cpu {
        crate::say!("Threads: {}", tch::get_num_threads())?;
    }
    crate::say!("Test loss: {:.4}", e.loss)?;
    crate::say!("Test accuracy: {:.4}", e.accuracy)?;
    crate::say!()?;
    print_class_metrics(names, e)?;
    crate::say!()?;
    print_confusion_matrix(names, e)
}

/// One row per class (accuracy, precision, recall, f1, examples), then the macro averages.
fn print_class_metrics(names: &[String], e: &Evaluation) -> Result<()> {
    let name_width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(5);
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    crate::say!("Per-class metrics:")?;
    crate::say!(
        "  {:>3}  {:<name_width$}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}",
        "#",
        "class",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "examples"
    )?;
    let scores = e.per_class_scores();
    for (class, (accuracy, s)) in e.per_class_accuracy().into_iter().zip(&scores).enumerate() {
        crate::say!(
            "  {class:>3}  {:<name_width$}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}",
            names[class],
            cell(accuracy),
            cell(s.precision),
            cell(s.recall),
            cell(s.f1),
            s.support
        )?;
    }
    let macro_avg = |f: fn(&crate::evaluation::ClassScores) -> Option<f64>| {
        let values: Vec<f64> = scores.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    crate::say!(
        "  {:>3}  {:<name_width$}  {:>8}  {:>9}  {:>8}  {:>8}  {:>8}",
        "",
        "macro avg",
        "",
        cell(macro_avg(|s| s.precision)),
        cell(macro_avg(|s| s.recall)),
        cell(macro_avg(|s| s.f1)),
        e.class_counts().iter().sum::<i64>()
    )?;
    Ok(())
}

/// The confusion matrix, rows the true class, its cells as wide as the largest count.
fn print_confusion_matrix(names: &[String], e: &Evaluation) -> Result<()> {
    crate::say!("Confusion matrix (rows: true class, columns: predicted class):")?;
    let cell = e.confusion.iter().flatten().map(|c| c.to_string().len()).max().unwrap_or(1).max(3);
    let header: String = (0..names.len()).map(|c| format!(" {c:>cell$}")).collect();
    crate::say!("  {:>3} {header}  class", "")?;
    for (class, row) in e.confusion.iter().enumerate() {
        let cells: String = row.iter().map(|c| format!(" {c:>cell$}")).collect();
        crate::say!("  {class:>3} {cells}  {}", names[class])?;
    }
    Ok(())
}

/// A note on stderr when the data's classes, as `--class-names auto` names them, are not the run's (a
/// digits run on Fashion-MNIST): the accuracy then compares labels by number only.
fn note_if_other_classes(data_dir: &Path, run_names: &[String], own: Option<&[String]>) {
    let names = match own {
        Some(own) => own.to_vec(),
        None => match crate::class_names::ClassNames::Auto.names(data_dir, run_names.len()) {
            Ok(names) => names,
            Err(_) => return,
        },
    };
    if names != run_names {
        let first = |names: &[String]| format!("{}, ...", names.iter().take(2).cloned().collect::<Vec<_>>().join(", "));
        eprintln!(
            "note: {} has other classes ({}) than the run ({}): labels are compared by number, not by name",
            data_dir.display(),
            first(&names),
            first(run_names)
        );
    }
}

/// `--weights` names a file of the run directory, by its name or by a path to it; a path elsewhere would
/// pair weights with a config they do not belong to. Returns the file's name in the run.
fn weights_name(run: &Path, weights: &str) -> Result<String> {
    let path = Path::new(weights);
    let plain_name =
        path.components().count() == 1 && matches!(path.components().next(), Some(std::path::Component::Normal(_)));
    if plain_name {
        return Ok(weights.to_string());
    }
    let in_run = |file: &Path| {
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let parent = std::fs::canonicalize(parent).ok();
        file.is_file() && parent.is_some() && parent == std::fs::canonicalize(run).ok()
    };
    if let Some(name) = path.file_name().filter(|_| in_run(path)) {
        return Ok(name.to_string_lossy().into_owned());
    }
    Err(super::UsageError(format!(
        "--weights {weights}: give the name of a weights file of the run directory (model.safetensors or \
         best.safetensors) or a path to one inside it, not a path elsewhere; to evaluate weights kept \
         elsewhere, copy them into a run directory with the same config.json"
    ))
    .into())
}
