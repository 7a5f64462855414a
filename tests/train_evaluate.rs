//! End-to-end: the real binary trains on tiny synthetic IDX data (raw and .gz), writes a run directory,
//! and `evaluate` rebuilds the model from it.

mod common;

use common::{Fixture, mnist_tch};
use serde_json::Value;

#[test]
fn learns_a_synthetic_set_and_writes_a_run_directory() {
    let fixture = Fixture::new(false);
    let run = fixture.train("run", &[]);
    run.assert_ok();
    assert!(run.test_accuracy() >= 0.95, "{}", run.stdout);

    // Piped stdout: exactly one line per epoch, in the Keras-like format.
    let epoch_lines: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("Epoch ")).collect();
    assert_eq!(epoch_lines.len(), 3, "{}", run.stdout);
    // 600 examples, last 20% for validation: 480 train -> 15 steps of 32.
    assert!(epoch_lines[2].starts_with("Epoch 3/3 - 15 steps - "), "{}", epoch_lines[2]);
    for field in ["- loss: ", "- accuracy: ", "- val_loss: ", "- val_accuracy: "] {
        assert!(epoch_lines[0].contains(field), "{}", epoch_lines[0]);
    }
    assert!(run.stdout.contains("Device: cpu"), "{}", run.stdout);
    assert!(run.stdout.contains("480 training, 120 validation, 200 test images of 8x8"), "{}", run.stdout);

    let dir = fixture.path("run");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["hidden"], serde_json::json!([128]));
    assert_eq!(config["model"]["input_shape"], serde_json::json!([8, 8]));
    assert_eq!(config["model"]["num_classes"], 4);
    assert_eq!(config["training"]["epochs"], 3);
    assert_eq!(config["training"]["batch_size"], 32);
    assert_eq!(config["training"]["adam_epsilon"], 1e-7);
    assert_eq!(config["training"]["seed"], 42);
    assert_eq!(config["data"]["class_names"], serde_json::json!(["0", "1", "2", "3"]));
    assert_eq!(config["data"]["validation_examples"], 120);
    assert_eq!(config["tool"]["name"], "mnist-tch");
    assert!(config["result"]["test_accuracy"].as_f64().unwrap() >= 0.95);

    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics.lines().collect();
    assert_eq!(rows[0], "epoch,steps,loss,accuracy,val_loss,val_accuracy,lr,seconds");
    assert_eq!(rows.len(), 4, "{metrics}");
    assert!(rows[3].starts_with("3,15,"), "{metrics}");

    // Tensor names of PyTorch's nn.Sequential(Flatten, Linear, ReLU, Linear) state dict.
    let weights = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    let mut names: Vec<(String, Vec<i64>)> = weights.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("1.bias".into(), vec![128]),
            ("1.weight".into(), vec![128, 64]),
            ("3.bias".into(), vec![4]),
            ("3.weight".into(), vec![4, 128]),
        ]
    );
    // Atomic writes leave no temporary files behind. Both engines save their Adam state beside the
    // weights.
    let files = |dir: &std::path::Path| {
        let mut files: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        files
    };
    assert_eq!(
        files(&dir),
        vec![
            ".lock",
            "config.json",
            "evaluation.json",
            "metrics.csv",
            "metrics.json",
            "model.safetensors",
            "optimizer.safetensors"
        ]
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["training"]["engine"], "autograd");
    fixture.train("fused", &["--engine", "fused", "--epochs", "1"]).assert_ok();
    let fused = fixture.path("fused");
    assert_eq!(
        files(&fused),
        vec![
            ".lock",
            "config.json",
            "evaluation.json",
            "metrics.csv",
            "metrics.json",
            "model.safetensors",
            "optimizer.safetensors"
        ]
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fused.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["training"]["engine"], "fused");
}

