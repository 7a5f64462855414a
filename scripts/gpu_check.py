#!/usr/bin/env python3
"""Every GPU check of mnist-tch in one run, for a CUDA machine that has the carried binary, PyTorch 2.11 and
digit MNIST but no Rust (scripts/gpu_check.sh sets the library path and calls this). One table at the end,
also written to OUT/gpu_check.md and OUT/gpu_check.json. Budget: well under 5 minutes on one GPU.

    python3 scripts/gpu_check.py [--device cuda] [--data data/mnist] [--binary target/release/mnist-tch]
                                 [--out /tmp/gpu-check] [--epochs 3]

Checks, in order:
  1. the device line mnist-tch prints (`Device: cuda:0`);
  2. 3 epochs with each engine (autograd, fused) on the device: seconds per steady epoch, test accuracy;
  3. both engines against the minimal PyTorch eager loop on the same device (scripts/minimal_loop.py), batch 32
     and batch 256, alternated: seconds per epoch and the ratio;
  4. export traced on the device and loaded with torch.jit.load(map_location="cpu"), and export traced on the
     CPU and loaded with map_location=<device>: logits against mnist-tch's own (evaluate --dump-logits);
  5. a bf16 run (--engine fused --precision bf16);
  6. the CNN: one epoch of mnist-tch and of the minimal PyTorch loop on the device;
  7. mnist-tch as 2 torchrun workers (`python -m torch.distributed.run`, Gloo through a CPU copy of the
     gradients; with one GPU both ranks share it) against world size 1, batch 16 per process;
  8. a torchrun worker of world size 1 on NCCL (`--dist-backend nccl`, target/release/libmnist_nccl.so;
     NCCL cannot put two ranks on one GPU); on a CPU, that this is refused in one line.
With --device cpu it rehearses the same steps on a CPU (what this repository's CI machine can do).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY, DEFAULT_DATA, ROOT, load_raw, parse_test_accuracy, to_inputs  # noqa: E402


def run(command: list, what: str) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {what} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    print(f"  {what}: {time.perf_counter() - started:.1f} s", flush=True)
    return done


def steady_seconds(run_dir: Path) -> float:
    """The median seconds of the epochs after the first (which includes start-up work on a GPU)."""
    seconds = [m["seconds"] for m in json.loads((run_dir / "metrics.json").read_text())]
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def train(args, out: Path, *flags: str) -> dict:
    done = run([args.binary, "train", "--data", args.data, "--device", args.device, "--out", out, "--overwrite",
                *flags], f"mnist-tch train {' '.join(flags)}")
    device_line = next((line for line in done.stdout.splitlines() if line.startswith("Device: ")), "")
    return {"device_line": device_line, "seconds": steady_seconds(out),
            "test_accuracy": parse_test_accuracy(done.stdout)}


def torch_loop(args, config: Path, out: Path, epochs: int, batch: int) -> dict:
    metrics = out / "torch-metrics.json"
    done = run([sys.executable, ROOT / "scripts" / "minimal_loop.py", "--config", config, "--data", args.data,
                "--epochs", epochs, "--device", args.device, "--batch-size", batch, "--metrics-json", metrics],
               f"PyTorch minimal loop, batch {batch}")
    seconds = [m["seconds"] for m in json.loads(metrics.read_text())]
    return {"seconds": statistics.median(seconds[1:] if len(seconds) > 1 else seconds),
            "test_accuracy": parse_test_accuracy(done.stdout)}


def export_checks(args, run_dir: Path, out: Path) -> list[dict]:
    """TorchScript traced on one device and loaded on the other, against mnist-tch's CPU logits."""
    import torch

    logits_path = out / "logits.npy"
    run([args.binary, "evaluate", "--model", run_dir, "--device", "cpu", "--dump-logits", logits_path],
        "mnist-tch evaluate --dump-logits")
    own = np.load(logits_path)
    config = json.loads((run_dir / "config.json").read_text())
    images = torch.from_numpy(to_inputs(load_raw(Path(args.data), config["data"].get("selection"))["test_x"]))
    rows = []
    for traced_on, load_on in ((args.device, "cpu"), ("cpu", args.device)):
        module_path = out / f"traced-on-{traced_on.replace(':', '')}.pt"
        run([args.binary, "export", "--model", run_dir, "--device", traced_on, "--out", module_path, "--overwrite"],
            f"mnist-tch export --device {traced_on}")
        module = torch.jit.load(str(module_path), map_location=load_on)
        with torch.no_grad():
            logits = torch.cat([module(images[i:i + 2000].to(load_on)).cpu() for i in range(0, len(images), 2000)])
        diff = float(np.abs(logits.numpy() - own).max())
        # The GPU's kernels round differently from the CPU's: close, not bit-identical.
        rows.append({"check": f"export traced on {traced_on}, torch.jit.load(map_location={load_on!r})",
                     "value": f"max abs diff to mnist-tch's CPU logits {diff:.2e}", "pass": diff <= 1e-3})
    return rows


def torchrun_checks(args) -> list[dict]:
    """mnist-tch under `python -m torch.distributed.run` (what `torchrun` runs) on the device: world size 1
    (nothing joins) and 2 (Gloo), 2 epochs of batch 16 per process."""
    rows = []
    for world in (1, 2):
        out = args.out / f"torchrun-{world}"
        done = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", world,
                    "--no-python", args.binary, "train", "--data", args.data, "--device", args.device, "--out", out,
                    "--overwrite", "--epochs", "2", "--batch-size", "16"], f"torchrun x {world} mnist-tch train")
        accuracy = parse_test_accuracy(done.stdout)
        distributed = json.loads((out / "config.json").read_text())["training"].get("distributed")
        rows.append({"check": f"torchrun, {world} worker(s) x batch 16, 2 epochs",
                     "value": f"{steady_seconds(out):.3f} s/epoch, test accuracy {accuracy:.4f}, "
                              f"config: {json.dumps(distributed)}",
                     "pass": accuracy >= 0.96 and (distributed is None) == (world == 1)})
    return rows


