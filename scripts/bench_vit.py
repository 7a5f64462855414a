#!/usr/bin/env python3
"""The Vision Transformer's speed and size: mnist-tch `train --arch vit` against its PyTorch twin
(scripts/vit.py) in the minimal eager loop (scripts/minimal_loop.py), on the same data and batch,
alternated, and a size table.

    .venv/bin/python scripts/bench_vit.py [--data data/mnist] [--limit 6432] [--epochs 3] [--reps 2]
                                          [--threads 2] [--vit "--patch 4 ..."] [--sizes] [--out runs/bench-vit]

Speed: each repetition runs mnist-tch and the minimal loop once, in an order that alternates, on the first
--limit training images with a validation split of 0.005 (so an epoch is training steps; mnist-tch's
epoch time includes its validation pass over the few held-out images, the loop's has none). Epoch 1 is
left out (warm-up); the statistics are over epochs 2..E of every repetition: min and median seconds per
epoch, and the ratio mnist-tch / PyTorch (min/min, median/median). Every child runs with
OMP_NUM_THREADS=--threads (the loop also calls torch.set_num_threads).

--sizes: for three ViTs (the default and two larger, the last over 5 M parameters), parameters, s/epoch
(one short epoch of mnist-tch on --limit images, epoch 1 included) and the peak RSS of that run (ru_maxrss).
Prints Markdown and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY, DEFAULT_DATA, ROOT  # noqa: E402

SIZES = {
    "default (patch 7, width 64, depth 4, heads 4, MLP x2)": [],
    "medium: --width 128 --depth 6 --mlp-ratio 4": ["--width", "128", "--depth", "6", "--mlp-ratio", "4"],
    "large: --width 256 --depth 7 --heads 8 --mlp-ratio 4": ["--width", "256", "--depth", "7", "--heads", "8",
                                                             "--mlp-ratio", "4"],
}


def run_peak(command: list, env: dict) -> tuple[str, float]:
    process = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               text=True)
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"error: {' '.join(map(str, command))} failed: {stderr.strip()[-400:]}")
    return stdout, usage.ru_maxrss / 1024.0


def mnist_tch(args, out: Path, flags: list, epochs: int, env: dict) -> tuple[list[float], float]:
    # --random-shift 0: the twin's loop feeds the pictures as they are, so both sides do the same work (it
    # takes AdamW's decay and label smoothing from the run's config).
    command = [args.binary, "train", "--arch", "vit", "--data", args.data, "--limit", args.limit,
               "--validation-split", "0.005", "--epochs", epochs, "--out", out, "--overwrite", "--quiet",
               "--device", "cpu", "--threads", args.threads, "--random-shift", "0", *flags]
    _, rss = run_peak(command, env)
    metrics = json.loads((out / "metrics.json").read_text())
    return [m["seconds"] for m in metrics], rss


def twin(args, config: Path, epochs: int, env: dict) -> list[float]:
    metrics = args.out / "twin-metrics.json"
    run_peak([sys.executable, ROOT / "scripts" / "minimal_loop.py", "--config", config, "--data", args.data,
              "--epochs", epochs, "--threads", args.threads, "--metrics-json", metrics], env)
    return [m["seconds"] for m in json.loads(metrics.read_text())]


def stats(seconds: list[float]) -> tuple[float, float]:
    return min(seconds), statistics.median(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=6432)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vit", default="", help="more train flags for the speed comparison")
    parser.add_argument("--sizes", action="store_true", help="also the size table")
    parser.add_argument("--size-limit", type=int, default=3216, help="training images of the size table's epoch")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-vit")
    parser.add_argument("--binary", type=Path, default=BINARY)
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    flags = shlex.split(args.vit)
    ours, theirs = [], []
    for rep in range(args.reps):
        run_dir = args.out / "speed"
        order = ("mnist-tch", "pytorch") if rep % 2 == 0 else ("pytorch", "mnist-tch")
        for system in order:
            if system == "mnist-tch":
                seconds, _ = mnist_tch(args, run_dir, flags, args.epochs, env)
                ours += seconds[1:]
            else:
                if not (run_dir / "config.json").exists():
                    mnist_tch(args, run_dir, flags, 1, env)
                theirs += twin(args, run_dir / "config.json", args.epochs, env)[1:]
        print(f"rep {rep + 1}: mnist-tch {ours[-(args.epochs - 1):]}, pytorch {theirs[-(args.epochs - 1):]}",
              flush=True)
    (omin, omed), (tmin, tmed) = stats(ours), stats(theirs)
    config = json.loads((args.out / "speed" / "config.json").read_text())
    steps = json.loads((args.out / "speed" / "metrics.json").read_text())[0]["steps"]
    print(f"\n{config['model']['vit']}, batch {config['training']['batch_size']}, {steps} steps per epoch, "
          f"{args.threads} threads\n")
    print("| system | s/epoch min | s/epoch median |\n|---|---|---|")
    print(f"| mnist-tch `train --arch vit` | {omin:.2f} | {omed:.2f} |")
    print(f"| PyTorch eager (minimal_loop.py, scripts/vit.py) | {tmin:.2f} | {tmed:.2f} |")
    print(f"| ratio mnist-tch / PyTorch | {omin / tmin:.3f} | {omed / tmed:.3f} |")
    if args.sizes:
        import safetensors.torch

        print("\n| model | parameters | s/epoch | steps | peak RSS MB |\n|---|---|---|---|---|")
        for name, size_flags in SIZES.items():
            out = args.out / f"size-{len(size_flags)}-{size_flags[1] if size_flags else 'default'}"
            size_args = argparse.Namespace(**{**vars(args), "limit": args.size_limit})
            seconds, rss = mnist_tch(size_args, out, size_flags, 1, env)
            config = json.loads((out / "config.json").read_text())
            params = sum(t.numel() for t in safetensors.torch.load_file(str(out / "model.safetensors")).values())
            steps = json.loads((out / "metrics.json").read_text())[0]["steps"]
            print(f"| {name} | {params} | {seconds[0]:.1f} ({seconds[0] * 48000 / (steps * config['training']['batch_size']):.0f} per 48,000-image epoch) | {steps} | {rss:.0f} |",
                  flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
