//! Link-time set-up that tch's own build script cannot pass on to our binary.
//!
//! torch-sys's `rustc-link-arg`s do not reach downstream binaries (tch-rs issues 787, 907, 980), so:
//! - an rpath to the libtorch lib directory lets `mnist-tch` start without `LD_LIBRARY_PATH`;
//! - `--no-as-needed -ltorch` keeps `libtorch_cuda.so` linked even though no Rust symbol refers to it,
//!   otherwise CUDA silently disappears from the binary.
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
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
