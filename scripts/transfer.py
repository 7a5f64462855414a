#!/usr/bin/env python3
"""The measured benefit of fine-tuning: pretrain on classes 0-4, then learn classes 5-9 from only 100,
500 and 1,000 labelled training images — fine-tuned from the pretrained run against the same
architecture trained from scratch on the same images, several seeds each.

    .venv/bin/python scripts/transfer.py [--arch mlp|cnn|vit] [--data data/mnist] [--sizes 100,500,1000]
                                         [--seeds 5] [--epochs 30] [--pretrain-epochs 10] [--out DIR]

Methods (batch 32, the same epochs, test accuracy on every test image of classes 5-9):
  scratch          train --labels 5,6,7,8,9 --limit N              (lr 1e-3, fresh weights)
  finetune-head    finetune --freeze hidden --reinit-head          (lr 1e-3: every layer but the output
                   layer frozen — the MLP's hidden layer, the CNN's two convolutions — and a new output layer)
  finetune-all     finetune --freeze none --reinit-head            (lr 1e-3, every layer trains)
--arch cnn is Keras's Simple MNIST convnet (dropout 0.5), trained by the autograd engine.
Writes OUT/transfer.md and OUT/transfer.json (default OUT: runs/transfer, runs/transfer-cnn for the CNN).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY, DEFAULT_DATA, ROOT, mnist_tch, parse_test_accuracy  # noqa: E402

NEW_CLASSES = "5,6,7,8,9"
DESCRIPTIONS = {"mlp": "784-128-N MLP", "linear": "784-N linear model",
                "cnn": "Keras's Simple MNIST convnet (dropout 0.5)",
                "vit": "the default Vision Transformer (patch 7, width 64, depth 4, heads 4)"}


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def counted(n: int, noun: str) -> str:
    """`1 epoch`, `3 epochs`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("mlp", "linear", "cnn", "vit"), default="mlp")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", default="100,500,1000", help="labelled training images of classes 5-9")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every small-data run")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, help="default: runs/transfer (runs/transfer-ARCH for other archs)")
    parser.add_argument("--binary", type=Path, default=BINARY)
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / ("transfer" if args.arch == "mlp" else f"transfer-{args.arch}")
    out.mkdir(parents=True, exist_ok=True)
    common = ["--data", args.data, "--device", "cpu", "--quiet", "--overwrite"]
    started = time.perf_counter()

    def accuracy(*flags) -> float:
        return parse_test_accuracy(mnist_tch(*flags, binary=args.binary).stdout)

    pretrained = out / "pretrained-0-4"
    pretrain_accuracy = accuracy("train", *common, "--arch", args.arch, "--labels", "0,1,2,3,4", "--epochs",
                                 args.pretrain_epochs, "--out", pretrained)
    pretrain_seconds = time.perf_counter() - started
    print(f"pretrained {args.arch} on classes 0-4: test accuracy {pretrain_accuracy:.4f} ({pretrained}, "
          f"{pretrain_seconds:.0f} s)", flush=True)

    methods = {
        "scratch": lambda n, seed, run: accuracy(
            "train", *common, "--arch", args.arch, "--labels", NEW_CLASSES, "--limit", n, "--seed", seed, "--epochs",
            args.epochs, "--lr", "1e-3", "--out", run),
        "finetune-head": lambda n, seed, run: accuracy(
            "finetune", *common, "--from", pretrained, "--labels", NEW_CLASSES, "--limit", n, "--seed", seed,
            "--epochs", args.epochs, "--lr", "1e-3", "--freeze", "hidden", "--reinit-head", "--out", run),
        "finetune-all": lambda n, seed, run: accuracy(
            "finetune", *common, "--from", pretrained, "--labels", NEW_CLASSES, "--limit", n, "--seed", seed,
            "--epochs", args.epochs, "--lr", "1e-3", "--freeze", "none", "--reinit-head", "--out", run),
    }
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {}
    seconds: dict = {}
    for n in sizes:
        for name, method in methods.items():
            method_started = time.perf_counter()
            accuracies = [method(n, seed, out / f"{name}-{n}-seed{seed}") for seed in range(1, args.seeds + 1)]
            seconds[f"{n}/{name}"] = time.perf_counter() - method_started
            results.setdefault(str(n), {})[name] = accuracies
            print(f"{n:>5} images  {name:<14} {mean_sd(accuracies)}  {accuracies}  "
                  f"({seconds[f'{n}/{name}'] / args.seeds:.1f} s per run)", flush=True)
    total = time.perf_counter() - started

    data_name = args.data.resolve().name
    lines = [f"# Transfer: {data_name} classes 0-4 -> 5-9, {DESCRIPTIONS[args.arch]}\n",
             f"Pretrained on classes 0-4 for {counted(args.pretrain_epochs, 'epoch')} (test accuracy {pretrain_accuracy:.4f}); "
             f"then {counted(args.epochs, 'epoch')} on the first N training images of classes 5-9 (80% train / 20% validation), "
             f"batch 32, {'seed 1' if args.seeds == 1 else f'seeds 1-{args.seeds}'}. Test accuracy on every test image of classes 5-9, mean ± standard "
             f"deviation over seeds. finetune-head freezes every layer but a new output layer"
             + (" (both convolutions)" if args.arch == "cnn" else "") + f". {total / 60:.1f} minutes on "
             "this machine.\n",
             "| images | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for n in sizes:
        lines.append(f"| {n} | " + " | ".join(mean_sd(results[str(n)][m]) for m in methods) + " |")
    table = "\n".join(lines) + "\n"
    (out / "transfer.md").write_text(table)
    (out / "transfer.json").write_text(json.dumps({
        "arch": args.arch, "data": str(args.data), "pretrain_accuracy": pretrain_accuracy,
        "pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "seeds": args.seeds, "results": results,
        "seconds": {"pretrain": pretrain_seconds, "total": total, **seconds}}, indent=2) + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
