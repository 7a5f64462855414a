//! Fine-tuning and resuming: frozen tensors stay bit-identical, the head is re-initialised when the
//! classes change, lineage is recorded, resume continues the epoch count, mismatched checkpoints are one
//! clear error, and --labels / --limit select what they say.

mod common;

use common::{Fixture, json, mnist_tch, weights};
use serde_json::Value;
use std::path::Path;
use tch::Tensor;

fn tensor<'a>(set: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &set.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

fn finetune(fixture: &Fixture, out: &str, extra: &[&str]) -> common::Run {
    let parent = fixture.path("parent");
    let data = fixture.data();
    let out = fixture.path(out);
    let mut args = vec!["finetune", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    for (flag, value) in [("--from", parent.to_str().unwrap()), ("--device", "cpu"), ("--epochs", "2")] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    mnist_tch(&args)
}

/// A parent trained on classes 0 and 1 only.
fn with_parent() -> Fixture {
    let fixture = Fixture::new(false);
    fixture.train("parent", &["--labels", "0,1", "--hidden", "16"]).assert_ok();
    fixture
}

#[test]
fn frozen_tensors_stay_bit_identical() {
    let fixture = with_parent();
    let run = finetune(&fixture, "ft", &["--labels", "2,3", "--freeze", "hidden", "--lr", "0.01"]);
    run.assert_ok();
    let parent = weights(&fixture.path("parent"));
    let child = weights(&fixture.path("ft"));
    for name in ["1.weight", "1.bias"] {
        let (a, b) = (tensor(&parent, name), tensor(&child, name));
        assert_eq!(
            Vec::<f32>::try_from(&a.view(-1)).unwrap(),
            Vec::<f32>::try_from(&b.view(-1)).unwrap(),
            "{name} changed"
        );
    }
    // The head, loaded from the parent (same class count, no --reinit-head), trained.
    assert!(!tensor(&parent, "3.weight").equal(tensor(&child, "3.weight")));
    assert!(run.stdout.contains("output layer from the parent"), "{}", run.stdout);
    assert!(run.stdout.contains("Test accuracy before fine-tuning: "), "{}", run.stdout);

    // Freezing by name does the same; an unknown name is one clear error.
    finetune(&fixture, "by-name", &["--labels", "2,3", "--freeze", "1.weight"]).assert_ok();
    let by_name = weights(&fixture.path("by-name"));
    assert!(tensor(&parent, "1.weight").equal(tensor(&by_name, "1.weight")));
    assert!(!tensor(&parent, "1.bias").equal(tensor(&by_name, "1.bias")));
    finetune(&fixture, "bad", &["--labels", "2,3", "--freeze", "7"]).assert_clean_error(&[
        "--freeze 7",
        "no layer or tensor '7'",
        "layers 1, 3",
    ]);
    finetune(&fixture, "all", &["--labels", "2,3", "--freeze", "1,3"]).assert_clean_error(&["freezes every layer"]);
}

#[test]
fn the_head_is_reinitialised_for_a_new_class_count_and_lineage_is_recorded() {
    let fixture = with_parent();
    let run = finetune(&fixture, "ft", &["--labels", "1,2,3", "--freeze", "hidden"]);
    run.assert_ok();
    let dir = fixture.path("ft");
    let child = weights(&dir);
    assert_eq!(tensor(&child, "3.weight").size(), vec![3, 16]);
    assert_eq!(tensor(&child, "3.bias").size(), vec![3]);
    let config = json(&dir.join("config.json"));
    assert_eq!(config["model"]["num_classes"], 3);
    assert_eq!(config["model"]["hidden"], serde_json::json!([16]), "architecture comes from the parent");
    let lineage = &config["lineage"];
    assert_eq!(lineage["reinit_head"], true);
    assert_eq!(lineage["frozen"], serde_json::json!(["1.bias", "1.weight"]));
    assert!(lineage["parent"].as_str().unwrap().ends_with("parent"), "{lineage}");
    assert!(lineage["accuracy_before"].as_f64().is_some());
    assert_eq!(config["data"]["selection"]["labels"], serde_json::json!([1, 2, 3]));
    assert_eq!(config["training"]["learning_rate"], 1e-4, "fine-tuning defaults to a lower rate");

    // --reinit-head with the same class count draws a new head instead of loading the parent's.
    finetune(&fixture, "same", &["--labels", "2,3", "--reinit-head", "--epochs", "1", "--freeze", "hidden"])
        .assert_ok();
    assert_eq!(json(&fixture.path("same").join("config.json"))["lineage"]["reinit_head"], true);
}

#[test]
fn a_checkpoint_of_another_architecture_is_one_clear_line() {
    let fixture = with_parent();
    // A parent whose weights do not fit its config: the weights of a wider model.
    fixture.train("wide", &["--labels", "0,1", "--hidden", "32", "--epochs", "1"]).assert_ok();
    std::fs::copy(fixture.path("wide").join("model.safetensors"), fixture.path("parent").join("model.safetensors"))
        .unwrap();
    finetune(&fixture, "ft", &["--labels", "2,3"]).assert_clean_error(&[
        "model.safetensors",
        "tensor '1.bias' has shape [32]",
        "needs [16]",
    ]);
    // Even with a new head, the hidden layers must fit.
    finetune(&fixture, "ft2", &["--labels", "1,2,3"]).assert_clean_error(&["'1.bias'"]);
    finetune(&fixture, "ft3", &["--from", "/nonexistent"]).assert_clean_error(&["/nonexistent", "not a run directory"]);
}

#[test]
fn resume_continues_the_epoch_count_and_appends_metrics() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let dir = fixture.path("run");
    let before = json(&dir.join("metrics.json"));
    let resumed = mnist_tch(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "4", "--device", "cpu"]);
    resumed.assert_ok();
    let epoch_lines: Vec<&str> = resumed.stdout.lines().filter(|l| l.starts_with("Epoch ")).collect();
    assert_eq!(epoch_lines.len(), 2, "{}", resumed.stdout);
    assert!(epoch_lines[0].starts_with("Epoch 3/4 "), "{}", resumed.stdout);
    let metrics = json(&dir.join("metrics.json"));
    let epochs: Vec<u64> = metrics.as_array().unwrap().iter().map(|m| m["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2, 3, 4]);
    assert_eq!(metrics[0], before[0], "earlier epochs are kept as they were");
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    let config = json(&dir.join("config.json"));
    assert_eq!(config["state"]["epochs_completed"], 4);
    assert_eq!(config["training"]["epochs"], 4);
    assert_eq!(config["state"]["status"], "completed");

    // Nothing left to do is an error that says what to pass.
    let again = mnist_tch(&["train", "--resume", dir.to_str().unwrap(), "--device", "cpu"]);
    again.assert_clean_error(&["already trained 4 epochs", "--epochs"]);
    // Architecture flags cannot be combined with --resume.
    let conflicting = mnist_tch(&["train", "--resume", dir.to_str().unwrap(), "--hidden", "64"]);
    assert_eq!(conflicting.code(), Some(2), "{}", conflicting.stderr);
}

#[test]
fn labels_and_limit_select_what_they_say() {
    let fixture = Fixture::new(false);
    let run = fixture.train("run", &["--labels", "3,1", "--limit", "100", "--epochs", "1"]);
    run.assert_ok();
    let config = json(&fixture.path("run").join("config.json"));
    assert_eq!(config["model"]["num_classes"], 2);
    // The first 100 training images of classes 3 and 1, the last 20% of them for validation.
    assert_eq!(config["data"]["train_examples"], 80);
    assert_eq!(config["data"]["validation_examples"], 20);
    assert_eq!(config["data"]["class_names"], serde_json::json!(["3", "1"]));
    // The test set keeps every test image of those classes.
    let (_, test_labels) = common::synthetic(200, 2);
    let expected_test = test_labels.iter().filter(|&&l| l == 1 || l == 3).count();
    assert_eq!(config["data"]["test_examples"], expected_test as u64);
    let evaluation = json(&fixture.path("run").join("evaluation.json"));
    let counts: Vec<i64> =
        evaluation["classes"].as_array().unwrap().iter().map(|c| c["examples"].as_i64().unwrap()).collect();
    let threes = test_labels.iter().filter(|&&l| l == 3).count() as i64;
    assert_eq!(counts, vec![threes, expected_test as i64 - threes], "class 0 of the model is label 3");

    fixture.train("too-many", &["--limit", "601"]).assert_clean_error(&["--limit 601", "600 training images"]);
    fixture.train("twice", &["--labels", "1,1"]).assert_clean_error(&["names a class twice"]);
    // A selected class with no training image would be an output unit nothing trains: refused.
    fixture
        .train("absent", &["--labels", "1,9"])
        .assert_clean_error(&["--labels 1,9", "label 9 has no training images"]);

    // evaluate rebuilds the selection from config.json: the test images of classes 3 and 1, relabelled.
    let run = fixture.path("run");
    let evaluated = mnist_tch(&["evaluate", "--model", run.to_str().unwrap(), "--device", "cpu", "--json"]);
    evaluated.assert_ok();
    assert!(evaluated.stderr.contains("classes 3, 1 only"), "{}", evaluated.stderr);
    let report: Value = serde_json::from_str(&evaluated.stdout).unwrap();
    assert_eq!(report["examples"], expected_test as u64);
    let own = json(&run.join("config.json"))["result"]["test_loss"].as_f64().unwrap();
    assert!((report["loss"].as_f64().unwrap() - own).abs() < 1e-6, "{report} vs {own}");
    // ... and so does evaluate of a run fine-tuned with --labels.
    let out = fixture.path("ft-labels");
    mnist_tch(&[
        "finetune",
        "--from",
        run.to_str().unwrap(),
        "--data",
        fixture.data().to_str().unwrap(),
        "--labels",
        "0,2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .assert_ok();
    mnist_tch(&["evaluate", "--model", out.to_str().unwrap(), "--device", "cpu"]).assert_ok();
}

#[test]
fn an_interrupted_and_resumed_fused_run_equals_an_uninterrupted_one() {
    // Weights, Adam's state (fused engine), the callbacks and the per-epoch data order all continue, so
    // 2 + 2 epochs give exactly the metrics and weights of 4 (wall time aside).
    let fixture = Fixture::new(false);
    let flags = ["--engine", "fused", "--lr-schedule", "plateau:1:0.5"];
    fixture.train("straight", &[&flags[..], &["--epochs", "4"]].concat()).assert_ok();
    fixture.train("split", &[&flags[..], &["--epochs", "2"]].concat()).assert_ok();
    let split = fixture.path("split");
    let resumed = mnist_tch(&["train", "--resume", split.to_str().unwrap(), "--epochs", "4", "--device", "cpu"]);
    resumed.assert_ok();
    assert!(resumed.stdout.contains("(engine: fused)"), "{}", resumed.stdout);
    assert!(resumed.stdout.contains("Adam's moment estimates and step count restored"), "{}", resumed.stdout);
    assert_eq!(metric_columns(&fixture.path("straight")), metric_columns(&split));
    let (a, b) = (weights(&fixture.path("straight")), weights(&split));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name} differs");
    }
    let config = json(&split.join("config.json"));
    assert_eq!(
        config["state"]["resumes"],
        serde_json::json!([{"after_epoch": 2, "engine": "fused", "optimizer": "restored"}])
    );
}

#[test]
fn a_resumed_autograd_run_is_the_uninterrupted_one_with_adams_state_restored() {
    let fixture = Fixture::new(false);
    fixture.train("straight", &["--epochs", "4"]).assert_ok();
    fixture.train("split", &["--epochs", "2"]).assert_ok();
    let split = fixture.path("split");
    assert!(split.join("optimizer.safetensors").exists(), "the autograd engine saves libtorch's Adam state");
    let resumed = mnist_tch(&["train", "--resume", split.to_str().unwrap(), "--epochs", "4", "--device", "cpu"]);
    resumed.assert_ok();
    assert!(resumed.stdout.contains("(engine: autograd)"), "{}", resumed.stdout);
    let line = resumed.stdout.lines().find(|l| l.starts_with("Optimizer: ")).unwrap_or_default();
    assert!(line.contains("restored from optimizer.safetensors"), "{}", resumed.stdout);
    let config = json(&split.join("config.json"));
    assert_eq!(
        config["state"]["resumes"],
        serde_json::json!([{"after_epoch": 2, "engine": "autograd", "optimizer": "restored"}])
    );
    assert_eq!(config["state"]["epochs_completed"], 4);
    assert_eq!(metric_columns(&fixture.path("straight")), metric_columns(&split));
    let weights = |run: &str| std::fs::read(fixture.path(run).join("model.safetensors")).unwrap();
    assert!(weights("straight") == weights("split"), "model.safetensors differs from the uninterrupted run's");
}

#[test]
fn a_resumed_autograd_run_without_its_optimizer_state_continues_with_fresh_moments_and_says_so() {
    let fixture = Fixture::new(false);
    fixture.train("straight", &["--epochs", "4"]).assert_ok();
    fixture.train("split", &["--epochs", "2"]).assert_ok();
    let split = fixture.path("split");
    // As a run of an earlier mnist-tch, which saved no state for this engine.
    std::fs::remove_file(split.join("optimizer.safetensors")).unwrap();
    let resumed = mnist_tch(&["train", "--resume", split.to_str().unwrap(), "--epochs", "4", "--device", "cpu"]);
    resumed.assert_ok();
    let line = resumed.stdout.lines().find(|l| l.starts_with("Optimizer: ")).unwrap_or_default();
    assert!(line.contains("fresh moment estimates") && line.contains("no saved autograd optimizer state"), "{line}");
    let config = json(&split.join("config.json"));
    assert_eq!(config["state"]["resumes"][0]["optimizer"], "fresh");
    // The first two epochs are the same run; after the restart of Adam's moments the runs part ways.
    let (straight, resumed) = (metric_columns(&fixture.path("straight")), metric_columns(&split));
    assert_eq!(straight[..3], resumed[..3]);
    assert_ne!(straight[3..], resumed[3..]);
}

/// Every column of metrics.csv but the last (`seconds`, wall time).
fn metric_columns(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    csv.lines().map(|line| line.rsplit_once(',').unwrap().0.to_string()).collect()
}

#[test]
fn resume_honours_save_best_and_early_stopping_and_refuses_the_rest_in_one_line() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let dir = fixture.path("run");
    let run = dir.to_str().unwrap();
    // Flags that would change the run: refused together, in one line, exit 2, no usage echoing them.
    let refused =
        mnist_tch(&["train", "--resume", run, "--epochs", "4", "--seed", "3", "--batch-size", "8", "--hidden", "64"]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    let (flags, _) = refused.stderr.split_once(" cannot change a resumed run").expect("the refusal");
    for flag in ["--batch-size", "--seed", "--hidden"] {
        assert!(flags.contains(flag), "{}", refused.stderr);
    }
    assert!(!refused.stderr.contains("Usage"), "{}", refused.stderr);
    let data = fixture.data();
    // --data naming the run's own data changes nothing: only --lr-schedule is refused.
    let refused = mnist_tch(&["train", "--resume", run, "--data", data.to_str().unwrap(), "--lr-schedule", "cosine"]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.starts_with("error: --lr-schedule cannot change"), "{}", refused.stderr);
    assert_eq!(json(&dir.join("config.json"))["state"]["epochs_completed"], 2, "nothing was trained");
    // --save-best and --early-stopping apply to the remaining epochs.
    let resumed = mnist_tch(&[
        "train",
        "--resume",
        run,
        "--epochs",
        "4",
        "--save-best",
        "--early-stopping",
        "5",
        "--device",
        "cpu",
    ]);
    resumed.assert_ok();
    let config = json(&dir.join("config.json"));
    assert_eq!(config["training"]["save_best"], true);
    assert_eq!(config["training"]["early_stopping"]["patience"], 5);
    assert!(dir.join("best.safetensors").exists(), "--save-best on resume writes best.safetensors");
}
