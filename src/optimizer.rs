//! The optimizer a run trains with, as `config.json` names it (`training.optimizer`). There is one rule:
//! Adam, the Keras tutorial's, unless `--weight-decay` is above 0, which makes it AdamW (decoupled weight
//! decay, Loshchilov & Hutter). The engines apply the same rule to [`crate::engine::AdamSettings`]'s
//! `weight_decay`; [`AdamVariant::for_weight_decay`] is where the config's name comes from, and
//! `run_dir`'s check refuses a config whose name and decay disagree.
//!
//! libtorch's Adam takes its step size as a C `float`: a finite number beyond the largest 32-bit float
//! fails the step (`value cannot be converted to type float without overflow`), which tch's optimizer
//! turns into a panic. [`learning_rate_fits`] is that bound, applied to the flags, to a config read back
//! and by the engine before it steps.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `adam` or `adamw`, spelled in config.json as PyTorch's `torch.optim` names them, lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdamVariant {
    /// Adam (Kingma & Ba), the Keras tutorial's.
    #[default]
    Adam,
    /// Adam with decoupled weight decay.
    AdamW,
}

impl AdamVariant {
    /// The optimizer that `weight_decay` trains with: AdamW above 0, else Adam.
    pub fn for_weight_decay(weight_decay: f64) -> AdamVariant {
        if weight_decay > 0.0 { AdamVariant::AdamW } else { AdamVariant::Adam }
    }

    /// The name in config.json: `adam` or `adamw`.
    pub fn name(self) -> &'static str {
        match self {
            AdamVariant::Adam => "adam",
            AdamVariant::AdamW => "adamw",
        }
    }
}

impl fmt::Display for AdamVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The largest finite 32-bit float: what libtorch takes as a C `float` without overflow.
pub const LARGEST_FLOAT: f64 = f32::MAX as f64;

/// Whether Adam with `beta1` can step at the learning rate `lr`: libtorch's first step size,
/// lr / (1 - beta1) (later steps' are smaller), is a C `float`. With beta1 0.9: lr up to 3.4e37.
pub fn learning_rate_fits(lr: f64, beta1: f64) -> bool {
    lr / (1.0 - beta1) <= LARGEST_FLOAT
}

/// The largest learning rate [`learning_rate_fits`] accepts with `beta1`, for messages (`3.4e37`).
pub fn largest_learning_rate(beta1: f64) -> String {
    format!("{:.1e}", LARGEST_FLOAT * (1.0 - beta1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_rate_bound_is_adams_first_step_as_a_float() {
        assert!(learning_rate_fits(3.4e37, 0.9));
        assert!(!learning_rate_fits(3.41e37, 0.9) && !learning_rate_fits(1e38, 0.9));
        assert!(learning_rate_fits(1e30, 0.999) && !learning_rate_fits(1e36, 0.999));
        assert_eq!(largest_learning_rate(0.9), "3.4e37");
    }

    #[test]
    fn weight_decay_above_zero_means_adamw() {
        assert_eq!(AdamVariant::for_weight_decay(0.0), AdamVariant::Adam);
        assert_eq!(AdamVariant::for_weight_decay(-0.0), AdamVariant::Adam);
        assert_eq!(AdamVariant::for_weight_decay(1e-4), AdamVariant::AdamW);
        assert_eq!(AdamVariant::default(), AdamVariant::Adam);
    }

    #[test]
    fn names_print_and_serialize_as_before() {
        for (optimizer, name) in [(AdamVariant::Adam, "adam"), (AdamVariant::AdamW, "adamw")] {
            assert_eq!(optimizer.to_string(), name);
            let json = serde_json::to_string(&optimizer).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<AdamVariant>(&json).unwrap(), optimizer);
        }
        assert!(serde_json::from_str::<AdamVariant>("\"AdamW\"").is_err());
        let err = serde_json::from_str::<AdamVariant>("\"sgd\"").unwrap_err().to_string();
        assert!(err.contains("unknown variant `sgd`, expected `adam` or `adamw`"), "{err}");
    }
}
