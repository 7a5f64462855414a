#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs every test: the Rust unit and integration tests, then
# the Python parity tests. This is the README's test command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# --release reuses the optimised libtorch bindings that setup.sh just built instead of compiling
# them a second time in debug mode.
cargo test --release
.venv/bin/python -m pytest tests/python
