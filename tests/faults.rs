//! Faults during training lose nothing: Ctrl-C writes the last completed state and exits non-zero,
//! `kill -9` at any moment leaves a loadable run directory, a full disk (file-size limit) is a clear
//! error with the previous checkpoint intact, and a NaN loss stops training with the epoch and step.

mod common;

use common::{Files, Fixture, mnist_tch};
use mnist_tch::run_dir::{self, RunConfig};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_training(fixture: &Fixture, out: &str, extra: &[&str]) -> Child {
    let data = fixture.data();
    let out = fixture.path(out);
    Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
        .args(["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--num-classes", "4"])
        .args(["--device", "cpu"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (polling the file the process writes, with a deadline) until `dir` has `epochs` completed epochs.
fn wait_for_epochs(dir: &Path, epochs: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(config) = RunConfig::load(dir)
            && config.state.epochs_completed >= epochs
        {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "training ended before epoch {epochs}");
        assert!(Instant::now() < deadline, "no epoch {epochs} within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Everything a run directory must satisfy to be usable: config parses, weights load into the
/// architecture, metrics cover the epochs the config claims.
fn check_loadable(dir: &Path) -> Result<usize, String> {
    let config = RunConfig::load(dir).map_err(|e| format!("config: {e:#}"))?;
    let completed = config.state.epochs_completed;
    if completed == 0 {
        return Ok(0); // nothing claimed yet
    }
    run_dir::load_run(dir, tch::Device::Cpu).map_err(|e| format!("weights: {e:#}"))?;
    let metrics = run_dir::load_metrics(dir).map_err(|e| format!("metrics: {e:#}"))?;
    if metrics.len() < completed {
        return Err(format!("metrics has {} epochs, config claims {completed}", metrics.len()));
    }
    Ok(completed)
}

/// Bigger than the default fixture, so epochs take long enough to be interrupted in the middle.
fn slow_fixture() -> Fixture {
    Fixture::with_files(&Files::synthetic(20_000, 200), false)
}

#[test]
fn ctrl_c_keeps_the_last_epoch_and_resume_continues() {
    let fixture = slow_fixture();
    let dir = fixture.path("run");
    let mut child = spawn_training(&fixture, "run", &["--epochs", "50", "--batch-size", "8"]);
    wait_for_epochs(&dir, 1, &mut child);
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("Interrupted in epoch"), "{stderr}");
    assert!(stderr.contains(&format!("continue with `mnist-tch resume {}`", dir.display())), "{stderr}");
    let config = RunConfig::load(&dir).unwrap();
    assert_eq!(config.state.status, mnist_tch::run_dir::RunStatus::Interrupted);
    let completed = check_loadable(&dir).unwrap();
    assert!((1..50).contains(&completed));

    let resumed = mnist_tch(&["resume", dir.to_str().unwrap(), "--epochs", &(completed + 1).to_string()]);
    resumed.assert_ok();
    assert!(resumed.stdout.contains(&format!("Epoch {}/{}", completed + 1, completed + 1)), "{}", resumed.stdout);
    assert_eq!(RunConfig::load(&dir).unwrap().state.epochs_completed, completed + 1);
}

/// Temporary files (`.NAME.tmp-PID.EXT`) in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.') && name.contains(".tmp-"))
        .collect()
}

/// Kills training with SIGKILL at pseudo-random moments — tiny epochs, so most kills land while a
/// checkpoint is being written — and checks after each kill that the run directory is loadable and
/// holds at least the epoch the run was seen to reach, that the process was still running when killed,
/// and that at most the one write the kill cut short left a temporary file (each resume removes stale
/// ones). Returns the problems found.
fn kill_loop(kills: usize) -> (usize, Vec<String>) {
    let fixture = Fixture::with_files(&Files::synthetic(100, 40), false);
    let dir = fixture.path("run");
    let mut problems = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut completed = 0;
    for kill in 0..kills {
        let mut child = if kill == 0 {
            spawn_training(&fixture, "run", &["--epochs", "100000", "--batch-size", "64"])
        } else {
            let resume = dir.to_str().unwrap().to_string();
            Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
                .args(["train", "--resume", &resume, "--epochs", "100000", "--device", "cpu"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        // Every run must advance the run before it is killed: a binary that fails at start-up, or stops
        // saving, fails here. Then the kill lands at a random moment of the epochs that follow (an epoch
        // takes a few milliseconds, most of it writing the checkpoint).
        wait_for_epochs(&dir, completed + 1, &mut child);
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_micros(state % 30_000));
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            problems.push(format!(
                "kill {kill}: the process had already ended ({status}): {}",
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        signal(&child, "-KILL");
        let _ = child.wait();
        match check_loadable(&dir) {
            Ok(now) if now > completed => completed = now,
            Ok(now) => {
                problems.push(format!("kill {kill}: {now} epochs completed after the run reached {}", completed + 1))
            }
            Err(problem) => problems.push(format!("kill {kill}: {problem}")),
        }
        let left = temporaries(&dir);
        if left.len() > 1 {
            problems.push(format!("kill {kill}: temporary files accumulate: {left:?}"));
        }
    }
    // A run that finishes normally cleans up whatever the last kill left.
    let target = (completed + 1).to_string();
    mnist_tch(&["train", "--resume", dir.to_str().unwrap(), "--epochs", &target, "--device", "cpu"]).assert_ok();
    let left = temporaries(&dir);
    if !left.is_empty() {
        problems.push(format!("after a clean resume: {left:?}"));
    }
    (kills, problems)
}

#[test]
fn kill_9_never_leaves_a_corrupt_run_directory() {
    let (kills, problems) = kill_loop(12);
    assert!(problems.is_empty(), "{} problems in {kills} kills: {problems:?}", problems.len());
}

/// The long version for the record: MNIST_TCH_KILLS=200 cargo test --release --test faults -- --ignored --nocapture
#[test]
#[ignore]
fn kill_9_loop_long() {
    let kills = std::env::var("MNIST_TCH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let (kills, corrupt) = kill_loop(kills);
    println!("kill -9 loop: {kills} kills, {} corrupt run directories", corrupt.len());
    assert!(corrupt.is_empty(), "{corrupt:?}");
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1", "--hidden", "512"]).assert_ok();
    let dir = fixture.path("run");
    let weights_before = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(weights_before.len() > 100_000);
    // A 64 KiB file-size limit: small files still fit, the 140 KB weights do not.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64; exec '{}' train --resume '{}' --epochs 2 --device cpu",
            env!("CARGO_BIN_EXE_mnist-tch"),
            dir.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("model.safetensors: write failed"), "{stderr}");
    assert!(stderr.contains("keeps the last completed epoch (1)"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights_before, "the checkpoint changed");
    assert_eq!(check_loadable(&dir), Ok(1));
    assert_eq!(RunConfig::load(&dir).unwrap().state.status, mnist_tch::run_dir::RunStatus::Failed);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

#[test]
fn a_nan_loss_stops_training_naming_epoch_and_step() {
    let fixture = Fixture::new(false);
    let run = fixture.train("run", &["--lr", "1e30", "--epochs", "3"]);
    run.assert_clean_error(&[
        "loss became",
        "in epoch 1 at step",
        "TerminateOnNaN",
        "keeps the last completed epoch (0)",
    ]);
    let config = RunConfig::load(&fixture.path("run")).unwrap();
    assert_eq!(config.state.status, mnist_tch::run_dir::RunStatus::Failed);
    assert_eq!(config.state.epochs_completed, 0);
}

#[test]
fn a_run_being_trained_has_one_writer_and_readers_are_told() {
    let fixture = Fixture::new(false);
    let dir = fixture.path("run");
    let mut first = spawn_training(&fixture, "run", &["--epochs", "100000"]);
    wait_for_epochs(&dir, 1, &mut first);
    let pid = first.id().to_string();
    // A second writer, by resume or by --overwrite, gets one line naming the holder.
    let resume = mnist_tch(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "100001", "--device", "cpu"]);
    resume.assert_clean_error(&[dir.to_str().unwrap(), &format!("being trained by process {pid}")]);
    fixture.train("run", &["--overwrite"]).assert_clean_error(&[&format!("being trained by process {pid}")]);
    // Readers keep working and say the run is still training.
    let summary = mnist_tch(&["summary", "--model", dir.to_str().unwrap()]);
    summary.assert_ok();
    assert!(summary.stderr.contains(&format!("still being trained by process {pid}")), "{}", summary.stderr);
    let evaluate = mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu"]);
    evaluate.assert_ok();
    assert!(evaluate.stderr.contains("still being trained"), "{}", evaluate.stderr);
    // Once the first writer has stopped, the run can be resumed.
    signal(&first, "-TERM");
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let completed = RunConfig::load(&dir).unwrap().state.epochs_completed;
    let target = (completed + 1).to_string();
    mnist_tch(&["train", "--resume", dir.to_str().unwrap(), "--epochs", &target, "--device", "cpu"]).assert_ok();
    let after = mnist_tch(&["summary", "--model", dir.to_str().unwrap()]);
    assert!(!after.stderr.contains("still being trained"), "{}", after.stderr);
}

#[test]
fn a_run_killed_before_its_first_epoch_says_so_and_resumes_from_epoch_1() {
    // What kill -9 during epoch 1 leaves: the config of a run in training, no weights, no metrics.
    let fixture = Fixture::new(false);
    fixture.train("straight", &["--epochs", "2"]).assert_ok();
    fixture.train("killed", &["--epochs", "2"]).assert_ok();
    let dir = fixture.path("killed");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["state"] = serde_json::json!({"status": "training", "epochs_completed": 0, "best_epoch": null});
    config["result"] = serde_json::Value::Null;
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for file in ["model.safetensors", "metrics.csv", "metrics.json", "evaluation.json"] {
        std::fs::remove_file(dir.join(file)).unwrap();
    }
    let run = dir.to_str().unwrap();
    let expected = ["killed", "no completed epoch yet", "mnist-tch resume"];
    mnist_tch(&["evaluate", "--model", run, "--device", "cpu"]).assert_clean_error(&expected);
    mnist_tch(&["export", "--model", run, "--out", fixture.path("m.pt").to_str().unwrap()])
        .assert_clean_error(&expected);
    let picture = fixture.path("p.png");
    image_file(&picture);
    mnist_tch(&["predict", "--model", run, picture.to_str().unwrap()]).assert_clean_error(&expected);
    // Resumed, it trains from epoch 1 with its seed's initial weights: the run it would have been.
    let resumed = mnist_tch(&["train", "--resume", run, "--device", "cpu"]);
    resumed.assert_ok();
    assert!(resumed.stdout.contains("Restarting"), "{}", resumed.stdout);
    assert!(resumed.stdout.contains("from epoch 1, up to epoch 2"), "{}", resumed.stdout);
    assert!(!resumed.stdout.contains("moment estimates"), "{}", resumed.stdout);
    let columns = |dir: &Path| -> Vec<String> {
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        csv.lines().map(|line| line.rsplit_once(',').unwrap().0.to_string()).collect()
    };
    assert_eq!(columns(&dir), columns(&fixture.path("straight")));
}

/// A small grey picture for predict.
fn image_file(path: &Path) {
    let pixels: Vec<u8> = (0..64).map(|i| if (18..46).contains(&i) { 255 } else { 0 }).collect();
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, 8, 8);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.write_header().unwrap().write_image_data(&pixels).unwrap();
}

#[test]
fn a_second_ctrl_c_and_sigterm_stop_training() {
    let fixture = slow_fixture();
    for (out, signals) in [("twice", ["-INT", "-INT"].as_slice()), ("term", ["-TERM"].as_slice())] {
        let dir = fixture.path(out);
        let mut child = spawn_training(&fixture, out, &["--epochs", "50", "--batch-size", "8"]);
        wait_for_epochs(&dir, 1, &mut child);
        for signal_name in signals {
            signal(&child, signal_name);
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "{out}: {stderr}");
        assert!(check_loadable(&dir).unwrap() >= 1, "{out}");
        assert!(temporaries(&dir).is_empty(), "{out}: {:?}", temporaries(&dir));
    }
}

/// Waits (polling /proc, with a deadline) until `child` has installed its SIGINT handler.
fn wait_for_sigint_handler(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let caught =
            status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(|hex| u64::from_str_radix(hex.trim(), 16));
        if let Some(Ok(mask)) = caught
            && mask & (1 << (libc::SIGINT - 1)) != 0
        {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the process ended before handling SIGINT");
        assert!(Instant::now() < deadline, "no SIGINT handler within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ctrl_c_stops_every_other_command_at_once_and_leaves_no_partial_file() {
    // Heavy enough that each command is still working when the signal comes: 60,000 test images, a
    // 784-4096-4096 model (76 MB of weights).
    let fixture = Fixture::with_files(&Files::synthetic_of_side(100, 60_000, 28), false);
    fixture.train("run", &["--epochs", "1", "--hidden", "4096,4096", "--limit", "50"]).assert_ok();
    let run = fixture.path("run");
    let logits = fixture.path("logits.npy");
    let exported = fixture.path("model.pt");
    let idx = fixture.data().join("t10k-images-idx3-ubyte");
    let run_arg = run.to_str().unwrap();
    let commands: [(&str, Vec<&str>, Option<&Path>); 3] = [
        (
            "evaluate",
            vec!["evaluate", "--model", run_arg, "--device", "cpu", "--dump-logits", logits.to_str().unwrap()],
            Some(&logits),
        ),
        ("export", vec!["export", "--model", run_arg, "--out", exported.to_str().unwrap()], Some(&exported)),
        ("predict", vec!["predict", "--model", run_arg, "--idx", idx.to_str().unwrap()], None),
    ];
    for (name, args, output) in commands {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_sigint_handler(&mut child);
        let started = Instant::now();
        signal(&child, "-INT");
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{name}");
        assert!(started.elapsed() < Duration::from_secs(2), "{name} took {:?} to stop", started.elapsed());
        if let Some(path) = output {
            assert!(!path.exists(), "{name} left {}", path.display());
        }
        let left = temporaries(fixture.tmp.path());
        assert!(left.is_empty(), "{name} left {left:?}");
    }
}

#[test]
fn a_closed_pipe_ends_commands_quietly_and_training_is_recorded_as_interrupted() {
    let fixture = Fixture::new(false);
    let run = fixture.path("run");
    // `train ... | head -1`: head reads the first line and goes away.
    let script = format!(
        "set -o pipefail; '{}' train --data '{}' --out '{}' --num-classes 4 --epochs 100000 --device cpu | head -1",
        env!("CARGO_BIN_EXE_mnist-tch"),
        fixture.data().display(),
        run.display()
    );
    let output = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Device: cpu\n");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let config = RunConfig::load(&run).unwrap();
    assert_eq!(config.state.status, mnist_tch::run_dir::RunStatus::Interrupted, "{stderr}");

    // A reporting command whose reader leaves early ends quietly with success.
    mnist_tch(&[
        "train",
        "--data",
        fixture.data().to_str().unwrap(),
        "--out",
        fixture.path("done").to_str().unwrap(),
        "--num-classes",
        "4",
        "--epochs",
        "1",
    ])
    .assert_ok();
    let script = format!(
        "set -o pipefail; '{}' evaluate --model '{}' --device cpu | head -1",
        env!("CARGO_BIN_EXE_mnist-tch"),
        fixture.path("done").display()
    );
    let output = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("Model: "));
}

#[test]
fn a_nan_loss_after_a_good_epoch_keeps_that_epoch() {
    let fixture = Fixture::new(false);
    fixture.train("run", &["--epochs", "1"]).assert_ok();
    let dir = fixture.path("run");
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    // The run continues with a learning rate that blows up in its second epoch.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["training"]["learning_rate"] = serde_json::json!(1e30);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let resumed = mnist_tch(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "3", "--device", "cpu"]);
    resumed.assert_clean_error(&["loss became", "in epoch 2 at step", "keeps the last completed epoch (1)"]);
    let after = RunConfig::load(&dir).unwrap();
    assert_eq!(after.state.status, mnist_tch::run_dir::RunStatus::Failed);
    assert_eq!(after.state.epochs_completed, 1);
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights, "the good epoch's weights changed");
    mnist_tch(&["evaluate", "--model", dir.to_str().unwrap(), "--device", "cpu"]).assert_ok();
}
