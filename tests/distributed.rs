//! `mnist-tch train` as several processes on libtorch's c10d (Gloo, loopback only): two processes ×
//! batch 16 end where one process × batch 32 does; a worker alone, or facing nobody, fails in one line
//! within its timeout; under torchrun, `kill -9` of one worker stops the other and keeps the last epoch,
//! which `train --resume` continues, and Ctrl-C stops every rank as an interruption.

mod common;

use common::{
    Files, Fixture, json, max_abs_difference, max_abs_difference_of, mnist_tch, mnist_tch_process_with, torchrun,
    wait_within,
};
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mnist-tch")
}

/// A port nobody listens on right now (the kernel's choice of a free one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// 6,000 synthetic 28×28 training images: `--limit 6000` keeps 4,800 for training, 150 steps of 32.
fn mnist_sized() -> Fixture {
    Fixture::with_files(&Files::synthetic_of_side(6000, 200, 28), false)
}

fn train_args(fixture: &Fixture, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--data", fixture.data().to_str().unwrap(), "--out", out.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--num-classes", "4", "--device", "cpu"].iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts rank `rank` of `world` by hand, the way torchrun's environment describes a worker (without
/// torchrun's agent: rank 0 hosts the store).
fn worker(rank: usize, world: usize, port: u16, args: &[String], timeout_s: &str) -> Child {
    worker_command(rank, world, port, args, timeout_s).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn worker_command(rank: usize, world: usize, port: u16, args: &[String], timeout_s: &str) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("MNIST_TCH_DIST_TIMEOUT", timeout_s)
        .env("OMP_NUM_THREADS", "1")
        .env_remove("TORCHELASTIC_USE_AGENT_STORE")
        .env_remove("MNIST_TCH_DATA");
    command
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Two workers started by hand, both waited for.
fn two_workers(args: &[String]) -> (Output, Output) {
    let port = free_port();
    let rank0 = worker(0, 2, port, args, "30");
    let rank1 = worker(1, 2, port, args, "30");
    (rank0.wait_with_output().unwrap(), rank1.wait_with_output().unwrap())
}

fn equivalence(order: &[&str]) {
    let fixture = mnist_sized();
    let common = ["--limit", "6000", "--epochs", "1", "--save-initial"];
    let one = fixture.path("one");
    let flags: Vec<&str> = common.iter().chain(order).copied().chain(["--batch-size", "32"]).collect();
    mnist_tch(&train_args(&fixture, &one, &flags).iter().map(String::as_str).collect::<Vec<_>>()).assert_ok();

    let two = fixture.path("two");
    let flags: Vec<&str> = common.iter().chain(order).copied().chain(["--batch-size", "16"]).collect();
    let (rank0, rank1) = two_workers(&train_args(&fixture, &two, &flags));
    assert!(rank0.status.success(), "rank 0: {}", text(&rank0));
    assert!(rank1.status.success(), "rank 1: {}", text(&rank1));
    // Rank 1 prints nothing; rank 0 prints the run, with its one Test accuracy line.
    assert!(rank1.stdout.is_empty() && rank1.stderr.is_empty(), "rank 1: {}", text(&rank1));
    let printed = String::from_utf8_lossy(&rank0.stdout);
    assert_eq!(printed.matches("Test accuracy: ").count(), 1, "{printed}");
    assert!(printed.contains("Epoch 1/1 - 150 steps"), "{printed}");

    assert_eq!(max_abs_difference(&one, &two, "initial.safetensors"), 0.0);
    let difference = max_abs_difference(&one, &two, "model.safetensors");
    assert!(difference <= 1e-5, "2 × 16 ended {difference} away from 1 × 32");
    // Training moved the weights far more than that: the comparison is not vacuous.
    let moved = max_abs_difference_of(&two.join("initial.safetensors"), &two.join("model.safetensors"));
    assert!(moved > 1e-2, "training moved the weights by {moved} only");

    let config = json(&two.join("config.json"));
    let distributed = &config["training"]["distributed"];
    assert_eq!(distributed["world_size"], 2, "{config}");
    assert_eq!(distributed["backend"], "gloo");
    assert_eq!(distributed["batch_size_per_process"], 16);
    assert_eq!(distributed["global_batch_size"], 32);
    assert!(json(&one.join("config.json"))["training"].get("distributed").is_none());
    // The epoch's training metrics cover both shards: the same as the single process's, to rounding.
    let metric = |dir: &Path, name: &str| json(&dir.join("metrics.json"))[0][name].as_f64().unwrap();
    for name in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert!((metric(&one, name) - metric(&two, name)).abs() < 1e-4, "{name}");
    }
}

