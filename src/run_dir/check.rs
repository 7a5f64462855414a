//! A `config.json` read back is checked as a whole before anything trusts it, because people edit
//! it by hand: every field of the wrong type, every value no run can have (`learning_rate: -5`,
//! `batch_size: 0`), and every count that disagrees with the run's `metrics.csv` is said in plain words
//! naming the field, never through serde's internals (`expected struct ToolInfo`).

use super::config::RunConfig;
use super::layout::{CONFIG_FILE, METRICS_FILE};
use super::training_config::TrainConfig;
use crate::model::ModelConfig;
use crate::optimizer::{AdamVariant, LARGEST_FLOAT, largest_learning_rate, learning_rate_fits};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::Path;

impl RunConfig {
    /// Reads `dir/config.json` back, checked as a whole: a file edited by hand is refused in plain words.
    pub fn load(dir: &Path) -> Result<RunConfig> {
        let path = dir.join(CONFIG_FILE);
        if !dir.is_dir() {
            bail!("{}: not a run directory (it does not exist or is not a directory)", dir.display());
        }
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read (is {} a run directory written by mnist-tch train?)",
                path.display(),
                dir.display()
            )
        })?;
        let config = parse(&text, &path)?;
        check_values(&config, dir)?;
        Ok(config)
    }
}

/// Parses the text of `dir/config.json`, naming the field whose type is wrong.
pub fn parse(text: &str, path: &Path) -> Result<RunConfig> {
    let shown = path.display();
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| anyhow::anyhow!("{shown}: not a valid mnist-tch config: not JSON ({err})"))?;
    if !value.is_object() {
        bail!("{shown}: not a valid mnist-tch config: expected a JSON object with tool, model, data and training");
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = err.path().to_string();
        let problem = plain(&err.inner().to_string());
        if field == "." {
            anyhow::anyhow!("{shown}: not a valid mnist-tch config: {problem}")
        } else {
            anyhow::anyhow!("{shown}: not a valid mnist-tch config: {field}: {problem}")
        }
    })
}

/// serde's wording of a type mismatch, in a user's words.
fn plain(message: &str) -> String {
    let mut text = message.to_string();
    // `expected struct ToolInfo`, `expected a sequence`, `expected usize`, ... as what a JSON value is.
    for (internal, words) in [
        ("expected usize", "expected a whole number of at least 0"),
        ("expected u64", "expected a whole number of at least 0"),
        ("expected i64", "expected a whole number"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list [...]"),
        ("expected a string", "expected a string \"...\""),
    ] {
        text = text.replace(internal, words);
    }
    if let Some(start) = text.find("expected struct ") {
        let name = start + "expected struct ".len();
        let end = text[name..].find(' ').map_or(text.len(), |e| name + e);
        text.replace_range(start..end, "expected an object {...}");
    }
    for (internal, words) in [("invalid type: ", "is "), ("invalid value: ", "is "), ("unknown variant ", "is ")] {
        text = text.replace(internal, words);
    }
    if let Some(start) = text.find("expected tuple struct ") {
        text.replace_range(start.., "expected a list [...]");
    }
    text
}

/// Checks the values of a parsed config of the run in `dir`, and its epoch count against `metrics.csv`.
fn check_values(config: &RunConfig, dir: &Path) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    let problems = problems(config, dir);
    if problems.is_empty() {
        return Ok(());
    }
    bail!("{}: {} (was it edited by hand?)", path.display(), problems.join("; "))
}

/// Every value that no run written by mnist-tch can have, one phrase each.
fn problems(config: &RunConfig, dir: &Path) -> Vec<String> {
    let mut found = Problems(Vec::new());
    training_problems(&mut found, &config.training);
    model_problems(&mut found, config);
    state_problems(&mut found, config, dir);
    found.0
}

/// The phrases found so far.
struct Problems(Vec<String>);

impl Problems {
    /// Notes `phrase` unless `ok`.
    fn need(&mut self, ok: bool, phrase: String) {
        if !ok {
            self.0.push(phrase);
        }
    }
}

