//! The one rule for every file a command writes (src/destination.rs): never over a run's own files,
//! never over an existing file without --overwrite, missing directories created, one line when the place
//! cannot be written. And `train --overwrite` replaces a run as a whole; `finetune` never replaces its
//! parent.

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
