//! torchrun's elastic side: `torchrun --max-restarts N ... mnist-tch train --out RUN` whose worker is
//! killed restarts every worker with the same command line, and they continue RUN from its last
//! completed epoch, ending with the weights of a run never killed; outside a restart (or for a run of
//! another configuration) the write rule stands. And two nodes: two torchrun agents of one process each
//! (c10d rendezvous, loopback) train as one agent of two processes does, and a node that dies ends the
//! other in one line.

mod common;

use common::{Files, Fixture, mnist_tch, mnist_tch_process_with, torchrun, wait_within};
use mnist_tch::run_dir::RunConfig;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_mnist-tch")
}

/// 6,000 synthetic images; `--limit 4000 --batch-size 8`: 200 steps per worker and epoch with 2 workers.
fn fixture() -> Fixture {
    Fixture::with_files(&Files::synthetic(6000, 200), false)
}

fn train_args(fixture: &Fixture, out: &Path, extra: &[&str]) -> Vec<String> {
    let data = fixture.data();
    let mut args: Vec<String> =
        ["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--num-classes", "4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--device", "cpu", "--limit", "4000", "--batch-size", "8", "--quiet"].iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// torchrun with 2 workers and up to `restarts` restarts, its output in files of `dir` named `name`.
fn spawn_torchrun(dir: &Path, name: &str, restarts: usize, args: &[String]) -> Child {
    Command::new(torchrun())
        .args(["--standalone", "--nproc-per-node", "2", "--max-restarts", &restarts.to_string()])
        .args(["--monitor-interval", "0.2", "--no-python", binary()])
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("MNIST_TCH_DIST_TIMEOUT", "20")
        .env("MNIST_TCH_TEST_MARK", dir.join(name))
        .env_remove("MNIST_TCH_DATA")
        .env_remove("TORCHELASTIC_RESTART_COUNT")
        .stdout(File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(File::create(dir.join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap()
}

fn epochs_completed(run: &Path) -> usize {
    RunConfig::load(run).map(|c| c.state.epochs_completed).unwrap_or(0)
}

/// Waits (polling the config the leader writes, with a deadline) until `run` has `epochs` completed.
fn wait_for_epochs(run: &Path, epochs: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while epochs_completed(run) < epochs {
        assert!(child.try_wait().unwrap().is_none(), "torchrun ended before epoch {epochs}");
        assert!(Instant::now() < deadline, "no epoch {epochs} within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The pid of the worker of rank `rank` in torchrun attempt `attempt` (found by the environment
/// torchrun gave it, which holds the test's mark).
fn worker_pid(mark: &Path, rank: usize, attempt: usize) -> u32 {
    find_worker(mark, rank, attempt).unwrap_or_else(|| panic!("no worker of rank {rank} in attempt {attempt}"))
}

fn find_worker(mark: &Path, rank: usize, attempt: usize) -> Option<u32> {
    let wanted = [
        format!("MNIST_TCH_TEST_MARK={}", mark.display()),
        format!("RANK={rank}"),
        format!("TORCHELASTIC_RESTART_COUNT={attempt}"),
    ];
    mnist_tch_process_with(&wanted)
}

/// Every column of metrics.csv but the last (`seconds`, wall time).
fn metric_columns(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    csv.lines().map(|line| line.rsplit_once(',').unwrap().0.to_string()).collect()
}

/// Kills rank 1 with `kill -9` once epoch `after` is saved, i.e. during epoch `after + 1`, in each of
/// the attempts given; returns torchrun's exit status.
fn train_killing(fixture: &Fixture, name: &str, kills: &[(usize, usize)]) -> ExitStatus {
    let dir = fixture.tmp.path();
    let run = fixture.path(name);
    let mut launcher = spawn_torchrun(dir, name, 2, &train_args(fixture, &run, &["--epochs", "6"]));
    for &(attempt, after) in kills {
        wait_for_epochs(&run, after, &mut launcher);
        let victim = worker_pid(&dir.join(name), 1, attempt);
        assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
        // Rank 0 cannot finish another epoch without rank 1: what the run holds now is where it was killed.
        assert_eq!(epochs_completed(&run), after, "the kill landed in epoch {}", after + 1);
    }
    wait_within(&mut launcher, Duration::from_secs(300))
}

fn assert_as_uninterrupted(fixture: &Fixture, name: &str) {
    let (straight, run) = (fixture.path("straight"), fixture.path(name));
    let stderr = std::fs::read_to_string(fixture.tmp.path().join(format!("{name}.err"))).unwrap();
    assert_eq!(metric_columns(&run).len(), 7, "a header and 6 rows:\n{stderr}");
    assert_eq!(metric_columns(&straight), metric_columns(&run), "{stderr}");
    let bytes = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(bytes(&straight) == bytes(&run), "the weights differ from the uninterrupted run's");
    assert!(stderr.contains("note: torchrun restart 1: "), "{stderr}");
    let config = RunConfig::load(&run).unwrap();
    assert_eq!(config.state.epochs_completed, 6);
    assert!(config.state.resumes.iter().all(|r| r.optimizer == mnist_tch::run_dir::OptimizerResume::Restored));
}

#[test]
fn a_worker_killed_in_epoch_3_once_or_twice_and_torchrun_ends_as_if_it_never_was() {
    let fixture = fixture();
    let dir = fixture.tmp.path();
    let mut straight =
        spawn_torchrun(dir, "straight", 0, &train_args(&fixture, &fixture.path("straight"), &["--epochs", "6"]));
    assert!(wait_within(&mut straight, Duration::from_secs(300)).success());

    let status = train_killing(&fixture, "once", &[(0, 2)]);
    assert!(status.success(), "torchrun exited {status:?}");
    assert_as_uninterrupted(&fixture, "once");
    assert_eq!(RunConfig::load(&fixture.path("once")).unwrap().state.resumes.len(), 1);

    let status = train_killing(&fixture, "twice", &[(0, 2), (1, 4)]);
    assert!(status.success(), "torchrun exited {status:?}");
    assert_as_uninterrupted(&fixture, "twice");
    let stderr = std::fs::read_to_string(dir.join("twice.err")).unwrap();
    assert!(stderr.contains("note: torchrun restart 2: "), "{stderr}");
    assert_eq!(RunConfig::load(&fixture.path("twice")).unwrap().state.resumes.len(), 2);
}

/// `train` as torchrun's restart `attempt` would start it, in one process.
fn restarted_train(fixture: &Fixture, out: &Path, attempt: &str, extra: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(train_args(fixture, out, extra))
        .env("TORCHELASTIC_RESTART_COUNT", attempt)
        .env("OMP_NUM_THREADS", "1")
        .env_remove("WORLD_SIZE")
        .env_remove("MNIST_TCH_DATA")
        .output()
        .unwrap()
}

#[test]
fn only_a_restart_continues_and_only_a_run_of_the_same_configuration() {
    let fixture = fixture();
    let run = fixture.path("run");
    let flags = ["--epochs", "4"];
    // An unfinished run: the first 2 of 4 epochs (what an interrupted first attempt leaves).
    let mut child = Command::new(binary())
        .args(train_args(&fixture, &run, &flags))
        .env("OMP_NUM_THREADS", "1")
        .env_remove("TORCHELASTIC_RESTART_COUNT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_epochs(&run, 2, &mut child);
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let _ = child.wait();
    let completed = epochs_completed(&run);
    assert!((2..4).contains(&completed), "{completed}");

    for (attempt, extra) in [("0", &flags[..]), ("1", &["--epochs", "4", "--lr", "0.01"][..])] {
        let refused = restarted_train(&fixture, &run, attempt, extra);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "attempt {attempt} {extra:?}: {stderr}");
        assert!(stderr.contains("already holds a run"), "{stderr}");
        assert_eq!(epochs_completed(&run), completed, "nothing was written");
    }
    // --overwrite on the command line does not replace the unfinished run under a restart.
    let continued = restarted_train(&fixture, &run, "1", &["--epochs", "4", "--overwrite"]);
    let stderr = String::from_utf8_lossy(&continued.stderr);
    assert!(continued.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("note: torchrun restart 1: {} holds this run's", run.display())), "{stderr}");
    let config = RunConfig::load(&run).unwrap();
    assert_eq!(config.state.epochs_completed, 4);
    assert_eq!(config.state.resumes.len(), 1, "continued after epoch {completed}, not started again");
    assert_eq!(config.state.resumes[0].after_epoch, completed);

    let straight = fixture.path("straight");
    let once = mnist_tch(&train_args(&fixture, &straight, &flags).iter().map(String::as_str).collect::<Vec<_>>());
    once.assert_ok();
    assert_eq!(metric_columns(&straight), metric_columns(&run));
    let bytes = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(bytes(&straight) == bytes(&run), "the continued run's weights differ from the uninterrupted run's");
}

/// One torchrun agent of a 2-node job (1 process, c10d rendezvous at 127.0.0.1:`port`), its output in
/// files of `dir` named `name`, its worker marked with `dir/name`.
fn spawn_node(dir: &Path, name: &str, port: u16, args: &[String]) -> Child {
    Command::new(torchrun())
        .args(["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"])
        .args(["--rdzv-endpoint", &format!("127.0.0.1:{port}"), "--rdzv-id", "two-nodes"])
        .args(["--no-python", binary()])
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("MNIST_TCH_DIST_TIMEOUT", "20")
        .env("MNIST_TCH_TEST_MARK", dir.join(name))
        .env_remove("MNIST_TCH_DATA")
        .env_remove("TORCHELASTIC_RESTART_COUNT")
        .stdout(File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(File::create(dir.join(format!("{name}.err"))).unwrap())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// 6,000 synthetic 28×28 images: `--limit 6000` keeps 4,800 for training, 150 steps of 2 × 16.
fn mnist_sized() -> Fixture {
    Fixture::with_files(&Files::synthetic_of_side(6000, 200, 28), false)
}

fn two_node_args(fixture: &Fixture, out: &Path, epochs: &str) -> Vec<String> {
    let data = fixture.data();
    ["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--num-classes", "4"]
        .iter()
        .chain(&["--device", "cpu", "--limit", "6000", "--batch-size", "16", "--epochs", epochs, "--quiet"])
        .map(|s| s.to_string())
        .collect()
}

fn largest_difference(a: &Path, b: &Path) -> f64 {
    let sorted = |dir: &Path| {
        let mut tensors = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
        tensors.sort_by(|x, y| x.0.cmp(&y.0));
        tensors
    };
    let (left, right) = (sorted(a), sorted(b));
    assert_eq!(left.len(), right.len());
    left.iter().zip(&right).map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn two_agents_of_one_process_train_as_one_agent_of_two() {
    let fixture = mnist_sized();
    let dir = fixture.tmp.path();
    let one_agent = fixture.path("one-agent");
    let mut launcher = spawn_torchrun(dir, "one-agent", 0, &two_node_args(&fixture, &one_agent, "1"));
    assert!(wait_within(&mut launcher, Duration::from_secs(120)).success());

    let two_nodes = fixture.path("two-nodes");
    let port = free_port();
    let args = two_node_args(&fixture, &two_nodes, "1");
    let mut nodes = [spawn_node(dir, "node-a", port, &args), spawn_node(dir, "node-b", port, &args)];
    for (node, name) in nodes.iter_mut().zip(["node-a", "node-b"]) {
        let status = wait_within(node, Duration::from_secs(120));
        let stderr = std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap();
        assert!(status.success(), "{name}: {status:?}\n{stderr}");
    }
    let config = RunConfig::load(&two_nodes).unwrap();
    let distributed = config.training.distributed.as_ref().unwrap();
    assert_eq!((distributed.world_size, distributed.global_batch_size), (2, 32));
    assert_eq!(
        std::fs::read_to_string(two_nodes.join("metrics.csv")).unwrap().lines().nth(1).unwrap().split(',').nth(1),
        Some("150")
    );
    let difference = largest_difference(&one_agent, &two_nodes);
    println!("2 agents x 1 process vs 1 agent x 2, 150 steps: max abs difference {difference:e}");
    assert!(difference <= 1e-6, "2 agents × 1 ended {difference} from 1 agent × 2 after 150 steps");
}

#[test]
fn a_node_that_dies_ends_the_other_within_the_timeout_in_one_line() {
    let fixture = fixture();
    let dir = fixture.tmp.path();
    let run = fixture.path("run");
    let port = free_port();
    let args = train_args(&fixture, &run, &["--epochs", "100"]);
    let mut survivor = spawn_node(dir, "node-a", port, &args);
    let mut victim = spawn_node(dir, "node-b", port, &args);
    wait_for_epochs(&run, 1, &mut survivor);
    // The whole node: its agent and its worker, at once.
    let worker =
        [0, 1].into_iter().find_map(|rank| find_worker(&dir.join("node-b"), rank, 0)).expect("node b's worker");
    let killed_at = Instant::now();
    for pid in [victim.id(), worker] {
        assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    }
    let _ = victim.wait();
    let status = wait_within(&mut survivor, Duration::from_secs(60));
    let took = killed_at.elapsed();
    assert!(!status.success(), "the surviving agent exited {status:?}");
    assert!(took < Duration::from_secs(40), "the survivor took {took:?} (timeout 20 s)");
    let stderr = std::fs::read_to_string(dir.join("node-a.err")).unwrap();
    let says: Vec<&str> =
        stderr.lines().filter(|l| l.contains("holds the last completed epoch") || l.starts_with("error: ")).collect();
    assert_eq!(says.len(), 1, "{stderr}");
    println!("the surviving node ended after {took:?}, exit {status:?}: {}", says[0]);
}
