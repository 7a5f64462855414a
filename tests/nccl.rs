//! NCCL for CUDA ranks, as far as a CPU machine can check it: `scripts/build_nccl.sh` builds the NCCL
//! process group's shared object from the pip wheels' headers, it links libtorch_cuda while the binary
//! does not, it loads here and creating the group then says there is no GPU, and on a CPU rank
//! `--dist-backend nccl` is refused in one line while `auto` trains on Gloo.

mod common;

use common::{Fixture, json};
use mnist_tch::distributed::{self, Backend, BackendChoice, ProcessGroup, WorkerEnv};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tch::Device;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What scripts/setup.sh builds beside the binary.
fn built_library() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_mnist-tch")).with_file_name(distributed::NCCL_LIBRARY);
    assert!(path.exists(), "{} is missing: run scripts/setup.sh (scripts/build_nccl.sh)", path.display());
    path
}

/// The shared libraries `file` names as NEEDED.
fn needed(file: &Path) -> Vec<String> {
    let out = Command::new("readelf").args(["-d", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1).map(|s| s.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn the_build_script_makes_a_library_that_links_libtorch_cuda_which_the_binary_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("libmnist_nccl.so");
    let built = Command::new(root().join("scripts/build_nccl.sh")).arg(&out).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    for library in [out.as_path(), built_library().as_path()] {
        assert!(needed(library).contains(&"libtorch_cuda.so".to_string()), "{}", library.display());
        let symbols = Command::new("nm").args(["-D", "--defined-only", library.to_str().unwrap()]).output().unwrap();
        assert!(String::from_utf8_lossy(&symbols.stdout).contains(" T mnist_nccl_new_backend"));
    }
    let binary = needed(Path::new(env!("CARGO_BIN_EXE_mnist-tch")));
    assert!(binary.iter().all(|l| !l.contains("cuda") && !l.contains("nccl")), "{binary:?}");
}

#[test]
fn the_library_loads_on_a_cpu_machine_and_creating_the_group_says_there_is_no_gpu() {
    // SAFETY: the only test of this binary that reads the variable, set before its first use.
    unsafe { std::env::set_var(distributed::NCCL_LIBRARY_VARIABLE, built_library()) };
    assert_eq!(distributed::load_nccl().unwrap(), built_library());
    // auto on a CPU rank is Gloo without loading anything; on a CUDA rank NCCL, the library being there.
    let no_note = |note: &str| panic!("unexpected note: {note}");
    assert_eq!(BackendChoice::Auto.resolve(Device::Cpu, None, no_note).unwrap(), Backend::Gloo);
    assert_eq!(BackendChoice::Auto.resolve(Device::Cuda(0), None, no_note).unwrap(), Backend::Nccl);
    assert_eq!(BackendChoice::Gloo.resolve(Device::Cuda(0), None, no_note).unwrap(), Backend::Gloo);
    // Two ranks on one GPU: NCCL cannot, so auto is Gloo (and says why) and nccl is refused.
    let mut said = String::new();
    let auto = BackendChoice::Auto.resolve(Device::Cuda(0), Some((2, 1)), |note| said = note.to_string());
    assert_eq!(auto.unwrap(), Backend::Gloo);
    assert_eq!(
        said,
        "2 ranks on this node share 1 GPU(s), and NCCL takes one GPU per rank; --dist-backend auto uses Gloo"
    );
    let refused = BackendChoice::Nccl.resolve(Device::Cuda(0), Some((2, 1)), no_note).err().unwrap().to_string();
    assert!(refused.starts_with("--dist-backend nccl: 2 ranks on this node share 1 GPU(s)"), "{refused}");
    // A group of one, its store hosted here: ProcessGroupNCCL itself refuses, in one line.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let env = WorkerEnv {
        rank: 0,
        local_rank: 0,
        world_size: 1,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        restart: 0,
    };
    let err = ProcessGroup::join(&env, Duration::from_secs(10), Backend::Nccl, Device::Cuda(0)).err().unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("ProcessGroupNCCL is only supported with GPUs, no GPUs found!"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn nccl_on_a_cpu_rank_is_refused_in_one_line_and_auto_trains_on_gloo() {
    let fixture = Fixture::new(false);
    let refused = fixture.train("refused", &["--dist-backend", "nccl", "--epochs", "1"]);
    assert_eq!(refused.code(), Some(1), "{}", refused.stderr);
    assert_eq!(
        refused.stderr.trim(),
        "error: --dist-backend nccl needs ranks on CUDA, and this one trains on cpu (NCCL all-reduces GPU \
         tensors only); use --dist-backend gloo or auto"
    );
    assert!(!fixture.path("refused").exists(), "nothing was written");
    let unknown = fixture.train("unknown", &["--dist-backend", "mpi"]);
    assert_eq!(unknown.code(), Some(2), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("[possible values: auto, gloo, nccl]"), "{}", unknown.stderr);
    // Two ranks by hand (rank 0 hosts the store), the default --dist-backend auto: Gloo, recorded.
    let run = fixture.path("pair");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = fixture.data();
    let args = ["train", "--data", data.to_str().unwrap(), "--out", run.to_str().unwrap(), "--num-classes", "4"];
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(env!("CARGO_BIN_EXE_mnist-tch"))
                .args(args)
                .args(["--device", "cpu", "--epochs", "1", "--quiet"])
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("MNIST_TCH_DIST_TIMEOUT", "30")
                .env("OMP_NUM_THREADS", "1")
                .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for rank in ranks {
        let output = rank.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(json(&run.join("config.json"))["training"]["distributed"]["backend"], "gloo");
}
