#!/usr/bin/env python3
"""Writes an MNIST-format data set (the IDX files) out as picture folders, the layout torchvision's
ImageFolder and Keras's image_dataset_from_directory read: OUT/train/<label>/<index>.png and
OUT/test/<label>/<index>.png, one 28x28 grey PNG per image (70,000 for digit MNIST), the pixels exactly
the IDX file's. With --colour, a colour data set instead, where colour decides part of the label.

    .venv/bin/python scripts/write_picture_folders.py [--data data/mnist] [--out runs/mnist-pictures] [--limit N]
    .venv/bin/python scripts/write_picture_folders.py --colour --out runs/colour-digits [--limit N]

--colour: digits 0 and 1 only, each drawn in red or in blue on a dark background: four classes
(0-red, 0-blue, 1-red, 1-blue). A grey frame sees the same brightness for both colours, so it can tell
only the digit (at best about half the classes); a colour frame can tell both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, ROOT, read_idx  # noqa: E402
from make_pictures import write_png  # noqa: E402

PARTS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def colour_version(image: np.ndarray, blue: bool) -> np.ndarray:
    """The digit's ink in red or in blue, scaled so both have the same grey value (BT.709 luma, which the
    binary's image crate converts colour to grey with): the colour is visible only in colour."""
    ink = image.astype(np.float64) / 255.0
    # luma = 0.2126 R + 0.7152 G + 0.0722 B; red (R=a) and blue (B=b) with 0.2126 a = 0.0722 b.
    red_level, blue_level = 255 * 0.0722 / 0.2126, 255.0
    rgb = np.zeros((*image.shape, 3), dtype=np.float64)
    if blue:
        rgb[..., 2] = ink * blue_level
    else:
        rgb[..., 0] = ink * red_level
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "mnist-pictures")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per part")
    parser.add_argument("--colour", action="store_true", help="the colour data set described above")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: {args.out}: exists and is not empty; choose another --out")
    total = 0
    for part, (images_name, labels_name) in PARTS.items():
        images, labels = read_idx(args.data, images_name), read_idx(args.data, labels_name)
        if args.colour:
            keep = np.flatnonzero(labels < 2)
            images, labels = images[keep], labels[keep]
        count = len(labels) if args.limit is None else min(args.limit, len(labels))
        for index in range(count):
            if args.colour:
                blue = bool((index * 7919) % 2)
                name = f"{labels[index]}-{'blue' if blue else 'red'}"
                pixels = colour_version(images[index], blue)
            else:
                name, pixels = str(labels[index]), images[index]
            folder = args.out / part / name
            folder.mkdir(parents=True, exist_ok=True)
            write_png(folder / f"{index:05d}.png", pixels)
        total += count
    print(f"wrote {total} pictures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
