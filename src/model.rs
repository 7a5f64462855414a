//! The networks mnist-tch builds, and their description in `config.json`.
//!
//! A model is chosen by its architecture (`--arch`): the Keras tutorial's Flatten → Dense(128, relu) → Dense(10)
//! MLP (any list of hidden widths), a linear model (softmax regression, *y = Wx + b* alone), or Keras's
//! "Simple MNIST convnet". From those few parameters [`ModelConfig`] derives the full layer list, spelled
//! the way PyTorch's `nn.Sequential` spells it (`{"type": "Linear", "in_features": 784, ...}`), and
//! `config.json` stores both: the parameters, which the model is rebuilt from, and the layer list, which
//! Python rebuilds the same module from (`scripts/common.py`) and which must agree with the parameters.
//!
//! Variables are named by the layer's index in that `nn.Sequential`: `1.weight` `[128, 784]`,
//! `1.bias`, `3.weight` `[10, 128]`, `3.bias` for the tutorial's model — so `model.safetensors` loads into the
//! PyTorch module with `load_state_dict` unchanged.
//!
//! Every network ends in logits. Training applies cross-entropy to them (the numerically stable form
//! of softmax followed by sparse categorical cross-entropy); the softmax belongs to inference.

use crate::error_text::UsageError;
use crate::frame::Frame;
use crate::vit::{Vit, VitConfig};
use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Largest model accepted: 10⁹ parameters, 4 GB of float32 weights (Adam needs three times that again).
pub const MAX_PARAMETERS: i64 = 1_000_000_000;

/// The architectures `--arch` offers, each described in [`Arch::HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[default]
    Mlp,
    Linear,
    Cnn,
    Vit,
}

crate::spelling::named_values!(Arch, "architecture", {
    Mlp => "mlp": "Flatten → Dense(hidden, relu)... → Dense(classes): the Keras tutorial's model (--hidden 128)",
    Linear => "linear": "Flatten → Dense(classes): softmax regression, the tutorial's y = Wx + b alone",
    Cnn => "cnn": "Keras's \"Simple MNIST convnet\": Conv2D(32, 3x3, relu) → MaxPool(2) → Conv2D(64, 3x3, relu) → \
        MaxPool(2) → Flatten → Dropout(0.5) → Dense(classes)",
    Vit => "vit": "Vision Transformer: patch embedding, class token, pre-norm self-attention blocks, linear head \
        (--patch --width --depth --heads --mlp-ratio)",
});

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mlp => "MLP",
            Arch::Linear => "linear",
            Arch::Cnn => "CNN",
            Arch::Vit => "ViT",
        }
    }

    /// The dropout rate when `--dropout` is not given: 0 (the Keras tutorial), 0.5 for the convnet (Keras's).
    pub fn default_dropout(self) -> f64 {
        match self {
            Arch::Cnn => 0.5,
            Arch::Mlp | Arch::Linear | Arch::Vit => 0.0,
        }
    }
}

/// One layer of the network, named and parameterised as in PyTorch's `torch.nn`, so that
/// `getattr(nn, type)(**arguments)` builds it in Python.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Layer {
    /// `[N, ...]` → `[N, features]`.
    Flatten,
    /// `[N, c*h*w]` → `[N, c, h, w]` (`dim` is always 1).
    Unflatten {
        dim: i64,
        unflattened_size: [i64; 3],
    },
    Linear {
        in_features: i64,
        out_features: i64,
    },
    Conv2d {
        in_channels: i64,
        out_channels: i64,
        kernel_size: i64,
    },
    #[serde(rename = "ReLU")]
    Relu,
    MaxPool2d {
        kernel_size: i64,
    },
    /// Active only while training.
    Dropout {
        p: f64,
    },
}

impl Layer {
    /// Trainable parameters (weight and bias), `None` on overflow.
    pub fn parameters(&self) -> Option<i64> {
        match *self {
            Layer::Linear { in_features, out_features } => {
                in_features.checked_mul(out_features)?.checked_add(out_features)
            }
            Layer::Conv2d { in_channels, out_channels, kernel_size } => in_channels
                .checked_mul(out_channels)?
                .checked_mul(kernel_size.checked_mul(kernel_size)?)?
                .checked_add(out_channels),
            _ => Some(0),
        }
    }

    /// Whether the layer has `weight` and `bias` tensors.
    pub fn has_weights(&self) -> bool {
        matches!(self, Layer::Linear { .. } | Layer::Conv2d { .. })
    }

    /// The type as PyTorch names it, with the rate for dropout (`Dropout 0.5`).
    pub fn type_name(&self) -> String {
        match self {
            Layer::Flatten => "Flatten".into(),
            Layer::Unflatten { .. } => "Unflatten".into(),
            Layer::Linear { .. } => "Linear".into(),
            Layer::Conv2d { .. } => "Conv2d".into(),
            Layer::Relu => "ReLU".into(),
            Layer::MaxPool2d { .. } => "MaxPool2d".into(),
            Layer::Dropout { p } => format!("Dropout {p}"),
        }
    }

