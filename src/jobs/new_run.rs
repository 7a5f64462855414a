//! A new run: the config from the flags, the weights drawn from the run's seed.

use super::{DataRequest, NewRunDir, Origin, Plan, RunDirectory, StartingWeights, check_settings, data_info};
use crate::augment;
use crate::data::TrainingData;
use crate::device::device_name;
use crate::error_text::UsageError;
use crate::frame::Frame;
use crate::model::{Arch, ModelConfig};
use crate::run_dir::{RunConfig, ShiftRule, ToolInfo, TrainConfig};
use crate::vit::VitFlags;
use anyhow::{Context, Result, bail};
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
    /// `--arch vit`'s sizes (default: `VitConfig`'s).
    pub vit: VitFlags,
    pub training: TrainConfig,
    /// How far the training pictures move; `training.random_shift` is settled from it on the data.
    pub random_shift: ShiftRule,
    pub device: Device,
    pub out: NewRunDir,
    pub save_initial: bool,
}

/// The model `train` builds from its flags for images of `frame`: `hidden` defaults to the Keras
/// tutorial's `[128]` for an MLP (none otherwise), `dropout` to the architecture's
/// ([`Arch::default_dropout`]). `mnist-tch describe --arch ...` prints it for scripts.
pub fn new_model(
    arch: Arch,
    frame: Frame,
    hidden: Option<Vec<i64>>,
    num_classes: i64,
    dropout: Option<f64>,
    vit: VitFlags,
) -> Result<ModelConfig> {
    let hidden = match (arch, hidden) {
        (Arch::Mlp, None) => vec![128],
        (_, hidden) => hidden.unwrap_or_default(),
    };
    if let Some(flag) = vit.first_given().filter(|_| arch != Arch::Vit) {
        bail!(UsageError(format!("{flag} applies to --arch vit, not {}", arch.name())));
    }
    let vit = (arch == Arch::Vit).then(|| vit.config());
    ModelConfig::build(arch, frame, hidden, num_classes, dropout.unwrap_or(arch.default_dropout()), vit)
}

/// The pixels the training pictures of `data` move by: `shift`'s own number, or, for the ViT's default,
/// its pixels where the moves lose almost no ink ([`augment::ink_in_border`]) and none where the pictures
/// fill their frame — said in a header line.
fn settle_shift(shift: ShiftRule, data: &mut TrainingData) -> Result<usize> {
    let ShiftRule::WhereNothingIsLost { pixels } = shift else { return Ok(shift.most()) };
    let lost = augment::ink_in_border(&data.train.images, data.frame, pixels)
        .context("measuring the training pictures' border for the default random shift")?;
    let (moved, reason) = if lost < augment::LOST_INK_LIMIT {
        (pixels, "they lie inside an empty border".to_string())
    } else {
        (0, format!("they fill their frame; --random-shift {pixels} moves them anyway"))
    };
    data.notes.push(format!(
        "Random shift: {moved} (the training pictures have {:.2}% of their ink in the outer {pixels}-pixel ring: {reason})",
        100.0 * lost
    ));
    Ok(moved)
}

/// Loads the data and builds the config of a new run; nothing is written.
pub fn plan_new_run(request: &NewRun) -> Result<Plan> {
    let mut data = request.data.load(request.num_classes)?;
    crate::data::check_frame(&request.data.path, data.frame, &request.data.reading)?;
    let random_shift = settle_shift(request.random_shift, &mut data)?;
    let model = new_model(
        request.arch,
        data.frame,
        request.hidden.clone(),
        data.num_classes as i64,
        request.dropout,
        request.vit,
    )?;
    let config = RunConfig {
        tool: ToolInfo::default(),
        model,
        data: data_info(&request.data, &data),
        training: TrainConfig { device: device_name(request.device), random_shift, ..request.training.clone() },
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
