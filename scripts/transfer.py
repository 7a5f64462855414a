#!/usr/bin/env python3
"""The measured benefit of fine-tuning: pretrain on Fashion-MNIST classes 0-4, then learn classes 5-9
from only 100, 500 and 1,000 labelled training images — fine-tuned from the pretrained run against the
same architecture trained from scratch on the same images, several seeds each.

    .venv/bin/python scripts/transfer.py [--data data/fashion-mnist] [--seeds 5] [--out runs/transfer]

Methods (all 784-128-N, batch 32, the same epochs, test accuracy on every test image of classes 5-9):
  scratch          train --labels 5,6,7,8,9 --limit N              (lr 1e-3, fresh weights)
  finetune-head    finetune --freeze hidden --reinit-head          (lr 1e-3: only a new output layer learns)
  finetune-all     finetune --freeze none --reinit-head            (lr 1e-3 head and hidden layer together)
Writes OUT/transfer.md and OUT/transfer.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "mnist-tch"
NEW_CLASSES = "5,6,7,8,9"
ACCURACY = re.compile(r"^Test accuracy: ([0-9.]+)$", re.M)


def mnist_tch(*args) -> float:
    done = subprocess.run([str(BINARY), *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: mnist-tch {' '.join(map(str, args))} failed:\n{done.stderr}")
    return float(ACCURACY.findall(done.stdout)[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fashion-mnist")
    parser.add_argument("--sizes", default="100,500,1000", help="labelled training images of classes 5-9")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every small-data run")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["--data", args.data, "--device", "cpu", "--quiet", "--overwrite"]

    pretrained = args.out / "pretrained-0-4"
    pretrain_accuracy = mnist_tch("train", *common, "--labels", "0,1,2,3,4", "--epochs", args.pretrain_epochs,
                                  "--out", pretrained)
    print(f"pretrained on classes 0-4: test accuracy {pretrain_accuracy:.4f} ({pretrained})", flush=True)

    methods = {
        "scratch": lambda n, seed, out: mnist_tch(
            "train", *common, "--labels", NEW_CLASSES, "--limit", n, "--seed", seed, "--epochs", args.epochs,
            "--lr", "1e-3", "--out", out),
        "finetune-head": lambda n, seed, out: mnist_tch(
            "finetune", *common, "--from", pretrained, "--labels", NEW_CLASSES, "--limit", n, "--seed", seed,
            "--epochs", args.epochs, "--lr", "1e-3", "--freeze", "hidden", "--reinit-head", "--out", out),
        "finetune-all": lambda n, seed, out: mnist_tch(
            "finetune", *common, "--from", pretrained, "--labels", NEW_CLASSES, "--limit", n, "--seed", seed,
            "--epochs", args.epochs, "--lr", "1e-3", "--freeze", "none", "--reinit-head", "--out", out),
    }
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {}
    for n in sizes:
        for name, method in methods.items():
            accuracies = [method(n, seed, args.out / f"{name}-{n}-seed{seed}") for seed in range(1, args.seeds + 1)]
            results.setdefault(str(n), {})[name] = accuracies
            print(f"{n:>5} images  {name:<14} mean {statistics.mean(accuracies):.4f} "
                  f"± {statistics.stdev(accuracies):.4f}  {accuracies}", flush=True)

    lines = ["# Transfer: Fashion-MNIST classes 0-4 -> 5-9\n",
             f"Pretrained on classes 0-4 for {args.pretrain_epochs} epochs (test accuracy {pretrain_accuracy:.4f}); "
             f"then {args.epochs} epochs on the first N training images of classes 5-9 (80% train / 20% validation), "
             f"batch 32, seeds 1-{args.seeds}. Test accuracy on all 5,000 test images of classes 5-9, "
             "mean ± standard deviation over seeds.\n",
             "| images | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for n in sizes:
        cells = [f"{statistics.mean(results[str(n)][m]):.4f} ± {statistics.stdev(results[str(n)][m]):.4f}"
                 for m in methods]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (args.out / "transfer.md").write_text(table)
    (args.out / "transfer.json").write_text(json.dumps({"pretrain_accuracy": pretrain_accuracy, "epochs": args.epochs,
                                                        "results": results}, indent=2) + "\n")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
