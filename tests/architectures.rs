//! Every architecture (`--arch linear|mlp|cnn`) through every subcommand on small synthetic images:
//! it learns a separable set, round-trips through the run directory (evaluate reproduces the run's own
//! test loss), exports to TorchScript that matches the eager model for every input shape, predicts,
//! summarises with the right parameter count, fine-tunes with frozen layers bit-identical; a checkpoint
//! of one architecture loaded as another, and a CNN under the fused engine, are one clear error.

mod common;

use common::{Files, Fixture, json, mnist_tch, weights};
use mnist_tch::model::{Arch, ModelConfig};
use mnist_tch::run_dir::load_run;
use serde_json::Value;
use std::path::Path;
use tch::{CModule, Device, Kind, Tensor, nn::ModuleT};

/// 12x12 images: the smallest convenient size for two 3x3 conv + 2x2 pool blocks.
const SIDE: i64 = 12;

fn fixture() -> Fixture {
    Fixture::with_files(&Files::synthetic_of_side(600, 200, SIDE as u32), false)
}

#[test]
fn each_architecture_learns_round_trips_exports_and_summarises() {
    let fixture = fixture();
    for (arch, parameters, head) in
        [("linear", 144 * 4 + 4, "1"), ("mlp", 144 * 128 + 128 + 128 * 4 + 4, "3"), ("cnn", 0, "10")]
    {
        let run = fixture.train(arch, &["--arch", arch, "--epochs", "3", "--lr", "0.003"]);
        run.assert_ok();
        let accuracy = run.test_accuracy();
        assert!(accuracy > 0.9, "{arch}: test accuracy {accuracy}");
        let dir = fixture.path(arch);
        let config = json(&dir.join("config.json"));
        assert_eq!(config["model"]["arch"], arch);
        assert_eq!(config["training"]["engine"], "autograd");
        let layers = config["model"]["layers"].as_array().unwrap();
        assert_eq!(layers.last().unwrap()["type"], "Linear", "{arch}: ends in a Linear head");
        assert!(weights(&dir).iter().any(|(name, _)| *name == format!("{head}.weight")), "{arch}");

        // The model is rebuilt from config.json alone: evaluate reproduces the run's own test loss.
        let model: ModelConfig = serde_json::from_value(config["model"].clone()).unwrap();
        if parameters > 0 {
            assert_eq!(model.parameter_count(), parameters, "{arch}");
        }
        let evaluated = mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu", "--json"]);
        evaluated.assert_ok();
        let report: Value = serde_json::from_str(&evaluated.stdout).unwrap();
        let own_loss = config["result"]["test_loss"].as_f64().unwrap();
        assert!((report["loss"].as_f64().unwrap() - own_loss).abs() < 1e-6, "{arch}: {report} vs {own_loss}");

        // summary counts what the model has.
        let summary = mnist_tch(&["summary", "--model", dir.to_str().unwrap()]);
        summary.assert_ok();
        let total = summary.stdout.lines().find_map(|l| l.trim().strip_prefix("Total params: ")).unwrap();
        let total: i64 = total.split(' ').next().unwrap().replace(',', "").parse().unwrap();
        assert_eq!(total, model.parameter_count(), "{arch}: {}", summary.stdout);

        // TorchScript: every input shape of the contract gives the eager model's logits.
        let exported = fixture.path(&format!("{arch}.pt"));
        mnist_tch(&["export", "--model", dir.to_str().unwrap(), "--out", exported.to_str().unwrap()]).assert_ok();
        let module = CModule::load(&exported).unwrap();
        let loaded = load_run(&dir, Device::Cpu).unwrap();
        let images = Tensor::rand([5, SIDE, SIDE], (Kind::Float, Device::Cpu));
        let eager = tch::no_grad(|| loaded.model.net.forward_t(&images, false));
        for input in [images.shallow_clone(), images.view([5, 1, SIDE, SIDE]), images.view([5, SIDE * SIDE])] {
            let traced = tch::no_grad(|| module.forward_ts(&[&input])).unwrap();
            let diff = (&traced - &eager).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{arch} {:?}: {diff}", input.size());
        }

        // predict through the run directory and through the export agree.
        let idx = fixture.data().join("t10k-images-idx3-ubyte");
        let predict = |model: &Path| {
            let run =
                mnist_tch(&["predict", "--model", model.to_str().unwrap(), "--idx", idx.to_str().unwrap(), "--json"]);
            run.assert_ok();
            run.stdout
        };
        assert_eq!(predict(&dir), predict(&exported), "{arch}");
    }
    // The convnet's summary rows, Keras-like.
    let summary = mnist_tch(&["summary", "--model", fixture.path("cnn").to_str().unwrap()]);
    assert!(
        summary.stdout.contains("2 (Conv2d)") && summary.stdout.contains("(None, 32, 10, 10)"),
        "{}",
        summary.stdout
    );
    assert!(summary.stdout.contains("9 (Dropout 0.5)"), "{}", summary.stdout);
}

