//! The network: the seed's Flatten → Dense(128, relu) → Dense(10) MLP, generalised to any list of
//! hidden widths, and its description in `config.json`.
//!
//! Variables are named like the state dict of PyTorch's
//! `nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))`:
//! `1.weight` `[128, 784]`, `1.bias` `[128]`, `3.weight` `[10, 128]`, `3.bias` `[10]` — so
//! `model.safetensors` loads into that module in Python with `load_state_dict` unchanged.
//!
//! The network ends in logits. Training applies cross-entropy to them (the numerically stable form of
//! softmax followed by sparse categorical cross-entropy); the softmax belongs to inference.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Largest model accepted: 10⁹ parameters, 4 GB of float32 weights (Adam needs three times that again).
pub const MAX_PARAMETERS: i64 = 1_000_000_000;

/// The architecture, as stored in a run's `config.json`; the model is always rebuilt from this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Image height and width; the first layer flattens them to `rows * cols` inputs.
    pub input_shape: [i64; 2],
    /// Width of each hidden Dense+ReLU layer, in order (the seed: `[128]`).
    pub hidden: Vec<i64>,
    /// Width of the output layer.
    pub num_classes: i64,
    /// Dropout rate after each hidden layer's ReLU during training (0: none, the seed).
    #[serde(default)]
    pub dropout: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { input_shape: [28, 28], hidden: vec![128], num_classes: 10, dropout: 0.0 }
    }
}

/// One Dense layer as it appears in the variable store.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    /// Variable-store prefix: the layer's index in the equivalent PyTorch `nn.Sequential`.
    pub name: String,
    pub inputs: i64,
    pub outputs: i64,
    /// Followed by a ReLU (every layer but the output layer).
    pub relu: bool,
}

impl ModelConfig {
    pub fn input_dim(&self) -> i64 {
        self.input_shape[0] * self.input_shape[1]
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.input_shape.iter().all(|&d| d > 0), "input shape {:?} must be positive", self.input_shape);
        ensure!(self.hidden.iter().all(|&w| w > 0), "hidden layer widths {:?} must be positive", self.hidden);
        ensure!(self.num_classes >= 2, "a classifier needs at least 2 classes, got {}", self.num_classes);
        ensure!((0.0..1.0).contains(&self.dropout), "dropout {} must be in [0, 1)", self.dropout);
        // Checked before anything is allocated: an absurd --hidden is an error, not an allocation failure
        // inside libtorch.
        let widths: Vec<i64> =
            std::iter::once(self.input_dim()).chain(self.hidden.iter().copied()).chain([self.num_classes]).collect();
        let parameters = widths.windows(2).try_fold(0i64, |total, pair| {
            pair[0].checked_mul(pair[1]).and_then(|w| w.checked_add(pair[1])).and_then(|p| total.checked_add(p))
        });
        ensure!(
            parameters.is_some_and(|p| p <= MAX_PARAMETERS),
            "a {} MLP has {} parameters, more than the {MAX_PARAMETERS} this tool trains (4 GB of float32 weights)",
            self.describe(),
            parameters.map_or("too many".to_string(), |p| p.to_string())
        );
        Ok(())
    }

    /// The Dense layers in order. In the PyTorch `nn.Sequential`, index 0 is `Flatten` and every
    /// hidden `Linear` is followed by a `ReLU` (and a `Dropout` when `dropout` > 0), so the Linear
    /// layers sit at indices 1, 3, 5, ... (1, 4, 7, ... with dropout).
    pub fn dense_layers(&self) -> Vec<DenseLayer> {
        let widths: Vec<i64> = std::iter::once(self.input_dim())
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.num_classes))
            .collect();
        let last = widths.len() - 2;
        let stride = if self.dropout > 0.0 { 3 } else { 2 };
        widths
            .windows(2)
            .enumerate()
            .map(|(i, pair)| DenseLayer {
                name: (stride * i + 1).to_string(),
                inputs: pair[0],
                outputs: pair[1],
                relu: i != last,
            })
            .collect()
    }

    /// Trainable parameters: weights and biases of every Dense layer.
    pub fn parameter_count(&self) -> i64 {
        self.dense_layers().iter().map(|l| l.inputs * l.outputs + l.outputs).sum()
    }

    /// A short human description, e.g. `784-128-10`.
    pub fn describe(&self) -> String {
        let mut widths = vec![self.input_dim()];
        widths.extend(&self.hidden);
        widths.push(self.num_classes);
        widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join("-")
    }
}

