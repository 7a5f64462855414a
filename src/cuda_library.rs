//! Loads libtorch's CUDA backend (`libtorch_cuda.so`) at start-up, and only on a machine that has a
//! CUDA driver.
//!
//! Why: mapped in, `libtorch_cuda.so` and the CUDA libraries it pulls in cost ~355 MB of resident memory,
//! ~70% of a CPU training run's peak. So the binary links only libtorch_cpu and c10 (build.rs), and
//! [`load`] `dlopen`s the CUDA backend when `libcuda.so.1` (the driver's library) can be loaded.
//!
//! When: libtorch finds its CUDA backend through a registry that `libtorch_cuda.so` fills as it loads,
//! and `at::detail::getCUDAHooks()` caches its first answer for the life of the process — a CUDA query
//! made before the library is loaded (`tch::manual_seed` makes one) turns CUDA off for good. So `main`
//! calls [`load`] before anything else, and [`crate::device`] calls it again (a no-op by then) so that
//! library users resolve devices the same way.
//!
//! A driver without a loadable `libtorch_cuda.so` is the tch-rs "CUDA silently missing" failure (tch-rs
//! issues 787, 907, 980); it is kept as [`CudaLibrary::Failed`] for `--device` to report instead of
//! training on the CPU without a word.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What [`load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaLibrary {
    /// No CUDA driver here: libtorch runs on the CPU alone and CUDA devices do not exist.
    NoDriver,
    /// The CUDA backend is loaded, from this file.
    Loaded(PathBuf),
    /// A CUDA driver is installed but the CUDA backend could not be loaded: why, in one sentence.
    Failed(String),
}

/// The driver's library, as the CUDA runtime itself opens it.
const DRIVER: &str = "libcuda.so.1";
/// libtorch's CPU library, which the binary links; the CUDA backend lies next to it.
const TORCH_CPU: &str = "libtorch_cpu.so";
const TORCH_CUDA: &str = "libtorch_cuda.so";

/// Loads the CUDA backend the first time it is called (when a driver is present); afterwards returns
/// what the first call found. Call it before any CUDA query, and before other threads start.
pub fn load() -> &'static CudaLibrary {
    static FOUND: OnceLock<CudaLibrary> = OnceLock::new();
    FOUND.get_or_init(load_now)
}

fn load_now() -> CudaLibrary {
    // The handle stays open: the CUDA runtime opens the same library again later.
    if open(DRIVER, libc::RTLD_LAZY | libc::RTLD_LOCAL).is_err() {
        return CudaLibrary::NoDriver;
    }
    let library = match torch_lib_dir() {
        Ok(dir) => dir.join(TORCH_CUDA),
        Err(why) => return CudaLibrary::Failed(format!("a CUDA driver is installed but {why}")),
    };
    match open_path(&library, libc::RTLD_NOW | libc::RTLD_GLOBAL) {
        Ok(()) => CudaLibrary::Loaded(library),
        // The loader's message names the file.
        Err(why) => CudaLibrary::Failed(format!(
            "a CUDA driver is installed but libtorch's CUDA backend could not be loaded ({why})"
        )),
    }
}

/// The directory `libtorch_cpu.so` was loaded from (through the binary's rpath or `LD_LIBRARY_PATH`),
/// resolved through symlinks: `libtorch_cuda.so` finds the CUDA libraries it needs relative to the
/// directory it is opened from (`$ORIGIN/../../nvidia/...` in the PyTorch wheel).
pub fn torch_lib_dir() -> Result<PathBuf, String> {
    let name = CString::new(TORCH_CPU).map_err(|e| e.to_string())?;
    // SAFETY: RTLD_NOLOAD only looks up an already-loaded library (taking a reference, released below);
    // `origin` has room for PATH_MAX bytes, the most RTLD_DI_ORIGIN writes.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return Err(format!("{TORCH_CPU} is not loaded in this process"));
        }
        let mut origin = vec![0 as c_char; libc::PATH_MAX as usize + 1];
        let found = libc::dlinfo(handle, libc::RTLD_DI_ORIGIN, origin.as_mut_ptr().cast());
        libc::dlclose(handle);
        if found != 0 {
            return Err(format!("the directory of {TORCH_CPU} is unknown: {}", last_error()));
        }
        let dir = PathBuf::from(CStr::from_ptr(origin.as_ptr()).to_string_lossy().into_owned());
        Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
    }
}

fn open_path(path: &Path, flags: c_int) -> Result<(), String> {
    open(&path.to_string_lossy(), flags)
}

/// `dlopen`, keeping the library loaded for the life of the process.
fn open(name: &str, flags: c_int) -> Result<(), String> {
    let name = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated name; the handle is deliberately never closed. Loading runs the
    // library's initialisers, which is what loading the CUDA backend is for.
    let handle = unsafe { libc::dlopen(name.as_ptr(), flags) };
    if handle.is_null() { Err(last_error()) } else { Ok(()) }
}

/// `dlerror()`'s message for the last failed `dl*` call on this thread.
fn last_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl* call here.
    unsafe {
        let message = libc::dlerror();
        if message.is_null() {
            "unknown dynamic loader error".into()
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_of_libtorch_cpu_is_found() {
        // The test binary links libtorch_cpu.so like the main binary does.
        let dir = torch_lib_dir().unwrap();
        assert!(dir.join(TORCH_CPU).exists(), "{}", dir.display());
    }

    #[test]
    fn a_missing_library_is_an_error_with_the_loaders_reason() {
        let why = open("/nonexistent/libtorch_cuda.so", libc::RTLD_NOW).unwrap_err();
        assert!(why.contains("/nonexistent/libtorch_cuda.so"), "{why}");
    }
}