    /// The shape of one example after this layer, given its shape before.
    fn output_shape(&self, input: &[i64]) -> Result<Vec<i64>> {
        let features: i64 = input.iter().product();
        Ok(match *self {
            Layer::Flatten => vec![features],
            Layer::Unflatten { unflattened_size, .. } => {
                ensure!(
                    unflattened_size.iter().product::<i64>() == features,
                    "cannot unflatten {features} features into {unflattened_size:?}"
                );
                unflattened_size.to_vec()
            }
            Layer::Linear { in_features, out_features } => {
                ensure!(input == [in_features], "a Linear layer of {in_features} inputs gets {input:?}");
                vec![out_features]
            }
            Layer::Conv2d { in_channels, out_channels, kernel_size } => match *input {
                [c, h, w] if c == in_channels && h >= kernel_size && w >= kernel_size => {
                    vec![out_channels, h - kernel_size + 1, w - kernel_size + 1]
                }
                _ => bail!("a {kernel_size}x{kernel_size} Conv2d of {in_channels} channels gets {input:?}"),
            },
            Layer::MaxPool2d { kernel_size } => match *input {
                [c, h, w] if h >= kernel_size && w >= kernel_size => vec![c, h / kernel_size, w / kernel_size],
                _ => bail!("a {kernel_size}x{kernel_size} MaxPool2d gets {input:?}"),
            },
            Layer::Relu | Layer::Dropout { .. } => input.to_vec(),
        })
    }
}

/// A Dense layer of an MLP, as the fused engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    /// Variable-store prefix: the layer's index in the `nn.Sequential`.
    pub name: String,
    pub inputs: i64,
    pub outputs: i64,
    /// Followed by a ReLU (every Dense layer but the output layer).
    pub relu: bool,
}

/// The architecture, as stored in a run's `config.json`; the model is always rebuilt from it.
/// Build one with [`ModelConfig::new`]; `layers` is derived from the other fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredModelConfig")]
pub struct ModelConfig {
    pub arch: Arch,
    /// Image height and width.
    pub input_shape: [i64; 2],
    /// Colour channels of the frame (1: grey, 3: RGB); written only when not 1, so grey runs' files are
    /// as they always were. [`ModelConfig::frame`] gives the whole frame.
    #[serde(skip_serializing_if = "is_one")]
    pub channels: i64,
    /// Width of each hidden Dense+ReLU layer of an MLP, in order (the Keras tutorial: `[128]`); empty otherwise.
    pub hidden: Vec<i64>,
    /// Width of the output layer.
    pub num_classes: i64,
    /// Dropout rate during training: after each hidden ReLU of an MLP, before the convnet's Dense layer.
    pub dropout: f64,
    /// The `nn.Sequential` these parameters make, for readers of `config.json` (empty for a ViT).
    layers: Vec<Layer>,
    /// The ViT's patch, width, depth, heads and MLP ratio (`--arch vit` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vit: Option<VitConfig>,
}

/// `config.json`'s `model` as written, before it is checked: runs of earlier versions have no `arch`
/// (they are MLPs) and no `layers`.
#[derive(Deserialize)]
struct StoredModelConfig {
    #[serde(default)]
    arch: Arch,
    input_shape: [i64; 2],
    #[serde(default = "one")]
    channels: i64,
    #[serde(default)]
    hidden: Vec<i64>,
    num_classes: i64,
    #[serde(default)]
    dropout: f64,
    #[serde(default)]
    layers: Option<Vec<Layer>>,
    #[serde(default)]
    vit: Option<VitConfig>,
}

impl TryFrom<StoredModelConfig> for ModelConfig {
    type Error = anyhow::Error;

    fn try_from(stored: StoredModelConfig) -> Result<ModelConfig> {
        let StoredModelConfig { arch, input_shape: [rows, cols], channels, hidden, num_classes, dropout, vit, .. } =
            stored;
        let frame = Frame { channels, rows, cols };
        let config = ModelConfig::build(arch, frame, hidden, num_classes, dropout, vit)?;
        if let Some(layers) = stored.layers {
            ensure!(
                layers == config.layers,
                "its \"layers\" do not match the {} its other fields describe (edited by hand?)",
                config.describe()
            );
        }
        Ok(config)
    }
}

fn is_one(n: &i64) -> bool {
    *n == 1
}

fn one() -> i64 {
    1
}

impl Default for ModelConfig {
    /// The Keras tutorial's model: 28x28 → 128 (relu) → 10.
    fn default() -> Self {
        let layers = mlp_layers(784, &[128], 10, 0.0);
        ModelConfig {
            arch: Arch::Mlp,
            input_shape: [28, 28],
            channels: 1,
            hidden: vec![128],
            num_classes: 10,
            dropout: 0.0,
            layers,
            vit: None,
        }
    }
}

fn mlp_layers(inputs: i64, hidden: &[i64], num_classes: i64, dropout: f64) -> Vec<Layer> {
    let widths: Vec<i64> = std::iter::once(inputs).chain(hidden.iter().copied()).chain([num_classes]).collect();
    let mut layers = vec![Layer::Flatten];
    for (i, pair) in widths.windows(2).enumerate() {
        layers.push(Layer::Linear { in_features: pair[0], out_features: pair[1] });
        if i + 2 < widths.len() {
            layers.push(Layer::Relu);
            if dropout > 0.0 {
                layers.push(Layer::Dropout { p: dropout });
            }
        }
    }
    layers
}

