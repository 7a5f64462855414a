//! The messages a new user met, in the words they need: a flag resume does not take, a run another
//! process holds, a tiny fraction, a write past the disk's or the file-size limit, a port out of range.

mod common;

use common::{Fixture, mnist_tch};
use std::path::Path;
use std::process::Command;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn resume_says_it_keeps_the_runs_settings_when_given_a_flag_of_train() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    for lr in [&["--lr", "0.1"][..], &["--lr=0.1"][..]] {
        let refused = mnist_tch(&[&["resume", s(&run)][..], lr].concat());
        assert_eq!(refused.code(), Some(2), "{}", refused.stderr);
        assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
        assert!(
            refused.stderr.contains("unexpected argument '--lr' for resume: resume keeps the run's settings"),
            "{}",
            refused.stderr
        );
        assert!(refused.stderr.contains("mnist-tch finetune --from"), "{}", refused.stderr);
        assert!(!refused.stderr.contains("as a value"), "{}", refused.stderr);
    }
    // A flag no command has is still clap's own error.
    let unknown = mnist_tch(&["resume", s(&run), "--no-such-flag"]);
    assert_eq!(unknown.code(), Some(2));
    assert!(unknown.stderr.contains("unexpected argument '--no-such-flag'"), "{}", unknown.stderr);
}

#[test]
fn resume_of_a_run_another_process_holds_suggests_no_out() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let held = mnist_tch::run_dir::lock::lock_for_writing(&run).unwrap();
    let refused = mnist_tch(&["resume", s(&run), "--epochs", "2", "--device", "cpu"]);
    refused.assert_clean_error(&[&format!("being trained by process {}", std::process::id()), "wait for it"]);
    assert!(!refused.stderr.contains("--out"), "{}", refused.stderr);
    drop(held);
}

#[test]
fn a_tiny_validation_split_is_said_as_typed() {
    let fixture = Fixture::new(false);
    let refused = fixture.train("run", &["--validation-split", "1e-300", "--epochs", "1"]);
    refused.assert_clean_error(&["--validation-split 1e-300 of 600 training examples"]);
    assert!(refused.stderr.len() < 200, "{}", refused.stderr);
}

#[test]
fn a_write_past_the_file_size_limit_is_said_in_plain_words() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--hidden", "512"]).assert_ok();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64; exec '{}' resume '{}' --epochs 2 --device cpu",
            env!("CARGO_BIN_EXE_mnist-tch"),
            fixture.path("run").display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model.safetensors: write failed: file too large"), "{stderr}");
    assert!(!stderr.contains("IoError") && !stderr.contains("os error"), "{stderr}");
}

#[test]
fn a_port_out_of_range_is_said_plainly() {
    for port in ["-1", "65536"] {
        let refused = mnist_tch(&["serve", "--model", "nowhere", "--port", port]);
        assert_eq!(refused.code(), Some(2), "{}", refused.stderr);
        assert!(refused.stderr.contains("must be between 0 and 65535"), "{port}: {}", refused.stderr);
        assert!(!refused.stderr.contains("unexpected argument"), "{}", refused.stderr);
    }
}

/// The fixture's run as an interrupted one would be: 1 of 3 epochs completed.
fn interrupted(fixture: &Fixture) -> std::path::PathBuf {
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let path = run.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["training"]["epochs"] = serde_json::Value::from(3);
    config["state"]["status"] = serde_json::Value::from("interrupted");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    run
}

#[test]
fn an_interrupted_run_is_offered_resume_and_said_to_be_incomplete() {
    let fixture = Fixture::new(false);
    let run = interrupted(&fixture);
    let again = fixture.train("run", &["--epochs", "3"]);
    again.assert_clean_error(&[
        "already holds a run",
        "--overwrite (which starts afresh)",
        "it stopped after 1 epoch of 3",
        &format!("continue it with `mnist-tch resume {}`", run.display()),
    ]);
    let note = format!("note: {} is incomplete (interrupted after epoch 1 of 3)", run.display());
    let out = fixture.path("m.pt");
    let evaluate = ["evaluate", s(&run), "--device", "cpu"];
    let export = ["export", s(&run), "--out", s(&out), "--device", "cpu"];
    for command in [&evaluate[..], &["summary", s(&run)], &export] {
        let read = mnist_tch(command);
        read.assert_ok();
        assert!(read.stderr.contains(&note), "{command:?}: {}", read.stderr);
        assert!(read.stderr.contains("mnist-tch resume"), "{}", read.stderr);
    }
    // A finished run gets neither.
    let done = Fixture::new(false);
    done.train("run", &["--epochs", "1"]).assert_ok();
    let again = done.train("run", &["--epochs", "1"]);
    assert!(!again.stderr.contains("mnist-tch resume"), "{}", again.stderr);
    let read = mnist_tch(&["summary", s(&done.path("run"))]);
    assert!(!read.stderr.contains("incomplete"), "{}", read.stderr);
}

#[test]
fn a_run_that_failed_after_completed_epochs_says_how_to_continue() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--hidden", "512"]).assert_ok();
    let run = fixture.path("run");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64; exec '{}' resume '{}' --epochs 2 --device cpu",
            env!("CARGO_BIN_EXE_mnist-tch"),
            run.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let expected = format!("keeps the last completed epoch (1); continue with `mnist-tch resume {}`", run.display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn evaluate_takes_a_path_inside_the_run_and_notes_other_class_names() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--save-best", "--num-classes", "10"]).assert_ok();
    let run = fixture.path("run");
    let best = run.join("best.safetensors");
    let text = mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--weights", s(&best)]);
    text.assert_ok();
    assert!(text.stdout.contains(&format!("Weights: {}", s(&best))), "{}", text.stdout);
    assert!(!text.stderr.contains("other classes"), "{}", text.stderr);
    // The same files under a name that says Fashion-MNIST: `--class-names auto` would name them so.
    let fashion = fixture.path("fashion");
    std::fs::create_dir(&fashion).unwrap();
    for entry in std::fs::read_dir(fixture.data()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), fashion.join(entry.file_name())).unwrap();
    }
    let other = mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--data", s(&fashion)]);
    other.assert_ok();
    assert!(
        other.stderr.contains("has other classes (T-shirt/top, Trouser, ...) than the run (0, 1, ...)"),
        "{}",
        other.stderr
    );
    let same = mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--data", s(&fixture.data())]);
    assert!(!same.stderr.contains("other classes"), "{}", same.stderr);
}

#[test]
fn export_refuses_a_name_predict_would_not_load() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    for name in ["m.json", "m.onnx", "m.pt2", "m.safetensors"] {
        let out = fixture.path(name);
        let refused = mnist_tch(&["export", s(&run), "--out", s(&out)]);
        assert_eq!(refused.code(), Some(2), "{name}: {}", refused.stderr);
        assert!(refused.stderr.contains("name the module model.pt"), "{}", refused.stderr);
        assert!(!out.exists(), "{name} was written");
    }
    for name in ["m.pt", "m.pth", "m.ts"] {
        let out = fixture.path(name);
        mnist_tch(&["export", s(&run), "--out", s(&out)]).assert_ok();
        let idx = fixture.data().join("t10k-images-idx3-ubyte");
        mnist_tch(&["predict", "--model", s(&out), "--idx", s(&idx)]).assert_ok();
    }
}
