#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs every test: the Rust unit and integration tests, then
# the Python parity tests. This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# cargo runs as many tests at once as there are cores, and most of them start mnist-tch processes: one
# libtorch thread each keeps them from fighting over the cores (the results do not depend on it).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# --release reuses the optimised libtorch bindings that setup.sh just built instead of compiling
# them a second time in debug mode.
cargo test --release
# -rs prints why a test was skipped (the browser test without Chromium).
.venv/bin/python -m pytest -rs tests/python