/// Keras's Simple MNIST convnet in PyTorch's terms. The leading Flatten + Unflatten accept `[N, 28, 28]`,
/// `[N, 1, 28, 28]` and `[N, 784]` alike (`[N, C, H, W]` and `[N, C*H*W]` for a colour frame), the input
/// contract of every mnist-tch model.
fn cnn_layers(frame: Frame, num_classes: i64, dropout: f64) -> Vec<Layer> {
    let Frame { channels, rows, cols } = frame;
    let (conv1, conv2, kernel, pool) = (32, 64, 3, 2);
    let side = |n: i64| ((n - kernel + 1) / pool - kernel + 1) / pool;
    let mut layers = vec![
        Layer::Flatten,
        Layer::Unflatten { dim: 1, unflattened_size: [channels, rows, cols] },
        Layer::Conv2d { in_channels: channels, out_channels: conv1, kernel_size: kernel },
        Layer::Relu,
        Layer::MaxPool2d { kernel_size: pool },
        Layer::Conv2d { in_channels: conv1, out_channels: conv2, kernel_size: kernel },
        Layer::Relu,
        Layer::MaxPool2d { kernel_size: pool },
        Layer::Flatten,
    ];
    if dropout > 0.0 {
        layers.push(Layer::Dropout { p: dropout });
    }
    layers
        .push(Layer::Linear { in_features: conv2 * side(rows).max(0) * side(cols).max(0), out_features: num_classes });
    layers
}

impl ModelConfig {
    /// The model of `arch` for grey images of `input_shape` (rows, cols); see [`ModelConfig::for_frame`].
    pub fn new(arch: Arch, input_shape: [i64; 2], hidden: Vec<i64>, num_classes: i64, dropout: f64) -> Result<Self> {
        ModelConfig::build(arch, Frame::grey(input_shape[0], input_shape[1]), hidden, num_classes, dropout, None)
    }

    /// The model of `arch` for images of `frame` and `num_classes` classes, with the ViT's description,
    /// which `--arch vit` needs and the others refuse; checked: sizes positive, at most
    /// [`MAX_PARAMETERS`], and every layer fitting the one before.
    pub fn build(
        arch: Arch,
        frame: Frame,
        hidden: Vec<i64>,
        num_classes: i64,
        dropout: f64,
        vit: Option<VitConfig>,
    ) -> Result<Self> {
        let input_shape = [frame.rows, frame.cols];
        ensure!(input_shape.iter().all(|&d| d > 0), "input shape {input_shape:?} must be positive");
        ensure!(
            crate::frame::CHANNELS.contains(&frame.channels),
            "a frame of {} channels: pictures are read as 1 (grey) or 3 (RGB)",
            frame.channels
        );
        ensure!(hidden.iter().all(|&w| w > 0), "hidden layer widths {hidden:?} must be positive");
        ensure!(num_classes >= 2, "a classifier needs at least 2 classes, got {num_classes}");
        ensure!((0.0..1.0).contains(&dropout), "dropout {dropout} must be in [0, 1)");
        match arch {
            Arch::Mlp => ensure!(!hidden.is_empty(), "an MLP needs at least one hidden layer (--arch linear has none)"),
            Arch::Linear | Arch::Cnn | Arch::Vit if !hidden.is_empty() => {
                bail!(UsageError(format!("--hidden applies to --arch mlp, not {}", arch.name())));
            }
            Arch::Linear | Arch::Cnn | Arch::Vit => {}
        }
        if arch == Arch::Linear && dropout != 0.0 {
            bail!(UsageError("--dropout applies to --arch mlp and cnn, not linear".into()));
        }
        let inputs = frame.values().filter(|&n| n <= MAX_PARAMETERS);
        let Some(inputs) = inputs else { bail!("input shape {input_shape:?} is too large") };
        ensure!(vit.is_some() == (arch == Arch::Vit), "--arch vit and only it has a ViT description");
        let layers = match arch {
            Arch::Mlp | Arch::Linear => mlp_layers(inputs, &hidden, num_classes, dropout),
            Arch::Cnn => cnn_layers(frame, num_classes, dropout),
            Arch::Vit => vec![],
        };
        let config =
            ModelConfig { arch, input_shape, channels: frame.channels, hidden, num_classes, dropout, layers, vit };
        if let Some(vit) = &config.vit {
            vit.check(frame)?;
        }
        let parameters = match &config.vit {
            Some(vit) => vit.parameters(frame, num_classes),
            None => config.layers.iter().try_fold(0i64, |total, l| total.checked_add(l.parameters()?)),
        };
        ensure!(
            parameters.is_some_and(|p| p <= MAX_PARAMETERS),
            "a {} has {} parameters, more than the {MAX_PARAMETERS} this tool trains (4 GB of float32 weights)",
            config.describe(),
            parameters.map_or("too many".to_string(), |p| p.to_string())
        );
        config
            .output_shapes()
            .map_err(|err| anyhow::anyhow!("a {} does not fit {} images: {err}", arch.name(), frame.size_text()))?;
        Ok(config)
    }

