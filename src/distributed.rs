//! Training as one of several processes, the way PyTorch's DistributedDataParallel does it, on libtorch's
//! own distributed engine: `torchrun` launches the processes and says in environment variables who is
//! who; [`ProcessGroup::join`] connects them through c10d's `TCPStore` and `ProcessGroupGloo` (the C++
//! side is `src/c10d.cpp`, a few `extern "C"` functions); the training step all-reduces the flat
//! gradient buffer once per step and every process applies the same Adam update.
//!
//! What this module decides, DDP's way: rank 0's initial weights are broadcast; each epoch's order is
//! split like `DistributedSampler` ([`shard`]: rank r takes positions r, r+W, r+2W, …, the tail padded
//! from the start so every rank takes as many steps); `--batch-size` is per process; gradients are
//! averaged (sum / W).
//!
//! The collectives run on Gloo (CPU tensors; CUDA ranks' go through a CPU copy) or, for CUDA ranks, on
//! NCCL (`--dist-backend auto|gloo|nccl`, [`BackendChoice`]). NCCL lives in `libtorch_cuda.so`, which the
//! binary never links: its process group is built into a shared object of its own
//! (`libmnist_nccl.so`, from `src/nccl.cpp` by `scripts/build_nccl.sh`), which [`load_nccl`] opens with
//! libloading only when the ranks train on CUDA.
//!
//! Without torchrun's variables, or with `WORLD_SIZE=1`, nothing joins and training is unchanged.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// Seconds that the rendezvous and every collective may take before the process gives up.
pub const TIMEOUT_VARIABLE: &str = "MNIST_TCH_DIST_TIMEOUT";
/// The default of [`TIMEOUT_VARIABLE`]: long enough for a slow node to load its data, short enough that
/// a lost peer is reported within a minute (a killed peer is noticed at once: its connections close).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The collective backend a group runs on, as `config.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// c10d's ProcessGroupGloo, in libtorch_cpu: CPU tensors (CUDA ones through a CPU copy).
    Gloo,
    /// c10d's ProcessGroupNCCL, in libtorch_cuda (through `libmnist_nccl.so`): CUDA tensors.
    Nccl,
}

/// `--dist-backend`: which backend torchrun's ranks use, each described in [`BackendChoice::HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Gloo,
    Nccl,
}

crate::spelling::named_values!(BackendChoice, "distributed backend", {
    Auto => "auto": "NCCL when the ranks train on CUDA, Gloo otherwise (as PyTorch's init_process_group picks)",
    Gloo => "gloo": "Gloo on the CPU, for any device (CUDA tensors go through a CPU copy)",
    Nccl => "nccl": "NCCL, for ranks on CUDA only",
});

impl BackendChoice {
    /// The backend for ranks training on `device`, `sharing` when this node has more ranks than GPUs:
    /// NCCL on a CPU rank, or on a GPU another rank shares (NCCL takes one GPU per rank), is refused in
    /// one line; `auto` on CUDA takes NCCL when its library is built and no GPU is shared, else Gloo with a
    /// note (`note` says why).
    pub fn resolve(self, device: Device, sharing: Option<(usize, usize)>, note: impl FnOnce(&str)) -> Result<Backend> {
        let shared = |(ranks, gpus): (usize, usize)| {
            format!("{ranks} ranks on this node share {gpus} GPU(s), and NCCL takes one GPU per rank")
        };
        match (self, device.is_cuda()) {
            (BackendChoice::Gloo, _) => Ok(Backend::Gloo),
            (BackendChoice::Nccl, true) if let Some(sharing) = sharing => {
                bail!("--dist-backend nccl: {}; use --dist-backend gloo or auto", shared(sharing))
            }
            (BackendChoice::Auto, true) if let Some(sharing) = sharing => {
                note(&format!("{}; --dist-backend auto uses Gloo", shared(sharing)));
                Ok(Backend::Gloo)
            }
            (BackendChoice::Nccl, false) => bail!(
                "--dist-backend nccl needs ranks on CUDA, and this one trains on {} (NCCL all-reduces GPU tensors \
                 only); use --dist-backend gloo or auto",
                crate::device::device_name(device)
            ),
            (BackendChoice::Nccl, true) => load_nccl().map(|_| Backend::Nccl),
            (BackendChoice::Auto, false) => Ok(Backend::Gloo),
            (BackendChoice::Auto, true) => match load_nccl() {
                Ok(_) => Ok(Backend::Nccl),
                Err(why) => {
                    note(&format!("{why:#}; --dist-backend auto uses Gloo"));
                    Ok(Backend::Gloo)
                }
            },
        }
    }
}

