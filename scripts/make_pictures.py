#!/usr/bin/env python3
"""Renders test images of an MNIST-format directory as PNG pictures the way a user would have them:
the original 28x28 (white on black), and a "photo" variant — dark on a white background, enlarged,
placed off-centre in a larger canvas, in colour. Writes OUT/NN-label-L[-photo].png.

    .venv/bin/python scripts/make_pictures.py [--data data/mnist] [--count 10] [--out runs/pictures]
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, ROOT, read_idx  # noqa: E402


def write_png(path: Path, pixels: np.ndarray) -> None:
    """A minimal PNG writer: 8-bit grayscale [H, W] or RGB [H, W, 3]."""
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def photo(image: np.ndarray, index: int) -> np.ndarray:
    """Dark ink on a white page, 4x larger, off-centre, tinted."""
    big = np.kron(255 - image, np.ones((4, 4), dtype=np.uint8))  # [112, 112], dark on light
    canvas = np.full((180, 240), 255, dtype=np.uint8)
    top, left = 10 + (index * 13) % 50, 15 + (index * 29) % 100
    canvas[top:top + 112, left:left + 112] = big
    rgb = np.stack([canvas, canvas, (canvas * 0.9).astype(np.uint8)], axis=-1)  # a little yellow paper
    return rgb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "pictures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images = read_idx(args.data, "t10k-images-idx3-ubyte")
    labels = read_idx(args.data, "t10k-labels-idx1-ubyte")
    for i in range(args.count):
        write_png(args.out / f"{i:02d}-label-{labels[i]}.png", images[i])
        write_png(args.out / f"{i:02d}-label-{labels[i]}-photo.png", photo(images[i], i))
    print(f"wrote {2 * args.count} pictures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