    /// The same architecture with another number of classes (a new head, for fine-tuning).
    pub fn with_classes(&self, num_classes: i64) -> Result<ModelConfig> {
        ModelConfig::build(self.arch, self.frame(), self.hidden.clone(), num_classes, self.dropout, self.vit)
    }

    /// The frame the model takes: channels, rows, columns. Every architecture builds from it.
    pub fn frame(&self) -> Frame {
        Frame { channels: self.channels, rows: self.input_shape[0], cols: self.input_shape[1] }
    }

    /// The layers of the equivalent PyTorch `nn.Sequential`, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Values per example: `channels * rows * cols`.
    pub fn input_dim(&self) -> i64 {
        self.frame().values().unwrap_or(0)
    }

    /// Each layer's output shape for one example (`[features]` or `[channels, rows, cols]`).
    pub fn output_shapes(&self) -> Result<Vec<Vec<i64>>> {
        let frame = self.frame();
        let mut shape = if frame.channels == 1 { self.input_shape.to_vec() } else { frame.dims().to_vec() };
        let mut shapes = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            shape = layer.output_shape(&shape).map_err(|err| anyhow::anyhow!("layer {index}: {err}"))?;
            shapes.push(shape.clone());
        }
        Ok(shapes)
    }

    /// The names of the layers that have weights (`"1"`, `"3"`, ...), in order; the last is the head.
    pub fn weight_layers(&self) -> Vec<String> {
        if let Some(vit) = &self.vit {
            let mut names: Vec<String> =
                vit.parts(self.frame(), self.num_classes).into_iter().map(|p| p.name).collect();
            names.iter_mut().for_each(|n| *n = n.split('.').next().unwrap_or_default().to_string());
            names.dedup();
            return names;
        }
        self.layers.iter().enumerate().filter(|(_, l)| l.has_weights()).map(|(i, _)| i.to_string()).collect()
    }

    /// The names of the model's tensors (`"1.bias"`, `"1.weight"`, ...), sorted as strings, the way a
    /// `VarStore` built by [`init`](Self::init) names them.
    pub fn tensor_names(&self) -> Vec<String> {
        if let Some(vit) = &self.vit {
            let parts = vit.parts(self.frame(), self.num_classes);
            let mut names: Vec<String> = parts.into_iter().flat_map(|p| p.tensors).map(|(name, _)| name).collect();
            names.sort();
            return names;
        }
        let mut names: Vec<String> = self
            .weight_layers()
            .iter()
            .flat_map(|layer| [format!("{layer}.weight"), format!("{layer}.bias")])
            .collect();
        names.sort();
        names
    }

    /// The Dense layers of an MLP or linear model, for the fused engine; `None` for other architectures.
    pub fn dense_layers(&self) -> Option<Vec<DenseLayer>> {
        if matches!(self.arch, Arch::Cnn | Arch::Vit) {
            return None;
        }
        let mut dense: Vec<DenseLayer> = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            match *layer {
                Layer::Linear { in_features, out_features } => dense.push(DenseLayer {
                    name: index.to_string(),
                    inputs: in_features,
                    outputs: out_features,
                    relu: false,
                }),
                Layer::Relu => dense.last_mut()?.relu = true,
                Layer::Flatten | Layer::Dropout { .. } => {}
                _ => return None,
            }
        }
        Some(dense)
    }

    /// Trainable parameters of every layer.
    pub fn parameter_count(&self) -> i64 {
        if let Some(vit) = &self.vit {
            return vit.parameters(self.frame(), self.num_classes).unwrap_or(i64::MAX);
        }
        self.layers.iter().map(|l| l.parameters().unwrap_or(0)).sum()
    }

    /// A short human description: `784-128-10 MLP`, `784-10 linear`, `28x28 CNN (32, 64 filters)`.
    pub fn describe(&self) -> String {
        match self.arch {
            Arch::Mlp | Arch::Linear => {
                let widths: Vec<String> = std::iter::once(self.input_dim())
                    .chain(self.hidden.iter().copied())
                    .chain([self.num_classes])
                    .map(|w| w.to_string())
                    .collect();
                format!("{} {}", widths.join("-"), self.arch.name())
            }
            Arch::Cnn => {
                let filters: Vec<String> = self
                    .layers
                    .iter()
                    .filter_map(|l| match l {
                        Layer::Conv2d { out_channels, .. } => Some(out_channels.to_string()),
                        _ => None,
                    })
                    .collect();
                format!(
                    "{} CNN ({} filters, {} classes)",
                    self.frame().size_text(),
                    filters.join(", "),
                    self.num_classes
                )
            }
            Arch::Vit => self.vit.map_or_else(|| "ViT".into(), |vit| vit.describe(self.frame())),
        }
    }
}

