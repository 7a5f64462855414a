#!/usr/bin/env python3
"""One command, one table: mnist-tch against the PyTorch baseline (and the Keras tutorial's program when
keras is installed) on the same data, epochs, seed and architecture, plus four parity checks.

    .venv/bin/python scripts/compare.py [--data DIR] [--arch mlp|linear|cnn] [--epochs 10] [--seed 42]
                                        [--train-args "..."] [--parity-limit N] [--out runs/compare]

Writes OUT/compare.md and OUT/compare.json: test accuracy, seconds per epoch (mean over epochs),
whole-process wall time and peak RSS of each, and the parity checks, each PASS or FAIL with its number:
  1. the exported TorchScript (torch.jit.load) gives logits within 1e-5 of mnist-tch's own on every
     test image, and the same test accuracy to 4 decimals;
  2. model.safetensors loaded into the baseline's nn.Sequential gives logits within 1e-5;
  3. mnist-tch's test accuracy is within 1 point of the PyTorch baseline's at equal epochs (the baseline
     builds the same architecture from the run's config.json);
  4. training parity (scripts/parity.py): one epoch of mnist-tch from `--save-initial` weights, replayed
     in plain PyTorch (the same batches and dropout masks, F.cross_entropy, Adam written op for op as
     libtorch's torch::optim::Adam), ends with weights within 1e-5 of mnist-tch's — once in file order
     (--no-shuffle) and once in the shuffled order of the run. The same replay with torch.optim.Adam is
     reported beside it (not checked: it rounds one op differently, and over an epoch that difference
     can grow past 1e-5 through a ReLU unit at the edge). These runs take the same --train-args (so the
     same engine, architecture and dropout); --parity-limit N trains them on the first N training images
     only (default: all).
Exits 1 when a parity check fails ("info" rows never fail).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline  # noqa: E402
import parity  # noqa: E402
from common import (BINARY, DEFAULT_DATA, EPOCH_SECONDS, ROOT, TEST_ACCURACY, dump_logits, load_raw,  # noqa: E402
                    load_torch_model, to_inputs)

LOGIT_TOLERANCE = 1e-5
ACCURACY_TOLERANCE = 0.01


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
    import torch

    logits_path, module_path = out / "mnist-tch-logits.npy", out / "model.pt"
    tch_logits = dump_logits(run_dir, logits_path, binary=binary, data=data_dir)
    subprocess.run([str(binary), "export", "--model", str(run_dir), "--out", str(module_path), "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL)
    raw = load_raw(data_dir, config["data"].get("selection"))
    images, test_y = torch.from_numpy(to_inputs(raw["test_x"])), raw["test_y"]

    def accuracy(logits: np.ndarray) -> float:
        return float((logits.argmax(-1) == test_y).mean())

    module = torch.jit.load(str(module_path), map_location="cpu")
    with torch.no_grad():
        jit_logits = module(images).numpy()
    _, model = load_torch_model(run_dir)
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
        {"check": "mnist-tch vs PyTorch baseline test accuracy (within 1 point; the same "
                   + ", ".join(baseline.HONOURED) + "; not the same initial weights or batches)",
         "value": f"{tch_accuracy:.4f} vs {torch_accuracy:.4f} (diff {abs(tch_accuracy - torch_accuracy):.4f})",
         "pass": abs(tch_accuracy - torch_accuracy) <= ACCURACY_TOLERANCE},
    ]


def counted(n: int, noun: str) -> str:
    """`1 epoch`, `3 epochs`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def without_flag(args: list[str], flag: str) -> list[str]:
    """`args` without `flag` and its value (`--flag V` or `--flag=V`)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept


def training_parity_checks(data_dir: Path, train_args: list[str], out: Path, binary: Path, limit: int | None,
                           seed: int) -> tuple[list[dict], list[dict]]:
    """Check 4: one epoch of mnist-tch replayed in PyTorch, in file order and in the run's shuffled order.
    The check is the replay with Adam written op for op as libtorch's torch::optim::Adam (what tch's
    nn::Adam runs): the weights must agree within 1e-5 (they come out bit-identical). The replay with
    torch.optim.Adam, which rounds one op differently (lerp), is reported beside it: over a whole epoch
    it can drift far past 1e-5 once a near-dead ReLU unit flips on a rounding difference (README)."""
    extra = [*(without_flag(train_args, "--limit") if limit else train_args), "--seed", str(seed),
             *(["--limit", str(limit)] if limit else [])]
    checks, details = [], []
    for order in ("no-shuffle", "shuffled"):
        exact, plain = parity.train_and_replay(out / f"parity-{order}", data_dir, order, extra, binary=binary,
                                               optimizers=("libtorch", "torch"))
        details += [exact, plain]
        what = (f"1 epoch ({exact['steps']} steps, {exact['arch']}, {exact['engine']} engine, dropout "
                f"{exact['dropout']}) replayed in PyTorch from the same initial weights and batches")
        checked = parity.checked(exact)  # the fused engine has its own arithmetic: measured, not checked
        checks.append({
            "check": f"training parity, {order}: {what}, Adam as libtorch computes it (weights max abs diff)"
                     + ("" if checked else " (fused engine: reported, not checked)"),
            "value": f"{exact['max_abs_diff']:.2e}; epoch mean loss diff {exact['loss_abs_diff']:.1e}",
            "pass": exact["pass"] if checked else None})
        checks.append({
            "check": f"training parity, {order}: the same with torch.optim.Adam (reported, not checked)",
            "value": f"{plain['max_abs_diff']:.2e}; epoch mean loss diff {plain['loss_abs_diff']:.1e}",
            "pass": None})
    return checks, details


def verdict(check: dict) -> str:
    return "info" if check["pass"] is None else "PASS" if check["pass"] else "FAIL"


def markdown(results: list[dict], checks: list[dict], settings: str) -> str:
    lines = [f"# mnist-tch vs Python baselines\n", settings, "",
             "| system | test accuracy | s/epoch | wall s | peak RSS MB |", "|---|---|---|---|---|"]
    for r in results:
        spe = f"{r['seconds_per_epoch']:.2f}" if r["seconds_per_epoch"] is not None else "-"
        lines.append(f"| {r['name']} | {r['test_accuracy']:.4f} | {spe} | {r['wall_seconds']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines += ["", "| parity check | measured | result |", "|---|---|---|"]
    lines += [f"| {c['check']} | {c['value']} | {verdict(c)} |" for c in checks]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data set to train and test on")
    parser.add_argument("--arch", choices=("mlp", "linear", "cnn"), help="mnist-tch's --arch (default: its default, mlp)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every training")
    parser.add_argument("--seed", type=int, default=42, help="seed of every training")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "compare", help="directory for the runs and the report")
    parser.add_argument("--binary", type=Path, default=BINARY, help="the mnist-tch binary")
    parser.add_argument("--train-args", default="", help="extra flags for mnist-tch train (and so the baselines)")
    parser.add_argument("--parity-limit", type=int,
                        help="train the training-parity runs on the first N images only (replaces a --limit in --train-args)")
    parser.add_argument("--no-keras", action="store_true", help="skip Keras even when it is installed")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "mnist-tch"
    python = sys.executable
    train_args = [*(["--arch", args.arch] if args.arch else []), *shlex.split(args.train_args)]

    # The baselines' refusal comes before any training, not after mnist-tch's.
    preview = subprocess.run([str(args.binary), "train", "--print-config", "--data", str(args.data), "--epochs",
                              str(args.epochs), "--seed", str(args.seed), "--device", "cpu", *train_args],
                             capture_output=True, text=True)
    if preview.returncode != 0:
        raise SystemExit(preview.stderr.strip() or "error: mnist-tch train --print-config failed")
    baseline.refuse_unsupported(json.loads(preview.stdout), "torch", f"--train-args {args.train_args!r}")
    results = [measure("mnist-tch", [str(args.binary), "train", "--data", str(args.data), "--epochs", str(args.epochs),
                                     "--seed", str(args.seed), "--device", "cpu", "--out", str(run_dir),
                                     "--overwrite", *train_args])]
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text())
    script = str(Path(__file__).resolve().parent / "baseline.py")
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
    print("\n== training parity (scripts/parity.py)", flush=True)
    training_checks, training_details = training_parity_checks(args.data, train_args, args.out, args.binary,
                                                               args.parity_limit, args.seed)
    checks += training_checks

    t, m = config["training"], config["model"]
    model = f"model {m.get('arch', 'mlp')}" + (f" hidden {m['hidden']}" if m.get("hidden") else "")
    model += f" dropout {m.get('dropout', 0.0)}, engine {t.get('engine', 'fused')}"
    settings = (f"Data `{args.data}`, {counted(t['epochs'], 'epoch')}, batch {t['batch_size']}, Adam lr {t['learning_rate']} "
                f"eps {t['adam_epsilon']}, validation split {t['validation_split']}, seed {t['seed']}, "
                f"{model}, CPU ({os.cpu_count()} cores).")
    (args.out / "compare.md").write_text(markdown(results, checks, settings))
    (args.out / "compare.json").write_text(json.dumps({"settings": settings, "results": results, "parity": checks,
                                                       "training_parity": training_details}, indent=2) + "\n")
    print("\n" + markdown(results, checks, settings))
    for c in checks:
        print(f"{verdict(c)}: {c['check']}: {c['value']}")
    print(f"Wrote {args.out / 'compare.md'} and {args.out / 'compare.json'}")
    return 0 if all(c["pass"] is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