/// Names the NCCL process group's shared object, instead of `libmnist_nccl.so` next to the binary.
pub const NCCL_LIBRARY_VARIABLE: &str = "MNIST_TCH_NCCL_LIBRARY";
/// The shared object's file name, as scripts/build_nccl.sh writes it beside `target/release/mnist-tch`.
pub const NCCL_LIBRARY: &str = "libmnist_nccl.so";

/// src/nccl.cpp's `mnist_nccl_new_backend`, which c10d.cpp calls to make the group's backend.
type BackendFactory = unsafe extern "C" fn(*mut c_void, c_int, c_int, i64, *mut *mut c_void) -> *mut c_char;

/// Where the NCCL library is looked for: `$MNIST_TCH_NCCL_LIBRARY`, else beside the running binary.
pub fn nccl_library_path() -> PathBuf {
    if let Some(path) = std::env::var_os(NCCL_LIBRARY_VARIABLE) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().map(|dir| dir.join(NCCL_LIBRARY)).unwrap_or_else(|| PathBuf::from(NCCL_LIBRARY))
}

/// Opens the NCCL library once per process (it stays loaded) and says where it is. Errors, in one
/// line: not built, not loadable (`dlerror`'s reason), or not this library.
pub fn load_nccl() -> Result<PathBuf> {
    nccl().map(|(path, _)| path)
}

/// The NCCL library's path and factory, opened on first use.
fn nccl() -> Result<(PathBuf, BackendFactory)> {
    static LOADED: OnceLock<Result<(PathBuf, BackendFactory), String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let path = nccl_library_path();
        if !path.exists() {
            return Err(format!(
                "the NCCL process group is not built: {} is missing (scripts/setup.sh builds it with \
                 scripts/build_nccl.sh)",
                path.display()
            ));
        }
        // SAFETY: the library's initialisers are libtorch_cuda's and the C++ runtime's.
        let library = unsafe { libloading::Library::new(&path) }
            .map_err(|err| format!("{}: cannot be loaded: {err}", path.display()))?;
        // SAFETY: the symbol has the signature src/nccl.cpp gives it.
        let factory = unsafe { library.get::<BackendFactory>(b"mnist_nccl_new_backend\0") }
            .map(|symbol| *symbol)
            .map_err(|_| format!("{}: not mnist-tch's NCCL library (no mnist_nccl_new_backend)", path.display()))?;
        // Loaded for the rest of the process: the groups it makes live in it.
        std::mem::forget(library);
        Ok((path, factory))
    });
    match loaded {
        Ok(found) => Ok(found.clone()),
        Err(why) => bail!("{why}"),
    }
}

/// Where this process stands among the others, from torchrun's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    pub rank: usize,
    pub local_rank: usize,
    pub world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store on `MASTER_PORT` (`TORCHELASTIC_USE_AGENT_STORE=True`):
    /// every worker connects as a client. Otherwise (workers started by hand) rank 0 hosts it.
    pub agent_store: bool,
    /// torchrun's restart counter: each attempt uses store keys of its own.
    pub restart: usize,
}

impl WorkerEnv {
    /// Reads torchrun's variables: `None` without `WORLD_SIZE` or with `WORLD_SIZE=1`.
    pub fn from_env() -> Result<Option<WorkerEnv>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<WorkerEnv>> {
        Self::from_lookup_with(var, false)
    }

