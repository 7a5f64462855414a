//! The one rule for every file a command writes (src/destination.rs): never over a run's own files,
//! never over an existing file without --overwrite, missing directories created, one line when the place
//! cannot be written. And `train --overwrite` replaces a run as a whole; `finetune` never replaces its
//! parent; `train --out` and `finetune --out` write only into a new or empty directory or over their own
//! run, never into a directory of the user's files (whatever the flags) nor onto a file.

mod common;

use common::{Fixture, mnist_tch, mnist_tch_as_ordinary_user};
use image::GrayImage;
use std::path::Path;

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn dump_logits_never_replaces_a_runs_files_and_asks_before_any_other() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let weights = run.join("model.safetensors");
    let before = bytes(&weights);
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["evaluate", s(&run), "--device", "cpu", "--dump-logits", s(&weights)];
        args.extend_from_slice(extra);
        mnist_tch(&args).assert_clean_error(&["model.safetensors", "is a file of the run directory", "never replaces"]);
        assert_eq!(bytes(&weights), before, "the run's weights are untouched");
    }
    let logits = fixture.path("new/dirs/logits.npy");
    mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--dump-logits", s(&logits)]).assert_ok();
    let first = bytes(&logits);
    std::fs::write(&logits, b"mine").unwrap();
    mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--dump-logits", s(&logits)]).assert_clean_error(&[
        "logits.npy",
        "already exists",
        "--overwrite",
    ]);
    assert_eq!(bytes(&logits), b"mine");
    mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--dump-logits", s(&logits), "--overwrite"]).assert_ok();
    assert_eq!(bytes(&logits), first);
}

#[test]
fn show_input_follows_the_same_rule() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let picture = fixture.path("p.png");
    GrayImage::from_fn(20, 20, |x, y| {
        image::Luma([if (5..15).contains(&x) && (8..12).contains(&y) { 255 } else { 0 }])
    })
    .save(&picture)
    .unwrap();
    let curves = run.join("learning_curves.png");
    std::fs::write(&curves, b"the run's plot").unwrap();
    let predict = |show: &Path, extra: &[&str]| {
        let mut args = vec!["predict", "--model", s(&run), "--device", "cpu", "--show-input", s(show), s(&picture)];
        args.extend_from_slice(extra);
        mnist_tch(&args)
    };
    predict(&curves, &["--overwrite"]).assert_clean_error(&["learning_curves.png", "is a file of the run directory"]);
    assert_eq!(bytes(&curves), b"the run's plot");
    let seen = fixture.path("seen/input.png");
    predict(&seen, &[]).assert_ok();
    assert!(image::open(&seen).is_ok(), "a PNG in the created directory");
    predict(&seen, &[]).assert_clean_error(&["input.png", "already exists", "--overwrite"]);
    predict(&seen, &["--overwrite"]).assert_ok();
}

#[test]
fn plot_draws_into_out_and_says_in_one_line_when_the_run_is_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    fixture.train("other", &["--epochs", "1", "--plot"]).assert_ok();
    let run = fixture.path("run");
    let out = fixture.path("plots/of-run");
    let plotted = mnist_tch(&["plot", s(&run), "--out", s(&out)]);
    plotted.assert_ok();
    assert!(out.join("learning_curves.png").is_file() && out.join("confusion_matrix.png").is_file());
    assert!(!run.join("learning_curves.png").exists(), "the run itself is left as it was");
    mnist_tch(&["plot", s(&run), "--out", s(&out)]).assert_clean_error(&["already exists", "--overwrite"]);
    mnist_tch(&["plot", s(&run), "--out", s(&out), "--overwrite"]).assert_ok();
    // Another run's plots are its own.
    let other = fixture.path("other");
    let theirs = bytes(&other.join("learning_curves.png"));
    mnist_tch(&["plot", s(&run), "--out", s(&other), "--overwrite"])
        .assert_clean_error(&["is a file of the run directory", "other"]);
    assert_eq!(bytes(&other.join("learning_curves.png")), theirs);
    // A read-only run: one line naming the reason, no debug dump.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o555)).unwrap();
    let refused = mnist_tch_as_ordinary_user(&["plot", s(&run)]);
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused.assert_clean_error(&["cannot be written", "permission denied", "--out"]);
}

