//! Link-time set-up that tch's own build script cannot pass on to our binary.
//!
//! torch-sys's `rustc-link-arg`s do not reach downstream binaries (tch-rs issues 787, 907, 980), so:
//! - an rpath to the libtorch lib directory lets `mnist-tch` start without `LD_LIBRARY_PATH`.
//!
//! `libtorch_cuda.so` is deliberately NOT linked (tch-rs's README adds `--no-as-needed -ltorch` for it):
//! the linker's `--as-needed` drops it since no Rust symbol refers to it, and `src/cuda_library.rs`
//! loads it at start-up only where a CUDA driver exists — a CPU run then carries ~355 MB less.
//!
//! `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys (`links = "tch"`); it only reaches us because
//! torch-sys is a direct dependency in Cargo.toml.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        // The canonical path, not a symlink to it: libtorch_cuda.so finds its CUDA libraries through
        // `$ORIGIN/../../nvidia/...`, and `$ORIGIN` is the directory the loader opened it from.
        let lib = std::path::PathBuf::from(lib);
        // scripts/setup.sh records which torch `.libtorch/` points at; when that changes (a new
        // .venv), the rpath baked into the binary must change too.
        // `parent()`, not `lib/..`: `lib` is a symlink, and `..` would leave through its target.
        let marker = lib.parent().map(|dir| dir.join("torch-dir"));
        if let Some(marker) = marker.filter(|m| m.exists()) {
            println!("cargo:rerun-if-changed={}", marker.display());
        }
        let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath={}", lib.display());
    }
}
