//! libtorch's CUDA backend is loaded where a CUDA driver is and only there (src/cuda_library.rs), shown on
//! the real binary: which libraries a training process has mapped (/proc/PID/maps) with no driver, with a
//! stub `libcuda.so.1` compiled here and put on the library path, and with that stub but no loadable
//! `libtorch_cuda.so` — the tch-rs "CUDA silently missing" failure, which must be reported, not hidden.

mod common;

use common::Fixture;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A `libcuda.so.1` that knows no device: every entry point the CUDA runtime looks up first logs its
/// name to `$STUB_CUDA_LOG` and fails with CUDA_ERROR_NO_DEVICE (100).
const STUB_DRIVER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
static int called(const char *name) {
    const char *log = getenv("STUB_CUDA_LOG");
    FILE *file = log ? fopen(log, "a") : NULL;
    if (file) { fprintf(file, "%s\n", name); fclose(file); }
    return 100;
}
int cuInit(unsigned int flags) { return called("cuInit"); }
int cuDriverGetVersion(int *version) { *version = 0; return called("cuDriverGetVersion"); }
int cuGetProcAddress(const char *s, void **p, int v, unsigned long long f) { *p = 0; return called("cuGetProcAddress"); }
int cuGetProcAddress_v2(const char *s, void **p, int v, unsigned long long f, void *st) {
    *p = 0;
    return called("cuGetProcAddress_v2");
}
"#;

/// Compiles the stub driver into `dir/libcuda.so.1`.
fn stub_driver(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let source = dir.join("stub_cuda.c");
    std::fs::write(&source, STUB_DRIVER).unwrap();
    let compiled = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join("libcuda.so.1"))
        .arg(&source)
        .status()
        .expect("a C compiler (cc) runs");
    assert!(compiled.success(), "cc failed to build the stub libcuda.so.1");
}

/// Whether this machine has a real CUDA driver (then "no driver" cannot be shown here).
fn host_has_driver() -> bool {
    // SAFETY: dlopen of a NUL-terminated name; the handle is closed again.
    unsafe {
        let handle = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if !handle.is_null() {
            libc::dlclose(handle);
        }
        !handle.is_null()
    }
}

/// `dirs` before the inherited LD_LIBRARY_PATH.
fn library_path(dirs: &[&Path]) -> String {
    let mut parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    parts.extend(std::env::var("LD_LIBRARY_PATH").ok().filter(|p| !p.is_empty()));
    parts.join(":")
}

fn binary(library_path: Option<&str>, log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mnist-tch"));
    command.env_remove("MNIST_TCH_DATA").env("STUB_CUDA_LOG", log);
    if let Some(path) = library_path {
        command.env("LD_LIBRARY_PATH", path);
    }
    command
}

