//! Where the time of a training step goes, through the code the binary runs: the engines' `TrainStep`
//! (autograd and fused) and, for reference, the textbook loop (`nn::Adam` over the layers' own tensors,
//! `backward_step`), on real batches of 32 of the Keras tutorial's model, alternated, with the minimum and the
//! median over repetitions (this machine's speed drifts). Profiling aid for the training loop.
//!
//!     cargo run --release --example profile_step [-- --reps 5 --steps 3000 --arch mlp|cnn --data DIR]

use mnist_tch::class_names::ClassNames;
use mnist_tch::data::{self, Selection, to_inputs};
use mnist_tch::engine::{self, AdamSettings, Engine, Precision, StepSettings};
use mnist_tch::model::{Arch, ModelConfig};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT, nn::OptimizerConfig};

const ADAM: AdamSettings = AdamSettings { beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 0.0 };

#[derive(Clone, Copy, Debug)]
enum Variant {
    Engine(Engine),
    /// nn::Adam over the layers' tensors, zero_grad + backward + step.
    Textbook,
}

/// Seconds per step of `variant` over `steps` batches of 32, split into gathering the batch and the step.
fn time(variant: Variant, config: &ModelConfig, images: &Tensor, labels: &Tensor, steps: usize) -> (f64, f64) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = config.init(&vs.root());
    let n = labels.size()[0];
    let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
    let settings =
        StepSettings { adam: ADAM, precision: Precision::F32, frozen: vec![], label_smoothing: 0.0, group: None };
    let mut textbook = nn::Adam { eps: 1e-7, ..Default::default() }.build(&vs, 1e-3).ok();
    let mut step = match variant {
        Variant::Engine(engine) => Some(engine::new_step(engine, &vs, &net, config, settings).expect("engine")),
        Variant::Textbook => None,
    };
    if let Some(step) = &mut step {
        step.set_learning_rate(1e-3).expect("lr");
        textbook = None;
    }
    let (mut gather, mut compute) = (0.0, 0.0);
    for i in 0..steps {
        let clock = Instant::now();
        let rows = order.narrow(0, (i as i64 * 32) % (n - 32), 32);
        let x = to_inputs(&images.index_select(0, &rows));
        let y = labels.index_select(0, &rows);
        gather += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        match (&mut step, &mut textbook) {
            (Some(step), _) => {
                step.step(&x, &y).expect("step");
            }
            (None, Some(adam)) => adam.backward_step(&net.forward_t(&x, true).cross_entropy_for_logits(&y)),
            (None, None) => unreachable!(),
        }
        compute += clock.elapsed().as_secs_f64();
    }
    (gather / steps as f64, compute / steps as f64)
}

fn main() {
    mnist_tch::flush_denormals_to_zero();
    mnist_tch::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.into())
    };
    let reps: usize = flag("--reps", "5").parse().expect("--reps N");
    let steps: usize = flag("--steps", "3000").parse().expect("--steps N");
    let arch = match flag("--arch", "mlp").as_str() {
        "cnn" => Arch::Cnn,
        _ => Arch::Mlp,
    };
    let data_dir = flag("--data", "data/fashion-mnist");
    // Real data (random data has gradients whose Adam moments go denormal, which training does not see).
    let prepared =
        data::load_training_data(std::path::Path::new(&data_dir), &Selection::default(), 10, &ClassNames::Auto, 0.2)
            .expect("the data (scripts/setup.sh prepares it; or pass --data DIR)");
    let hidden = if arch == Arch::Mlp { vec![128] } else { vec![] };
    let config = ModelConfig::new(arch, [28, 28], hidden, 10, arch.default_dropout()).expect("model");
    let mut variants = vec![Variant::Engine(Engine::Autograd), Variant::Textbook];
    if arch == Arch::Mlp {
        variants.push(Variant::Engine(Engine::Fused));
    }
    println!(
        "{} threads, {steps} steps of batch 32, {reps} repetitions alternated, {}",
        tch::get_num_threads(),
        config.describe()
    );
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
    for _ in 0..reps {
        for (i, &variant) in variants.iter().enumerate() {
            results[i].push(time(variant, &config, &prepared.train.images, &prepared.train.labels, steps));
        }
    }
    let steps_per_epoch = (prepared.train.len() as f64 / 32.0).ceil();
    for (variant, runs) in variants.iter().zip(results) {
        let mut totals: Vec<f64> = runs.iter().map(|(g, c)| g + c).collect();
        totals.sort_by(f64::total_cmp);
        let mut computes: Vec<f64> = runs.iter().map(|(_, c)| *c).collect();
        computes.sort_by(f64::total_cmp);
        let gather = runs.iter().map(|(g, _)| g).sum::<f64>() / runs.len() as f64;
        println!(
            "{:<18} step {:6.1} µs (min) {:6.1} µs (median), gather {:5.1} µs; {:.3} / {:.3} s per {} -step epoch (min / median, no validation)",
            format!("{variant:?}"),
            computes[0] * 1e6,
            computes[computes.len() / 2] * 1e6,
            gather * 1e6,
            totals[0] * steps_per_epoch,
            totals[totals.len() / 2] * steps_per_epoch,
            steps_per_epoch
        );
    }
}
