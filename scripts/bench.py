#!/usr/bin/env python3
"""Benchmark: mnist-tch's two engines against two PyTorch loops on the same data, alternated, several
repetitions, plus a CNN row, the machine's GEMM rate and the compute limit it implies.

    .venv/bin/python scripts/bench.py [--data data/mnist] [--epochs 3] [--reps 3] [--threads 2]
                                      [--cnn-epochs 3] [--cnn-limit 6432] [--no-cnn] [--no-scale]
                                      [--out runs/bench]

Systems (784-128-10, batch 32, Adam, the Keras tutorial's protocol: 48,000 training images per epoch, CPU):
  mnist-tch autograd     `train --engine autograd` (nn::seq_t, libtorch autograd, tch's nn::Adam)
  mnist-tch fused        `train --engine fused` (hand-written backward pass, flat Adam)
  PyTorch minimal loop   scripts/minimal_loop.py: randperm, index, forward, cross_entropy, zero_grad,
                         backward, Adam step; no metrics, no host syncs, no validation pass
  PyTorch baseline.py    scripts/baseline.py: the same plus per-step metric ops, a shuffled copy of the
                         data per epoch and a validation pass
Each repetition runs every system once, in an order rotated from one repetition to the next (the machine
is shared and its speed drifts, so the systems take turns). Seconds per epoch are each tool's own epoch
times at full precision (mnist-tch's include its validation pass over 12,000 images, the minimal loop's
do not); epoch 1 (warm-up) is left out: the statistics are over the steady epochs 2..E of every
repetition, minimum and median. Ratios are each engine against the minimal loop (min/min and
median/median). Peak RSS is each process's ru_maxrss (median over repetitions). Every child runs with
OMP_NUM_THREADS=--threads (the Python loops also call torch.set_num_threads).

CNN row: mnist-tch `--arch cnn` (autograd engine; Keras's Simple MNIST convnet, dropout 0.5) against the
same CNN in the minimal PyTorch loop, alternated the same way, on the first --cnn-limit training images
with a validation split of 0.005 (6,432 images: 6,399 for training = 200 steps per epoch, 33 held out),
so an epoch is 200 real training steps and the validation pass is negligible.

Also: the sgemm rate measured here and the compute limit of an MLP epoch, the time `evaluate` takes for the
test set, the system load before and after (shared machine), and (unless --no-scale) a scale table:
wider/deeper MLPs and larger batches, mnist-tch (autograd) against baseline.py, 2 epochs each.
Writes OUT/bench.md and OUT/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY, DEFAULT_DATA, ROOT, parse_test_accuracy  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
TARGETS = {"mnist-tch autograd": 0.60, "mnist-tch fused": 0.45}
RSS_TARGET = 0.5
MINIMAL = "PyTorch minimal loop"
BASELINE = "PyTorch baseline.py"


def run_measured(command: list[str], env: dict) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS MB) of a child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   env={**os.environ, **env})
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise SystemExit(f"error: {' '.join(map(str, command))} failed:\n{stderr.read()}")
    return stdout, wall, usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def cpu_times() -> dict:
    """{pid: (name, utime + stime in clock ticks)} of every process."""
    times = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        times[int(stat.parent.name)] = (name, int(fields[11]) + int(fields[12]))
    return times


def machine_load(window: float = 1.0) -> dict:
    """The load average, and the processes other than this one that used >= 5% of a core over `window`
    seconds (the machine is shared)."""
    before = cpu_times()
    time.sleep(window)
    after = cpu_times()
    ticks = os.sysconf("SC_CLK_TCK") * window
    busy = []
    for pid, (name, total) in after.items():
        if pid != os.getpid() and pid in before and (used := (total - before[pid][1]) / ticks) >= 0.05:
            busy.append((used, f"{name} {used * 100:.0f}%"))
    return {"time": time.strftime("%H:%M:%S"), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "busy": [text for _, text in sorted(busy, reverse=True)[:8]]}


GEMM_PROBE = """
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))

def rate(m, k, n, repeats):
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9

