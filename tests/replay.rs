//! A training run can be replayed step for step outside the binary: `initial.safetensors` holds the
//! weights before the first step, `--no-shuffle` walks the training part in file order, and the
//! shuffled order of an epoch is `randperm` after `manual_seed(seed * 1000003 + epoch)` — so a textbook
//! loop (tch's `nn::Adam`, `backward_step`) over the same batches ends at the binary's weights. This is
//! what `scripts/compare.py` does with PyTorch.

mod common;

use common::Fixture;
use mnist_tch::class_names::ClassNames;
use mnist_tch::data::{self, Selection, to_inputs};
use mnist_tch::model::ModelConfig;
use mnist_tch::run_dir::RunConfig;
use mnist_tch::training::shuffle_seed;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT, nn::OptimizerConfig};

/// libtorch's generator is one per process and tests run on parallel threads: seeded draws hold this.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sorted(mut tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// One epoch of the run in `dir`, replayed from its initial weights in `order`; the largest difference
/// to the weights the binary saved.
fn replay(dir: &Path, data_dir: &Path, order: impl FnOnce(&RunConfig, i64) -> Tensor) -> f64 {
    let config = RunConfig::load(dir).unwrap();
    let t = &config.training;
    let data =
        data::load_training_data(data_dir, &Selection::default(), 4, &ClassNames::Auto, t.validation_split).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = config.model.init(&vs.root());
    vs.load(dir.join("initial.safetensors")).unwrap();
    let initial = sorted(Tensor::read_safetensors(dir.join("initial.safetensors")).unwrap());
    for (name, tensor) in &initial {
        assert!(vs.variables()[name].equal(tensor), "{name} is not what initial.safetensors holds");
    }
    let mut adam = nn::Adam { beta1: t.adam_beta1, beta2: t.adam_beta2, wd: 0.0, eps: t.adam_epsilon, amsgrad: false }
        .build(&vs, t.learning_rate)
        .unwrap();
    let n = data.train.len();
    let order = order(&config, n);
    let batch = t.batch_size as i64;
    for start in (0..n).step_by(batch as usize) {
        let rows = order.narrow(0, start, batch.min(n - start));
        let x = to_inputs(&data.train.images.index_select(0, &rows));
        let y = data.train.labels.index_select(0, &rows);
        adam.backward_step(&net.forward_t(&x, true).cross_entropy_for_logits(&y));
    }
    let saved = sorted(Tensor::read_safetensors(dir.join("model.safetensors")).unwrap());
    let moved =
        saved.iter().zip(&initial).map(|((_, a), (_, b))| (a - b).abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(moved > 1e-3, "training moved the weights by {moved} only");
    saved
        .iter()
        .map(|(name, tensor)| (tensor - &vs.variables()[name]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn a_run_replays_step_for_step_in_file_order_and_in_its_shuffled_order() {
    let fixture = Fixture::new(false);
    let flags = ["--epochs", "1", "--save-initial", "--batch-size", "16"];
    fixture.train("in-order", &[&flags[..], &["--no-shuffle"]].concat()).assert_ok();
    fixture.train("shuffled", &flags).assert_ok();
    let in_order = fixture.path("in-order");
    assert!(!RunConfig::load(&in_order).unwrap().training.shuffle);

    let file_order = replay(&in_order, &fixture.data(), |_, n| Tensor::arange(n, (Kind::Int64, Device::Cpu)));
    assert!(file_order <= 1e-6, "--no-shuffle replay differs by {file_order}");
    let shuffled_order = |config: &RunConfig, n| {
        let _only_us = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(shuffle_seed(config.training.seed, 1));
        Tensor::randperm(n, (Kind::Int64, Device::Cpu))
    };
    let shuffled = replay(&fixture.path("shuffled"), &fixture.data(), shuffled_order);
    assert!(shuffled <= 1e-6, "shuffled replay differs by {shuffled}");
    // And the order matters: replaying the shuffled run in file order does not reach its weights.
    let wrong =
        replay(&fixture.path("shuffled"), &fixture.data(), |_, n| Tensor::arange(n, (Kind::Int64, Device::Cpu)));
    assert!(wrong > 1e-3, "the order made no difference ({wrong})");
}

#[test]
fn initial_weights_are_the_seeds_and_only_written_when_asked() {
    let fixture = Fixture::new(false);
    fixture.train("a", &["--epochs", "1", "--save-initial"]).assert_ok();
    fixture.train("b", &["--epochs", "1"]).assert_ok();
    assert!(!fixture.path("b").join("initial.safetensors").exists());
    // The initial weights are those ModelConfig::init draws from the seed.
    let config = RunConfig::load(&fixture.path("a")).unwrap();
    let model: &ModelConfig = &config.model;
    let _only_us = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(config.training.seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = model.init(&vs.root());
    for (name, tensor) in sorted(Tensor::read_safetensors(fixture.path("a").join("initial.safetensors")).unwrap()) {
        assert!(vs.variables()[&name].equal(&tensor), "{name}");
    }
}
