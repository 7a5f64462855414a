//! `finetune --freeze`: which of the parent's tensors stay fixed. clap parses the flag into [`Freeze`]
//! once; which tensors it names depends on the model, so [`Freeze::tensors`] resolves it against the
//! model's tensor names, and a name the model does not have is refused there, listing what it has.

use crate::model::ModelConfig;
use anyhow::{Result, bail};

/// What `--freeze` keeps fixed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Freeze {
    /// Train every tensor.
    #[default]
    Nothing,
    /// Every layer with weights but the output layer (an MLP's hidden layers, a CNN's convolutions).
    Hidden,
    /// Layer names (`1`: every tensor of that layer) and tensor names (`1.weight`).
    Named(Vec<String>),
}

impl Freeze {
    /// The tensor names this selects in `model` (as [`ModelConfig::tensor_names`] has them), sorted and
    /// without repeats. A name the model lacks, or a selection that leaves nothing to train, is an error.
    pub fn tensors(&self, model: &ModelConfig) -> Result<Vec<String>> {
        let layers = model.weight_layers();
        let all = model.tensor_names();
        let of_layer =
            |layer: &str| all.iter().filter(|n| n.split('.').next() == Some(layer)).cloned().collect::<Vec<_>>();
        let mut frozen: Vec<String> = match self {
            Freeze::Nothing => vec![],
            Freeze::Hidden => layers[..layers.len().saturating_sub(1)].iter().flat_map(|l| of_layer(l)).collect(),
            Freeze::Named(items) => {
                let mut names = Vec::new();
                for item in items {
                    let matched = if item.contains('.') {
                        all.iter().filter(|n| *n == item).cloned().collect()
                    } else {
                        of_layer(item)
                    };
                    if matched.is_empty() {
                        bail!(
                            "--freeze {self}: no layer or tensor '{item}'; this model has layers {} (tensors {})",
                            layers.join(", "),
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
            bail!("--freeze {self} freezes every layer: nothing would be trained");
        }
        Ok(frozen)
    }
}

// `none`, `hidden`, or a comma-separated list of layer and tensor names (trimmed). Every text is a
// valid spec: whether the model has those names is known only once it is built ([`Freeze::tensors`]).
crate::spelling::keyword_or_list!(Freeze { "none" => Nothing, "hidden" => Hidden } else Named);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    fn parse(s: &str) -> Freeze {
        let Ok(freeze) = s.parse();
        freeze
    }

    /// An MLP 4 → 3 → 2 → 2 (weight layers `1`, `3` and `5`), whose tensor names are those a variable
    /// store built from it holds.
    fn mlp() -> ModelConfig {
        let config = ModelConfig::new(Arch::Mlp, [2, 2], vec![3, 2], 2, 0.0).unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _net = config.init(&vs.root());
        let mut built: Vec<String> = vs.variables().into_keys().collect();
        built.sort();
        assert_eq!(config.tensor_names(), built);
        config
    }

    fn tensors(spec: &str) -> Result<Vec<String>> {
        parse(spec).tensors(&mlp())
    }

    #[test]
    fn keywords_and_lists_parse_and_print_as_typed() {
        assert_eq!(parse("none"), Freeze::Nothing);
        assert_eq!(parse("hidden"), Freeze::Hidden);
        assert_eq!(parse("1, 3.bias"), Freeze::Named(vec!["1".into(), "3.bias".into()]));
        assert_eq!(parse("Hidden"), Freeze::Named(vec!["Hidden".into()]));
        for spec in ["none", "hidden", "1", "1,3.bias"] {
            assert_eq!(parse(spec).to_string(), spec);
        }
        assert_eq!(Freeze::default(), Freeze::Nothing);
    }

    #[test]
    fn specs_select_tensors_in_name_order() {
        assert_eq!(tensors("none").unwrap(), Vec::<String>::new());
        assert_eq!(tensors("hidden").unwrap(), ["1.bias", "1.weight", "3.bias", "3.weight"]);
        assert_eq!(tensors("3, 1.weight").unwrap(), ["1.weight", "3.bias", "3.weight"]);
        assert_eq!(tensors("1,1.bias,1").unwrap(), ["1.bias", "1.weight"]);
        assert_eq!(tensors("5.weight").unwrap(), ["5.weight"]);
    }

    #[test]
    fn unknown_names_and_freezing_everything_are_refused() {
        let err = tensors("1,7").unwrap_err().to_string();
        assert_eq!(
            err,
            "--freeze 1,7: no layer or tensor '7'; this model has layers 1, 3, 5 (tensors 1.bias, 1.weight, \
             3.bias, 3.weight, 5.bias, 5.weight)"
        );
        assert!(tensors("1.gamma").unwrap_err().to_string().contains("no layer or tensor '1.gamma'"));
        assert!(tensors("1,,3").unwrap_err().to_string().contains("no layer or tensor ''"));
        let err = tensors("1,3,5").unwrap_err().to_string();
        assert_eq!(err, "--freeze 1,3,5 freezes every layer: nothing would be trained");
    }
}
