//! What a new user meets on the command line: negative numbers reach the flag's own check, a
//! hand-edited config.json is checked in plain words, a run held by another process is never to be
//! resumed, `--model` says what it takes, every reading subcommand takes the run the same two ways, and
//! `train --resume` says where it continues from.

mod common;

use common::{Fixture, json, mnist_tch};
use serde_json::Value;
use std::path::Path;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn edit_config(run: &Path, edit: impl FnOnce(&mut Value)) {
    let mut config = json(&run.join("config.json"));
    edit(&mut config);
    std::fs::write(run.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

#[test]
fn negative_numbers_reach_the_flags_own_check() {
    let fixture = Fixture::new(false);
    for (flag, value, expected) in [
        ("--lr", "-0.1", "'-0.1' is not a positive number"),
        ("--epochs", "-3", "must be at least 1"),
        ("--dropout", "-0.5", "is not a rate in [0, 1)"),
        ("--weight-decay", "-1", "-1"),
    ] {
        let run = fixture.train("run", &[flag, value, "--print-config"]);
        assert_eq!(run.code(), Some(2), "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{flag} {value}: {}", run.stderr);
        assert!(!run.stderr.contains("unexpected argument"), "{}", run.stderr);
    }
    let run = fixture.train("run", &["--seed", "-1", "--print-config"]);
    run.assert_ok();
    assert_eq!(serde_json::from_str::<Value>(&run.stdout).unwrap()["training"]["seed"], -1);
    let run = fixture.train("run", &["--lr-schedule", "plateau:1:1", "--print-config"]);
    assert!(run.stderr.contains("FACTOR is '1'"), "{}", run.stderr);
}

#[test]
fn a_hand_edited_config_is_checked_in_plain_words() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2"]).assert_ok();
    let run = fixture.path("run");
    let original = std::fs::read(run.join("config.json")).unwrap();
    let cases: [(&str, Value, &[&str]); 6] = [
        ("/state/epochs_completed", Value::from(99), &["state.epochs_completed is 99", "training.epochs (2)"]),
        ("/training/learning_rate", Value::from(-5), &["training.learning_rate is -5", "positive"]),
        ("/training/batch_size", Value::from(0), &["training.batch_size is 0", "at least 1"]),
        ("/training/batch_size", Value::from("32"), &["training.batch_size", "expected a whole number"]),
        ("/tool", Value::from(3), &["tool", "expected an object"]),
        ("/data/class_names", serde_json::json!(["a", "b", "c"]), &["data.class_names has 3 names for 4 classes"]),
    ];
    for (pointer, value, fragments) in cases {
        edit_config(&run, |config| *config.pointer_mut(pointer).unwrap() = value.clone());
        let refused = mnist_tch(&["summary", s(&run)]);
        refused.assert_clean_error(fragments);
        assert!(!refused.stderr.contains("struct"), "{pointer}: {}", refused.stderr);
        std::fs::write(run.join("config.json"), &original).unwrap();
    }
    // Against metrics.csv: more epochs completed than it records.
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let first_epoch: String = csv.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(run.join("metrics.csv"), first_epoch).unwrap();
    mnist_tch(&["evaluate", s(&run), "--device", "cpu"])
        .assert_clean_error(&["state.epochs_completed is 2", "metrics.csv has 1 epoch"]);
}

#[test]
fn a_run_held_by_another_process_is_never_to_be_resumed() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    // As a run killed in its first epoch would be, held by this test process as a trainer would hold it.
    std::fs::remove_file(run.join("model.safetensors")).unwrap();
    edit_config(&run, |config| {
        config["state"]["epochs_completed"] = Value::from(0);
        config["state"]["best_epoch"] = Value::Null;
    });
    let held = mnist_tch::run_dir::lock::lock_for_writing(&run).unwrap();
    let pid = std::process::id().to_string();
    let evaluate = mnist_tch(&["evaluate", s(&run), "--device", "cpu"]);
    assert_eq!(evaluate.code(), Some(1), "{}", evaluate.stderr);
    let error = evaluate.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(error.contains(&format!("being trained by process {pid}")), "{}", evaluate.stderr);
    assert!(!evaluate.stderr.contains("mnist-tch resume"), "{}", evaluate.stderr);
    let second = fixture.train("run", &["--epochs", "1"]);
    second.assert_clean_error(&[&format!("being trained by process {pid}")]);
    assert!(!second.stderr.contains("--overwrite"), "{}", second.stderr);
    drop(held);
    let evaluate = mnist_tch(&["evaluate", s(&run), "--device", "cpu"]);
    evaluate.assert_clean_error(&["no completed epoch yet", "mnist-tch resume"]);
}

