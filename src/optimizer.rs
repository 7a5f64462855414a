//! The optimizer a run trains with, as `config.json` names it (`training.optimizer`). There is one rule:
//! Adam, the Keras tutorial's, unless `--weight-decay` is above 0, which makes it AdamW (decoupled weight
//! decay, Loshchilov & Hutter). The engines apply the same rule to [`crate::engine::AdamSettings`]'s
//! `weight_decay`; [`AdamVariant::for_weight_decay`] is where the config's name comes from, and
//! `run_dir`'s check refuses a config whose name and decay disagree.

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

#[cfg(test)]
mod tests {
    use super::*;

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