    /// [`from_lookup`](Self::from_lookup), or with `alone` a group of one too (`WORLD_SIZE=1`): what
    /// `--dist-backend nccl` asks for, so that a one-GPU machine trains through NCCL.
    pub fn from_lookup_with(var: impl Fn(&str) -> Option<String>, alone: bool) -> Result<Option<WorkerEnv>> {
        let number = |name: &str, value: &str| -> Result<usize> {
            value.trim().parse::<usize>().with_context(|| format!("{name}={value} is not a process count or index"))
        };
        let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
        let world_size = number("WORLD_SIZE", &world)?;
        ensure!(world_size >= 1, "WORLD_SIZE=0: a group needs at least one process");
        if world_size == 1 && !alone {
            return Ok(None);
        }
        let required = |name: &str| {
            var(name).with_context(|| {
                format!("WORLD_SIZE={world_size} is set but {name} is not (start workers with torchrun)")
            })
        };
        let rank = number("RANK", &required("RANK")?)?;
        ensure!(rank < world_size, "RANK={rank} is not below WORLD_SIZE={world_size}");
        let local_rank = var("LOCAL_RANK").map(|v| number("LOCAL_RANK", &v)).transpose()?.unwrap_or(0);
        let master_addr = required("MASTER_ADDR")?;
        let port = required("MASTER_PORT")?;
        let master_port = port.trim().parse::<u16>().with_context(|| format!("MASTER_PORT={port} is not a port"))?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let restart = var("TORCHELASTIC_RESTART_COUNT").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        Ok(Some(WorkerEnv { rank, local_rank, world_size, master_addr, master_port, agent_store, restart }))
    }
}

/// The collective timeout: `$MNIST_TCH_DIST_TIMEOUT` seconds, or [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var(TIMEOUT_VARIABLE) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(value) => match value.trim().parse::<f64>() {
            Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(Duration::from_secs_f64(seconds)),
            _ => bail!("{TIMEOUT_VARIABLE}={value} is not a positive number of seconds"),
        },
    }
}

/// What `config.json` records about a run trained by several processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributedInfo {
    pub world_size: usize,
    pub backend: Backend,
    /// `--batch-size`: each process's mini-batch.
    pub batch_size_per_process: usize,
    /// What one optimizer step sees: `world_size × batch_size_per_process`.
    pub global_batch_size: usize,
}

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn mnist_c10d_new_group(
        host: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        agent_store: c_int,
        host_store: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        factory: Option<BackendFactory>,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn mnist_c10d_all_reduce_sum(group: *mut RawGroup, tensor: *const torch_sys::C_tensor) -> *mut c_char;
    fn mnist_c10d_broadcast(group: *mut RawGroup, tensor: *const torch_sys::C_tensor, root: c_int) -> *mut c_char;
    fn mnist_c10d_barrier(group: *mut RawGroup) -> *mut c_char;
    fn mnist_c10d_free_group(group: *mut RawGroup);
    fn mnist_c10d_free_error(message: *mut c_char);
}

/// Turns the shim's answer into a `Result`, freeing its message.
fn checked(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null answer is a NUL-terminated string malloc-ed by the shim, freed once here.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    unsafe { mnist_c10d_free_error(message) };
    bail!("{}", crate::error_text::first_line(&text).trim())
}

/// This process's membership of the group: a Gloo (or NCCL) process group over a TCPStore.
pub struct ProcessGroup {
    raw: *mut RawGroup,
    rank: usize,
    local_rank: usize,
    world_size: usize,
    backend: Backend,
    /// Where the backend's tensors live: the CPU for Gloo, this rank's GPU for NCCL.
    device: Device,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup(rank {} of {})", self.rank, self.world_size)
    }
}

impl ProcessGroup {
    /// Joins the group `env` describes on `backend` (NCCL: for ranks on `device`, a CUDA device); fails
    /// in one line when the others do not come within `timeout`.
    pub fn join(env: &WorkerEnv, timeout: Duration, backend: Backend, device: Device) -> Result<ProcessGroup> {
        let WorkerEnv { rank, local_rank, world_size, .. } = *env;
        let factory = match backend {
            Backend::Gloo => None,
            Backend::Nccl => Some(nccl()?.1),
        };
        let host = CString::new(env.master_addr.as_str()).context("MASTER_ADDR holds a NUL byte")?;
        let prefix = CString::new(format!("mnist-tch/{}/", env.restart)).context("store prefix")?;
        let host_store = !env.agent_store && rank == 0;
        let mut raw = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; `raw` is written by the shim (null on failure).
        let answer = unsafe {
            mnist_c10d_new_group(
                host.as_ptr(),
                env.master_port,
                rank as c_int,
                world_size as c_int,
                env.agent_store as c_int,
                host_store as c_int,
                timeout.as_millis() as i64,
                prefix.as_ptr(),
                factory,
                &mut raw,
            )
        };
        checked(answer).with_context(|| {
            format!(
                "rank {rank} of {world_size} could not join the others at {}:{} within {:.0} s \
                 (${TIMEOUT_VARIABLE}); are all {world_size} processes started, and MASTER_ADDR reachable?",
                env.master_addr,
                env.master_port,
                timeout.as_secs_f64()
            )
        })?;
        ensure!(!raw.is_null(), "c10d returned no process group");
        let device = if backend == Backend::Nccl { device } else { Device::Cpu };
        Ok(ProcessGroup { raw, rank, local_rank, world_size, backend, device })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Rank 0 writes the run directory and prints; the others only compute.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// Replaces `tensor` (float, contiguous) by its mean over every process. With Gloo a CUDA tensor goes
    /// through a CPU copy; with NCCL a CPU tensor through a copy on the rank's GPU.
    pub fn all_reduce_mean(&self, tensor: &Tensor) -> Result<()> {
        self.all_reduce_sum(tensor)?;
        let _ = tensor.shallow_clone().f_div_scalar_(self.world_size as f64)?;
        Ok(())
    }

    /// Replaces `tensor` by its sum over every process.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<()> {
        self.on_backend_device(tensor, |cpu| {
            // SAFETY: `cpu` is a live tensor for the whole call; the shim only reads the handle.
            checked(unsafe { mnist_c10d_all_reduce_sum(self.raw, cpu.as_ptr()) })
        })
        .with_context(|| self.failed("all-reduce"))
    }