/// Keras-style `model.summary()`: each layer of the equivalent PyTorch `nn.Sequential` with its output
/// shape and parameter count, then the totals — trainable and frozen (`frozen` lists frozen tensor names,
/// as a fine-tuned run records them) — with the weights' size in bytes (float32).
pub fn summary(config: &ModelConfig, title: &str, frozen: &[String]) -> String {
    let mut rows: Vec<(String, i64, i64)> = vec![("0 (Flatten)".into(), config.input_dim(), 0)];
    let mut frozen_params = 0;
    for layer in config.dense_layers() {
        let index: usize = layer.name.parse().unwrap_or(0);
        let weights = layer.inputs * layer.outputs;
        let params = weights + layer.outputs;
        for (tensor, count) in
            [(format!("{}.weight", layer.name), weights), (format!("{}.bias", layer.name), layer.outputs)]
        {
            if frozen.contains(&tensor) {
                frozen_params += count;
            }
        }
        rows.push((format!("{index} (Linear)"), layer.outputs, params));
        if layer.relu {
            rows.push((format!("{} (ReLU)", index + 1), layer.outputs, 0));
            if config.dropout > 0.0 {
                rows.push((format!("{} (Dropout {})", index + 2, config.dropout), layer.outputs, 0));
            }
        }
    }
    let total = config.parameter_count();
    let size = |params: i64| {
        let bytes = params as f64 * 4.0;
        if bytes >= 1024.0 * 1024.0 {
            format!("{:.2} MB", bytes / 1024.0 / 1024.0)
        } else if bytes >= 1024.0 {
            format!("{:.2} KB", bytes / 1024.0)
        } else {
            format!("{bytes:.0} B")
        }
    };
    let group = |n: i64| {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let rule = "─".repeat(52);
    let mut text = format!("Model: {title} ({} MLP)\n", config.describe());
    text += &format!("{rule}\n {:<22} {:<15} {:>11}\n{rule}\n", "Layer (type)", "Output shape", "Param #");
    for (name, width, params) in rows {
        text += &format!(" {:<22} {:<15} {:>11}\n", name, format!("(None, {width})"), group(params));
    }
    text += &format!("{rule}\n");
    text += &format!(" Total params: {} ({})\n", group(total), size(total));
    text += &format!(" Trainable params: {} ({})\n", group(total - frozen_params), size(total - frozen_params));
    text += &format!(" Non-trainable params: {} ({})\n", group(frozen_params), size(frozen_params));
    text
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

/// Builds the MLP under `vs`. Input `[N, rows, cols]` or `[N, rows*cols]`, output logits `[N, classes]`.
/// Weights use PyTorch's `nn.Linear` initialisation (tch's default), so the Rust and Python
/// baselines start from the same distribution. Dropout acts only when `forward_t` is told it trains.
pub fn build(vs: &nn::Path, config: &ModelConfig) -> nn::SequentialT {
    let mut net = nn::seq_t().add_fn(|xs| xs.flatten(1, -1));
    let dropout = config.dropout;
    for layer in config.dense_layers() {
        net = net.add(nn::linear(vs / layer.name.as_str(), layer.inputs, layer.outputs, Default::default()));
        if layer.relu {
            net = net.add_fn(|xs| xs.relu());
            if dropout > 0.0 {
                net = net.add_fn_t(move |xs, train| xs.dropout(dropout, train));
            }
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor, nn::ModuleT};

    #[test]
    fn seed_model_has_pytorch_sequential_names_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = ModelConfig::default();
        let net = build(&vs.root(), &config);
        let mut vars: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(name, t)| (name, t.size())).collect();
        vars.sort();
        assert_eq!(
            vars,
            vec![
                ("1.bias".to_string(), vec![128]),
                ("1.weight".to_string(), vec![128, 784]),
                ("3.bias".to_string(), vec![10]),
                ("3.weight".to_string(), vec![10, 128]),
            ]
        );
        assert_eq!(config.parameter_count(), 101_770);
        let logits = net.forward_t(&Tensor::zeros([5, 28, 28], (Kind::Float, Device::Cpu)), false);
        assert_eq!(logits.size(), vec![5, 10]);
    }

    #[test]
    fn deeper_models_interleave_relu_indices() {
        let config = ModelConfig { input_shape: [4, 4], hidden: vec![8, 6], num_classes: 3, dropout: 0.0 };
        let names: Vec<_> = config.dense_layers().into_iter().map(|l| (l.name, l.relu)).collect();
        assert_eq!(names, vec![("1".into(), true), ("3".into(), true), ("5".into(), false)]);
        assert_eq!(config.describe(), "16-8-6-3");
        // nn.Sequential(Flatten, Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear)
        let with_dropout = ModelConfig { dropout: 0.5, ..config };
        let names: Vec<_> = with_dropout.dense_layers().into_iter().map(|l| l.name).collect();
        assert_eq!(names, vec!["1", "4", "7"]);
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
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        let huge = ModelConfig { hidden: vec![4_000_000_000, 4_000_000_000], ..ModelConfig::default() };
        assert!(huge.validate().unwrap_err().to_string().contains("parameters"));
        let big = ModelConfig { hidden: vec![2_000_000], ..ModelConfig::default() };
        assert!(big.validate().is_err());
        assert!(ModelConfig { hidden: vec![1024, 1024, 512], ..ModelConfig::default() }.validate().is_ok());
    }

    #[test]
    fn hidden_spec_parses_or_explains() {
        assert_eq!(parse_hidden("512, 256").unwrap(), vec![512, 256]);
        assert!(parse_hidden("128,").is_err());
        assert!(parse_hidden("0").is_err());
        assert!(parse_hidden("abc").unwrap_err().contains("comma-separated"));
    }
}

#[cfg(test)]
mod dropout_tests {
    use super::*;
    use tch::{Device, Kind, Tensor, nn::ModuleT};

    #[test]
    fn dropout_acts_in_training_only() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let config = ModelConfig { input_shape: [4, 4], hidden: vec![64], num_classes: 3, dropout: 0.5 };
        let net = build(&vs.root(), &config);
        let x = Tensor::rand([8, 4, 4], (Kind::Float, Device::Cpu));
        let eval_a = net.forward_t(&x, false);
        let eval_b = net.forward_t(&x, false);
        assert!(eval_a.equal(&eval_b), "inference must be deterministic");
        assert!(!net.forward_t(&x, true).equal(&eval_a), "training must drop units");
    }
}