print(json.dumps({
    "large_gflops": rate(2048, 2048, 2048, 5),
    # The batch-32 shapes of one training step: forward [32,784]x[784,128], weight grad [128,32]x[32,784].
    "batch32_gflops": (rate(32, 784, 128, 2000) + rate(128, 32, 784, 2000)) / 2,
    "threads": torch.get_num_threads(),
}))
"""


def flops_per_example(widths: list[int]) -> float:
    """Forward (2·in·out per layer) + weight gradients (same) + input gradients of every layer but the
    first (the images need none)."""
    layers = list(zip(widths, widths[1:]))
    forward = sum(2 * i * o for i, o in layers)
    return 2 * forward + sum(2 * i * o for i, o in layers[1:])


class Bench:
    def __init__(self, args):
        self.args = args
        self.env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

    def print_config(self, name: str, flags: list[str]) -> Path:
        """The config mnist-tch would train with these flags, for the Python loops to take theirs from."""
        done = subprocess.run([str(self.args.binary), "train", "--print-config", "--data", str(self.args.data),
                               "--device", "cpu", *flags], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr.strip())
        path = self.args.out / f"config-{name}.json"
        path.write_text(done.stdout)
        return path

    def mnist_tch(self, out: Path, epochs: int, flags: list[str]) -> dict:
        stdout, wall, rss = run_measured([self.args.binary, "train", "--data", self.args.data, "--epochs", epochs,
                                          "--device", "cpu", "--out", out, "--overwrite", "--quiet", *flags], self.env)
        metrics = json.loads((out / "metrics.json").read_text())
        return {"seconds": [m["seconds"] for m in metrics], "wall": wall, "rss_mb": rss,
                "test_accuracy": parse_test_accuracy(stdout)}

    def python(self, script: str, config: Path, epochs: int, extra: list[str] = ()) -> dict:
        metrics_path = self.args.out / "python-metrics.json"
        stdout, wall, rss = run_measured([sys.executable, SCRIPTS / script, "--config", config, "--data",
                                          self.args.data, "--epochs", epochs, "--metrics-json", metrics_path, *extra],
                                         self.env)
        metrics = json.loads(metrics_path.read_text())
        return {"seconds": [m["seconds"] for m in metrics], "wall": wall, "rss_mb": rss,
                "test_accuracy": parse_test_accuracy(stdout)}

    def alternate(self, systems: dict, reps: int, label: str) -> dict:
        """Runs each system once per repetition, in an order rotated every repetition."""
        names = list(systems)
        runs: dict = {name: [] for name in names}
        for rep in range(reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                runs[name].append(systems[name]())
            summary = ", ".join(f"{n} {statistics.median(runs[n][-1]['seconds'][1:] or runs[n][-1]['seconds']):.3f}"
                                for n in names)
            print(f"{label} rep {rep + 1}/{reps} ({' → '.join(order)}): s/epoch {summary}; load "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
        return runs


def summarise(runs: list[dict]) -> dict:
    steady = [s for r in runs for s in r["seconds"][1:]]
    if not steady:
        raise SystemExit("error: --epochs must be at least 2 (epoch 1 is warm-up and left out)")
    return {"min": min(steady), "median": statistics.median(steady), "steady_epochs": steady,
            "all_epochs": [r["seconds"] for r in runs],
            "peak_rss_mb": statistics.median(r["rss_mb"] for r in runs),
            "peak_rss_mb_all": [r["rss_mb"] for r in runs],
            "wall_seconds": statistics.median(r["wall"] for r in runs),
            "test_accuracy": statistics.median(r["test_accuracy"] for r in runs)}


def ratios(ours: dict, reference: dict) -> dict:
    return {"min": ours["min"] / reference["min"], "median": ours["median"] / reference["median"],
            "rss": ours["peak_rss_mb"] / reference["peak_rss_mb"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run of the MLP systems (>= 2)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cnn-epochs", type=int, default=3)
    parser.add_argument("--cnn-limit", type=int, default=6432, help="training images of the CNN row (before its split)")
    parser.add_argument("--no-cnn", action="store_true", help="skip the CNN row")
    parser.add_argument("--no-scale", action="store_true", help="skip the larger models and batches")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--binary", type=Path, default=BINARY, help="the mnist-tch binary to measure")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    load_before = machine_load()
    print(f"Load before: {load_before}", flush=True)

    probe = subprocess.run([sys.executable, "-c", GEMM_PROBE, str(args.threads)], capture_output=True, text=True,
                           check=True, env={**os.environ, **bench.env})
    rates = json.loads(probe.stdout)
    flop_epoch = flops_per_example([784, 128, 10]) * 48_000
    print(f"GEMM here ({rates['threads']} threads): {rates['large_gflops']:.1f} GFLOP/s large, "
          f"{rates['batch32_gflops']:.1f} GFLOP/s batch-32 shapes", flush=True)

    # --- the tutorial's MLP: two engines, two PyTorch loops --------------------------------------------
    mlp_config = bench.print_config("mlp", ["--epochs", str(args.epochs)])
    mlp_dirs = {"autograd": args.out / "mlp-autograd", "fused": args.out / "mlp-fused"}
    systems = {
        "mnist-tch autograd": lambda: bench.mnist_tch(mlp_dirs["autograd"], args.epochs, ["--engine", "autograd"]),
        "mnist-tch fused": lambda: bench.mnist_tch(mlp_dirs["fused"], args.epochs, ["--engine", "fused"]),
        MINIMAL: lambda: bench.python("minimal_loop.py", mlp_config, args.epochs, ["--threads", str(args.threads)]),
        BASELINE: lambda: bench.python("baseline.py", mlp_config, args.epochs),
    }
    mlp = {name: summarise(runs) for name, runs in bench.alternate(systems, args.reps, "MLP").items()}
    for name in mlp:
        mlp[name]["vs_minimal"] = ratios(mlp[name], mlp[MINIMAL])
        mlp[name]["vs_baseline"] = ratios(mlp[name], mlp[BASELINE])

    evaluated = json.loads(subprocess.run([str(args.binary), "evaluate", "--model", str(mlp_dirs["autograd"]),
                                           "--device", "cpu", "--json"], capture_output=True, text=True,
                                          check=True, env={**os.environ, **bench.env}).stdout)

    # --- the CNN ---------------------------------------------------------------------------------
    cnn = None
    if not args.no_cnn:
        flags = ["--arch", "cnn", "--limit", str(args.cnn_limit), "--validation-split", "0.005"]
        cnn_config = bench.print_config("cnn", [*flags, "--epochs", str(args.cnn_epochs)])
        steps = json.loads(cnn_config.read_text())["data"]["train_examples"]
        systems = {
            "mnist-tch cnn (autograd)": lambda: bench.mnist_tch(args.out / "cnn", args.cnn_epochs, flags),
            "PyTorch minimal loop, cnn": lambda: bench.python("minimal_loop.py", cnn_config, args.cnn_epochs,
                                                              ["--threads", str(args.threads)]),
        }
        cnn = {name: summarise(runs) for name, runs in bench.alternate(systems, args.reps, "CNN").items()}
        cnn["mnist-tch cnn (autograd)"]["vs_minimal"] = ratios(cnn["mnist-tch cnn (autograd)"],
                                                               cnn["PyTorch minimal loop, cnn"])
        cnn["train_examples"] = steps

    # --- scale -----------------------------------------------------------------------------------
    scale = []
    if not args.no_scale:
        for hidden in ("128", "1024,1024,512"):
            for batch in (32, 256, 1024):
                flags = ["--hidden", hidden, "--batch-size", str(batch)]
                config = bench.print_config("scale", [*flags, "--epochs", "2"])
                a = bench.mnist_tch(args.out / "scale", 2, flags)
                b = bench.python("baseline.py", config, 2)
                row = {"hidden": hidden, "batch": batch, "mnist_tch_s": a["seconds"][-1], "pytorch_s": b["seconds"][-1],
                       "mnist_tch_acc": a["test_accuracy"], "pytorch_acc": b["test_accuracy"]}
                scale.append(row)
                print(f"scale {hidden} batch {batch}: mnist-tch {row['mnist_tch_s']:.2f} s/epoch, "
                      f"baseline.py {row['pytorch_s']:.2f} s/epoch", flush=True)

    load_after = machine_load()
    result = {
        "data": str(args.data), "cores": os.cpu_count(), "threads": args.threads, "epochs": args.epochs,
        "reps": args.reps, "gemm": rates, "flop_per_epoch": flop_epoch,
        "compute_limit_seconds": {"large_gemm": flop_epoch / (rates["large_gflops"] * 1e9),
                                  "batch32_gemm": flop_epoch / (rates["batch32_gflops"] * 1e9)},
        "mlp": mlp, "cnn": cnn, "targets": {"time_vs_minimal": TARGETS, "rss_vs_pytorch": RSS_TARGET},
        "evaluate_test_set_ms": evaluated["seconds"] * 1e3 if "seconds" in evaluated else None,
        "scale": scale, "load_before": load_before, "load_after": load_after,
    }
    table = markdown(result, args)
    (args.out / "bench.md").write_text(table)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + table)
    return 0


def markdown(result: dict, args) -> str:
    mlp, cnn = result["mlp"], result["cnn"]
    lines = [f"# Benchmark (CPU, {result['cores']} cores, {result['threads']} threads, data `{result['data']}`)\n",
             f"784-128-10 MLP, batch 32, 48,000 training images per epoch; {result['reps']} alternated repetitions x "
             f"{result['epochs']} epochs; statistics over the steady epochs 2..{result['epochs']} of every repetition "
             f"({result['reps'] * (result['epochs'] - 1)} per system). Ratios: against the minimal PyTorch loop.\n",
             "| system | s/epoch min | s/epoch median | ratio min | ratio median | peak RSS MB | RSS ratio | "
             "test accuracy |", "|---|---|---|---|---|---|---|---|"]
    for name, r in mlp.items():
        v = r["vs_minimal"]
        lines.append(f"| {name} | {r['min']:.3f} | {r['median']:.3f} | {v['min']:.2f}× | {v['median']:.2f}× | "
                     f"{r['peak_rss_mb']:.0f} | {v['rss']:.2f}× | {r['test_accuracy']:.4f} |")
    lines.append("")
    for name, target in TARGETS.items():
        v = mlp[name]["vs_minimal"]
        met = "met" if max(v["min"], v["median"]) <= target else "not met"
        lines.append(f"- {name}: target ≤ {target:.2f}× the minimal loop: {v['min']:.2f}× (min), {v['median']:.2f}× "
                     f"(median) — {met}; against baseline.py {mlp[name]['vs_baseline']['median']:.2f}× (median).")
    for name in TARGETS:
        rss = mlp[name]
        met = "met" if max(rss["vs_minimal"]["rss"], rss["vs_baseline"]["rss"]) <= RSS_TARGET else "not met"
        lines.append(f"- {name} peak RSS: target ≤ {RSS_TARGET}× PyTorch's: {rss['vs_minimal']['rss']:.2f}× the "
                     f"minimal loop's, {rss['vs_baseline']['rss']:.2f}× baseline.py's — {met}.")
    lines.append(f"- mnist-tch's epoch times include its validation pass over 12,000 images; the minimal loop's do "
                 f"not. `evaluate` on the 10,000 test images: "
                 + (f"{result['evaluate_test_set_ms']:.1f} ms." if result["evaluate_test_set_ms"] else "not timed."))
    rates, limit = result["gemm"], result["compute_limit_seconds"]
    lines.append(f"- GEMM here: {rates['large_gflops']:.1f} GFLOP/s (2048³), {rates['batch32_gflops']:.1f} GFLOP/s "
                 f"(batch-32 shapes), {rates['threads']} threads; one epoch is {result['flop_per_epoch'] / 1e9:.1f} "
                 f"GFLOP: compute limit {limit['large_gemm']:.2f} / {limit['batch32_gemm']:.2f} s/epoch.")
    if cnn:
        ours, theirs = cnn["mnist-tch cnn (autograd)"], cnn["PyTorch minimal loop, cnn"]
        steps = -(-cnn["train_examples"] // 32)
        lines += ["", f"CNN (Keras's Simple MNIST convnet, dropout 0.5, batch 32): {cnn['train_examples']:,} training "
                      f"images = {steps} steps per epoch (`--limit {args.cnn_limit} --validation-split 0.005`), "
                      f"{args.cnn_epochs} epochs per run, steady epochs 2..{args.cnn_epochs}, alternated.\n",
                  "| system | s/epoch min | s/epoch median | ms/step (median) | ratio min | ratio median | peak RSS MB | "
                  "RSS ratio |", "|---|---|---|---|---|---|---|---|"]
        for name, r in (("mnist-tch --arch cnn (autograd)", ours), ("PyTorch minimal loop, same CNN", theirs)):
            v = ratios(r, theirs)
            lines.append(f"| {name} | {r['min']:.3f} | {r['median']:.3f} | {r['median'] / steps * 1e3:.2f} | "
                         f"{v['min']:.2f}× | {v['median']:.2f}× | {r['peak_rss_mb']:.0f} | {v['rss']:.2f}× |")
    if result["scale"]:
        lines += ["", "Scale (2 epochs each, the second timed; mnist-tch autograd vs baseline.py):\n",
                  "| hidden | batch | mnist-tch s/epoch | PyTorch s/epoch | ratio | accuracy (tch / torch) |",
                  "|---|---|---|---|---|---|"]
        for row in result["scale"]:
            lines.append(f"| {row['hidden']} | {row['batch']} | {row['mnist_tch_s']:.2f} | {row['pytorch_s']:.2f} | "
                         f"{row['mnist_tch_s'] / row['pytorch_s']:.2f} | {row['mnist_tch_acc']:.4f} / "
                         f"{row['pytorch_acc']:.4f} |")
    for when in ("before", "after"):
        load = result[f"load_{when}"]
        lines.append(f"\nLoad {when} ({load['time']}): load average {load['loadavg']}; busy processes: "
                     f"{', '.join(load['busy']) or 'none'}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
