#!/usr/bin/env python3
"""Benchmark: mnist-tch as torchrun workers (libtorch's c10d, Gloo) against the DistributedDataParallel
loop a PyTorch user would write (scripts/ddp_baseline.py: DDP + DistributedSampler + Gloo), same world
size, per-process batch and machine, alternated; plus mnist-tch in one process, and the cost of one
gradient all-reduce.

    .venv/bin/python scripts/bench_ddp.py [--data data/mnist] [--epochs 3] [--reps 3] [--world-size 2]
                                          [--batch-size 16] [--json FILE]

Systems (784-128-10 MLP, Adam, 48,000 training images per epoch, CPU, OMP_NUM_THREADS=1 in every
process, which is also torchrun's default):
  mnist-tch W x B     torchrun --standalone --nproc-per-node W --no-python mnist-tch train --batch-size B
  PyTorch DDP W x B   torchrun ... scripts/ddp_baseline.py --config ... --batch-size B (training steps only:
                      no validation pass, no metrics)
  mnist-tch 1 x W*B   one process, the same global batch
  mnist-tch 1 x B     one process, the same per-process batch (the compute of a worker's step)
Each repetition runs every system once, in an order rotated from one repetition to the next. Seconds per
epoch are each tool's own epoch times (mnist-tch's include its validation pass over 12,000 images);
epoch 1 is left out: min and median over epochs 2..E of every repetition. The all-reduce row: W torchrun
workers all-reduce a float32 tensor of the MLP's 101,770 parameters (407 KB) --allreduce-iters times
through torch.distributed (Gloo, the same library mnist-tch calls), mean time per call.
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
from common import BINARY, DEFAULT_DATA, ROOT  # noqa: E402

TORCHRUN = ROOT / ".venv" / "bin" / "torchrun"
PARAMETERS = 101_770  # 784*128 + 128 + 128*10 + 10


def run(command: list, env: dict | None = None) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, command))} failed (exit {done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def torchrun(world: int, *command) -> list:
    return [TORCHRUN, "--standalone", "--nproc-per-node", world, *command]


def allreduce_worker(iters: int) -> None:
    """Under torchrun: times `iters` all-reduces of a PARAMETERS-float tensor; rank 0 prints µs per call."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    tensor = torch.ones(PARAMETERS)
    for _ in range(20):
        dist.all_reduce(tensor)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(tensor)
    seconds = (time.perf_counter() - started) / iters
    if dist.get_rank() == 0:
        print(json.dumps({"allreduce_us": seconds * 1e6, "bytes": tensor.numel() * 4}), flush=True)
    dist.destroy_process_group()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--allreduce-iters", type=int, default=1000)
    parser.add_argument("--binary", type=Path, default=BINARY)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.allreduce_worker:
        allreduce_worker(args.allreduce_iters)
        return 0

    world, batch, epochs = args.world_size, args.batch_size, args.epochs
    work = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    config = work / "config.json"
    config.write_text(run([args.binary, "train", "--data", args.data, "--batch-size", batch, "--print-config"]))

    def mnist_tch(launch: list, per_process: int):
        def go(rep: int) -> list:
            out = work / f"run-{rep}-{per_process}-{len(launch)}"
            run([*launch, args.binary, "train", "--data", args.data, "--epochs", epochs, "--batch-size", per_process,
                 "--out", out, "--quiet", "--device", "cpu"])
            return [m["seconds"] for m in json.loads((out / "metrics.json").read_text())]
        return go

    def ddp(rep: int) -> list:
        metrics = work / f"ddp-{rep}.json"
        run(torchrun(world, SCRIPT, "--config", config, "--data", args.data, "--epochs", epochs, "--batch-size", batch,
                     "--threads", 1, "--metrics-json", metrics))
        return [m["seconds"] for m in json.loads(metrics.read_text())]

    systems = {
        f"mnist-tch {world} x {batch}": mnist_tch(torchrun(world, "--no-python"), batch),
        f"PyTorch DDP {world} x {batch}": ddp,
        f"mnist-tch 1 x {world * batch}": mnist_tch([], world * batch),
        f"mnist-tch 1 x {batch}": mnist_tch([], batch),
    }
    names = list(systems)
    seconds: dict = {name: [] for name in names}
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            epochs_seconds = systems[name](rep)
            seconds[name] += epochs_seconds[1:]
            print(f"rep {rep + 1}: {name}: " + " ".join(f"{s:.2f}" for s in epochs_seconds), flush=True)
    allreduce = json.loads(run(torchrun(world, Path(__file__).resolve(), "--allreduce-worker", "--allreduce-iters",
                                        args.allreduce_iters)).strip().splitlines()[-1])
    summary = {name: {"min": min(v), "median": statistics.median(v), "epochs": len(v)} for name, v in seconds.items()}
    ours, theirs = summary[names[0]], summary[names[1]]
    examples = json.loads(config.read_text())["data"]["train_examples"]
    steps = -(-examples // (world * batch))
    compute = summary[names[3]]["median"] / -(-examples // batch)
    result = {
        "systems": summary,
        "ratio_min": ours["min"] / theirs["min"],
        "ratio_median": ours["median"] / theirs["median"],
        "allreduce_us": allreduce["allreduce_us"],
        "allreduce_bytes": allreduce["bytes"],
        "steps_per_epoch": steps,
        "compute_per_step_ms": compute * 1e3,
        "distributed_step_ms": ours["median"] / steps * 1e3,
        "threads_per_process": 1,
        "load_after": os.getloadavg(),
    }
    print()
    print(f"| system ({world} workers x batch {batch} per process; 1 thread per process) | min s/epoch | median s/epoch |")
    print("|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['min']:.2f} | {s['median']:.2f} |")
    print(f"\nmnist-tch / PyTorch DDP: {result['ratio_min']:.2f}x (min), {result['ratio_median']:.2f}x (median)")
    print(f"All-reduce of {allreduce['bytes']:,} bytes (Gloo, {world} processes on this machine): "
          f"{allreduce['allreduce_us']:.0f} us per call; {steps} steps per epoch")
    print(f"Per step: {result['distributed_step_ms']:.2f} ms in mnist-tch {world} x {batch} (median), of which "
          f"~{allreduce['allreduce_us'] / 1e3:.2f} ms all-reduce; compute of a batch-{batch} step alone "
          f"(mnist-tch 1 x {batch}, incl. its validation share): {result['compute_per_step_ms']:.2f} ms")
    print(f"Load average after: {' '.join(f'{x:.2f}' for x in result['load_after'])}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


SCRIPT = ROOT / "scripts" / "ddp_baseline.py"

if __name__ == "__main__":
    sys.exit(main())
