#!/usr/bin/env python3
"""Benchmark: mnist-tch against the PyTorch eager baseline on the same data, side by side, several
repetitions each, plus the machine's measured GEMM rate and the compute limit it implies.

    .venv/bin/python scripts/bench.py [--data data/fashion-mnist] [--epochs 3] [--reps 3] [--no-scale]
                                      [--device cpu|cuda] [--out runs/bench]

Prints (and writes to OUT/bench.md and OUT/bench.json):
  - the seed's protocol (784-128-10, batch 32): median seconds/epoch, samples/s, the ratio to PyTorch, peak
    RSS, whole-process wall time, test accuracy, and the time `evaluate` takes for the 10k test set;
  - the compute-limit estimate: FLOP per epoch over the sgemm rate measured here (large matrices and the
    batch-32 shapes);
  - scale: wider/deeper models and larger batches, time per epoch and samples/s for both.
Seconds per epoch are the training epochs' wall times (validation pass included), read at full precision
from each tool's metrics file, median over every epoch of every repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "mnist-tch"
BASELINE = ROOT / "scripts" / "baseline.py"


def run_measured(command: list[str]) -> tuple[str, float, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{stderr}")
    return stdout, wall, usage.ru_maxrss / 1024.0


def flops_per_example(widths: list[int]) -> float:
    """Forward (2·in·out per layer) + weight gradients (same) + input gradients of every layer but the
    first (the images need none)."""
    layers = list(zip(widths, widths[1:]))
    forward = sum(2 * i * o for i, o in layers)
    input_grads = sum(2 * i * o for i, o in layers[1:])
    return 2 * forward + input_grads


GEMM_PROBE = """
import json, sys, time
import torch
device = sys.argv[1]

def rate(m, k, n, repeats):
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9

