#!/usr/bin/env python3
"""Peak resident memory of a default CPU training run of mnist-tch against the minimal PyTorch loop
(scripts/minimal_loop.py) on the same data, side by side and alternated, plus mnist-tch with libtorch's CUDA
backend forced in (LD_PRELOAD of libtorch_cuda.so: what every run carried before mnist-tch loaded it only
where a CUDA driver is). Prints one Markdown table of min and median peak RSS (ru_maxrss) and ratios.

    .venv/bin/python scripts/peak_rss.py [--epochs 1] [--repeats 3] [--data data/mnist]
                                         [--binary target/release/mnist-tch]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY, DEFAULT_DATA, ROOT  # noqa: E402


def run_peak(command: list, env: dict | None = None) -> float:
    """Peak RSS in MB of one run, measured with os.wait4 on the child."""
    process = subprocess.Popen([str(c) for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, **(env or {})})
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(map(str, command))} failed:\n{stderr.decode()[-2000:]}")
    return usage.ru_maxrss / 1024.0


def torch_lib() -> Path:
    python = ROOT / ".venv" / "bin" / "python"
    out = subprocess.run([str(python if python.exists() else sys.executable), "-c",
                          "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--binary", type=Path, default=BINARY)
    args = parser.parse_args(argv)
    epochs = str(args.epochs)
    cuda_backend = torch_lib() / "libtorch_cuda.so"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        train = [args.binary, "train", "--data", args.data, "--epochs", epochs, "--out", run_dir, "--overwrite"]
        systems = {
            "mnist-tch train (default, CPU)": (train, None),
            "minimal PyTorch loop (scripts/minimal_loop.py)":
                ([sys.executable, ROOT / "scripts" / "minimal_loop.py", "--config", run_dir / "config.json",
                  "--data", args.data, "--epochs", epochs], None),
            "mnist-tch train with libtorch_cuda.so preloaded (as before)":
                (train, {"LD_PRELOAD": str(cuda_backend)}),
        }
        peaks: dict[str, list[float]] = {name: [] for name in systems}
        for repeat in range(args.repeats):
            for name, (command, env) in systems.items():  # alternated: each repeat runs every system once
                peaks[name].append(run_peak(command, env))
                print(f"repeat {repeat + 1}: {name}: {peaks[name][-1]:.0f} MB", file=sys.stderr, flush=True)
    reference = statistics.median(peaks["minimal PyTorch loop (scripts/minimal_loop.py)"])
    print(f"Peak RSS, {args.epochs} epoch(s) on {args.data}, {args.repeats} alternated repeats "
          f"(`scripts/peak_rss.py --epochs {args.epochs} --repeats {args.repeats}`)\n")
    print("| system | peak RSS MB, min | median | median vs minimal PyTorch loop |")
    print("|---|---|---|---|")
    for name, values in peaks.items():
        median = statistics.median(values)
        print(f"| {name} | {min(values):.0f} | {median:.0f} | {median / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
