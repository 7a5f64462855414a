#!/usr/bin/env bash
# Builds target/release/libmnist_nccl.so, the NCCL process group for CUDA ranks (src/nccl.cpp), from the
# headers of the pip wheels in .venv: torch (c10d), nvidia-nccl-cu13, nvidia/cu13 (the CUDA runtime),
# triton (crt/host_config.h) and nvidia-cuda-cccl (nv/target; the one wheel not installed with torch:
# downloaded here once, 3 MB, into $MNIST_TCH_CACHE (default ~/.cache/mnist-tch), never at run time). scripts/setup.sh runs it;
# mnist-tch loads the library only when torchrun ranks train on CUDA (--dist-backend auto|nccl).
#
#   scripts/build_nccl.sh [OUT_FILE]     # default target/release/libmnist_nccl.so
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/release/libmnist_nccl.so}
PY=.venv/bin/python
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
TORCH="$SITE/torch"
CCCL_VERSION=13.0.85
CCCL=${MNIST_TCH_CACHE:-$HOME/.cache/mnist-tch}/cccl-$CCCL_VERSION
if [ ! -f "$CCCL/nvidia/cu13/include/nv/target" ]; then
    mkdir -p "$CCCL"
    .venv/bin/pip download --quiet --no-deps "nvidia-cuda-cccl==$CCCL_VERSION" -d "$CCCL"
    "$PY" -c 'import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extractall(sys.argv[1])' "$CCCL"
fi
for dir in "$TORCH/include" "$SITE/nvidia/nccl/include" "$SITE/nvidia/cu13/include" \
           "$SITE/triton/backends/nvidia/include" "$CCCL/nvidia/cu13/include"; do
    [ -d "$dir" ] || { echo "error: $dir is missing (scripts/setup.sh installs the wheels)" >&2; exit 1; }
done
ABI=$("$PY" -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')
mkdir -p "$(dirname "$OUT")"
start=$(date +%s)
g++ -std=c++17 -O2 -shared -fPIC -DUSE_C10D_NCCL -D_GLIBCXX_USE_CXX11_ABI="$ABI" -w \
    -I"$TORCH/include" -I"$TORCH/include/torch/csrc/api/include" \
    -I"$SITE/nvidia/nccl/include" -I"$SITE/nvidia/cu13/include" -I"$CCCL/nvidia/cu13/include" \
    -I"$SITE/triton/backends/nvidia/include" \
    src/nccl.cpp -o "$OUT.tmp" \
    -L"$TORCH/lib" -ltorch_cuda -ltorch_cpu -lc10 -lc10_cuda -Wl,-z,defs -Wl,-rpath,"$(readlink -f "$TORCH/lib")"
mv "$OUT.tmp" "$OUT"
echo "built $OUT in $(( $(date +%s) - start )) s"
