//! Resuming on the default engine is the uninterrupted run: libtorch's Adam state is saved with every
//! epoch and restored, so 2 + 2 epochs write the bytes of 4 — with --save-best, a plateau schedule,
//! early stopping and --random-shift too — and a run killed with `kill -9` in epoch 3 and resumed ends as the run that was
//! never killed.

mod common;

use common::{Files, Fixture, mnist_tch};
use mnist_tch::run_dir::RunConfig;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every column of metrics.csv but the last (`seconds`, wall time).
fn metric_columns(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    csv.lines().map(|line| line.rsplit_once(',').unwrap().0.to_string()).collect()
}

fn bytes(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|err| panic!("{}: {err}", dir.join(file).display()))
}

/// The run `straight` and the run `split` wrote the same weights (and best weights, when kept) and
/// the same metrics.
fn assert_same_run(straight: &Path, split: &Path, files: &[&str]) {
    assert_eq!(metric_columns(straight), metric_columns(split), "metrics.csv differs");
    for file in files {
        assert!(bytes(straight, file) == bytes(split, file), "{file} differs from the uninterrupted run's");
    }
}

fn resume(run: &Path, epochs: &str) -> common::Run {
    let resumed = mnist_tch(&["resume", run.to_str().unwrap(), "--epochs", epochs, "--device", "cpu"]);
    resumed.assert_ok();
    assert!(resumed.stdout.contains("restored from optimizer.safetensors"), "{}", resumed.stdout);
    resumed
}

#[test]
fn two_plus_two_epochs_are_four_with_save_best_a_plateau_schedule_early_stopping_and_random_shifts() {
    let fixture = Fixture::new(false);
    let variants: [&[&str]; 4] = [
        &[],
        &["--save-best", "--lr-schedule", "plateau:1:0.5", "--lr", "0.3"],
        &["--early-stopping", "1", "--lr", "0.05", "--weight-decay", "0.01"],
        &["--random-shift", "2", "--dropout", "0.2"],
    ];
    for (i, flags) in variants.iter().enumerate() {
        let (straight, split) = (format!("straight{i}"), format!("split{i}"));
        fixture.train(&straight, &[flags, &["--epochs", "4"][..]].concat()).assert_ok();
        fixture.train(&split, &[flags, &["--epochs", "2"][..]].concat()).assert_ok();
        resume(&fixture.path(&split), "4");
        let mut files = vec!["model.safetensors", "optimizer.safetensors"];
        if flags.contains(&"--save-best") || flags.contains(&"--early-stopping") {
            files.push("best.safetensors");
        }
        assert_same_run(&fixture.path(&straight), &fixture.path(&split), &files);
    }
    // The plateau schedule changed the rate and early stopping stopped: the variants test what they say.
    let lrs: Vec<String> =
        metric_columns(&fixture.path("straight1")).iter().map(|l| l.rsplit(',').next().unwrap().into()).collect();
    assert!(lrs[1..].iter().any(|lr| lr != &lrs[1]), "the plateau schedule never cut the rate: {lrs:?}");
    let stopped = RunConfig::load(&fixture.path("straight2")).unwrap().state.epochs_completed;
    assert!(stopped < 4, "early stopping did not stop ({stopped} epochs): pick a livelier rate");
}

#[test]
fn a_run_killed_with_kill_9_in_epoch_3_and_resumed_ends_as_the_uninterrupted_one() {
    let fixture = Fixture::with_files(&Files::synthetic(20_000, 200), false);
    let flags = ["--epochs", "4", "--batch-size", "8", "--lr-schedule", "cosine"];
    fixture.train("straight", &flags).assert_ok();
    let run = fixture.path("killed");
    let data = fixture.data();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
        .args(["train", "--data", data.to_str().unwrap(), "--out", run.to_str().unwrap()])
        .args(["--num-classes", "4", "--device", "cpu"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The run's own record says when epoch 2 is saved: epoch 3 has begun.
    let deadline = Instant::now() + Duration::from_secs(120);
    while RunConfig::load(&run).map(|c| c.state.epochs_completed).unwrap_or(0) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "training ended before epoch 2");
        assert!(Instant::now() < deadline, "no epoch 2 within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap().success());
    let _ = child.wait();
    assert_eq!(RunConfig::load(&run).unwrap().state.epochs_completed, 2, "the kill landed in epoch 3");
    resume(&run, "4");
    assert_same_run(&fixture.path("straight"), &run, &["model.safetensors", "optimizer.safetensors"]);
}

#[test]
fn a_fused_run_whose_state_is_in_the_earlier_flat_layout_still_resumes_exactly() {
    let fixture = Fixture::new(false);
    let flags = ["--engine", "fused", "--hidden", "16,8"];
    fixture.train("straight", &[&flags[..], &["--epochs", "4"]].concat()).assert_ok();
    fixture.train("split", &[&flags[..], &["--epochs", "2"]].concat()).assert_ok();
    let split = fixture.path("split");
    // The layout earlier versions wrote: the flat buffers in layer order, weight then bias.
    let file = split.join("optimizer.safetensors");
    let named = tch::Tensor::read_safetensors(&file).unwrap();
    let get = |name: &str| named.iter().find(|(n, _)| n == name).unwrap().1.shallow_clone();
    let flat = |what: &str| {
        let parts: Vec<tch::Tensor> = ["1", "3", "5"]
            .iter()
            .flat_map(|l| ["weight", "bias"].map(|t| get(&format!("{l}.{t}.{what}")).flatten(0, -1)))
            .collect();
        tch::Tensor::cat(&parts, 0)
    };
    let steps = tch::Tensor::from_slice(&[get("1.weight.step").double_value(&[]) as i64]);
    let old =
        [("exp_avg", flat("exp_avg")), ("exp_avg_sq", flat("exp_avg_sq")), ("steps", steps), ("epoch", get("epoch"))];
    tch::Tensor::write_safetensors(&old, &file).unwrap();
    resume(&split, "4");
    assert_same_run(&fixture.path("straight"), &split, &["model.safetensors", "optimizer.safetensors"]);
}
