#!/usr/bin/env python3
"""Writes an MNIST-format data set (the IDX files) in the CSV layout of Kaggle's "Digit Recognizer":
OUT/train.csv (`label,pixel0,...,pixel783`, the training images) and OUT/test.csv (`pixel0,...,pixel783`,
no label column, the test images) with OUT/test-labels.csv (`ImageId,Label`, 1-based, to score a
submission against).

    .venv/bin/python scripts/write_kaggle_csv.py [--data data/mnist] [--out runs/kaggle] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, ROOT, read_idx  # noqa: E402


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    flat = images.reshape(len(images), -1).astype(np.int64)
    header = ",".join(f"pixel{i}" for i in range(flat.shape[1]))
    if labels is not None:
        flat = np.concatenate([labels.reshape(-1, 1).astype(np.int64), flat], axis=1)
        header = "label," + header
    np.savetxt(path, flat, fmt="%d", delimiter=",", header=header, comments="")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "kaggle")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per file")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = [args.out / name for name in ("train.csv", "test.csv", "test-labels.csv")]
    if existing := [str(t) for t in targets if t.exists()]:
        raise SystemExit(f"error: {', '.join(existing)}: exists; choose another --out")
    train_x, train_y = read_idx(args.data, "train-images-idx3-ubyte"), read_idx(args.data, "train-labels-idx1-ubyte")
    test_x, test_y = read_idx(args.data, "t10k-images-idx3-ubyte"), read_idx(args.data, "t10k-labels-idx1-ubyte")
    limit = slice(None, args.limit)
    write_csv(targets[0], train_x[limit], train_y[limit])
    write_csv(targets[1], test_x[limit], None)
    ids = np.arange(1, len(test_y[limit]) + 1)
    np.savetxt(targets[2], np.stack([ids, test_y[limit]], axis=1), fmt="%d", delimiter=",",
               header="ImageId,Label", comments="")
    print(f"wrote {', '.join(map(str, targets))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