#[test]
fn two_processes_of_16_end_where_one_of_32_does_in_file_order() {
    equivalence(&["--no-shuffle"]);
}

#[test]
fn two_processes_of_16_end_where_one_of_32_does_shuffled() {
    equivalence(&[]);
}

#[test]
fn a_worker_without_its_peer_fails_in_one_line_within_its_timeout() {
    let fixture = Fixture::new(false);
    let out = fixture.path("alone");
    let args = train_args(&fixture, &out, &["--epochs", "1"]);
    // Rank 0 of a world of 2 (WORLD_SIZE wrong: nobody else comes) hosts the store and waits.
    let started = Instant::now();
    let alone = worker(0, 2, free_port(), &args, "2").wait_with_output().unwrap();
    let run = common::Run {
        stdout: String::from_utf8_lossy(&alone.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&alone.stderr).into_owned(),
        output: alone,
    };
    run.assert_clean_error(&["rank 0 of 2 could not join the others at 127.0.0.1:", "within 2 s"]);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(!out.exists(), "a worker that never joined created {}", out.display());

    // Rank 1 facing a MASTER_ADDR:MASTER_PORT where nobody listens.
    let started = Instant::now();
    let unreachable = worker(1, 2, free_port(), &args, "2").wait_with_output().unwrap();
    let run = common::Run {
        stdout: String::from_utf8_lossy(&unreachable.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&unreachable.stderr).into_owned(),
        output: unreachable,
    };
    run.assert_clean_error(&["rank 1 of 2 could not join", "MASTER_ADDR reachable"]);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn the_fused_engine_and_bad_variables_are_refused_before_anything_starts() {
    let fixture = Fixture::new(false);
    let out = fixture.path("fused");
    let args = train_args(&fixture, &out, &["--engine", "fused"]);
    let refused = worker(0, 2, free_port(), &args, "2").wait_with_output().unwrap();
    let run = common::Run {
        stdout: String::from_utf8_lossy(&refused.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&refused.stderr).into_owned(),
        output: refused,
    };
    run.assert_usage_error(&["--engine fused trains in one process only"]);
    assert!(!out.exists());

    let args = train_args(&fixture, &out, &[]);
    let bad = worker(2, 2, free_port(), &args, "2").wait_with_output().unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RANK=2 is not below WORLD_SIZE=2"), "{}", text(&bad));
}

/// torchrun with `nproc` workers of `mnist-tch train ...`, its output in files of `dir`.
fn spawn_torchrun(dir: &Path, name: &str, nproc: usize, args: &[String]) -> Child {
    Command::new(torchrun())
        .args(["--standalone", "--nproc-per-node", &nproc.to_string(), "--no-python", binary()])
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("MNIST_TCH_DIST_TIMEOUT", "20")
        // Marks this test's workers, to find them among every process of the machine.
        .env("MNIST_TCH_TEST_MARK", dir)
        .env_remove("MNIST_TCH_DATA")
        .stdout(File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(File::create(dir.join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap()
}

/// Waits (polling the config the leader writes, with a deadline) until `run` has an epoch completed.
fn wait_for_an_epoch(run: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while mnist_tch::run_dir::RunConfig::load(run).map_or(true, |c| c.state.epochs_completed == 0) {
        assert!(child.try_wait().unwrap().is_none(), "training ended before the first epoch");
        assert!(Instant::now() < deadline, "no epoch within 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of this test's worker of rank `rank` (its environment holds the test's mark).
fn worker_pid(mark: &Path, rank: usize) -> u32 {
    let wanted = [format!("MNIST_TCH_TEST_MARK={}", mark.display()), format!("RANK={rank}")];
    mnist_tch_process_with(&wanted).unwrap_or_else(|| panic!("no worker of rank {rank} found"))
}

/// A data set big enough that an epoch of two workers lasts a while.
fn slow_fixture() -> Fixture {
    Fixture::with_files(&Files::synthetic(20_000, 200), false)
}

#[test]
fn kill_9_of_one_worker_stops_the_other_and_resume_continues_under_torchrun() {
    let fixture = slow_fixture();
    let dir = fixture.tmp.path();
    let run = fixture.path("run");
    let mut launcher = spawn_torchrun(dir, "first", 2, &train_args(&fixture, &run, &["--epochs", "100"]));
    wait_for_an_epoch(&run, &mut launcher);
    let victim = worker_pid(dir, 1);
    let killed_at = Instant::now();
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let status = wait_within(&mut launcher, Duration::from_secs(60));
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    assert!(!status.success(), "torchrun exited {status:?} after a worker was killed");
    let stderr = std::fs::read_to_string(dir.join("first.err")).unwrap();
    // The survivor (rank 0) says in one line where the run stands, whichever came first: torchrun's
    // SIGTERM or the broken all-reduce.
    let says: Vec<&str> =
        stderr.lines().filter(|l| l.contains("holds the last completed epoch") || l.starts_with("error: ")).collect();
    assert_eq!(says.len(), 1, "{stderr}");
    assert!(says[0].contains(run.to_str().unwrap()), "{stderr}");
    let config = mnist_tch::run_dir::RunConfig::load(&run).unwrap();
    let completed = config.state.epochs_completed;
    assert!(completed >= 1);
    assert_eq!(mnist_tch::run_dir::load_metrics(&run).unwrap().len(), completed);
    mnist_tch::run_dir::load_run(&run, tch::Device::Cpu).unwrap();

    // Continued under torchrun, with another world size (1) and then the same (2).
    let target = (completed + 1).to_string();
    let resume = ["train".to_string(), "--resume".into(), run.to_str().unwrap().into(), "--epochs".into(), target];
    let mut single = spawn_torchrun(dir, "resume1", 1, &resume);
    assert!(wait_within(&mut single, Duration::from_secs(90)).success());
    let target = (completed + 2).to_string();
    let resume = ["train".to_string(), "--resume".into(), run.to_str().unwrap().into(), "--epochs".into(), target];
    let mut pair = spawn_torchrun(dir, "resume2", 2, &resume);
    let status = wait_within(&mut pair, Duration::from_secs(90));
    let printed = std::fs::read_to_string(dir.join("resume2.out")).unwrap();
    assert!(status.success(), "{printed}\n{}", std::fs::read_to_string(dir.join("resume2.err")).unwrap());
    assert_eq!(printed.matches("Test accuracy: ").count(), 1, "{printed}");
    assert!(printed.contains("restored from optimizer.safetensors"), "{printed}");
    let config = json(&run.join("config.json"));
    assert_eq!(config["state"]["epochs_completed"], completed + 2);
    assert_eq!(config["state"]["status"], "completed");
    assert_eq!(config["training"]["distributed"]["world_size"], 2);
}

#[test]
fn ctrl_c_to_torchrun_stops_every_worker_as_an_interruption() {
    let fixture = slow_fixture();
    let dir = fixture.tmp.path();
    let run = fixture.path("run");
    let mut launcher = spawn_torchrun(dir, "run", 2, &train_args(&fixture, &run, &["--epochs", "100"]));
    wait_for_an_epoch(&run, &mut launcher);
    let workers = [worker_pid(dir, 0), worker_pid(dir, 1)];
    assert!(Command::new("kill").args(["-INT", &launcher.id().to_string()]).status().unwrap().success());
    // torchrun forwards SIGINT and would SIGKILL a worker still running after 30 s: every worker
    // stopped by itself well before.
    let status = wait_within(&mut launcher, Duration::from_secs(25));
    assert!(!status.success());
    for pid in workers {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} still running");
    }
    let stderr = std::fs::read_to_string(dir.join("run.err")).unwrap();
    assert_eq!(stderr.matches("Interrupted in epoch").count(), 1, "{stderr}");
    let config = json(&run.join("config.json"));
    assert_eq!(config["state"]["status"], "interrupted", "{stderr}");
    assert!(config["state"]["epochs_completed"].as_u64().unwrap() >= 1);
}

/// Two workers started by hand on the slow fixture; their epoch lines go nowhere, stderr to a pipe.
fn spawn_pair(fixture: &Fixture, run: &Path, timeout_s: &str) -> [Child; 2] {
    let port = free_port();
    let args = train_args(fixture, run, &["--epochs", "100"]);
    [0, 1].map(|rank| {
        let mut command = worker_command(rank, 2, port, &args, timeout_s);
        command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
    })
}

#[test]
fn a_peer_that_dies_or_hangs_stops_the_other_in_one_line() {
    // Killed: its connections close and the survivor's next all-reduce fails at once.
    let fixture = slow_fixture();
    let run = fixture.path("killed");
    let [mut rank0, mut rank1] = spawn_pair(&fixture, &run, "30");
    wait_for_an_epoch(&run, &mut rank0);
    rank1.kill().unwrap();
    let _ = rank1.wait();
    let started = Instant::now();
    let status = wait_within(&mut rank0, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(10), "noticed after {:?}", started.elapsed());
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(rank0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("keeps the last completed epoch"), "{stderr}");
    assert!(stderr.contains("rank 0 of 2: all-reduce with the other processes failed"), "{stderr}");
    assert_eq!(json(&run.join("config.json"))["state"]["status"], "failed");

    // Hung (SIGSTOP): nothing closes, the collective's timeout ends the wait.
    let run = fixture.path("hung");
    let [mut rank0, mut rank1] = spawn_pair(&fixture, &run, "3");
    wait_for_an_epoch(&run, &mut rank0);
    assert!(Command::new("kill").args(["-STOP", &rank1.id().to_string()]).status().unwrap().success());
    let started = Instant::now();
    let status = wait_within(&mut rank0, Duration::from_secs(30));
    let waited = started.elapsed();
    rank1.kill().unwrap();
    let _ = rank1.wait();
    assert!(waited < Duration::from_secs(15), "gave up after {waited:?}");
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(rank0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Timed out"), "{stderr}");
    let config = json(&run.join("config.json"));
    assert!(config["state"]["epochs_completed"].as_u64().unwrap() >= 1);
}

#[test]
fn two_processes_of_16_accumulating_2_end_where_one_of_64_does() {
    let fixture = mnist_sized();
    let common = ["--limit", "6000", "--epochs", "1", "--save-initial", "--no-shuffle"];
    let one = fixture.path("one");
    let flags: Vec<&str> = common.iter().copied().chain(["--batch-size", "64"]).collect();
    mnist_tch(&train_args(&fixture, &one, &flags).iter().map(String::as_str).collect::<Vec<_>>()).assert_ok();
    let two = fixture.path("two");
    let flags: Vec<&str> = common.iter().copied().chain(["--batch-size", "16", "--accumulate", "2"]).collect();
    let (rank0, rank1) = two_workers(&train_args(&fixture, &two, &flags));
    assert!(rank0.status.success(), "rank 0: {}", text(&rank0));
    assert!(rank1.status.success(), "rank 1: {}", text(&rank1));
    // 4,800 examples, 64 per optimizer step over both processes.
    assert!(String::from_utf8_lossy(&rank0.stdout).contains("Epoch 1/1 - 75 steps"), "{}", text(&rank0));
    assert_eq!(max_abs_difference(&one, &two, "initial.safetensors"), 0.0);
    let difference = max_abs_difference(&one, &two, "model.safetensors");
    assert!(difference <= 1e-6, "2 × 16 × 2 ended {difference} away from 1 × 64");
    let moved = max_abs_difference_of(&two.join("initial.safetensors"), &two.join("model.safetensors"));
    assert!(moved > 1e-2, "training moved the weights by {moved} only");
    assert_eq!(json(&two.join("config.json"))["training"]["accumulate"], 2);
}