print(json.dumps({
    "large_gflops": rate(2048, 2048, 2048, 5 if device == "cpu" else 50),
    # The batch-32 shapes of one training step: forward [32,784]x[784,128], weight grad [128,32]x[32,784].
    "batch32_gflops": (rate(32, 784, 128, 2000) + rate(128, 32, 784, 2000)) / 2,
    "threads": torch.get_num_threads(),
}))
"""


def gemm_rates(device: str) -> dict:
    # In a child process: importing torch here would make every later child's peak RSS include this
    # process's pages (ru_maxrss counts what a forked child shares before it execs).
    done = subprocess.run([sys.executable, "-c", GEMM_PROBE, device], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def mnist_tch_run(args, out: Path, hidden: str, batch: int, epochs: int) -> dict:
    stdout, wall, rss = run_measured([str(args.binary), "train", "--data", str(args.data), "--epochs", str(epochs),
                                      "--batch-size", str(batch), "--hidden", hidden, "--device", args.device,
                                      "--out", str(out), "--overwrite", "--quiet"])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": [m["seconds"] for m in metrics], "wall": wall, "rss_mb": rss,
            "test_accuracy": float(stdout.split("Test accuracy: ")[-1])}


def torch_run(args, config: Path, hidden: str, batch: int, epochs: int, out: Path) -> dict:
    metrics_path = out / "pytorch-metrics.json"
    stdout, wall, rss = run_measured([sys.executable, str(BASELINE), "--config", str(config), "--data", str(args.data),
                                      "--epochs", str(epochs), "--batch-size", str(batch), "--hidden", hidden,
                                      "--device", args.device, "--metrics-json", str(metrics_path)])
    metrics = json.loads(metrics_path.read_text())
    return {"seconds": [m["seconds"] for m in metrics], "wall": wall, "rss_mb": rss,
            "test_accuracy": float(stdout.split("Test accuracy: ")[-1])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-scale", action="store_true", help="skip the larger models and batches")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--binary", type=Path, default=BINARY, help="the mnist-tch binary to measure")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"

    rates = gemm_rates(args.device)
    train_examples = 48_000
    flop_epoch = flops_per_example([784, 128, 10]) * train_examples
    print(f"GEMM here ({args.device}, {rates['threads']} threads): {rates['large_gflops']:.1f} GFLOP/s large, "
          f"{rates['batch32_gflops']:.1f} GFLOP/s batch-32 shapes", flush=True)

    tch_runs, torch_runs = [], []
    for rep in range(args.reps):
        tch_runs.append(mnist_tch_run(args, run_dir, "128", 32, args.epochs))
        torch_runs.append(torch_run(args, run_dir / "config.json", "128", 32, args.epochs, args.out))
        print(f"rep {rep + 1}: mnist-tch {statistics.median(tch_runs[-1]['seconds']):.3f} s/epoch, "
              f"PyTorch {statistics.median(torch_runs[-1]['seconds']):.3f} s/epoch", flush=True)

    # Evaluation of the test set, timed inside the process.
    evaluated = json.loads(subprocess.run([str(args.binary), "evaluate", "--model", str(run_dir), "--data", str(args.data),
                                           "--device", args.device, "--json"], capture_output=True, text=True,
                                          check=True).stdout)

    def summary(runs: list[dict]) -> dict:
        seconds = [s for r in runs for s in r["seconds"]]
        spe = statistics.median(seconds)
        return {"seconds_per_epoch": spe, "samples_per_second": train_examples / spe,
                "peak_rss_mb": statistics.median(r["rss_mb"] for r in runs),
                "wall_seconds": statistics.median(r["wall"] for r in runs),
                "test_accuracy": statistics.median(r["test_accuracy"] for r in runs), "epochs": seconds}

    ours, theirs = summary(tch_runs), summary(torch_runs)
    result = {
        "device": args.device, "cores": os.cpu_count(), "epochs": args.epochs, "reps": args.reps, "gemm": rates,
        "flop_per_epoch": flop_epoch,
        "compute_limit_seconds": {"large_gemm": flop_epoch / (rates["large_gflops"] * 1e9),
                                  "batch32_gemm": flop_epoch / (rates["batch32_gflops"] * 1e9)},
        "mnist_tch": ours, "pytorch": theirs,
        "ratio_seconds": ours["seconds_per_epoch"] / theirs["seconds_per_epoch"],
        "ratio_rss": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
        "evaluate_10k_ms": evaluated["seconds"] * 1e3 if "seconds" in evaluated else None,
        "scale": [],
    }
    if not args.no_scale:
        for hidden in ("128", "1024,1024,512"):
            for batch in (32, 256, 1024):
                a = mnist_tch_run(args, args.out / "scale", hidden, batch, 2)
                b = torch_run(args, args.out / "scale" / "config.json", hidden, batch, 2, args.out)
                row = {"hidden": hidden, "batch": batch, "mnist_tch_s": a["seconds"][-1], "pytorch_s": b["seconds"][-1],
                       "mnist_tch_acc": a["test_accuracy"], "pytorch_acc": b["test_accuracy"]}
                result["scale"].append(row)
                print(f"scale {hidden} batch {batch}: mnist-tch {row['mnist_tch_s']:.2f} s/epoch, "
                      f"PyTorch {row['pytorch_s']:.2f} s/epoch", flush=True)

    lines = [f"# Benchmark ({args.device}, {os.cpu_count()} cores, {args.reps} reps x {args.epochs} epochs, Fashion-MNIST, "
             "48,000 training images/epoch)\n",
             f"GEMM measured here: {rates['large_gflops']:.1f} GFLOP/s (2048^3), {rates['batch32_gflops']:.1f} GFLOP/s "
             f"(batch-32 shapes), {rates['threads']} threads. One epoch of 784-128-10 is {flop_epoch / 1e9:.1f} GFLOP: "
             f"compute limit {result['compute_limit_seconds']['large_gemm']:.2f} s/epoch at the large-matrix rate, "
             f"{result['compute_limit_seconds']['batch32_gemm']:.2f} s at the batch-32 rate.\n",
             "| system | s/epoch (median) | samples/s | peak RSS MB | wall s | test accuracy |", "|---|---|---|---|---|---|"]
    for name, r in (("mnist-tch", ours), ("PyTorch eager", theirs)):
        lines.append(f"| {name} | {r['seconds_per_epoch']:.3f} | {r['samples_per_second']:,.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['wall_seconds']:.1f} | {r['test_accuracy']:.4f} |")
    lines += ["", f"Ratio mnist-tch / PyTorch: **{result['ratio_seconds']:.2f}×** time per epoch, "
                  f"**{result['ratio_rss']:.2f}×** peak RSS. `evaluate` on the 10,000 test images: "
                  + (f"{result['evaluate_10k_ms']:.1f} ms (inside the process)." if result["evaluate_10k_ms"] else "not timed by this binary.")]
    if result["scale"]:
        lines += ["", "| hidden | batch | mnist-tch s/epoch | samples/s | PyTorch s/epoch | samples/s | ratio | "
                      "accuracy (tch / torch) |", "|---|---|---|---|---|---|---|---|"]
        for row in result["scale"]:
            lines.append(f"| {row['hidden']} | {row['batch']} | {row['mnist_tch_s']:.2f} | "
                         f"{train_examples / row['mnist_tch_s']:,.0f} | {row['pytorch_s']:.2f} | "
                         f"{train_examples / row['pytorch_s']:,.0f} | {row['mnist_tch_s'] / row['pytorch_s']:.2f} | "
                         f"{row['mnist_tch_acc']:.4f} / {row['pytorch_acc']:.4f} |")
    table = "\n".join(lines) + "\n"
    (args.out / "bench.md").write_text(table)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
