//! The two engines behind `TrainStep` against each other and against a textbook reference: from the
//! same initial weights on the same batches they end at the same weights; frozen tensors stay
//! bit-identical; AdamW's decay reaches trainable tensors only; the fused engine refuses a CNN.

use mnist_tch::engine::{self, AdamSettings, Engine, Precision, StepSettings};
use mnist_tch::model::{Arch, ModelConfig};
use tch::{Device, Kind, Tensor, nn, nn::ModuleT, nn::OptimizerConfig};

const ADAM: AdamSettings = AdamSettings { beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 0.0 };

fn settings(adam: AdamSettings, frozen: &[&str]) -> StepSettings {
    StepSettings {
        adam,
        precision: Precision::F32,
        frozen: frozen.iter().map(|s| s.to_string()).collect(),
        label_smoothing: 0.0,
        group: None,
    }
}

/// libtorch's generator is one per process and the tests run on parallel threads: each seeded draw
/// holds this lock, so it sees only its own seed.
static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn seeded<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    let _only_us = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    draw()
}

/// A model of `config` with the initial weights of seed 7, whatever the engine does to its storage.
fn model(config: &ModelConfig) -> (nn::VarStore, nn::SequentialT) {
    seeded(7, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = config.init(&vs.root());
        (vs, net)
    })
}

/// `steps` random batches of 16 examples.
fn batches(config: &ModelConfig, steps: usize) -> Vec<(Tensor, Tensor)> {
    seeded(11, || {
        (0..steps)
            .map(|_| {
                let [rows, cols] = config.input_shape;
                let x = Tensor::rand([16, rows, cols], (Kind::Float, Device::Cpu));
                let y = Tensor::randint(config.num_classes, [16], (Kind::Int64, Device::Cpu));
                (x, y)
            })
            .collect()
    })
}

