//! The hand-written backward pass and Adam step of the fused engine (`engine/fused.rs`) against libtorch's autograd and the
//! textbook Adam formula.

use mnist_tch::engine::fused::FusedMlp;
use mnist_tch::engine::{AdamSettings, Precision, StepSettings};
use mnist_tch::model::{Arch, ModelConfig};
use tch::{Device, Kind, Tensor, nn, nn::ModuleT};

const ADAM: AdamSettings = AdamSettings { beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 0.0 };

fn settings(precision: Precision, frozen: &[&str]) -> StepSettings {
    StepSettings {
        adam: ADAM,
        precision,
        frozen: frozen.iter().map(|s| s.to_string()).collect(),
        label_smoothing: 0.0,
        group: None,
    }
}

fn setup(config: &ModelConfig) -> (nn::VarStore, nn::SequentialT, Tensor, Tensor) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = config.init(&vs.root());
    let x = Tensor::rand([6, config.input_dim()], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 2, 1, 2, 0, 1]);
    (vs, net, x, y)
}

/// Autograd's gradients of the mean cross-entropy, flattened in the same order as the flat buffer.
fn autograd_gradients(
    vs: &nn::VarStore,
    net: &nn::SequentialT,
    config: &ModelConfig,
    x: &Tensor,
    y: &Tensor,
) -> Tensor {
    let loss = net.forward_t(x, false).cross_entropy_for_logits(y);
    let variables = vs.variables();
    let params: Vec<Tensor> = config
        .dense_layers()
        .unwrap()
        .iter()
        .flat_map(|l| [format!("{}.weight", l.name), format!("{}.bias", l.name)])
        .map(|name| variables[&name].shallow_clone())
        .collect();
    let grads = Tensor::run_backward(&[loss], &params, false, false);
    Tensor::cat(&grads.iter().map(|g| g.view(-1)).collect::<Vec<_>>(), 0)
}

#[test]
fn backward_matches_autograd_for_deep_models() {
    let config = ModelConfig::new(Arch::Mlp, [3, 4], vec![7, 5], 3, 0.0).unwrap();
    let (vs, net, x, y) = setup(&config);
    let expected = autograd_gradients(&vs, &net, &config, &x, &y);
    let mut mlp = FusedMlp::new(&vs, &config, settings(Precision::F32, &[])).unwrap();
    let out = mlp.forward_backward(&x, &y).unwrap();
    let diff = (mlp.flat_grads() - &expected).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "max gradient difference {diff}");
    // The loss it reports is the sum over the batch of the same cross-entropy.
    let mean_loss = net.forward_t(&x, false).cross_entropy_for_logits(&y).double_value(&[]);
    assert!((out.loss_sum.double_value(&[]) / 6.0 - mean_loss).abs() < 1e-6);
    // The variables now read the flat buffer: the model's forward gives the step's logits.
    let logits = tch::no_grad(|| net.forward_t(&x, false));
    assert!((logits - out.logits).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn adam_step_follows_the_formula_and_frozen_tensors_stay_put() {
    let config = ModelConfig::new(Arch::Mlp, [2, 2], vec![3], 3, 0.0).unwrap();
    let (vs, _net, x, y) = setup(&config);
    let before: Vec<f32> = Vec::try_from(&vs.variables()["3.weight"].view(-1)).unwrap();
    let frozen_before: Vec<f32> = Vec::try_from(&vs.variables()["1.weight"].view(-1)).unwrap();
    let mut mlp = FusedMlp::new(&vs, &config, settings(Precision::F32, &["1.weight"])).unwrap();
    let (lr, mut m, mut v) = (0.01f64, vec![0f64; 9], vec![0f64; 9]);
    let mut expected: Vec<f64> = before.iter().map(|&w| w as f64).collect();
    for t in 1..=3 {
        mlp.forward_backward(&x, &y).unwrap();
        // 3.weight sits after 1.weight (3x4 = 12) and 1.bias (3) in the flat buffer.
        let g: Vec<f32> = Vec::try_from(&mlp.flat_grads().narrow(0, 15, 9)).unwrap();
        mlp.adam_step(lr).unwrap();
        for i in 0..9 {
            let g = g[i] as f64;
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.999 * v[i] + 0.001 * g * g;
            let (m_hat, v_hat) = (m[i] / (1.0 - 0.9f64.powi(t)), v[i] / (1.0 - 0.999f64.powi(t)));
            expected[i] -= lr * m_hat / (v_hat.sqrt() + 1e-7);
        }
    }
    let after: Vec<f32> = Vec::try_from(&vs.variables()["3.weight"].view(-1)).unwrap();
    for (a, e) in after.iter().zip(&expected) {
        assert!((*a as f64 - e).abs() < 1e-6, "{a} vs {e}");
    }
    assert_ne!(after, before, "the trainable layer moved");
    let frozen_after: Vec<f32> = Vec::try_from(&vs.variables()["1.weight"].view(-1)).unwrap();
    assert_eq!(frozen_after, frozen_before, "a frozen tensor moved");
}

#[test]
fn bf16_gradients_are_close_to_float32_ones() {
    let config = ModelConfig::new(Arch::Mlp, [4, 4], vec![32], 3, 0.0).unwrap();
    let (vs, net, x, y) = setup(&config);
    let expected = autograd_gradients(&vs, &net, &config, &x, &y);
    let mut mlp = FusedMlp::new(&vs, &config, settings(Precision::Bf16, &[])).unwrap();
    mlp.forward_backward(&x, &y).unwrap();
    assert_eq!(mlp.flat_grads().kind(), Kind::Float, "the gradient buffer stays float32");
    // bfloat16 keeps 8 bits of mantissa: relative error around 1%.
    let scale = expected.abs().max().double_value(&[]);
    let diff = (mlp.flat_grads() - &expected).abs().max().double_value(&[]);
    assert!(diff < 0.02 * scale, "max difference {diff} for gradients up to {scale}");
    assert!(diff > 0.0, "bf16 arithmetic should not be bit-identical to float32");
}