/// Keras-style `model.summary()`: each layer of the equivalent PyTorch `nn.Sequential` with its output
/// shape and parameter count, then the totals — trainable and frozen (`frozen` lists frozen tensor names,
/// as a fine-tuned run records them) — with the weights' size in bytes (float32).
pub fn summary(config: &ModelConfig, title: &str, frozen: &[String]) -> String {
    let (rows, frozen_params) = match &config.vit {
        Some(vit) => vit_rows(vit, config, frozen),
        None => layer_rows(config, frozen),
    };
    let total = config.parameter_count();
    let rule = "─".repeat(58);
    let mut text = format!("Model: {title} ({})\n", config.describe());
    text += &format!("{rule}\n {:<22} {:<21} {:>11}\n{rule}\n", "Layer (type)", "Output shape", "Param #");
    for (name, shape, params) in rows {
        text += &format!(" {name:<22} {shape:<21} {:>11}\n", group_thousands(params));
    }
    text += &format!("{rule}\n");
    text += &format!(" Total params: {} ({})\n", group_thousands(total), float32_size(total));
    let trainable = total - frozen_params;
    text += &format!(" Trainable params: {} ({})\n", group_thousands(trainable), float32_size(trainable));
    text += &format!(" Non-trainable params: {} ({})\n", group_thousands(frozen_params), float32_size(frozen_params));
    text
}

/// A summary row: the layer's name and type, its output shape, its parameters.
type SummaryRow = (String, String, i64);

fn shape_text(shape: &[i64]) -> String {
    format!("(None, {})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// The ViT's pieces as summary rows, and how many of their parameters are `frozen`.
fn vit_rows(vit: &VitConfig, config: &ModelConfig, frozen: &[String]) -> (Vec<SummaryRow>, i64) {
    let parts = vit.parts(config.frame(), config.num_classes);
    let frozen_params = parts.iter().flat_map(|p| &p.tensors).filter(|(n, _)| frozen.contains(n)).map(|(_, c)| c).sum();
    let rows = parts
        .iter()
        .map(|p| (format!("{} ({})", p.name, p.kind), shape_text(&p.shape), p.tensors.iter().map(|(_, c)| c).sum()))
        .collect();
    (rows, frozen_params)
}

/// The `nn.Sequential`'s layers as summary rows, and how many of their parameters are `frozen`.
fn layer_rows(config: &ModelConfig, frozen: &[String]) -> (Vec<SummaryRow>, i64) {
    let shapes = config.output_shapes().unwrap_or_default();
    let mut rows = Vec::new();
    let mut frozen_params = 0;
    for (index, layer) in config.layers().iter().enumerate() {
        let params = layer.parameters().unwrap_or(0);
        if layer.has_weights() {
            let weight = params - bias_len(layer);
            for (tensor, count) in [(format!("{index}.weight"), weight), (format!("{index}.bias"), bias_len(layer))] {
                if frozen.contains(&tensor) {
                    frozen_params += count;
                }
            }
        }
        let shape = shapes.get(index).map_or(String::new(), |s| shape_text(s));
        rows.push((format!("{index} ({})", layer.type_name()), shape, params));
    }
    (rows, frozen_params)
}

fn bias_len(layer: &Layer) -> i64 {
    match *layer {
        Layer::Linear { out_features, .. } => out_features,
        Layer::Conv2d { out_channels, .. } => out_channels,
        _ => 0,
    }
}

/// `101770` → `101,770`.
fn group_thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The size of `params` float32 values, as Keras prints it.
fn float32_size(params: i64) -> String {
    let bytes = params as f64 * 4.0;
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MB", bytes / 1024.0 / 1024.0)
    } else if bytes >= 1024.0 {
        format!("{:.2} KB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

/// Parses `--hidden`: a comma-separated list of positive widths such as `128` or `512,256`.
pub fn parse_hidden(spec: &str) -> Result<Vec<i64>, String> {
    spec.split(',')
        .map(|part| match part.trim().parse::<i64>() {
            Ok(width) if width > 0 => Ok(width),
            _ => Err(format!("'{spec}' is not a comma-separated list of positive layer widths (e.g. 128 or 512,256)")),
        })
        .collect()
}

/// How the layers' weights start, recorded in words in `config.json` (`training.weight_init`) so that
/// whoever reads the file knows the distribution they were drawn from. One scheme today: `pytorch_init`
/// below, which the PyTorch modules of `scripts/common.py` use by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightInit {
    /// PyTorch's default for `nn.Linear` and `nn.Conv2d`: kaiming-uniform with a = √5.
    #[default]
    PytorchDefault,
}

impl WeightInit {
    const ALL: [WeightInit; 1] = [WeightInit::PytorchDefault];

    /// Its sentence in `config.json`, as runs have always recorded it.
    pub fn sentence(self) -> &'static str {
        match self {
            WeightInit::PytorchDefault => {
                "pytorch (kaiming-uniform a=sqrt(5): weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)))"
            }
        }
    }
}

impl std::fmt::Display for WeightInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sentence())
    }
}

/// The sentence of a scheme; any other text is said to be unknown, naming the one expected.
impl std::str::FromStr for WeightInit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        WeightInit::ALL.into_iter().find(|init| init.sentence() == s).ok_or_else(|| {
            let known: Vec<String> = WeightInit::ALL.iter().map(|init| format!("\"{init}\"")).collect();
            format!("is \"{s}\", expected {} (the weight initialisations mnist-tch knows)", known.join(" or "))
        })
    }
}

// Stored in config.json as its sentence.
impl Serialize for WeightInit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.sentence())
    }
}