def nccl_check(args) -> dict:
    """One torchrun worker on NCCL (a group of one: `--dist-backend nccl` joins it), 2 epochs of batch 16;
    on a CPU the refusal instead."""
    out = args.out / "torchrun-nccl"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "--no-python", args.binary, "train", "--data", args.data, "--device", args.device, "--out", out,
               "--overwrite", "--epochs", "2", "--batch-size", "16", "--dist-backend", "nccl"]
    if not args.device.startswith("cuda"):
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
        said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        return {"check": "torchrun x 1 --dist-backend nccl on a CPU rank",
                "value": said[0] if said else done.stderr[-200:],
                "pass": done.returncode != 0 and len(said) == 1 and "needs ranks on CUDA" in said[0]}
    done = run(command, "torchrun x 1 mnist-tch train --dist-backend nccl")
    accuracy = parse_test_accuracy(done.stdout)
    distributed = json.loads((out / "config.json").read_text())["training"].get("distributed") or {}
    return {"check": "torchrun, 1 worker on NCCL x batch 16, 2 epochs",
            "value": f"{steady_seconds(out):.3f} s/epoch, test accuracy {accuracy:.4f}, "
                     f"config: {json.dumps(distributed)}",
            "pass": accuracy >= 0.96 and distributed.get("backend") == "nccl" and distributed.get("world_size") == 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--binary", type=Path, default=BINARY)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu-check"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: PyTorch sees no CUDA device here; run with --device cpu to rehearse on a CPU")
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"GPU check on {args.device} ({gpu}), PyTorch {torch.__version__}", flush=True)
    epochs = str(args.epochs)
    rows: list[dict] = []

    autograd = train(args, args.out / "autograd", "--epochs", epochs)
    rows.append({"check": "device line", "value": autograd["device_line"],
                 "pass": autograd["device_line"] == f"Device: {args.device if ':' in args.device else args.device + ':0'}"
                 if args.device.startswith("cuda") else autograd["device_line"] == "Device: cpu"})
    fused = train(args, args.out / "fused", "--epochs", epochs, "--engine", "fused")
    for name, result in (("autograd", autograd), ("fused", fused)):
        rows.append({"check": f"{epochs} epochs, {name} engine, batch 32",
                     "value": f"{result['seconds']:.3f} s/epoch, test accuracy {result['test_accuracy']:.4f}",
                     "pass": result["test_accuracy"] >= 0.96})

    config = args.out / "autograd" / "config.json"
    for batch in (32, 256):
        tch_runs = {engine: train(args, args.out / f"{engine}-{batch}", "--epochs", "2", "--batch-size", str(batch),
                                  "--engine", engine) for engine in ("autograd", "fused")}
        torch_run = torch_loop(args, config, args.out, 2, batch)
        for engine, result in tch_runs.items():
            ratio = result["seconds"] / torch_run["seconds"]
            rows.append({"check": f"batch {batch}: {engine} engine vs minimal PyTorch loop",
                         "value": f"{result['seconds']:.3f} vs {torch_run['seconds']:.3f} s/epoch ({ratio:.2f}x)",
                         "pass": None})

    rows += export_checks(args, args.out / "autograd", args.out)
    bf16 = train(args, args.out / "bf16", "--epochs", epochs, "--engine", "fused", "--precision", "bf16")
    rows.append({"check": f"{epochs} epochs, fused engine, --precision bf16",
                 "value": f"{bf16['seconds']:.3f} s/epoch, test accuracy {bf16['test_accuracy']:.4f}",
                 "pass": bf16["test_accuracy"] >= 0.96})
    cnn = train(args, args.out / "cnn", "--epochs", "2", "--arch", "cnn")
    cnn_torch = torch_loop(args, args.out / "cnn" / "config.json", args.out, 2, 32)
    rows.append({"check": "CNN, 2 epochs: mnist-tch (autograd) vs minimal PyTorch loop",
                 "value": f"{cnn['seconds']:.3f} vs {cnn_torch['seconds']:.3f} s/epoch "
                          f"({cnn['seconds'] / cnn_torch['seconds']:.2f}x); test accuracy {cnn['test_accuracy']:.4f}",
                 "pass": cnn["test_accuracy"] >= 0.98})

    # The ViT with its defaults (cosine schedule, random shifts). bf16 is the fused engine's, which trains
    # MLPs only, so the ViT is checked in float32.
    vit = train(args, args.out / "vit", "--epochs", "3", "--arch", "vit")
    rows.append({"check": "ViT (the defaults), 3 epochs, float32",
                 "value": f"{vit['seconds']:.3f} s/epoch, test accuracy {vit['test_accuracy']:.4f}",
                 "pass": vit["test_accuracy"] >= 0.97})
    rows += torchrun_checks(args)
    rows.append(nccl_check(args))

    verdict = lambda row: "info" if row["pass"] is None else "PASS" if row["pass"] else "FAIL"  # noqa: E731
    table = "\n".join([f"GPU check on {args.device} ({gpu}), PyTorch {torch.__version__}, data `{args.data}`", "",
                       "| check | measured | result |", "|---|---|---|",
                       *(f"| {row['check']} | {row['value']} | {verdict(row)} |" for row in rows)]) + "\n"
    (args.out / "gpu_check.md").write_text(table)
    (args.out / "gpu_check.json").write_text(json.dumps({"device": args.device, "gpu": gpu, "rows": rows}, indent=2) + "\n")
    print("\n" + table)
    return 0 if all(row["pass"] is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