#[test]
fn model_says_what_it_takes() {
    let fixture = Fixture::new(false);
    let picture = fixture.path("p.png");
    image::GrayImage::from_fn(20, 20, |x, _| image::Luma([if x < 10 { 255 } else { 0 }])).save(&picture).unwrap();
    for (name, fragment) in
        [("model.pt2", "a torch.export archive"), ("model.onnx", "an ONNX file"), ("x.bin", "not a TorchScript file")]
    {
        let file = fixture.path(name);
        std::fs::write(&file, b"PK\x03\x04 not what predict runs").unwrap();
        mnist_tch(&["predict", "--model", s(&file), "--device", "cpu", s(&picture)]).assert_clean_error(&[
            name,
            fragment,
            "--model takes a run directory",
            "mnist-tch export",
        ]);
    }
}

#[test]
fn every_reading_subcommand_takes_the_run_both_ways() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let module = fixture.path("m.pt");
    for args in [
        vec!["summary", s(&run)],
        vec!["summary", "--model", s(&run)],
        vec!["evaluate", s(&run), "--device", "cpu"],
        vec!["evaluate", "--model", s(&run), "--device", "cpu"],
        vec!["export", s(&run), "--out", s(&module)],
        vec!["plot", s(&run)],
        vec!["plot", "--model", s(&run)],
    ] {
        mnist_tch(&args).assert_ok();
    }
    for sub in ["summary", "evaluate", "export", "plot"] {
        let missing = mnist_tch(&[sub]);
        assert_eq!(missing.code(), Some(2), "{sub}: {}", missing.stderr);
        let both = mnist_tch(&[sub, s(&run), "--model", s(&run)]);
        assert_eq!(both.code(), Some(2), "{sub}: {}", both.stderr);
    }
}

#[test]
fn resume_says_where_it_continues_from() {
    let fixture = Fixture::new(false);
    // No epoch improves by 100: early stopping ends at epoch 2 with epoch 1's weights.
    fixture.train("run", &["--epochs", "5", "--early-stopping", "1", "--min-delta", "100"]).assert_ok();
    let run = fixture.path("run");
    assert_eq!(json(&run.join("config.json"))["state"]["epochs_completed"], 2);
    let resumed = mnist_tch(&["train", "--resume", s(&run), "--epochs", "6", "--device", "cpu"]);
    resumed.assert_ok();
    assert!(
        resumed
            .stdout
            .contains("after epoch 2, up to epoch 6, from the weights of epoch 1 that early stopping restored"),
        "{}",
        resumed.stdout
    );
    // A flag that repeats the run's setting changes nothing and is accepted; another value is refused.
    fixture.train("other", &["--epochs", "1"]).assert_ok();
    let other = fixture.path("other");
    let same = mnist_tch(&["train", "--resume", s(&other), "--lr", "0.001", "--epochs", "2", "--device", "cpu"]);
    same.assert_ok();
    let changed = mnist_tch(&["train", "--resume", s(&other), "--lr", "0.01", "--epochs", "3", "--device", "cpu"]);
    assert_eq!(changed.code(), Some(2), "{}", changed.stderr);
    assert!(changed.stderr.contains("--lr cannot change a resumed run"), "{}", changed.stderr);
    let printed = mnist_tch(&["train", "--resume", s(&other), "--epochs", "5", "--print-config"]);
    printed.assert_ok();
    assert_eq!(serde_json::from_str::<Value>(&printed.stdout).unwrap()["training"]["epochs"], 5);
    // Stopped before its first epoch: it starts again, with nothing said of moment estimates.
    std::fs::remove_file(other.join("model.safetensors")).unwrap();
    edit_config(&other, |config| {
        config["state"]["epochs_completed"] = Value::from(0);
        config["state"]["status"] = Value::from("interrupted");
        config["state"]["best_epoch"] = Value::Null;
    });
    let restarted = mnist_tch(&["train", "--resume", s(&other), "--device", "cpu"]);
    restarted.assert_ok();
    assert!(
        restarted.stdout.contains("Restarting") && restarted.stdout.contains("from epoch 1"),
        "{}",
        restarted.stdout
    );
    assert!(!restarted.stdout.contains("moment estimates"), "{}", restarted.stdout);
}

