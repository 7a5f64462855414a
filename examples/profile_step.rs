//! Where the time of one training step goes: per-phase timers over many steps of the seed's model on
//! random batch-32 data, at 1 and 2 intra-op threads. Profiling aid for the training loop.
//!
//!     cargo run --release --example profile_step

use std::time::Instant;
use tch::{Device, Kind, Tensor, nn, nn::ModuleT, nn::OptimizerConfig};

fn main() {
    if std::env::var_os("FTZ").is_some() {
        // Flush denormals to zero (FTZ + DAZ) on this thread; threads created later inherit it.
        #[cfg(target_arch = "x86_64")]
        #[allow(deprecated)]
        unsafe {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            _mm_setcsr(_mm_getcsr() | 0x8040);
        }
    }
    let steps = 3000;
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = mnist_tch::model::build(&vs.root(), &Default::default());
        let mut adam = nn::Adam { eps: 1e-7, ..Default::default() }.build(&vs, 1e-3).unwrap();
        // Real data when available (random data has gradients whose Adam moments go denormal, which is
        // not what training sees), else random bytes.
        let path = std::path::Path::new("data/fashion-mnist");
        let (images, labels) = match mnist_tch::data::prepare(path, &Default::default(), 10, "auto", 0.2) {
            Ok(data) => (data.train.images, data.train.labels),
            Err(_) => (
                Tensor::randint(256, [48_000, 784], (Kind::Uint8, Device::Cpu)),
                Tensor::randint(10, [48_000], (Kind::Int64, Device::Cpu)),
            ),
        };
        let images = if images.kind() == Kind::Float { (images * 255.0).round().to_kind(Kind::Uint8) } else { images };
        let images_f = images.to_kind(Kind::Float) / 255.0;
        let mut t = [0f64; 7];
        let names = [
            "gather u8+convert",
            "forward",
            "loss",
            "backward",
            "optimizer step",
            "metrics (device)",
            "metrics (item)",
        ];
        let order = Tensor::randperm(48_000, (Kind::Int64, Device::Cpu));
        let loss_sum = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let total = Instant::now();
        for step in 0..steps {
            let start = (step * 32) % 47_968;
            let mut clock = Instant::now();
            let mut lap = |i: usize, clock: &mut Instant| {
                t[i] += clock.elapsed().as_secs_f64();
                *clock = Instant::now();
            };
            let idx = order.narrow(0, start as i64, 32);
            let x = images.index_select(0, &idx).to_kind(Kind::Float) * (1.0 / 255.0);
            let y = labels.index_select(0, &idx);
            lap(0, &mut clock);
            let logits = net.forward_t(&x, true);
            lap(1, &mut clock);
            let loss = logits.cross_entropy_for_logits(&y);
            lap(2, &mut clock);
            adam.zero_grad();
            loss.backward();
            lap(3, &mut clock);
            adam.step();
            lap(4, &mut clock);
            tch::no_grad(|| {
                let mut s = loss_sum.shallow_clone();
                s += loss.detach();
                let _ = logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64);
            });
            lap(5, &mut clock);
            let _ = loss.double_value(&[]);
            lap(6, &mut clock);
            let _ = &images_f;
        }
        let elapsed = total.elapsed().as_secs_f64();
        println!(
            "{threads} thread(s): {:.1} µs/step, {:.3} s per 1500-step epoch",
            elapsed / steps as f64 * 1e6,
            elapsed / steps as f64 * 1500.0
        );
        for (name, seconds) in names.iter().zip(t) {
            println!("  {name:<20} {:6.1} µs/step", seconds / steps as f64 * 1e6);
        }
    }
}
