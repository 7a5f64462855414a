#!/usr/bin/env python3
"""One command, one table: mnist-tch against the PyTorch baseline (and the seed's Keras program when
keras is installed) on the same data, epochs and seed, plus three parity checks.

    .venv/bin/python scripts/compare.py [--data DIR] [--epochs 10] [--seed 42] [--out runs/compare]

Writes OUT/compare.md and OUT/compare.json: test accuracy, seconds per epoch (mean over epochs),
whole-process wall time and peak RSS of each, and the parity checks, each PASS or FAIL with its number:
  1. the exported TorchScript (torch.jit.load) gives logits within 1e-5 of mnist-tch's own on every
     test image, and the same test accuracy to 4 decimals;
  2. model.safetensors loaded into the baseline's nn.Sequential gives logits within 1e-5;
  3. mnist-tch's test accuracy is within 1 point of the PyTorch baseline's at equal epochs.
Exits 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline  # noqa: E402  (the same data reader and model builder, not a copy)

LOGIT_TOLERANCE = 1e-5
ACCURACY_TOLERANCE = 0.01
EPOCH_SECONDS = re.compile(r"^Epoch \d+/\d+ - \d+ steps - ([0-9.]+)s - ", re.M)
TEST_ACCURACY = re.compile(r"^Test accuracy: ([0-9.]+)$", re.M)


def measure(name: str, command: list[str], env: dict | None = None) -> dict:
    """Runs `command`, echoing its output, and returns its accuracy, s/epoch, wall time and peak RSS."""
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    print(output, end="", flush=True)
    if process.returncode != 0:
        raise SystemExit(f"error: {name} failed with exit code {process.returncode}")
    epochs = [float(s) for s in EPOCH_SECONDS.findall(output)]
    accuracy = TEST_ACCURACY.findall(output)
    return {
        "name": name,
        "command": " ".join(command),
        "test_accuracy": float(accuracy[-1]) if accuracy else None,
        "epochs": len(epochs),
        "seconds_per_epoch": sum(epochs) / len(epochs) if epochs else None,
        "wall_seconds": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux
    }


def parity_checks(run_dir: Path, data_dir: Path, config: dict, torch_accuracy: float, tch_accuracy: float,
                  binary: Path, out: Path) -> list[dict]:
    import safetensors.torch
    import torch

    logits_path, module_path = out / "mnist-tch-logits.npy", out / "model.pt"
    for command in ([str(binary), "evaluate", "--model", str(run_dir), "--data", str(data_dir), "--device", "cpu",
                     "--dump-logits", str(logits_path)],
                    [str(binary), "export", "--model", str(run_dir), "--out", str(module_path), "--overwrite"]):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    tch_logits = np.load(logits_path)
    _, _, test_x, test_y = baseline.load_data(data_dir)
    images = torch.from_numpy(np.ascontiguousarray(test_x))

    def accuracy(logits: np.ndarray) -> float:
        return float((logits.argmax(-1) == test_y).mean())

    module = torch.jit.load(str(module_path), map_location="cpu")
    with torch.no_grad():
        jit_logits = module(images).numpy()
    model = baseline.build_torch_model(config["model"])
    model.load_state_dict(safetensors.torch.load_file(str(run_dir / "model.safetensors")))
    model.eval()
    with torch.no_grad():
        torch_logits = model(images).numpy()

    jit_diff = float(np.abs(jit_logits - tch_logits).max())
    state_diff = float(np.abs(torch_logits - tch_logits).max())
    jit_acc, own_acc = accuracy(jit_logits), accuracy(tch_logits)
    return [
        {"check": "TorchScript logits vs mnist-tch logits (max abs diff) and test accuracy",
         "value": f"{jit_diff:.2e}; accuracy {jit_acc:.4f} vs {own_acc:.4f}",
         "pass": jit_diff <= LOGIT_TOLERANCE and f"{jit_acc:.4f}" == f"{own_acc:.4f}"},
        {"check": "model.safetensors in nn.Sequential vs mnist-tch logits (max abs diff)",
         "value": f"{state_diff:.2e}", "pass": state_diff <= LOGIT_TOLERANCE},
        {"check": "mnist-tch vs PyTorch baseline test accuracy (within 1 point)",
         "value": f"{tch_accuracy:.4f} vs {torch_accuracy:.4f} (diff {abs(tch_accuracy - torch_accuracy):.4f})",
         "pass": abs(tch_accuracy - torch_accuracy) <= ACCURACY_TOLERANCE},
    ]


def counted(n: int, noun: str) -> str:
    """`1 epoch`, `3 epochs`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def markdown(results: list[dict], checks: list[dict], settings: str) -> str:
    lines = [f"# mnist-tch vs Python baselines\n", settings, "",
             "| system | test accuracy | s/epoch | wall s | peak RSS MB |", "|---|---|---|---|---|"]
    for r in results:
        spe = f"{r['seconds_per_epoch']:.2f}" if r["seconds_per_epoch"] is not None else "-"
        lines.append(f"| {r['name']} | {r['test_accuracy']:.4f} | {spe} | {r['wall_seconds']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines += ["", "| parity check | measured | result |", "|---|---|---|"]
    lines += [f"| {c['check']} | {c['value']} | {'PASS' if c['pass'] else 'FAIL'} |" for c in checks]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=baseline.ROOT / "data" / "fashion-mnist")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=baseline.ROOT / "runs" / "compare")
    parser.add_argument("--binary", type=Path, default=baseline.BINARY)
    parser.add_argument("--train-args", default="", help="extra flags for mnist-tch train (and so the baselines)")
    parser.add_argument("--no-keras", action="store_true", help="skip Keras even when it is installed")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "mnist-tch"
    python = sys.executable

    results = [measure("mnist-tch", [str(args.binary), "train", "--data", str(args.data), "--epochs", str(args.epochs),
                                     "--seed", str(args.seed), "--device", "cpu", "--out", str(run_dir),
                                     "--overwrite", *args.train_args.split()])]
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text())
    script = str(Path(baseline.__file__))
    results.append(measure("PyTorch eager", [python, script, "--config", str(config_path), "--data", str(args.data)]))
    if args.no_keras:
        print("\n== Keras: skipped (--no-keras)", flush=True)
    elif importlib.util.find_spec("keras") is None:
        print("\n== Keras: skipped (not installed; scripts/setup.sh --with-keras installs it)", flush=True)
    else:
        results.append(measure("Keras 3 (torch backend)", [python, script, "--framework", "keras", "--config",
                                                           str(config_path), "--data", str(args.data)]))
    checks = parity_checks(run_dir, args.data, config, results[1]["test_accuracy"], results[0]["test_accuracy"],
                           args.binary, args.out)

    t = config["training"]
    settings = (f"Data `{args.data}`, {counted(t['epochs'], 'epoch')}, batch {t['batch_size']}, Adam lr {t['learning_rate']} "
                f"eps {t['adam_epsilon']}, validation split {t['validation_split']}, seed {t['seed']}, "
                f"hidden {config['model']['hidden']}, CPU ({os.cpu_count()} cores).")
    (args.out / "compare.md").write_text(markdown(results, checks, settings))
    (args.out / "compare.json").write_text(json.dumps({"settings": settings, "results": results,
                                                       "parity": checks}, indent=2) + "\n")
    print("\n" + markdown(results, checks, settings))
    for c in checks:
        print(f"{'PASS' if c['pass'] else 'FAIL'}: {c['check']}: {c['value']}")
    print(f"Wrote {args.out / 'compare.md'} and {args.out / 'compare.json'}")
    return 0 if all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