#[test]
fn overwrite_replaces_the_whole_run_and_keeps_nothing_of_the_earlier_one() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "2", "--save-best", "--plot", "--save-initial"]).assert_ok();
    let run = fixture.path("run");
    for earlier in ["best.safetensors", "learning_curves.png", "initial.safetensors"] {
        assert!(run.join(earlier).is_file(), "{earlier}");
    }
    fixture.train("run", &["--epochs", "1", "--overwrite", "--seed", "7"]).assert_ok();
    for earlier in ["best.safetensors", "learning_curves.png", "confusion_matrix.png", "initial.safetensors"] {
        assert!(!run.join(earlier).exists(), "{earlier} of the earlier run is gone");
    }
    assert_eq!(common::json(&run.join("config.json"))["training"]["seed"], 7);
    mnist_tch(&["evaluate", s(&run), "--device", "cpu", "--weights", "best.safetensors"])
        .assert_clean_error(&["best.safetensors is missing"]);
    let siblings: Vec<_> = std::fs::read_dir(fixture.tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(siblings.iter().all(|n| !n.to_string_lossy().starts_with('.')), "nothing left beside it: {siblings:?}");
    // Files mnist-tch did not write are never deleted by --overwrite.
    std::fs::write(run.join("notes.txt"), b"mine").unwrap();
    fixture.train("run", &["--epochs", "1", "--overwrite"]).assert_clean_error(&[
        "notes.txt",
        "did not write",
        "choose another --out",
    ]);
    assert_eq!(bytes(&run.join("notes.txt")), b"mine");
    assert!(run.join("model.safetensors").is_file());
}

#[test]
fn finetune_never_writes_over_its_parent() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let weights = bytes(&run.join("model.safetensors"));
    let data = fixture.data();
    let same_place = format!("{}/.", s(&run));
    for out in [s(&run), same_place.as_str()] {
        mnist_tch(&[
            "finetune",
            "--from",
            s(&run),
            "--data",
            s(&data),
            "--out",
            out,
            "--overwrite",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ])
        .assert_clean_error(&["is the parent run", "choose another --out"]);
    }
    assert_eq!(bytes(&run.join("model.safetensors")), weights);
}

