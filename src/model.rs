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