#[test]
fn gzipped_and_raw_files_give_identical_runs_and_same_seed_is_reproducible() {
    // Raw files are read straight into a tensor, .gz ones streamed: the tensors, and so every metric, must agree.
    // (Every metric: the seconds column is wall time, the one thing that may differ.)
    let raw = Fixture::new(false);
    let gz = Fixture::new(true);
    raw.train("a", &[]).assert_ok();
    raw.train("b", &[]).assert_ok();
    gz.train("a", &[]).assert_ok();
    // Every column but the last, the epoch's wall time.
    let metrics = |f: &Fixture, run: &str| -> Vec<String> {
        let csv = std::fs::read_to_string(f.path(run).join("metrics.csv")).unwrap();
        csv.lines().map(|line| line.rsplit_once(',').unwrap().0.to_string()).collect()
    };
    assert_eq!(metrics(&raw, "a"), metrics(&raw, "b"), "same seed, same data: identical metrics.csv");
    assert_eq!(metrics(&raw, "a"), metrics(&gz, "a"), "raw and .gz loaders disagree");

    let other_seed = raw.train("c", &["--seed", "7"]);
    other_seed.assert_ok();
    assert_ne!(metrics(&raw, "a"), metrics(&raw, "c"), "the seed must change the run");
}

#[test]
fn evaluate_rebuilds_the_model_from_the_run_directory() {
    let fixture = Fixture::new(true);
    let trained = fixture.train("run", &["--hidden", "16,8"]);
    trained.assert_ok();
    let dir = fixture.path("run");
    let run_dir = dir.to_str().unwrap();

    // No architecture flags: evaluate must get 16,8 from config.json, and the data dir too.
    let evaluated = mnist_tch(&["evaluate", "--model", run_dir, "--device", "cpu"]);
    evaluated.assert_ok();
    assert_eq!(evaluated.test_accuracy(), trained.test_accuracy());
    assert!(evaluated.stdout.contains("64-16-8-4 MLP"), "{}", evaluated.stdout);
    assert!(evaluated.stdout.contains("Confusion matrix"), "{}", evaluated.stdout);
    assert!(evaluated.stdout.contains("Per-class metrics"), "{}", evaluated.stdout);
    assert!(evaluated.stdout.contains("precision") && evaluated.stdout.contains("macro avg"), "{}", evaluated.stdout);

    let json = mnist_tch(&["evaluate", "--model", run_dir, "--device", "cpu", "--json"]);
    json.assert_ok();
    let report: Value = serde_json::from_str(json.stdout.trim()).unwrap();
    // The printed accuracy has 4 decimals; the JSON has them all. The accuracy saturates on this set, so
    // the loss is what shows the same weights were evaluated.
    assert!((report["accuracy"].as_f64().unwrap() - trained.test_accuracy()).abs() <= 5e-5);
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let recorded = config["result"]["test_loss"].as_f64().unwrap();
    assert!((report["loss"].as_f64().unwrap() - recorded).abs() < 1e-6, "{} vs {recorded}", report["loss"]);
    assert_eq!(report["examples"], 200);
    let matrix = report["confusion_matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 4);
    let total: i64 = matrix.iter().flat_map(|r| r.as_array().unwrap()).map(|c| c.as_i64().unwrap()).sum();
    assert_eq!(total, 200);
    let diagonal: i64 = (0..4).map(|i| matrix[i][i].as_i64().unwrap()).sum();
    assert!((diagonal as f64 / 200.0 - report["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(report["classes"].as_array().unwrap().len(), 4);
}

#[test]
fn quiet_prints_only_the_result() {
    let fixture = Fixture::new(false);
    let run = fixture.train("run", &["--quiet", "--epochs", "1"]);
    run.assert_ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert!(lines[0].starts_with("Test accuracy: "), "{}", run.stdout);
}

#[test]
fn refuses_to_overwrite_a_previous_run_unless_asked() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let before = std::fs::read(fixture.path("run").join("model.safetensors")).unwrap();
    fixture.train("run", &["--epochs", "1", "--seed", "3"]).assert_clean_error(&["already holds a run", "--overwrite"]);
    assert_eq!(std::fs::read(fixture.path("run").join("model.safetensors")).unwrap(), before);
    fixture.train("run", &["--epochs", "1", "--seed", "3", "--overwrite"]).assert_ok();
    assert_ne!(std::fs::read(fixture.path("run").join("model.safetensors")).unwrap(), before);
}

#[test]
fn class_names_are_known_for_fashion_mnist() {
    // A directory whose name says fashion gets Fashion-MNIST's class names (10 classes).
    let fixture = Fixture::new(false);
    let fashion = fixture.path("fashion-mnist");
    std::fs::rename(fixture.data(), &fashion).unwrap();
    let out = fixture.path("run");
    let run = mnist_tch(&[
        "train",
        "--data",
        fashion.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]);
    run.assert_ok();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["data"]["class_names"][9], "Ankle boot");
    assert_eq!(config["model"]["num_classes"], 10);
}
