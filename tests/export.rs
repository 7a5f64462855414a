//! The exported TorchScript module loads back with `CModule::load` and matches the eager model for
//! every accepted input shape; export on something that is not a run is one clear line.

mod common;

use common::{Fixture, SIDE, mnist_tch};
use mnist_tch::run_dir::load_run;
use tch::{CModule, Device, Kind, Tensor, nn::ModuleT};

#[test]
fn exported_module_matches_the_eager_model() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--hidden", "32,16"]).assert_ok();
    let run_dir = fixture.path("run");
    for (file, probabilities) in [("logits.pt", false), ("probs.pt", true)] {
        let out = fixture.path(file);
        let mut args = vec!["export", "--model", run_dir.to_str().unwrap(), "--out", out.to_str().unwrap()];
        if probabilities {
            args.push("--probabilities");
        }
        let exported = mnist_tch(&args);
        exported.assert_ok();
        assert!(exported.stdout.contains(if probabilities { "probabilities" } else { "logits" }));

        let module = CModule::load(&out).unwrap();
        let run = load_run(&run_dir, Device::Cpu).unwrap();
        let side = SIDE as i64;
        // A batch size the trace never saw, in each accepted shape.
        let images = Tensor::rand([7, side, side], (Kind::Float, Device::Cpu));
        let eager = tch::no_grad(|| run.net.forward_t(&images, false));
        let expected = if probabilities { eager.softmax(-1, Kind::Float) } else { eager };
        for input in [images.shallow_clone(), images.view([7, 1, side, side]), images.view([7, side * side])] {
            let output = tch::no_grad(|| module.forward_ts(&[&input])).unwrap();
            assert_eq!(output.size(), vec![7, 4]);
            assert_eq!(output.kind(), Kind::Float);
            let diff = (&output - &expected).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{file} {:?}: max abs diff {diff}", input.size());
        }
        if probabilities {
            let sums = module.forward_ts(&[&images]).unwrap().sum_dim_intlist(-1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
        }
        // About the size of the weights: 64*32 + 32 + 32*16 + 16 + 16*4 + 4 floats, plus the graph.
        let size = std::fs::metadata(&out).unwrap().len();
        assert!(size < 64 * 1024, "{file} is {size} bytes");
    }
}

#[test]
fn export_of_something_that_is_not_a_run_is_one_clear_line() {
    let fixture = Fixture::new(false);
    let out = fixture.path("model.pt");
    let missing = fixture.path("missing");
    mnist_tch(&["export", "--model", missing.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert_clean_error(&["missing", "not a run directory"]);
    // A directory of something else: the data directory.
    let data = fixture.data();
    mnist_tch(&["export", "--model", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .assert_clean_error(&["config.json", "cannot read"]);
    assert!(!out.exists(), "a failed export must not leave a file");
}

#[test]
fn export_on_a_missing_gpu_is_one_clear_line() {
    if tch::Cuda::device_count() > 0 {
        return; // the error path only exists without CUDA
    }
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let out = fixture.path("model.pt");
    mnist_tch(&[
        "export",
        "--model",
        fixture.path("run").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cuda",
    ])
    .assert_clean_error(&["CUDA is not available"]);
}
