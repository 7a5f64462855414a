//! A new run: the config from the flags, the weights drawn from the run's seed.

use super::{DataRequest, NewRunDir, Origin, Plan, RunDirectory, StartingWeights, check_settings, data_info};
use crate::device::device_name;
use crate::model::{Arch, ModelConfig};
use crate::run_dir::{RunConfig, ToolInfo, TrainConfig};
use anyhow::Result;
use tch::Device;

/// `mnist-tch train`: a model from scratch.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub data: DataRequest,
    /// Output units; every label must be below it (with `--labels`: their number instead).
    pub num_classes: usize,
    pub arch: Arch,
    /// The MLP's hidden widths (default: the Keras tutorial's 128).
    pub hidden: Option<Vec<i64>>,
    /// Default: the architecture's (0, or 0.5 for the convnet).
    pub dropout: Option<f64>,
    pub training: TrainConfig,
    pub device: Device,
    pub out: NewRunDir,
    pub save_initial: bool,
}

/// Loads the data and builds the config of a new run; nothing is written.
pub fn plan_new_run(request: &NewRun) -> Result<Plan> {
    let data = request.data.load(request.num_classes)?;
    let hidden = match (request.arch, &request.hidden) {
        (Arch::Mlp, None) => vec![128],
        (_, hidden) => hidden.clone().unwrap_or_default(),
    };
    let model = ModelConfig::new(
        request.arch,
        [data.image_rows as i64, data.image_cols as i64],
        hidden,
        data.num_classes as i64,
        request.dropout.unwrap_or(request.arch.default_dropout()),
    )?;
    let config = RunConfig {
        tool: ToolInfo::default(),
        model,
        data: data_info(&request.data, &data),
        training: TrainConfig { device: device_name(request.device), ..request.training.clone() },
        lineage: None,
        state: Default::default(),
        result: None,
    };
    check_settings(&config, &data)?;
    Ok(Plan {
        config,
        data,
        device: request.device,
        weights: StartingWeights::Seeded,
        run_dir: RunDirectory::New(request.out.clone()),
        origin: Origin::New,
        save_initial: request.save_initial,
    })
}