    /// Copies rank `root`'s `tensor` into every other process's.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        self.on_backend_device(tensor, |cpu| {
            // SAFETY: as in all_reduce_sum.
            checked(unsafe { mnist_c10d_broadcast(self.raw, cpu.as_ptr(), root as c_int) })
        })
        .with_context(|| self.failed("broadcast"))
    }

    /// Returns when every process has reached it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: `raw` is the live group.
        checked(unsafe { mnist_c10d_barrier(self.raw) }).with_context(|| self.failed("barrier"))
    }

    /// Copies every variable of rank 0 into the others' (sorted by name, the same order on every rank).
    pub fn broadcast_variables(&self, vs: &tch::nn::VarStore) -> Result<()> {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| {
            for (name, variable) in &variables {
                self.broadcast(&variable.detach(), 0).with_context(|| format!("sending rank 0's {name}"))?;
            }
            Ok(())
        })
    }

    /// The backend's tensors' device: the CPU (Gloo) or this rank's GPU (NCCL).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs `op` on `tensor` itself when it is a contiguous tensor on the backend's device, else on a
    /// copy there that is then copied back.
    fn on_backend_device(&self, tensor: &Tensor, op: impl FnOnce(&Tensor) -> Result<()>) -> Result<()> {
        if tensor.device() == self.device && tensor.is_contiguous() {
            return op(tensor);
        }
        let cpu = tensor.f_to_device(self.device)?.f_contiguous()?;
        op(&cpu)?;
        tch::no_grad(|| tensor.shallow_clone().f_copy_(&cpu))?;
        Ok(())
    }

    fn failed(&self, what: &str) -> String {
        format!(
            "rank {} of {}: {what} with the other processes failed (one of them stopped, or did not answer within \
             ${TIMEOUT_VARIABLE})",
            self.rank, self.world_size
        )
    }

    /// What `config.json` records for a run with `batch_size` per process.
    pub fn info(&self, batch_size: usize) -> DistributedInfo {
        DistributedInfo {
            world_size: self.world_size,
            backend: self.backend,
            batch_size_per_process: batch_size,
            global_batch_size: batch_size * self.world_size,
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mnist_c10d_new_group and is freed once.
        unsafe { mnist_c10d_free_group(self.raw) };
    }
}

/// Joins the group torchrun describes, if any, on the backend `choice` resolves to for ranks on
/// `device` (`--device`): `None` for a single process. `--dist-backend nccl` on a CPU rank is refused
/// even without torchrun, and under torchrun joins a group of one as well.
pub fn join_from_env(choice: BackendChoice, device: Device) -> Result<Option<std::rc::Rc<ProcessGroup>>> {
    let env = WorkerEnv::from_lookup_with(|name| std::env::var(name).ok(), choice == BackendChoice::Nccl)?;
    let device = match (&env, device) {
        (Some(env), Device::Cuda(0)) => Device::Cuda(env.local_rank % crate::device::cuda_device_count().max(1)),
        _ => device,
    };
    let leader = env.as_ref().is_none_or(|env| env.rank == 0);
    let local_ranks = std::env::var("LOCAL_WORLD_SIZE").ok().and_then(|v| v.trim().parse::<usize>().ok());
    let gpus = if device.is_cuda() { crate::device::cuda_device_count() } else { 0 };
    let sharing = local_ranks.filter(|&ranks| env.is_some() && ranks > gpus && gpus > 0).map(|ranks| (ranks, gpus));
    let backend = choice.resolve(device, sharing, |note| {
        if leader {
            eprintln!("note: {note}")
        }
    })?;
    let Some(env) = env else { return Ok(None) };
    let timeout = timeout_from_env()?;
    Ok(Some(std::rc::Rc::new(ProcessGroup::join(&env, timeout, backend, device)?)))
}

