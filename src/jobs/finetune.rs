//! A fine-tuned run: a new run with the parent's architecture and weights, some tensors frozen, a new
//! output layer when the classes change.

use super::{DataRequest, NewRunDir, Origin, Plan, RunDirectory, StartingWeights, check_settings, data_info};
use crate::device::device_name;
use crate::engine::{Engine, Precision};
use crate::freeze::Freeze;
use crate::run_dir::TrainConfig;
use crate::run_dir::{self, Lineage, RunConfig, ToolInfo};
use anyhow::{Result, bail};
use std::path::PathBuf;
use tch::Device;

/// `mnist-tch finetune --from RUN_DIR`: a new run that starts from a trained one.
#[derive(Debug, Clone)]
pub struct FinetuneRun {
    pub from: PathBuf,
    pub data: DataRequest,
    pub freeze: Freeze,
    pub reinit_head: bool,
    /// Default: the parent's engine.
    pub engine: Option<Engine>,
    /// Default: the parent's precision.
    pub precision: Option<Precision>,
    pub training: TrainConfig,
    pub device: Device,
    pub out: NewRunDir,
    pub save_initial: bool,
}

/// Loads the new data and builds the config of a run that starts from the parent's architecture and
/// weights, with a new output layer when the classes change (or on `--reinit-head`).
pub fn plan_finetune(request: &FinetuneRun) -> Result<Plan> {
    let parent = RunConfig::load(&request.from)?;
    // Pictures are read into the parent's frame unless --input says otherwise (and is then refused below).
    let mut data_request = request.data.clone();
    data_request.reading.frame = data_request.reading.frame.or(Some(parent.model.frame()));
    let data = data_request.load(parent.model.num_classes as usize)?;
    if data.frame != parent.model.frame() {
        bail!(
            "{}: images are {}, the model in {} takes {}",
            request.data.path.display(),
            data.frame.size_text(),
            request.from.display(),
            parent.model.frame().size_text()
        );
    }
    let model = parent.model.with_classes(data.num_classes as i64)?;
    let head = model.weight_layers().last().cloned().unwrap_or_default();
    let reinit_head = request.reinit_head || model.num_classes != parent.model.num_classes;
    let head_tensors = if reinit_head { vec![format!("{head}.weight"), format!("{head}.bias")] } else { vec![] };
    let frozen = request.freeze.tensors(&model)?;
    let training = TrainConfig {
        device: device_name(request.device),
        engine: request.engine.unwrap_or(parent.training.engine),
        precision: request.precision.unwrap_or(parent.training.precision),
        ..request.training.clone()
    };
    let config = RunConfig {
        tool: ToolInfo::default(),
        data: data_info(&request.data, &data),
        training,
        lineage: Some(Lineage {
            parent: std::fs::canonicalize(&request.from).unwrap_or_else(|_| request.from.clone()),
            parent_model: format!("{}, {} classes", parent.model.describe(), parent.model.num_classes),
            parent_data: parent.data.dir.clone(),
            frozen,
            reinit_head,
            accuracy_before: 0.0, // measured by `start` once the model has the parent's weights
        }),
        model,
        state: Default::default(),
        result: None,
    };
    check_settings(&config, &data)?;
    let note = (!reinit_head && config.data.class_names != parent.data.class_names).then(|| {
        format!(
            "the classes ({}) are not the parent's ({}) but keep its output layer; --reinit-head starts the head afresh",
            config.data.class_names.join(", "),
            parent.data.class_names.join(", ")
        )
    });
    Ok(Plan {
        config,
        data,
        device: request.device,
        weights: StartingWeights::File { path: request.from.join(run_dir::WEIGHTS_FILE), except: head_tensors },
        run_dir: RunDirectory::New(request.out.clone()),
        origin: Origin::FineTuned { parent: request.from.clone(), note },
        save_initial: request.save_initial,
    })
}