fn weights(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut all: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn max_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// Trains `config` for the given batches with `engine` and returns the final weights.
fn train_with(
    engine: Engine,
    config: &ModelConfig,
    adam: AdamSettings,
    frozen: &[&str],
    lr: f64,
) -> Vec<(String, Tensor)> {
    let (vs, net) = model(config);
    let data = batches(config, 20);
    let mut step = engine::new_step(engine, &vs, &net, config, settings(adam, frozen)).unwrap();
    step.set_learning_rate(lr).unwrap();
    for (x, y) in &data {
        step.step(x, y).unwrap();
    }
    drop(step);
    weights(&vs)
}

/// The textbook reference: tch's nn::Adam over the model's own variables, zero_grad/backward/step.
fn train_plainly(config: &ModelConfig, lr: f64) -> Vec<(String, Tensor)> {
    let (vs, net) = model(config);
    let data = batches(config, 20);
    let mut adam = nn::Adam { eps: 1e-7, ..Default::default() }.build(&vs, lr).unwrap();
    for (x, y) in &data {
        let loss = net.forward_t(x, true).cross_entropy_for_logits(y);
        adam.backward_step(&loss);
    }
    weights(&vs)
}

fn mlp() -> ModelConfig {
    ModelConfig::new(Arch::Mlp, [6, 6], vec![24, 12], 5, 0.0).unwrap()
}

#[test]
fn both_engines_and_plain_nn_adam_agree_after_20_steps() {
    let config = mlp();
    let reference = train_plainly(&config, 1e-2);
    let autograd = train_with(Engine::Autograd, &config, ADAM, &[], 1e-2);
    let fused = train_with(Engine::Fused, &config, ADAM, &[], 1e-2);
    let (initial_vs, _net) = model(&config);
    assert!(max_difference(&reference, &weights(&initial_vs)) > 1e-2, "training moved the weights");
    let autograd_vs_plain = max_difference(&autograd, &reference);
    assert!(autograd_vs_plain <= 1e-6, "autograd engine vs plain nn::Adam: {autograd_vs_plain}");
    let fused_vs_autograd = max_difference(&fused, &autograd);
    assert!(fused_vs_autograd <= 1e-5, "fused vs autograd engine: {fused_vs_autograd}");
}

#[test]
fn the_autograd_engine_trains_a_cnn_like_plain_nn_adam() {
    let config = ModelConfig::new(Arch::Cnn, [12, 12], vec![], 3, 0.0).unwrap();
    let reference = train_plainly(&config, 1e-3);
    let autograd = train_with(Engine::Autograd, &config, ADAM, &[], 1e-3);
    let difference = max_difference(&autograd, &reference);
    assert!(difference <= 1e-6, "autograd engine vs plain nn::Adam on a CNN: {difference}");
}

#[test]
fn frozen_tensors_stay_bit_identical_under_both_engines() {
    let config = mlp();
    let (initial_vs, _net) = model(&config);
    let initial = weights(&initial_vs);
    for engine in [Engine::Autograd, Engine::Fused] {
        let trained = train_with(engine, &config, ADAM, &["1.weight", "3.bias"], 1e-2);
        for ((name, before), (_, after)) in initial.iter().zip(&trained) {
            let frozen = name == "1.weight" || name == "3.bias";
            assert_eq!(before.equal(after), frozen, "{engine:?}: {name} (frozen: {frozen})");
        }
    }
}

#[test]
fn weight_decay_reaches_trainable_tensors_only() {
    // One AdamW step decays θ by lr·wd·θ before the Adam update, which depends on the gradient alone:
    // the difference between a step with and without decay is exactly lr·wd·θ₀ — and 0 when frozen.
    let config = ModelConfig::new(Arch::Mlp, [4, 4], vec![8], 3, 0.0).unwrap();
    let (initial_vs, _net) = model(&config);
    let initial = weights(&initial_vs);
    let (lr, wd) = (1e-2, 0.5);
    for engine in [Engine::Autograd, Engine::Fused] {
        let one_step = |adam: AdamSettings| {
            let (vs, net) = model(&config);
            let (x, y) = batches(&config, 1).remove(0);
            let mut step = engine::new_step(engine, &vs, &net, &config, settings(adam, &["1.bias"])).unwrap();
            step.set_learning_rate(lr).unwrap();
            step.step(&x, &y).unwrap();
            drop(step);
            weights(&vs)
        };
        let plain = one_step(ADAM);
        let decayed = one_step(AdamSettings { weight_decay: wd, ..ADAM });
        for (((name, p), (_, d)), (_, p0)) in plain.iter().zip(&decayed).zip(&initial) {
            let expected = if name == "1.bias" { p0.zeros_like() } else { p0 * (lr * wd) };
            let error = (p - d - &expected).abs().max().double_value(&[]);
            assert!(error < 1e-7, "{engine:?} {name}: decay off by {error}");
            if name != "1.bias" {
                assert!((p - d).abs().max().double_value(&[]) > 1e-4, "{engine:?} {name}: no decay applied");
            }
        }
    }
}

#[test]
fn the_fused_engine_refuses_a_cnn_and_autograd_refuses_bf16() {
    let cnn = ModelConfig::new(Arch::Cnn, [12, 12], vec![], 3, 0.5).unwrap();
    let (vs, net) = model(&cnn);
    let err = engine::new_step(Engine::Fused, &vs, &net, &cnn, settings(ADAM, &[])).err().unwrap().to_string();
    assert!(err.contains("--engine fused trains MLP and linear models only, not a CNN"), "{err}");
    let config = mlp();
    let (vs, net) = model(&config);
    let bf16 = StepSettings { precision: Precision::Bf16, ..settings(ADAM, &[]) };
    let err = engine::new_step(Engine::Autograd, &vs, &net, &config, bf16).err().unwrap().to_string();
    assert!(err.contains("--precision bf16") && err.contains("--engine fused"), "{err}");
    let err = engine::new_step(Engine::Autograd, &vs, &net, &config, settings(ADAM, &["9.weight"]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no tensor '9.weight'"), "{err}");
}

#[test]
fn both_engines_hand_over_their_optimizer_state_under_the_same_names() {
    let config = mlp();
    let mut names = Vec::new();
    for engine in [Engine::Autograd, Engine::Fused] {
        let (vs, net) = model(&config);
        let mut step = engine::new_step(engine, &vs, &net, &config, settings(ADAM, &[])).unwrap();
        step.set_learning_rate(1e-3).unwrap();
        assert!(step.optimizer_state().unwrap().is_empty(), "{engine:?}: no state before the first step");
        let (x, y) = batches(&config, 1).remove(0);
        step.step(&x, &y).unwrap();
        let state = step.optimizer_state().unwrap();
        let mut these: Vec<String> = state.iter().map(|(n, _)| n.clone()).collect();
        these.sort();
        assert!(these.contains(&"1.weight.exp_avg_sq".to_string()), "{engine:?}: {these:?}");
        names.push(these);
        assert!(step.restore_optimizer_state(&state).unwrap(), "{engine:?}");
        assert_eq!(step.engine(), engine);
    }
    assert_eq!(names[0], names[1]);
}

#[test]
fn a_restored_autograd_step_continues_as_the_uninterrupted_one() {
    let config = mlp();
    for weight_decay in [0.0, 0.01] {
        let adam = AdamSettings { weight_decay, ..ADAM };
        let data = batches(&config, 4);
        let (vs, net) = model(&config);
        let mut straight = engine::new_step(Engine::Autograd, &vs, &net, &config, settings(adam, &[])).unwrap();
        straight.set_learning_rate(1e-2).unwrap();
        for (x, y) in &data[..3] {
            straight.step(x, y).unwrap();
        }
        let (state, after_three) = (straight.optimizer_state().unwrap(), weights(&vs));
        straight.step(&data[3].0, &data[3].1).unwrap();
        // The fourth step from the first three's weights, with their optimizer state and without it.
        let mut ends = Vec::new();
        for restore in [true, false] {
            let (vs2, net2) = model(&config);
            tch::no_grad(|| {
                for (name, tensor) in &after_three {
                    vs2.variables()[name].shallow_clone().copy_(tensor);
                }
            });
            let mut step = engine::new_step(Engine::Autograd, &vs2, &net2, &config, settings(adam, &[])).unwrap();
            step.set_learning_rate(1e-2).unwrap();
            if restore {
                assert!(step.restore_optimizer_state(&state).unwrap());
            }
            step.step(&data[3].0, &data[3].1).unwrap();
            ends.push(max_difference(&weights(&vs), &weights(&vs2)));
        }
        assert_eq!(ends[0], 0.0, "weight decay {weight_decay}: restored, the step is the uninterrupted one");
        assert!(ends[1] > 1e-6, "weight decay {weight_decay}: fresh moments step elsewhere ({})", ends[1]);
    }
}

#[test]
fn label_smoothing_trains_against_the_smoothed_target_and_zero_is_plain_cross_entropy() {
    let config = mlp();
    let (x, y) = batches(&config, 1).remove(0);
    // The first step's reported loss, and the logits it was computed from (the model has no dropout).
    let first_step = |label_smoothing: f64| {
        let (vs, net) = model(&config);
        let logits = net.forward_t(&x, true).detach();
        let settings = StepSettings { label_smoothing, ..settings(ADAM, &[]) };
        let mut step = engine::new_step(Engine::Autograd, &vs, &net, &config, settings).unwrap();
        step.set_learning_rate(1e-2).unwrap();
        let loss_sum = step.step(&x, &y).unwrap().loss_sum.double_value(&[]);
        drop(step);
        (logits, loss_sum, weights(&vs))
    };
    let (logits, plain, plain_weights) = first_step(0.0);
    let (_, smoothed, smoothed_weights) = first_step(0.1);
    let log_p = logits.log_softmax(-1, Kind::Float);
    let label_term = -log_p.gather(1, &y.unsqueeze(1), false).mean(Kind::Float).double_value(&[]);
    let uniform_term = -log_p.mean(Kind::Float).double_value(&[]);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs();
    assert!(close(plain, 16.0 * label_term), "plain: {plain} vs {}", 16.0 * label_term);
    let expected = 16.0 * (0.9 * label_term + 0.1 * uniform_term);
    assert!(close(smoothed, expected), "smoothed: {smoothed} vs {expected}");
    assert!(
        max_difference(&plain_weights, &smoothed_weights) > 1e-6,
        "the smoothed target moved the weights elsewhere"
    );
}