#[test]
fn the_cnn_summary_matches_kerass_simple_convnet() {
    let config = ModelConfig::new(Arch::Cnn, [28, 28], vec![], 10, 0.5).unwrap();
    let text = mnist_tch::model::summary(&config, "cnn", &[]);
    for row in [
        "2 (Conv2d)",
        "(None, 32, 26, 26)",
        "320",
        "5 (Conv2d)",
        "(None, 64, 11, 11)",
        "18,496",
        "Total params: 34,826",
    ] {
        assert!(text.contains(row), "{row} missing in\n{text}");
    }
}

#[test]
fn frozen_conv_layers_stay_bit_identical_when_fine_tuning_a_cnn() {
    let fixture = fixture();
    fixture.train("parent", &["--arch", "cnn", "--labels", "0,1", "--epochs", "2"]).assert_ok();
    let parent = fixture.path("parent");
    let out = fixture.path("child");
    let data = fixture.data();
    let run = mnist_tch(&[
        "finetune",
        "--from",
        parent.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--labels",
        "2,3",
        "--freeze",
        "hidden",
        "--lr",
        "0.01",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    run.assert_ok();
    let (before, after) = (weights(&parent), weights(&out));
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let frozen = name.starts_with("2.") || name.starts_with("5.");
        assert_eq!(a.equal(b), frozen, "{name} (frozen: {frozen})");
    }
    let config = json(&out.join("config.json"));
    assert_eq!(config["lineage"]["frozen"], serde_json::json!(["2.bias", "2.weight", "5.bias", "5.weight"]));
}

#[test]
fn a_checkpoint_of_another_architecture_and_a_fused_cnn_are_one_clear_line() {
    let fixture = fixture();
    fixture.train("mlp", &["--epochs", "1"]).assert_ok();
    fixture.train("cnn", &["--arch", "cnn", "--epochs", "1"]).assert_ok();
    std::fs::copy(fixture.path("mlp").join("model.safetensors"), fixture.path("cnn").join("model.safetensors"))
        .unwrap();
    mnist_tch(&["evaluate", "--model", fixture.path("cnn").to_str().unwrap(), "--device", "cpu"])
        .assert_clean_error(&["model.safetensors", "not part of the architecture"]);
    fixture
        .train("fused", &["--arch", "cnn", "--engine", "fused"])
        .assert_usage_error(&["--engine fused trains MLP and linear models only, not a CNN"]);
    fixture.train("bf16", &["--precision", "bf16"]).assert_usage_error(&["--precision bf16", "--engine fused"]);
    for refused in ["fused", "bf16"] {
        assert!(!fixture.path(refused).join("config.json").exists(), "{refused}: a refused run left a config behind");
    }
    fixture.train("small", &["--arch", "cnn"]).assert_ok();
    let tiny = Fixture::new(false); // 8x8 images
    tiny.train("cnn", &["--arch", "cnn"]).assert_clean_error(&["CNN does not fit 8x8 images"]);
    fixture
        .train("hidden", &["--arch", "cnn", "--hidden", "64"])
        .assert_usage_error(&["--hidden applies to --arch mlp"]);
    fixture
        .train("dropout", &["--arch", "linear", "--dropout", "0.2"])
        .assert_usage_error(&["--dropout applies to --arch mlp and cnn, not linear"]);
}