/// Writes `files` (name, bytes) into a new directory `dir`.
fn user_dir(dir: &Path, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// Asserts that `dir` holds exactly `files`, byte for byte.
fn assert_untouched(dir: &Path, files: &[(&str, &[u8])]) {
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    let mut expected: Vec<_> = files.iter().map(|(name, _)| std::ffi::OsString::from(name)).collect();
    expected.sort();
    assert_eq!(names, expected, "nothing added or removed in {}", dir.display());
    for (name, content) in files {
        assert_eq!(bytes(&dir.join(name)), *content, "{name} is byte-identical");
    }
}

#[test]
fn train_never_writes_into_a_directory_holding_files_it_did_not_write() {
    let fixture = Fixture::new(false);
    let mine = fixture.path("mine");
    let files: [(&str, &[u8]); 3] = [
        ("metrics.json", b"{\"mine\": true}"),
        ("evaluation.json", b"my evaluation"),
        ("learning_curves.png", b"my plot"),
    ];
    user_dir(&mine, &files);
    for extra in [&[][..], &["--overwrite"][..], &["--plot"][..], &["--plot", "--overwrite"][..]] {
        let mut args = vec!["--epochs", "1"];
        args.extend_from_slice(extra);
        fixture.train("mine", &args).assert_clean_error(&[
            &format!(
                "{}: is not empty and holds no mnist-tch run: evaluation.json, learning_curves.png, metrics.json",
                s(&mine)
            ),
            "mnist-tch writes a run only into a new or empty directory, or over its own run with --overwrite",
        ]);
        assert_untouched(&mine, &files);
    }
    // A lone metrics.csv, and a data set: the same line.
    let lone: [(&str, &[u8]); 1] = [("metrics.csv", b"epoch,loss\n")];
    user_dir(&fixture.path("lone"), &lone);
    fixture.train("lone", &["--epochs", "1", "--overwrite"]).assert_clean_error(&["lone: is not empty", "metrics.csv"]);
    assert_untouched(&fixture.path("lone"), &lone);
    let data = fixture.data();
    let before: Vec<_> = ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"].map(|f| bytes(&data.join(f))).into();
    fixture.train("data", &["--epochs", "1"]).assert_clean_error(&["data: is not empty", "train-images-idx3-ubyte"]);
    let after: Vec<_> = ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"].map(|f| bytes(&data.join(f))).into();
    assert_eq!(after, before);
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 4, "nothing added to the data");
    // `--out .` in a directory of the user's.
    let cwd = fixture.path("cwd");
    let notes: [(&str, &[u8]); 1] = [("metrics.json", b"notes")];
    user_dir(&cwd, &notes);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
        .args(["train", "--data", s(&data), "--out", ".", "--epochs", "1", "--num-classes", "4", "--device", "cpu"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["error: .: is not empty and holds no mnist-tch run: metrics.json; mnist-tch writes a run only into a new or \
          empty directory, or over its own run with --overwrite; choose another --out"]
    );
    assert_untouched(&cwd, &notes);
    // finetune --out follows the same rule.
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    mnist_tch(&[
        "finetune",
        "--from",
        s(&fixture.path("run")),
        "--data",
        s(&data),
        "--out",
        s(&mine),
        "--overwrite",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ])
    .assert_clean_error(&["mine: is not empty and holds no mnist-tch run", "metrics.json"]);
    assert_untouched(&mine, &files);
}

#[test]
fn train_writes_into_an_existing_empty_directory_and_never_onto_a_file() {
    let fixture = Fixture::new(false);
    std::fs::create_dir(fixture.path("empty")).unwrap();
    fixture.train("empty", &["--epochs", "1"]).assert_ok();
    assert!(fixture.path("empty/model.safetensors").is_file());
    let file = fixture.path("model.bin");
    std::fs::write(&file, b"my model").unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["--epochs", "1"];
        args.extend_from_slice(extra);
        fixture.train("model.bin", &args).assert_clean_error(&[&format!(
            "{}: is a file, not a directory; give --out a new or empty directory",
            s(&file)
        )]);
        fixture.train("model.bin/run", &args).assert_clean_error(&["run: cannot be created", "model.bin is a file"]);
        assert_eq!(bytes(&file), b"my model");
    }
}

#[test]
fn a_config_json_of_the_users_own_is_no_run_and_is_never_replaced() {
    let fixture = Fixture::new(false);
    let project = fixture.path("project");
    let files: [(&str, &[u8]); 2] =
        [("config.json", b"{\"my\": \"project settings\"}"), ("metrics.csv", b"a,b\n1,2\n")];
    user_dir(&project, &files);
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec!["--epochs", "1"];
        args.extend_from_slice(extra);
        let refused = fixture.train("project", &args);
        refused.assert_clean_error(&[&format!(
            "{}: is not empty and holds no mnist-tch run: config.json, metrics.csv (its config.json is not an \
             mnist-tch run's); mnist-tch writes a run only into a new or empty directory, or over its own run with \
             --overwrite; choose another --out",
            s(&project)
        )]);
        assert!(!refused.stderr.contains("already holds a run"), "{}", refused.stderr);
        assert_untouched(&project, &files);
    }
    mnist_tch(&["resume", s(&project)]).assert_clean_error(&["not a valid mnist-tch config"]);
    assert_untouched(&project, &files);
    // A config.json naming another tool is not mnist-tch's either.
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let run = fixture.path("run");
    let theirs = std::fs::read_to_string(run.join("config.json")).unwrap().replace("\"mnist-tch\"", "\"other-tool\"");
    std::fs::write(run.join("config.json"), &theirs).unwrap();
    fixture.train("run", &["--epochs", "1", "--overwrite"]).assert_clean_error(&["holds no mnist-tch run"]);
    assert_eq!(std::fs::read_to_string(run.join("config.json")).unwrap(), theirs);
}
