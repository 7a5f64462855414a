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
//!
//! The loading is `libloading`'s (`os::unix::Library::open`, `dlopen` with the flags given here, and
//! `dlerror`'s message on failure). It has no `dlinfo`, so [`torch_lib_dir`] asks `dlinfo` itself,
//! through libc, on the handle libloading opened.

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_LAZY, RTLD_LOCAL, RTLD_NOW};
use std::ffi::{CStr, OsStr, c_char, c_int};
use std::path::PathBuf;
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
    if open(DRIVER, RTLD_LAZY | RTLD_LOCAL).is_err() {
        return CudaLibrary::NoDriver;
    }
    let library = match torch_lib_dir() {
        Ok(dir) => dir.join(TORCH_CUDA),
        Err(why) => return CudaLibrary::Failed(format!("a CUDA driver is installed but {why}")),
    };
    match open(library.as_os_str(), RTLD_NOW | RTLD_GLOBAL) {
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
    // SAFETY: RTLD_NOLOAD only looks up an already-loaded library (taking a reference, released below);
    // no initialiser runs.
    let loaded = unsafe { Library::open(Some(TORCH_CPU), RTLD_LAZY | libc::RTLD_NOLOAD) }
        .map_err(|_| format!("{TORCH_CPU} is not loaded in this process"))?;
    let handle = loaded.into_raw();
    let mut origin = vec![0 as c_char; libc::PATH_MAX as usize + 1];
    // SAFETY: `handle` is a live dlopen handle; `origin` has room for PATH_MAX bytes, the most
    // RTLD_DI_ORIGIN writes; dlerror's message is copied before the next dl* call.
    let found = unsafe {
        if libc::dlinfo(handle, libc::RTLD_DI_ORIGIN, origin.as_mut_ptr().cast()) == 0 {
            Ok(CStr::from_ptr(origin.as_ptr()).to_string_lossy().into_owned())
        } else {
            let message = libc::dlerror();
            Err(if message.is_null() {
                "unknown dynamic loader error".into()
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            })
        }
    };
    // SAFETY: the handle came from `into_raw` above; dropping the Library closes it (dlclose).
    drop(unsafe { Library::from_raw(handle) });
    let dir = PathBuf::from(found.map_err(|why| format!("the directory of {TORCH_CPU} is unknown: {why}"))?);
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// `dlopen`, keeping the library loaded for the life of the process; on failure, the loader's message.
fn open(name: impl AsRef<OsStr>, flags: c_int) -> Result<(), String> {
    // SAFETY: loading runs the library's initialisers, which is what loading the CUDA backend is for.
    match unsafe { Library::open(Some(name.as_ref()), flags) } {
        // Never closed: libtorch's CUDA hooks and the CUDA runtime use it until the process ends.
        Ok(library) => {
            std::mem::forget(library);
            Ok(())
        }
        // dlerror's own text (libloading's error says only "dlopen failed" around it).
        Err(err) => Err(std::error::Error::source(&err).map_or_else(|| err.to_string(), |why| why.to_string())),
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
        let why = open("/nonexistent/libtorch_cuda.so", RTLD_NOW).unwrap_err();
        assert_eq!(why, "/nonexistent/libtorch_cuda.so: cannot open shared object file: No such file or directory");
        assert!(why.contains("/nonexistent/libtorch_cuda.so"), "{why}");
    }
}