/// The `training` part: settings no run can train with.
fn training_problems(found: &mut Problems, t: &TrainConfig) {
    found.need(t.epochs >= 1, format!("training.epochs is {}, it must be at least 1", t.epochs));
    found.need(t.batch_size >= 1, format!("training.batch_size is {}, it must be at least 1", t.batch_size));
    found.need(
        t.learning_rate.is_finite() && t.learning_rate > 0.0,
        format!("training.learning_rate is {}, it must be a positive number", t.learning_rate),
    );
    float_problems(found, t);
    found.need(
        t.validation_split > 0.0 && t.validation_split < 1.0,
        format!("training.validation_split is {}, it must be strictly between 0 and 1", t.validation_split),
    );
    found.need(
        t.weight_decay.is_finite() && t.weight_decay >= 0.0,
        format!("training.weight_decay is {}, it must be 0 or more", t.weight_decay),
    );
    let decay_means = AdamVariant::for_weight_decay(t.weight_decay);
    found.need(
        t.optimizer == decay_means,
        format!(
            "training.optimizer is {}, but a training.weight_decay of {} trains with {decay_means}",
            t.optimizer, t.weight_decay
        ),
    );
    found.need(
        (0.0..1.0).contains(&t.label_smoothing),
        format!("training.label_smoothing is {}, it must be in [0, 1)", t.label_smoothing),
    );
    for (name, beta) in [("adam_beta1", t.adam_beta1), ("adam_beta2", t.adam_beta2)] {
        found.need((0.0..1.0).contains(&beta), format!("training.{name} is {beta}, it must be in [0, 1)"));
    }
    found.need(t.adam_epsilon > 0.0, format!("training.adam_epsilon is {}, it must be positive", t.adam_epsilon));
    if let Some(stopping) = t.early_stopping {
        found.need(
            stopping.patience >= 1,
            format!("training.early_stopping.patience is {}, it must be at least 1", stopping.patience),
        );
        found.need(
            stopping.min_delta >= 0.0,
            format!("training.early_stopping.min_delta is {}, it must be 0 or more", stopping.min_delta),
        );
    }
}

/// Values too large for libtorch, which takes Adam's step size and its epsilon as 32-bit floats.
fn float_problems(found: &mut Problems, t: &TrainConfig) {
    let (lr, beta1) = (t.learning_rate, t.adam_beta1);
    if lr > 0.0 && (0.0..1.0).contains(&beta1) {
        found.need(
            learning_rate_fits(lr, beta1),
            format!(
                "training.learning_rate is {}, more than Adam can step with: lr / (1 - adam_beta1) must fit a \
                 32-bit float, so at most {}",
                crate::wording::number(lr),
                largest_learning_rate(beta1)
            ),
        );
    }
    found.need(
        t.weight_decay <= LARGEST_FLOAT,
        format!(
            "training.weight_decay is {}, it must fit a 32-bit float (at most 3.4e38)",
            crate::wording::number(t.weight_decay)
        ),
    );
    found.need(
        t.adam_epsilon <= LARGEST_FLOAT,
        format!(
            "training.adam_epsilon is {}, it must fit a 32-bit float (at most 3.4e38)",
            crate::wording::number(t.adam_epsilon)
        ),
    );
}

/// The `model` part, and the class names the data gives it.
fn model_problems(found: &mut Problems, config: &RunConfig) {
    let m = &config.model;
    if let Err(err) = ModelConfig::build(m.arch, m.frame(), m.hidden.clone(), m.num_classes, m.dropout, m.vit) {
        found.need(false, format!("model: {err}"));
    }
    found.need(
        config.data.class_names.len() as i64 == m.num_classes,
        format!("data.class_names has {} names for {} classes", config.data.class_names.len(), m.num_classes),
    );
}

/// The `state` part, against the settings and against `metrics.csv`.
fn state_problems(found: &mut Problems, config: &RunConfig, dir: &Path) {
    let (s, t) = (&config.state, &config.training);
    found.need(
        s.epochs_completed <= t.epochs,
        format!("state.epochs_completed is {}, more than training.epochs ({})", s.epochs_completed, t.epochs),
    );
    if let Some(plateau) = s.callbacks.plateau {
        found.need(
            plateau.lr > 0.0 && learning_rate_fits(plateau.lr, t.adam_beta1),
            format!(
                "state.callbacks.plateau.lr is {}, it must be a positive number Adam can step with (at most {})",
                crate::wording::number(plateau.lr),
                largest_learning_rate(t.adam_beta1)
            ),
        );
    }
    if let Some(best) = s.best_epoch {
        found.need(
            (1..=s.epochs_completed).contains(&best),
            format!("state.best_epoch is {best}, not one of the {} completed epochs", s.epochs_completed),
        );
    }
    match metrics_rows(dir) {
        Some(rows) => found.need(
            rows >= s.epochs_completed,
            format!(
                "state.epochs_completed is {}, but {METRICS_FILE} has {}",
                s.epochs_completed,
                crate::wording::epochs(rows)
            ),
        ),
        None => found.need(
            s.epochs_completed == 0,
            format!("state.epochs_completed is {}, but {METRICS_FILE} is missing", s.epochs_completed),
        ),
    }
}