#[test]
fn resume_is_a_subcommand_whose_flags_clap_knows_and_train_resume_takes_the_same() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    // A flag resume does not have is clap's usage error, before anything is read or written.
    let refused = mnist_tch(&["resume", s(&run), "--lr", "0.01"]);
    assert_eq!(refused.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("unexpected argument '--lr'"), "{}", refused.stderr);
    // train --resume lists exactly resume's flags as the ones that apply (--tensorboard included).
    let help = mnist_tch(&["resume", "--help"]).stdout;
    let changed = mnist_tch(&["train", "--resume", s(&run), "--lr", "0.01", "--epochs", "2"]);
    assert_eq!(changed.code(), Some(2), "{}", changed.stderr);
    let (_, listed) = changed.stderr.split_once("(only ").expect("the list of flags that apply");
    let listed: Vec<&str> = listed.split(" apply)").next().unwrap_or_default().split(", ").collect();
    assert!(listed.contains(&"--tensorboard") && listed.contains(&"--epochs"), "{}", changed.stderr);
    for flag in &listed {
        assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "{flag} not in:\n{help}");
    }
    // The subcommand continues the run as train --resume does.
    let resumed = mnist_tch(&["resume", s(&run), "--epochs", "2", "--device", "cpu", "--quiet"]);
    resumed.assert_ok();
    assert!(resumed.stdout.starts_with("Test accuracy: "), "{}", resumed.stdout);
    assert_eq!(json(&run.join("config.json"))["state"]["epochs_completed"], 2);
    assert_eq!(json(&run.join("config.json"))["state"]["resumes"][0]["after_epoch"], 1);
}

#[test]
fn a_learning_rate_libtorch_cannot_step_with_is_refused_in_one_line_and_never_panics() {
    let fixture = Fixture::new(false);
    let first_line = |run: &common::Run| run.stderr.lines().next().unwrap_or_default().to_string();
    for lr in ["1e38", "3e38", "1e39", "1e300"] {
        let run = fixture.train("run", &["--lr", lr, "--epochs", "1"]);
        assert_eq!(run.code(), Some(2), "--lr {lr}: {}", run.stderr);
        assert_eq!(
            first_line(&run),
            format!(
                "error: invalid value '{lr}' for '--lr <RATE>': '{lr}' is too large: Adam's first step, lr / (1 - beta1) \
                 with beta1 0.9, must fit a 32-bit float, so the learning rate can be at most 3.4e37"
            )
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(!fixture.path("run").exists(), "nothing written for --lr {lr}");
    }
    let run = fixture.train("run", &["--weight-decay", "1e39"]);
    assert_eq!(run.code(), Some(2), "{}", run.stderr);
    assert_eq!(
        first_line(&run),
        "error: invalid value '1e39' for '--weight-decay <DECAY>': '1e39' is too large: the weight decay must fit a \
         32-bit float (at most 3.4e38)"
    );
    // The largest rate that fits trains (to a NaN loss, said in one line), and fine-tuning takes the same bound.
    fixture.train("big", &["--lr", "3.4e37", "--epochs", "1"]).assert_clean_error(&["loss became NaN"]);
    fixture.train("run", &["--epochs", "2", "--lr-schedule", "plateau:1:0.5"]).assert_ok();
    let run_dir = fixture.path("run");
    let data = fixture.data();
    let finetune =
        mnist_tch(&["finetune", "--from", s(&run_dir), "--data", s(&data), "--lr", "1e38", "--device", "cpu"]);
    assert_eq!(finetune.code(), Some(2), "{}", finetune.stderr);
    assert!(first_line(&finetune).contains("'--lr <RATE>': '1e38' is too large"), "{}", finetune.stderr);
    // A config.json edited by hand: resume refuses it in plain words and leaves the run as it was.
    let original = std::fs::read(run_dir.join("config.json")).unwrap();
    let files = ["model.safetensors", "metrics.csv"].map(|f| std::fs::read(run_dir.join(f)).unwrap());
    for (pointer, phrase) in [
        (
            "/training/learning_rate",
            "training.learning_rate is 1e39, more than Adam can step with: lr / (1 - adam_beta1) must fit a 32-bit \
             float, so at most 3.4e37",
        ),
        (
            "/state/callbacks/plateau/lr",
            "state.callbacks.plateau.lr is 1e39, it must be a positive number Adam can step with (at most 3.4e37)",
        ),
    ] {
        edit_config(&run_dir, |config| *config.pointer_mut(pointer).unwrap() = Value::from(1e39));
        let edited = std::fs::read(run_dir.join("config.json")).unwrap();
        mnist_tch(&["resume", s(&run_dir), "--epochs", "3", "--device", "cpu"]).assert_clean_error(&[
            "config.json: ",
            phrase,
            "(was it edited by hand?)",
        ]);
        assert_eq!(std::fs::read(run_dir.join("config.json")).unwrap(), edited);
        assert_eq!(["model.safetensors", "metrics.csv"].map(|f| std::fs::read(run_dir.join(f)).unwrap()), files);
        std::fs::write(run_dir.join("config.json"), &original).unwrap();
    }
}
