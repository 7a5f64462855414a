#!/usr/bin/env python3
"""The figures of docs/pictures.md, in one command: digit MNIST as picture folders and as Kaggle CSVs
trains like the IDX files; decoding the pictures against torchvision's ImageFolder; an epoch from the
picture cache against an epoch from IDX; and a colour data set trained in a colour and a grey frame.

    .venv/bin/python scripts/bench_pictures.py --folder runs/mnist-pictures --csv runs/kaggle \\
        [--colour runs/colour-digits] [--data data/mnist] [--rounds 3] [--work runs/bench-pictures]

--folder and --colour are written by scripts/write_picture_folders.py, --csv by scripts/write_kaggle_csv.py.
Timings alternate the two sides round by round and print min and median; the load average is printed
first and last. torchvision (scripts/requirements-bench.txt) is needed for the decoding comparison.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY, DEFAULT_DATA, ROOT  # noqa: E402


def mnist_tch(*args, cache: Path, check: bool = True) -> str:
    env = dict(os.environ, MNIST_TCH_CACHE=str(cache))
    done = subprocess.run([str(BINARY), *map(str, args)], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise SystemExit(f"mnist-tch {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return done.stdout


def test_accuracy(stdout: str) -> float:
    return float(next(line for line in stdout.splitlines() if line.startswith("Test accuracy: ")).split()[-1])


def epoch_seconds(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def summary(name: str, values: list[float]) -> str:
    return f"{name}: min {min(values):.3f} s, median {statistics.median(values):.3f} s ({len(values)} values)"


def accuracy_figures(args, work: Path, cache: Path) -> None:
    idx = test_accuracy(mnist_tch("train", "--data", args.data, "--out", work / "idx", cache=cache))
    folder = test_accuracy(mnist_tch("train", "--data", args.folder, "--out", work / "folder", cache=cache))
    print(f"test accuracy, defaults (mnist-tch train --data ...): IDX {idx:.4f}, picture folders {folder:.4f} "
          f"(difference {folder - idx:+.4f})")
    if args.csv:
        mnist_tch("train", "--data", args.csv / "train.csv", "--out", work / "csv", cache=cache)
        submission = work / "submission.csv"
        mnist_tch("predict", "--model", work / "csv", args.csv / "test.csv", "--out", submission, cache=cache)
        with open(submission) as f, open(args.csv / "test-labels.csv") as g:
            answers, truth = list(csv.DictReader(f)), list(csv.DictReader(g))
        right = sum(a["Label"] == t["Label"] for a, t in zip(answers, truth, strict=True))
        print(f"Kaggle CSV: train.csv, then the submission for test.csv scored against test-labels.csv: "
              f"{right / len(truth):.4f} (difference to IDX {right / len(truth) - idx:+.4f})")


def torchvision_decode(folder: Path) -> float:
    import torch
    from torchvision import datasets, transforms

    started = time.perf_counter()
    transform = transforms.Compose([transforms.Grayscale(), transforms.PILToTensor()])
    count = 0
    for tree in ("train", "test"):
        loader = torch.utils.data.DataLoader(datasets.ImageFolder(folder / tree, transform=transform),
                                             batch_size=256, num_workers=2)
        for images, _ in loader:
            count += len(images)
    return time.perf_counter() - started


def decode_figures(args, work: Path) -> None:
    ours, theirs = [], []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(dir=work) as fresh:  # an empty cache: every picture decoded
            started = time.perf_counter()
            mnist_tch("train", "--data", args.folder, "--print-config", cache=Path(fresh))
            ours.append(time.perf_counter() - started)
        theirs.append(torchvision_decode(args.folder))
        print(f"  round {round_ + 1}: mnist-tch {ours[-1]:.2f} s, torchvision {theirs[-1]:.2f} s", flush=True)
    print("decoding every picture of train/ and test/ into bytes:")
    print("  " + summary("mnist-tch train --print-config, empty cache (process start included)", ours))
    print("  " + summary("torchvision ImageFolder + DataLoader(num_workers=2, batch_size=256)", theirs))
    print(f"  ratio mnist-tch / torchvision: min {min(ours) / min(theirs):.2f}, "
          f"median {statistics.median(ours) / statistics.median(theirs):.2f}")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def epoch_figures(args, work: Path, cache: Path) -> None:
    """Epochs from the picture cache against epochs from IDX, alternated: wall seconds of each epoch after
    the first (metrics.csv), and the CPU seconds of the whole run (one libtorch thread on both sides, so a
    loaded machine's waiting is not counted as work)."""
    mnist_tch("train", "--data", args.folder, "--print-config", cache=cache)  # the cache is filled first
    wall = {"idx": [], "cache": []}
    cpu = {"idx": [], "cache": []}
    for round_ in range(args.rounds):
        for data, side in ((args.data, "idx"), (args.folder, "cache")):
            run = work / f"e-{side}-{round_}"
            before = children_cpu_seconds()
            mnist_tch("train", "--data", data, "--epochs", args.epochs, "--threads", 1, "--out", run, cache=cache)
            cpu[side].append(children_cpu_seconds() - before)
            wall[side].extend(epoch_seconds(run)[1:])  # the first epoch warms libtorch up on both sides
    print(f"an epoch of the default MLP, one libtorch thread (epochs 2 to {args.epochs} of {args.epochs}):")
    print("  " + summary("IDX files, wall seconds per epoch", wall["idx"]))
    print("  " + summary("picture folders from the cache, wall seconds per epoch", wall["cache"]))
    print(f"  ratio cache / IDX: min {min(wall['cache']) / min(wall['idx']):.3f}, "
          f"median {statistics.median(wall['cache']) / statistics.median(wall['idx']):.3f}")
    whole = f"CPU seconds of the whole {args.epochs}-epoch run"
    print("  " + summary(f"IDX files, {whole}", cpu["idx"]))
    print("  " + summary(f"picture folders from the cache, {whole}", cpu["cache"]))
    print(f"  ratio cache / IDX: min {min(cpu['cache']) / min(cpu['idx']):.3f}, "
          f"median {statistics.median(cpu['cache']) / statistics.median(cpu['idx']):.3f}")


def colour_figures(args, work: Path, cache: Path) -> None:
    results = {}
    for frame in ("3x28x28", "1x28x28"):
        run = work / f"colour-{frame}"
        out = mnist_tch("train", "--data", args.colour, "--input", frame, "--out", run, cache=cache)
        results[frame] = test_accuracy(out)
    print(f"colour data set ({args.colour}): test accuracy with --input 3x28x28 {results['3x28x28']:.4f}, "
          f"with --input 1x28x28 {results['1x28x28']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--colour", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each run of the epoch comparison")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-pictures")
    parser.add_argument("--only", choices=["accuracy", "decode", "epoch", "colour"], action="append")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=args.work))
    cache = work / "cache"
    print(f"{load()}; runs in {work}", flush=True)
    steps = {"accuracy": accuracy_figures, "epoch": epoch_figures, "colour": colour_figures}
    for name in args.only or ["accuracy", "decode", "epoch", "colour"]:
        if name == "decode":
            decode_figures(args, work)
        elif name != "colour" or args.colour:
            steps[name](args, work, cache)
        print(load(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