/// The number of epoch rows in the run's `metrics.csv`, if it can be read.
fn metrics_rows(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join(METRICS_FILE)).ok()?;
    Some(text.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WeightInit;
    use serde_json::{Value, json};

    /// config.json files as mnist-tch wrote them before the optimizer and the weight initialisation were
    /// types: `train --limit 1000 --epochs 1` (adam), the same with `--weight-decay 0.01 --labels 3,1
    /// --class-names three,one` (adamw), and `finetune --freeze hidden` from the first.
    const WRITTEN_BEFORE: [(&str, &str); 3] = [
        ("config-adam.json", include_str!("../../tests/fixtures/config-adam.json")),
        ("config-adamw-listed-names.json", include_str!("../../tests/fixtures/config-adamw-listed-names.json")),
        ("config-finetuned.json", include_str!("../../tests/fixtures/config-finetuned.json")),
    ];

    fn read(text: &str) -> RunConfig {
        parse(text, Path::new("run/config.json")).unwrap()
    }

    /// The error of reading the first fixture with `training.<field>` set to `value`.
    fn refused(field: &str, value: Value) -> String {
        let mut config: Value = serde_json::from_str(WRITTEN_BEFORE[0].1).unwrap();
        config["training"][field] = value;
        parse(&config.to_string(), Path::new("run/config.json")).unwrap_err().to_string()
    }

    #[test]
    fn configs_written_before_read_back_and_write_byte_identically() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in WRITTEN_BEFORE {
            read(text).save(dir.path()).unwrap();
            let written = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
            assert_eq!(written.lines().count(), text.lines().count(), "{name}:\n{written}");
            for (new, old) in written.lines().zip(text.lines()) {
                assert_eq!(new, old, "{name}");
            }
        }
        let [adam, adamw, finetuned] = WRITTEN_BEFORE.map(|(_, text)| read(text));
        assert_eq!(adam.training.optimizer, AdamVariant::Adam);
        assert_eq!(adam.training.weight_init, WeightInit::PytorchDefault);
        assert_eq!(adamw.training.optimizer, AdamVariant::AdamW);
        assert_eq!(adamw.training.weight_decay, 0.01);
        assert_eq!(adamw.data.class_names, ["three", "one"]);
        assert_eq!(finetuned.training.optimizer, AdamVariant::Adam);
        assert_eq!(finetuned.lineage.unwrap().frozen, ["1.bias", "1.weight"]);
    }

    #[test]
    fn an_unknown_optimizer_or_weight_init_is_refused_in_plain_words() {
        assert_eq!(
            refused("optimizer", json!("sgd")),
            "run/config.json: not a valid mnist-tch config: training.optimizer: is `sgd`, expected `adam` or `adamw`"
        );
        assert_eq!(
            refused("weight_init", json!("xavier")),
            "run/config.json: not a valid mnist-tch config: training.weight_init: is \"xavier\", expected \"pytorch \
             (kaiming-uniform a=sqrt(5): weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)))\" (the weight \
             initialisations mnist-tch knows)"
        );
        let err = refused("weight_init", json!(3));
        assert!(err.ends_with("training.weight_init: is integer `3`, expected a string \"...\""), "{err}");
    }

    #[test]
    fn an_optimizer_that_disagrees_with_the_weight_decay_is_a_problem() {
        let mut config = read(WRITTEN_BEFORE[0].1);
        let dir = Path::new("/nonexistent");
        let ok = problems(&config, dir);
        config.training.weight_decay = 0.01;
        let found = problems(&config, dir);
        let phrase = "training.optimizer is adam, but a training.weight_decay of 0.01 trains with adamw";
        assert!(found.iter().any(|p| p == phrase) && !ok.iter().any(|p| p.contains("optimizer")), "{found:?}");
        config.training.optimizer = AdamVariant::AdamW;
        assert_eq!(problems(&config, dir), ok);
    }

    #[test]
    fn serde_words_become_a_users() {
        assert_eq!(
            plain("invalid type: string \"x\", expected usize"),
            "is string \"x\", expected a whole number of at least 0"
        );
        assert_eq!(
            plain("invalid type: integer `3`, expected struct ToolInfo"),
            "is integer `3`, expected an object {...}"
        );
        assert_eq!(plain("unknown variant `sgd`, expected `adam` or `adamw`"), "is `sgd`, expected `adam` or `adamw`");
    }
}
