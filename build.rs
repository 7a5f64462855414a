//! Link-time set-up that tch's own build script cannot pass on to our binary.
//!
//! torch-sys's `rustc-link-arg`s do not reach downstream binaries (tch-rs issues 787, 907, 980), so:
//! - an rpath to the libtorch lib directory lets `mnist-tch` start without `LD_LIBRARY_PATH`.
//!
//! `libtorch_cuda.so` is deliberately NOT linked (tch-rs's README adds `--no-as-needed -ltorch` for it):
//! the linker's `--as-needed` drops it since no Rust symbol refers to it, and `src/cuda_library.rs`
//! loads it at start-up only where a CUDA driver exists — a CPU run then carries ~355 MB less.
//!
//! It also compiles `src/c10d.cpp`, the shim over libtorch's distributed engine (`distributed.rs`),
//! and `src/adam_state.cpp`, which reads and writes the state of libtorch's Adam
//! (`engine/libtorch_adam.rs`), against the same libtorch headers and C++ ABI as torch-sys, and links
//! them with `libtorch_cpu` and `libc10`, which hold c10d's and the optimizers' symbols.
//!
//! `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys (`links = "tch"`); it only reaches us because
//! torch-sys is a direct dependency in Cargo.toml.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    compile_shims();
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

/// `src/c10d.cpp` and `src/adam_state.cpp` into static libraries, with Gloo's headers (Debian's
/// libgloo-dev, in /usr/include) and libtorch's: `DEP_TCH_LIBTORCH_LIB`'s sibling `include/`, or
/// `$LIBTORCH/include`.
fn compile_shims() {
    println!("cargo:rerun-if-changed=src/c10d.cpp");
    println!("cargo:rerun-if-changed=src/adam_state.cpp");
    println!("cargo:rerun-if-changed=src/shim_errors.h");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(std::path::PathBuf::from);
    let include = lib
        .as_ref()
        .and_then(|lib| lib.parent().map(|dir| dir.join("include")))
        .filter(|dir| dir.is_dir())
        .or_else(|| std::env::var_os("LIBTORCH").map(|dir| std::path::PathBuf::from(dir).join("include")));
    let Some(include) = include else {
        panic!("cannot find libtorch's include directory for src/c10d.cpp: set LIBTORCH (scripts/setup.sh does)")
    };
    if !std::path::Path::new("/usr/include/gloo/config.h").exists() {
        println!("cargo:warning=Gloo headers missing: install Debian's libgloo-dev (scripts/setup.sh does)");
    }
    // torch-sys's default: the PyPI wheels use the C++11 ABI.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let build = || {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"));
        build
    };
    build().define("USE_C10D_GLOO", None).file("src/c10d.cpp").compile("mnist_c10d");
    build().file("src/adam_state.cpp").compile("mnist_adam_state");
    if let Some(lib) = lib {
        println!("cargo:rustc-link-search=native={}", lib.display());
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
