//! `mnist-tch finetune`: the seed's "how to fine-tune it". The architecture and weights come from the
//! parent run's directory (never from flags); `--freeze` keeps layers bit-identical; the output layer
//! is re-initialised when the new data has another number of classes, or on `--reinit-head`.

use super::flags::{DataFlags, FitFlags, OutputFlags};
use super::positive_f64;
use super::train::{check_batch, data_info, print_header};
use crate::callbacks;
use crate::data;
use crate::device::device_name;
use crate::evaluation::evaluate;
use crate::fit::{FitJob, JobData, fit};
use crate::model::{self, ModelConfig};
use crate::progress::OutputMode;
use crate::run_dir::{self, Lineage, RunConfig, ToolInfo};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;
use tch::nn;

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// The parent run directory: its config.json gives the architecture, its model.safetensors the
    /// starting weights.
    #[arg(long, value_name = "RUN_DIR")]
    pub from: PathBuf,

    #[command(flatten)]
    pub data: DataFlags,

    /// What stays fixed: none, hidden (every layer but the output layer), or a comma-separated list of
    /// layer names ("1", the first Dense layer) or tensor names ("1.weight"). Frozen tensors come out
    /// bit-identical to the parent's.
    #[arg(long, value_name = "WHAT", default_value = "none")]
    pub freeze: String,

    /// Re-initialise the output layer even when the number of classes is unchanged (a new task with
    /// as many classes).
    #[arg(long)]
    pub reinit_head: bool,

    /// Adam learning rate; lower than training's 1e-3, as fine-tuning should move the weights
    /// gently (Keras's guide uses 1e-5 for full unfreezing).
    #[arg(long, value_name = "RATE", default_value_t = 1e-4, value_parser = positive_f64)]
    pub lr: f64,

    #[command(flatten)]
    pub fit: FitFlags,

    #[command(flatten)]
    pub output: OutputFlags,
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let device = args.output.device.resolve()?;
    let mode = args.output.mode();
    let parent = RunConfig::load(&args.from)?;
    let selection = args.data.selection();
    let data_path = args.data.data_path()?;
    let prepared = data::prepare(
        &data_path,
        &selection,
        parent.model.num_classes as usize,
        &args.data.class_names,
        args.data.validation_split,
    )?;
    let image_shape = [prepared.image_rows as i64, prepared.image_cols as i64];
    if image_shape != parent.model.input_shape {
        bail!(
            "{}: images are {}x{}, the model in {} takes {}x{}",
            data_path.display(),
            image_shape[0],
            image_shape[1],
            args.from.display(),
            parent.model.input_shape[0],
            parent.model.input_shape[1]
        );
    }
    let model_config = ModelConfig { num_classes: prepared.num_classes as i64, ..parent.model.clone() };
    let layers = model_config.dense_layers();
    let head = layers.last().map(|l| l.name.clone()).unwrap_or_default();
    let reinit_head = args.reinit_head || model_config.num_classes != parent.model.num_classes;
    let head_tensors = if reinit_head { vec![format!("{head}.weight"), format!("{head}.bias")] } else { vec![] };

    // The new head is drawn from the seed; everything else is the parent's.
    tch::manual_seed(args.fit.seed);
    let mut vs = nn::VarStore::new(device);
    let net = model::build(&vs.root(), &model_config);
    run_dir::load_weights_except(&mut vs, &args.from.join(run_dir::WEIGHTS_FILE), &head_tensors)?;
    // Frozen tensors get a zero gradient at every step, so Adam's moments for them stay 0 and they
    // never move: bit-identical after training (see fused_mlp.rs).
    let frozen = frozen_tensors(&args.freeze, &model_config, &vs)?;

    let test_on_device = prepared.test.to_device(device);
    let before = evaluate(&net, &test_on_device, model_config.num_classes)?;
    drop(test_on_device);
    let config = RunConfig {
        tool: ToolInfo::default(),
        model: model_config,
        data: data_info(&data_path, &prepared, selection),
        training: args.fit.train_config(args.lr, args.data.validation_split, device_name(device)),
        lineage: Some(Lineage {
            parent: std::fs::canonicalize(&args.from).unwrap_or_else(|_| args.from.clone()),
            parent_model: format!("{} MLP, {} classes", parent.model.describe(), parent.model.num_classes),
            parent_data: parent.data.dir.clone(),
            frozen: frozen.clone(),
            reinit_head,
            accuracy_before: before.accuracy,
        }),
        state: Default::default(),
        result: None,
    };
    callbacks::check(config.training.lr_schedule, config.training.epochs)?;
    check_batch(&config, &prepared)?;
    let out = args.output.out.clone().unwrap_or_else(|| run_dir::next_free_run_dir(&PathBuf::from("runs")));
    run_dir::prepare_new_run_dir(&out, args.output.overwrite)?;

    print_header(mode, &config, &prepared, device);
    if mode != OutputMode::Quiet {
        println!(
            "Fine-tuning {}: {}, frozen: {}",
            args.from.display(),
            if reinit_head { "new output layer" } else { "output layer from the parent" },
            if frozen.is_empty() { "nothing".to_string() } else { frozen.join(", ") }
        );
    }
    println!("Test accuracy before fine-tuning: {:.4}", before.accuracy);
    let data = JobData { train: prepared.train, valid: prepared.valid, test: &prepared.test };
    let job = FitJob::new(config, data, vs, net, out, mode, args.output.plot, super::interrupt_flag());
    let report = fit(FitJob { frozen, ..job })?;
    super::exit_status(&report)
}

/// The tensor names `--freeze` selects, in name order.
fn frozen_tensors(spec: &str, model: &ModelConfig, vs: &nn::VarStore) -> Result<Vec<String>> {
    let layers = model.dense_layers();
    let all: Vec<String> = {
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        names
    };
    let of_layer = |layer: &str| all.iter().filter(|n| n.split('.').next() == Some(layer)).cloned().collect::<Vec<_>>();
    let mut frozen: Vec<String> = match spec {
        "none" => vec![],
        "hidden" => layers[..layers.len() - 1].iter().flat_map(|l| of_layer(&l.name)).collect(),
        list => {
            let mut names = Vec::new();
            for item in list.split(',').map(str::trim) {
                let matched = if item.contains('.') {
                    all.iter().filter(|n| *n == item).cloned().collect()
                } else {
                    of_layer(item)
                };
                if matched.is_empty() {
                    bail!(
                        "--freeze {spec}: no layer or tensor '{item}'; this model has layers {} (tensors {})",
                        layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", "),
                        all.join(", ")
                    );
                }
                names.extend(matched);
            }
            names
        }
    };
    frozen.sort();
    frozen.dedup();
    if frozen.len() == all.len() {
        bail!("--freeze {spec} freezes every layer: nothing would be trained");
    }
    Ok(frozen)
}