impl<'de> Deserialize<'de> for WeightInit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// PyTorch's default initialisation of `nn.Linear` and `nn.Conv2d` (kaiming-uniform with a = √5, which
/// comes to U(−1/√fan_in, 1/√fan_in), for the weight and the bias alike). tch's own default is
/// kaiming-uniform with the ReLU gain, √6 times wider; PyTorch's is used so the Python baseline starts
/// from the same distribution.
fn pytorch_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// A model ready to train or to run: tch's pair of the variables and the module that computes the logits.
pub struct Network {
    pub vs: nn::VarStore,
    pub net: nn::SequentialT,
}

impl Network {
    /// The model of `config` on `device`, its weights drawn by PyTorch's default initialisation from
    /// libtorch's generator (seed it first for a reproducible start).
    pub fn init(config: &ModelConfig, device: tch::Device) -> Network {
        let vs = nn::VarStore::new(device);
        let net = config.init(&vs.root());
        Network { vs, net }
    }
}

impl ModelConfig {
    /// Builds the model under `vs` (burn's `ModelConfig::init`). Input `[N, rows, cols]`,
    /// `[N, 1, rows, cols]` or `[N, rows*cols]`, output logits `[N, classes]`. Dropout acts only when
    /// `forward_t` is told it trains.
    ///
    /// One reordering, exact in values and gradients: a ReLU followed by a max-pool runs as the max-pool
    /// followed by the ReLU (`max(relu(x)) = relu(max(x))`, and both route the gradient to the same
    /// element or to none), so the ReLU and its backward pass touch a quarter of the elements. Measured
    /// on the convnet (batch 32, 2 threads): about 20% of a training step.
    pub fn init(&self, vs: &nn::Path) -> nn::SequentialT {
        let mut net = nn::seq_t();
        if let Some(vit) = &self.vit {
            return net.add(Vit::new(vs, vit, self.frame(), self.num_classes, self.dropout));
        }
        let layers = self.layers();
        for (index, layer) in layers.iter().enumerate() {
            let path = vs / index;
            net = match *layer {
                Layer::Relu if matches!(layers.get(index + 1), Some(Layer::MaxPool2d { .. })) => continue,
                Layer::MaxPool2d { kernel_size } if index > 0 && layers[index - 1] == Layer::Relu => {
                    net.add_fn(move |xs| xs.max_pool2d_default(kernel_size).relu())
                }
                Layer::Flatten => net.add_fn(|xs| xs.flatten(1, -1)),
                Layer::Unflatten { unflattened_size: [c, h, w], .. } => net.add_fn(move |xs| xs.view([-1, c, h, w])),
                Layer::Linear { in_features, out_features } => {
                    let init = pytorch_init(in_features);
                    let config = nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true };
                    net.add(nn::linear(path, in_features, out_features, config))
                }
                Layer::Conv2d { in_channels, out_channels, kernel_size } => {
                    let init = pytorch_init(in_channels * kernel_size * kernel_size);
                    let config = nn::ConvConfig { ws_init: init, bs_init: init, ..Default::default() };
                    net.add(nn::conv2d(path, in_channels, out_channels, kernel_size, config))
                }
                Layer::Relu => net.add_fn(|xs| xs.relu()),
                Layer::MaxPool2d { kernel_size } => net.add_fn(move |xs| xs.max_pool2d_default(kernel_size)),
                Layer::Dropout { p } => net.add_fn_t(move |xs, train| xs.dropout(p, train)),
            };
        }
        net
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor, nn::ModuleT};

    fn mlp(input: [i64; 2], hidden: &[i64], classes: i64, dropout: f64) -> ModelConfig {
        ModelConfig::new(Arch::Mlp, input, hidden.to_vec(), classes, dropout).unwrap()
    }

    fn variables(vs: &nn::VarStore) -> Vec<(String, Vec<i64>)> {
        let mut vars: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(name, t)| (name, t.size())).collect();
        vars.sort();
        vars
    }

    /// `(name, shape)` pairs as [`variables`] gives them.
    fn named_shapes(pairs: &[(&str, &[i64])]) -> Vec<(String, Vec<i64>)> {
        pairs.iter().map(|(name, shape)| (name.to_string(), shape.to_vec())).collect()
    }

    #[test]
    fn seed_model_has_pytorch_sequential_names_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = ModelConfig::default();
        assert_eq!(config, mlp([28, 28], &[128], 10, 0.0));
        let net = config.init(&vs.root());
        assert_eq!(
            variables(&vs),
            named_shapes(&[("1.bias", &[128]), ("1.weight", &[128, 784]), ("3.bias", &[10]), ("3.weight", &[10, 128])])
        );
        assert_eq!(config.parameter_count(), 101_770);
        let logits = net.forward_t(&Tensor::zeros([5, 28, 28], (Kind::Float, Device::Cpu)), false);
        assert_eq!(logits.size(), vec![5, 10]);
    }

    #[test]
    fn initialisation_is_pytorchs_not_tchs() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = ModelConfig::default().init(&vs.root());
        let weight = &vs.variables()["1.weight"];
        let bound = 1.0 / 784f64.sqrt();
        let max = weight.abs().max().double_value(&[]);
        // 100,352 draws from U(-bound, bound) reach within 0.1% of it; tch's default reaches sqrt(6) * bound.
        assert!(max <= bound && max > 0.999 * bound, "max |w| {max}, bound {bound}");
    }

    #[test]
    fn deeper_models_interleave_relu_and_dropout_indices() {
        let config = mlp([4, 4], &[8, 6], 3, 0.0);
        let names: Vec<_> = config.dense_layers().unwrap().into_iter().map(|l| (l.name, l.relu)).collect();
        assert_eq!(names, vec![("1".into(), true), ("3".into(), true), ("5".into(), false)]);
        assert_eq!(config.describe(), "16-8-6-3 MLP");
        // nn.Sequential(Flatten, Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear)
        assert_eq!(mlp([4, 4], &[8, 6], 3, 0.5).weight_layers(), vec!["1", "4", "7"]);
    }

    #[test]
    fn linear_is_one_dense_layer() {
        let config = ModelConfig::new(Arch::Linear, [28, 28], vec![], 10, 0.0).unwrap();
        assert_eq!(config.layers(), &[Layer::Flatten, Layer::Linear { in_features: 784, out_features: 10 }]);
        assert_eq!(config.parameter_count(), 7_850);
        assert_eq!(config.describe(), "784-10 linear");
        assert_eq!(config.dense_layers().unwrap().len(), 1);
        assert!(ModelConfig::new(Arch::Linear, [28, 28], vec![64], 10, 0.0).is_err());
        assert!(ModelConfig::new(Arch::Linear, [28, 28], vec![], 10, 0.5).is_err());
    }

    #[test]
    fn cnn_is_kerass_simple_convnet() {
        let config = ModelConfig::new(Arch::Cnn, [28, 28], vec![], 10, 0.5).unwrap();
        assert_eq!(config.parameter_count(), 34_826);
        assert!(config.dense_layers().is_none(), "not for the fused engine");
        assert_eq!(config.weight_layers(), vec!["2", "5", "10"]);
        let shapes = config.output_shapes().unwrap();
        assert_eq!(shapes[2], vec![32, 26, 26]);
        assert_eq!(shapes[7], vec![64, 5, 5]);
        assert_eq!(shapes[10], vec![10]);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = config.init(&vs.root());
        let built: Vec<String> = variables(&vs).into_iter().map(|(name, _)| name).collect();
        assert_eq!(config.tensor_names(), built);
        assert_eq!(
            variables(&vs),
            named_shapes(&[
                ("10.bias", &[10]),
                ("10.weight", &[10, 1600]),
                ("2.bias", &[32]),
                ("2.weight", &[32, 1, 3, 3]),
                ("5.bias", &[64]),
                ("5.weight", &[64, 32, 3, 3]),
            ])
        );
        let images = Tensor::rand([3, 28, 28], (Kind::Float, Device::Cpu));
        let logits = net.forward_t(&images, false);
        assert_eq!(logits.size(), vec![3, 10]);
        for input in [images.view([3, 1, 28, 28]), images.view([3, 784])] {
            assert!(net.forward_t(&input, false).equal(&logits), "every input shape gives the same logits");
        }
        let small = ModelConfig::new(Arch::Cnn, [8, 8], vec![], 4, 0.5).unwrap_err().to_string();
        assert!(small.contains("does not fit 8x8 images"), "{small}");
        assert!(ModelConfig::new(Arch::Cnn, [12, 12], vec![], 4, 0.5).is_ok());
    }

    #[test]
    fn pooling_before_the_relu_changes_neither_values_nor_gradients() {
        let config = ModelConfig::new(Arch::Cnn, [12, 12], vec![], 3, 0.0).unwrap();
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = config.init(&vs.root());
        let vars = vs.variables();
        let (w1, b1, w2, b2, w3, b3) = (
            &vars["2.weight"],
            &vars["2.bias"],
            &vars["5.weight"],
            &vars["5.bias"],
            &vars["9.weight"],
            &vars["9.bias"],
        );
        // The layers in PyTorch's order, written out: conv, relu, pool, conv, relu, pool, flatten, linear.
        let in_order = |x: &Tensor| {
            let h =
                x.view([-1, 1, 12, 12]).conv2d(w1, Some(b1), [1, 1], [0, 0], [1, 1], 1).relu().max_pool2d_default(2);
            let h = h.conv2d(w2, Some(b2), [1, 1], [0, 0], [1, 1], 1).relu().max_pool2d_default(2);
            h.flatten(1, -1).linear(w3, Some(b3))
        };
        let x = Tensor::randn([6, 12, 12], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
        let gradients = |logits: Tensor| {
            let params: Vec<Tensor> = [w1, b1, w2, b2, w3, b3].iter().map(|t| t.shallow_clone()).collect();
            Tensor::run_backward(&[logits.cross_entropy_for_logits(&y)], &params, false, false)
        };
        let (ours, reference) = (net.forward_t(&x, false), in_order(&x));
        assert!(ours.equal(&reference), "logits differ");
        for (a, b) in gradients(ours).iter().zip(gradients(reference)) {
            assert!(a.equal(&b), "a gradient differs");
        }
    }

    #[test]
    fn config_json_round_trips_and_old_runs_load_as_mlps() {
        let cnn = ModelConfig::new(Arch::Cnn, [28, 28], vec![], 10, 0.5).unwrap();
        let json = serde_json::to_value(&cnn).unwrap();
        assert_eq!(
            json["layers"][2],
            serde_json::json!({"type": "Conv2d", "in_channels": 1, "out_channels": 32, "kernel_size": 3})
        );
        assert_eq!(json["layers"][3], serde_json::json!({"type": "ReLU"}));
        assert_eq!(serde_json::from_value::<ModelConfig>(json.clone()).unwrap(), cnn);
        let old = serde_json::json!({"input_shape": [28, 28], "hidden": [128], "num_classes": 10, "dropout": 0.0});
        assert_eq!(serde_json::from_value::<ModelConfig>(old).unwrap(), ModelConfig::default());
        let mut edited = json;
        edited["layers"][2]["out_channels"] = serde_json::json!(16);
        let err = serde_json::from_value::<ModelConfig>(edited).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
    }

    #[test]
    fn summary_counts_like_keras() {
        let text = summary(&ModelConfig::default(), "seed", &[]);
        assert!(text.contains("1 (Linear)") && text.contains("(None, 128)") && text.contains("100,480"), "{text}");
        assert!(text.contains("3 (Linear)") && text.contains("1,290"), "{text}");
        assert!(text.contains("Total params: 101,770 (397.54 KB)"), "{text}");
        assert!(text.contains("Non-trainable params: 0 (0 B)"), "{text}");
        let frozen = summary(&ModelConfig::default(), "ft", &["1.weight".into(), "1.bias".into()]);
        assert!(frozen.contains("Trainable params: 1,290 (5.04 KB)"), "{frozen}");
        assert!(frozen.contains("Non-trainable params: 100,480 (392.50 KB)"), "{frozen}");
        let cnn = summary(&ModelConfig::new(Arch::Cnn, [28, 28], vec![], 10, 0.5).unwrap(), "cnn", &[]);
        assert!(cnn.contains("2 (Conv2d)") && cnn.contains("(None, 32, 26, 26)") && cnn.contains("320"), "{cnn}");
        assert!(cnn.contains("5 (Conv2d)") && cnn.contains("18,496"), "{cnn}");
        assert!(cnn.contains("9 (Dropout 0.5)") && cnn.contains("Total params: 34,826"), "{cnn}");
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        let huge = ModelConfig::new(Arch::Mlp, [28, 28], vec![4_000_000_000, 4_000_000_000], 10, 0.0);
        assert!(huge.unwrap_err().to_string().contains("parameters"));
        assert!(ModelConfig::new(Arch::Mlp, [28, 28], vec![2_000_000], 10, 0.0).is_err());
        assert!(ModelConfig::new(Arch::Mlp, [28, 28], vec![1024, 1024, 512], 10, 0.0).is_ok());
        assert!(ModelConfig::new(Arch::Mlp, [i64::MAX, 2], vec![8], 10, 0.0).is_err());
    }

    #[test]
    fn hidden_spec_parses_or_explains() {
        assert_eq!(parse_hidden("512, 256").unwrap(), vec![512, 256]);
        assert!(parse_hidden("128,").is_err());
        assert!(parse_hidden("0").is_err());
        assert!(parse_hidden("abc").unwrap_err().contains("comma-separated"));
    }

    #[test]
    fn dropout_acts_in_training_only() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = mlp([4, 4], &[64], 3, 0.5).init(&vs.root());
        let x = Tensor::rand([8, 4, 4], (Kind::Float, Device::Cpu));
        let eval_a = net.forward_t(&x, false);
        let eval_b = net.forward_t(&x, false);
        assert!(eval_a.equal(&eval_b), "inference must be deterministic");
        assert!(!net.forward_t(&x, true).equal(&eval_a), "training must drop units");
    }

    #[test]
    fn weight_init_reads_and_writes_the_sentence_runs_have_always_recorded() {
        const SENTENCE: &str =
            "pytorch (kaiming-uniform a=sqrt(5): weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)))";
        let init = WeightInit::default();
        assert_eq!(init, WeightInit::PytorchDefault);
        assert_eq!(init.to_string(), SENTENCE);
        assert_eq!(SENTENCE.parse::<WeightInit>(), Ok(init));
        let json = serde_json::to_string(&init).unwrap();
        assert_eq!(json, serde_json::to_string(SENTENCE).unwrap());
        assert_eq!(serde_json::from_str::<WeightInit>(&json).unwrap(), init);
    }

    #[test]
    fn an_unknown_weight_init_is_refused_in_plain_words() {
        let err = "xavier".parse::<WeightInit>().unwrap_err();
        assert_eq!(
            err,
            "is \"xavier\", expected \"pytorch (kaiming-uniform a=sqrt(5): weight and bias U(-1/sqrt(fan_in), \
             1/sqrt(fan_in)))\" (the weight initialisations mnist-tch knows)"
        );
        let err = serde_json::from_str::<WeightInit>("\"pytorch\"").unwrap_err().to_string();
        assert!(err.starts_with("is \"pytorch\", expected \"pytorch (kaiming"), "{err}");
        assert!(serde_json::from_str::<WeightInit>("3").is_err());
    }
}
