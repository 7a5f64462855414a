//! The small things a new user tripped over: evaluate names the weights it read and refuses a path
//! elsewhere, its confusion table labels every column, --labels and --num-classes must agree, a
//! fine-tuned bf16 run stays bf16, fine-tuned runs are runs/finetuneN, "1 epoch" in the singular.

mod common;

use common::{Fixture, json, mnist_tch};
use std::path::Path;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn evaluate_names_its_weights_and_labels_every_column() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--save-best"]).assert_ok();
    let run = fixture.path("run");
    let text = mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--weights", "best.safetensors"]);
    text.assert_ok();
    assert!(text.stdout.contains(&format!("Weights: {}", s(&run.join("best.safetensors")))), "{}", text.stdout);
    let header = text.stdout.lines().skip_while(|l| !l.starts_with("Confusion matrix")).nth(1).unwrap();
    assert!(header.trim_end().ends_with("class"), "the trailing column is labelled: {header:?}");
    let report = mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    assert!(report["weights"].as_str().unwrap().ends_with("run/model.safetensors"), "{report}");
    let elsewhere = fixture.path("model.safetensors");
    std::fs::copy(run.join("model.safetensors"), &elsewhere).unwrap();
    for weights in [s(&elsewhere), "../run/model.safetensors"] {
        let refused = mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--weights", weights]);
        assert_eq!(refused.code(), Some(2), "{weights}: {}", refused.stderr);
        assert!(refused.stderr.contains("not a path"), "{}", refused.stderr);
    }
}

#[test]
fn labels_and_num_classes_must_agree() {
    let fixture = Fixture::new(false);
    let refused = fixture.train("run", &["--labels", "0,1", "--num-classes", "3", "--print-config"]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--labels gives 2 classes but --num-classes says 3"), "{}", refused.stderr);
    let agreed = fixture.train("run", &["--labels", "0,1", "--num-classes", "2", "--print-config"]);
    agreed.assert_ok();
    // The fixture passes --num-classes 4 unless told otherwise; without it, --labels decides alone.
    let data = fixture.data();
    mnist_tch(&["train", "--data", s(&data), "--labels", "0,1", "--print-config"]).assert_ok();
}

#[test]
fn finetuning_keeps_the_parents_precision_and_numbers_its_runs_apart() {
    let fixture = Fixture::new(false);
    fixture.train("parent", &["--epochs", "1", "--engine", "fused", "--precision", "bf16"]).assert_ok();
    let parent = fixture.path("parent");
    let data = fixture.data();
    // From the fixture's directory, with no --out: runs/finetune1.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
        .args(["finetune", "--from", s(&parent), "--data", s(&data), "--epochs", "1", "--device", "cpu", "--quiet"])
        .current_dir(fixture.tmp.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let child = fixture.path("runs/finetune1");
    let config = json(&child.join("config.json"));
    assert_eq!(config["training"]["precision"], "bf16", "{config}");
    assert_eq!(config["training"]["engine"], "fused");
}

#[test]
fn one_epoch_is_singular() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let again = mnist_tch(&["train", "--resume", s(&fixture.path("run")), "--device", "cpu"]);
    again.assert_clean_error(&["already trained 1 epoch;"]);
}
