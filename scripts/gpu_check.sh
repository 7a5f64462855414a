#!/usr/bin/env bash
# Every GPU check in one command (scripts/gpu_check.py), for a CUDA machine that has this repository's
# files, the mnist-tch binary built elsewhere, PyTorch 2.11.0 and digit MNIST, but no Rust toolchain:
#
#   scripts/gpu_check.sh [--device cuda] [--data DIR] [--binary FILE] [--out DIR]
#
# The binary's rpath names the torch/lib of the machine it was built on; here the libraries come from this
# machine's python3 (LD_LIBRARY_PATH). The data can travel compressed: mnist-tch reads the four IDX files
# as .gz too (gzip -k data/mnist/* into a folder of its own, 11 MB). `--device cpu` rehearses every step
# on a CPU. Prints one table; the exit code is 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$python" scripts/gpu_check.py "$@"