/// The file names of the shared objects a training process has mapped once it has printed its device
/// line (the device is resolved by then, so whatever start-up loads is loaded), and that line.
fn mapped_while_training(fixture: &Fixture, library_path: Option<&str>) -> (Vec<String>, String) {
    let data = fixture.data();
    let mut child = binary(library_path, &fixture.path("stub.log"))
        .args(["train", "--num-classes", "4", "--epochs", "100000", "--device", "auto", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(fixture.path("maps-run"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let device_line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.starts_with("Device: "))
        .expect("the binary prints its device line");
    // The process is still running: 100,000 epochs, and nobody reads its output any more.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut names: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter_map(|path| Path::new(path).file_name()?.to_str().map(String::from))
        .filter(|name| name.contains(".so"))
        .collect();
    names.sort();
    names.dedup();
    (names, device_line)
}

fn has(names: &[String], library: &str) -> bool {
    names.iter().any(|name| name == library)
}

#[test]
fn without_a_driver_only_the_cpu_library_is_mapped() {
    if host_has_driver() {
        eprintln!("skipped: this machine has a CUDA driver");
        return;
    }
    let fixture = Fixture::new(false);
    let (names, device) = mapped_while_training(&fixture, None);
    assert_eq!(device, "Device: cpu");
    assert!(has(&names, "libtorch_cpu.so"), "{names:?}");
    for absent in ["libtorch_cuda.so", "libtorch.so", "libcuda.so.1", "libcublas.so.13", "libcudnn.so.9"] {
        assert!(!has(&names, absent), "{absent} is mapped without a driver: {names:?}");
    }
}

#[test]
fn with_a_driver_the_cuda_backend_is_loaded_and_asked_before_anything_else() {
    let fixture = Fixture::new(false);
    let stub = fixture.path("driver");
    stub_driver(&stub);
    let path = library_path(&[&stub]);
    let (names, device) = mapped_while_training(&fixture, Some(&path));
    assert!(has(&names, "libtorch_cuda.so"), "{names:?}");
    assert!(has(&names, "libcuda.so.1"), "{names:?}");
    // The stub knows no device: auto falls back to the CPU, without a word.
    assert_eq!(device, "Device: cpu");

    // --device cuda: the same clear error as on a machine without a driver — and it comes from asking
    // the driver, which only the CUDA backend does: had libtorch cached its "no CUDA" answer before the
    // backend was loaded, the stub would never have been called.
    let log = fixture.path("stub.log");
    let _ = std::fs::remove_file(&log);
    let output = binary(Some(&path), &log)
        .args(["train", "--device", "cuda", "--epochs", "1", "--data"])
        .arg(fixture.data())
        .arg("--out")
        .arg(fixture.path("cuda-run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: --device cuda:0: CUDA is not available on this machine (libtorch sees no CUDA device); \
         use --device cpu or auto"
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(calls.lines().any(|call| call.starts_with("cu")), "the stub driver was never asked: {calls:?}");
    assert!(!fixture.path("cuda-run").exists());
}

/// A copy of the libtorch lib directory (symlinks) without `libtorch_cuda.so`, laid out like the wheel's
/// site-packages so that libtorch_cpu's `$ORIGIN/../../nvidia/...` still finds its CUDA runtime.
fn libtorch_without_cuda_backend(root: &Path) -> PathBuf {
    let real = mnist_tch::cuda_library::torch_lib_dir().unwrap();
    let lib = root.join("torch").join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "libtorch_cuda.so" {
            std::os::unix::fs::symlink(entry.path(), lib.join(entry.file_name())).unwrap();
        }
    }
    let nvidia = real.join("../../nvidia");
    if nvidia.exists() {
        std::os::unix::fs::symlink(std::fs::canonicalize(nvidia).unwrap(), root.join("nvidia")).unwrap();
    }
    lib
}

#[test]
fn a_driver_whose_backend_does_not_load_is_reported() {
    let fixture = Fixture::new(false);
    let stub = fixture.path("driver");
    stub_driver(&stub);
    let lib = libtorch_without_cuda_backend(&fixture.path("site"));
    let path = library_path(&[&lib, &stub]);
    let log = fixture.path("stub.log");
    let train = |device: &str, out: &str| {
        binary(Some(&path), &log)
            .args(["train", "--num-classes", "4", "--epochs", "1", "--device", device, "--data"])
            .arg(fixture.data())
            .arg("--out")
            .arg(fixture.path(out))
            .output()
            .unwrap()
    };
    let expected = format!(
        "a CUDA driver is installed but libtorch's CUDA backend could not be loaded ({}: cannot open shared \
         object file: No such file or directory)",
        lib.join("libtorch_cuda.so").display()
    );

    let cuda = train("cuda", "cuda-run");
    let stderr = String::from_utf8_lossy(&cuda.stderr);
    assert_eq!(cuda.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end(), format!("error: --device cuda:0: {expected}"));

    let auto = train("auto", "auto-run");
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{stderr}");
    assert_eq!(stderr.trim_end(), format!("warning: {expected}; --device auto uses the CPU"));
    assert!(String::from_utf8_lossy(&auto.stdout).starts_with("Device: cpu\n"));
}