/// The device of this process: with several processes on a machine, `cuda` (cuda:0) means each its own
/// GPU, `cuda:LOCAL_RANK`, as a DDP script's `torch.cuda.set_device(local_rank)` does; with fewer GPUs
/// than processes they take turns (LOCAL_RANK modulo the count), which Gloo allows.
pub fn device_of_process(device: Device, group: Option<&ProcessGroup>) -> Device {
    match (device, group) {
        (Device::Cuda(0), Some(group)) => {
            let count = crate::device::cuda_device_count().max(1);
            Device::Cuda(group.local_rank % count)
        }
        _ => device,
    }
}

/// How many of `n` examples each of `world_size` processes takes in an epoch: `ceil(n / world_size)`, the
/// tail padded as DistributedSampler pads it (see [`shard`]).
pub fn shard_len(n: i64, world_size: usize) -> i64 {
    let world = world_size as i64;
    (n + world - 1) / world
}

/// This rank's part of an epoch's `order` (`[n]` int64), as `DistributedSampler(shuffle=False)` splits a
/// list: the order is padded to a multiple of `world_size` by repeating its start, then rank r takes
/// positions r, r+W, r+2W, … — so W ranks × batch b see, step by step, the examples one process × batch
/// W·b sees.
pub fn shard(order: &Tensor, rank: usize, world_size: usize) -> Result<Tensor> {
    let n = order.size().first().copied().unwrap_or(0);
    let world = world_size as i64;
    let per_rank = shard_len(n, world_size);
    let padding = per_rank * world - n;
    let padded =
        if padding > 0 { Tensor::f_cat(&[order, &order.f_narrow(0, 0, padding)?], 0)? } else { order.shallow_clone() };
    Ok(padded.f_slice(0, rank as i64, per_rank * world, world)?.f_contiguous()?)
}

/// Sums `values` (f64) over every process; the identity without a group.
pub fn sum_over_group(group: Option<&ProcessGroup>, values: &[f64]) -> Result<Vec<f64>> {
    let Some(group) = group else { return Ok(values.to_vec()) };
    let tensor = Tensor::f_from_slice(values)?.f_to_kind(Kind::Double)?;
    group.all_reduce_sum(&tensor)?;
    Ok(Vec::<f64>::try_from(&tensor)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<WorkerEnv>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        WorkerEnv::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_torchrun_or_one_process_means_no_group() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables_are_read() {
        let worker = env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((worker.rank, worker.world_size, worker.master_port, worker.agent_store), (1, 2, 29500, true));
    }

    #[test]
    fn bad_variables_are_refused_in_words() {
        let err = env(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")]).unwrap_err();
        assert!(err.to_string().contains("RANK=2 is not below WORLD_SIZE=2"), "{err}");
        let err = env(&[("WORLD_SIZE", "2"), ("RANK", "0")]).unwrap_err();
        assert!(err.to_string().contains("MASTER_ADDR"), "{err}");
        let err = env(&[("WORLD_SIZE", "two")]).unwrap_err();
        assert!(err.to_string().contains("WORLD_SIZE=two"), "{err}");
    }

    #[test]
    fn shards_interleave_like_distributed_sampler() {
        let order = Tensor::from_slice(&[5i64, 3, 9, 1, 7]);
        let parts: Vec<Vec<i64>> =
            (0..2).map(|r| Vec::<i64>::try_from(&shard(&order, r, 2).unwrap()).unwrap()).collect();
        // Padded with the first element, as DistributedSampler(drop_last=False) does.
        assert_eq!(parts, vec![vec![5, 9, 7], vec![3, 1, 5]]);
        let whole = Vec::<i64>::try_from(&shard(&order, 0, 1).unwrap()).unwrap();
        assert_eq!(whole, vec![5, 3, 9, 1, 7]);
    }
}
