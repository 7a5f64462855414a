//! `mnist-tch describe`, which the Python scripts ask instead of copying the binary's rules: the files
//! of a run directory, a run's model as the binary reads it (old configs without `layers` included),
//! the model train's flags build (the same as `train --print-config`'s), and the write rule through
//! `--check-destination`, with its one-line errors and its usage errors.

mod common;

use common::{Files, Fixture, json, mnist_tch, mnist_tch_as_ordinary_user};
use mnist_tch::run_dir::RUN_FILES;
use serde_json::Value;
use std::path::Path;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `describe --json ARGS`'s object.
fn described(args: &[&str]) -> Value {
    let mut all = vec!["describe", "--json"];
    all.extend_from_slice(args);
    let run = mnist_tch(&all);
    run.assert_ok();
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn the_tool_and_every_file_of_a_run_directory() {
    let description = described(&[]);
    let files: Vec<&str> = description["run_files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(files, RUN_FILES);
    assert_eq!(description["tool"], serde_json::json!({"name": "mnist-tch", "version": env!("CARGO_PKG_VERSION")}));
    assert!(description.get("model").is_none() && description.get("run").is_none(), "{description}");
    // Without --json: the same for people.
    let text = mnist_tch(&["describe"]);
    text.assert_ok();
    assert!(text.stdout.starts_with(&format!("mnist-tch {}\n", env!("CARGO_PKG_VERSION"))), "{}", text.stdout);
    assert!(text.stdout.contains("config.json, model.safetensors"), "{}", text.stdout);
}

#[test]
fn a_runs_model_as_the_binary_reads_it_also_without_layers() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--hidden", "16,8", "--dropout", "0.25"]).assert_ok();
    let run = fixture.path("run");
    let config_path = run.join("config.json");
    let mut config = json(&config_path);
    let description = described(&[s(&run)]);
    assert_eq!(description["model"], config["model"]);
    assert_eq!(description["run"], s(&run));
    assert_eq!(description["run_files"].as_array().unwrap().len(), RUN_FILES.len());
    assert_eq!(described(&["--model", s(&run)]), description, "--model RUN_DIR is the same");
    let text = mnist_tch(&["describe", s(&run)]);
    text.assert_ok();
    assert!(text.stdout.contains("(64-16-8-4 MLP)") && text.stdout.contains("Total params"), "{}", text.stdout);

    // A config.json of an earlier version, without the layer list: the binary derives it.
    let layers = config["model"].as_object_mut().unwrap().remove("layers").unwrap();
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    assert_eq!(described(&[s(&run)])["model"]["layers"], layers);

    // Not a run, or a config that contradicts itself: one line, as from every command that reads a run.
    mnist_tch(&["describe", "--json", s(&fixture.path("nothing"))]).assert_clean_error(&["not a run directory"]);
    config["model"]["hidden"] = serde_json::json!([16]);
    config["model"]["layers"] = layers;
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    mnist_tch(&["describe", "--json", s(&run)]).assert_clean_error(&["config.json", "\"layers\" do not match"]);
}

#[test]
fn the_model_flags_build_what_train_builds() {
    let fixture = Fixture::with_files(&Files::synthetic_of_side(60, 20, 12), false);
    let data = fixture.data();
    for (arch, extra) in [
        ("mlp", &[][..]),
        ("mlp", &["--hidden", "16,8", "--dropout", "0.25"][..]),
        ("linear", &[][..]),
        ("cnn", &[][..]),
        ("cnn", &["--dropout", "0"][..]),
    ] {
        let mut train = vec!["train", "--print-config", "--data", s(&data), "--arch", arch, "--num-classes", "4"];
        train.extend_from_slice(extra);
        let printed = mnist_tch(&train);
        printed.assert_ok();
        let printed: Value = serde_json::from_str(&printed.stdout).unwrap();
        let mut flags = vec!["--arch", arch, "--input", "12x12", "--num-classes", "4"];
        flags.extend_from_slice(extra);
        assert_eq!(described(&flags)["model"], printed["model"], "{arch} {extra:?}");
    }
    // The defaults are train's: the tutorial's model on 28x28 digits.
    let tutorial = described(&["--arch", "mlp"]);
    assert_eq!(tutorial["model"]["hidden"], serde_json::json!([128]));
    assert_eq!(tutorial["model"]["input_shape"], serde_json::json!([28, 28]));
    assert_eq!(tutorial["model"]["num_classes"], 10);
    assert_eq!(described(&["--hidden", "512,256"])["model"]["layers"].as_array().unwrap().len(), 6);
    // A model train would refuse is refused in the same words.
    mnist_tch(&["describe", "--json", "--arch", "linear", "--hidden", "8"])
        .assert_usage_error(&["--hidden applies to --arch mlp, not linear"]);
    mnist_tch(&["describe", "--json", "--arch", "cnn", "--input", "4x4"]).assert_clean_error(&["does not fit 4x4"]);
    for bad in [&["--input", "28"][..], &["--num-classes", "1"][..], &["--dropout", "1"][..]] {
        let mut args = vec!["describe", "--json"];
        args.extend_from_slice(bad);
        mnist_tch(&args).assert_code(2);
    }
}

#[test]
fn check_destination_applies_the_write_rule() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let check = |flag: &str, files: &[&Path], overwrite: bool| {
        let mut args = vec!["describe", "--check-destination", flag];
        if overwrite {
            args.push("--overwrite");
        }
        args.extend(files.iter().map(|f| s(f)));
        mnist_tch(&args)
    };
    // Allowed: nothing printed, missing directories created.
    let deep = fixture.path("a/b/model.onnx");
    let allowed = check("--out", &[&deep, &fixture.path("a/b/model.onnx.json")], false);
    allowed.assert_ok();
    assert!(allowed.stdout.is_empty() && allowed.stderr.is_empty(), "{}{}", allowed.stdout, allowed.stderr);
    assert!(fixture.path("a/b").is_dir());
    assert_eq!(std::fs::read_dir(fixture.path("a/b")).unwrap().count(), 0, "nothing is written");
    // A run's own files: never, not even with --overwrite; the message names the flag given.
    for overwrite in [false, true] {
        check("--out", &[&deep, &run.join("model.safetensors")], overwrite).assert_clean_error(&[
            "model.safetensors",
            "is a file of the run directory",
            "--out never replaces",
        ]);
    }
    // An existing file: only with --overwrite.
    std::fs::write(&deep, b"mine").unwrap();
    check("--dump-logits", &[&deep], false)
        .assert_clean_error(&["model.onnx: already exists", "choose another --dump-logits or pass --overwrite"]);
    check("--dump-logits", &[&deep], true).assert_ok();
    assert_eq!(std::fs::read(&deep).unwrap(), b"mine", "checking replaces nothing");
    // A directory, a file in the way, a place that cannot be written.
    check("--out", &[&run], false).assert_clean_error(&["is a directory; give --out a file name"]);
    check("--out", &[&deep.join("x.onnx")], false).assert_clean_error(&["is a file, not a directory"]);
    use std::os::unix::fs::PermissionsExt;
    let locked = fixture.path("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let refused = mnist_tch_as_ordinary_user(&["describe", "--check-destination", "--out", s(&locked.join("x"))]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused.assert_clean_error(&["cannot be written", "permission denied", "choose another --out"]);
}

#[test]
fn flags_that_do_not_go_together_are_usage_errors() {
    let file = "/tmp/describe-never-written.onnx";
    for args in [
        &["describe", "--check-destination", "--out"][..],
        &["describe", "--overwrite", file][..],
        &["describe", "--json", "--check-destination", "--out", file][..],
        &["describe", "--check-destination", "--out", "--arch", "mlp", file][..],
        &["describe", "--arch", "mlp", "runs/x"][..],
        &["describe", "runs/a", "runs/b"][..],
        &["describe", "--model", "runs/a", "runs/b"][..],
        &["describe", "--model", "runs/a", "--arch", "cnn"][..],
    ] {
        let run = mnist_tch(args);
        run.assert_code(2);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    assert!(!Path::new(file).exists());
}
