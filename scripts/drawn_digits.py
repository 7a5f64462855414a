#!/usr/bin/env python3
"""Digits drawn the way people draw them for `mnist-tch predict`, and the accuracy on them.

Each digit 0-9 is a pen path (strokes in unit coordinates) drawn with PIL on a canvas, in every
combination of: canvas 1000x1000 or 280x280, pen width 3, 8 or 24 px on the 1000 canvas (scaled with the
canvas), digit height 80% or 25% of the canvas, centred or in a corner, dark ink on white or white ink on
black, opaque or on a transparent background (RGBA PNG with the hidden colour black, as an HTML canvas
saves it). The pictures are written into --out and classified with `mnist-tch predict --json`; the
script prints the accuracy overall and by each factor.

    .venv/bin/python scripts/drawn_digits.py --model runs/train1 --out /tmp/drawn [--binary PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BINARY  # noqa: E402


def arc(cx, cy, rx, ry, start, end, n=24):
    """Points of an elliptic arc, angles in degrees (0 = right, 90 = down)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in (start + (end - start) * i / n for i in range(n + 1))]


#: Pen paths of the ten digits, in a unit box (x right, y down); each digit is a list of strokes.
DIGITS = {
    0: [arc(0.5, 0.5, 0.3, 0.45, 0, 360)],
    1: [[(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [arc(0.5, 0.3, 0.28, 0.25, 180, 360) + [(0.78, 0.35), (0.2, 0.95), (0.82, 0.95)]],
    3: [arc(0.5, 0.28, 0.27, 0.23, 200, 450) + arc(0.5, 0.72, 0.3, 0.23, 270, 520)],
    4: [[(0.65, 0.95), (0.65, 0.05), (0.15, 0.7), (0.85, 0.7)]],
    5: [[(0.78, 0.05), (0.28, 0.05), (0.25, 0.45)] + arc(0.5, 0.66, 0.3, 0.29, 220, 500)],
    6: [[(0.7, 0.05), (0.3, 0.55)] + arc(0.5, 0.7, 0.27, 0.25, 200, 560)],
    7: [[(0.15, 0.05), (0.85, 0.05), (0.4, 0.95)]],
    8: [arc(0.5, 0.27, 0.24, 0.22, 90, 450), arc(0.5, 0.72, 0.3, 0.23, -90, 270)],
    9: [arc(0.5, 0.3, 0.27, 0.25, 0, 360), [(0.77, 0.3), (0.65, 0.95)]],
}

CANVASES = (1000, 280)
PENS = (3, 8, 24)  # px on a 1000 canvas
HEIGHTS = (0.8, 0.25)
PLACES = ("centre", "corner")
POLARITIES = ("dark-on-light", "light-on-dark")
BACKGROUNDS = ("opaque", "transparent")


def draw(digit: int, canvas: int, pen: int, height: float, place: str, polarity: str, background: str) -> Image.Image:
    size = canvas * height
    left, top = ((canvas - size) / 2, (canvas - size) / 2) if place == "centre" else (canvas * 0.05, canvas * 0.05)
    width = max(1, round(pen * canvas / 1000))
    ink, paper = ((0, 0, 0), (255, 255, 255)) if polarity == "dark-on-light" else ((255, 255, 255), (0, 0, 0))
    if background == "transparent":
        picture = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
        colour = (*ink, 255)
    else:
        picture = Image.new("RGB", (canvas, canvas), paper)
        colour = ink
    pen_down = ImageDraw.Draw(picture)
    for stroke in DIGITS[digit]:
        points = [(left + x * size * 0.75 + size * 0.125, top + y * size) for x, y in stroke]
        pen_down.line(points, fill=colour, width=width, joint="curve")
    return picture


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="run directory trained on digit MNIST")
    parser.add_argument("--out", type=Path, required=True, help="directory for the pictures (created)")
    parser.add_argument("--binary", type=Path, default=BINARY, help="the mnist-tch binary")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    factors = {}
    for combo in itertools.product(range(10), CANVASES, PENS, HEIGHTS, PLACES, POLARITIES, BACKGROUNDS):
        digit, canvas, pen, height, place, polarity, background = combo
        name = f"{digit}_c{canvas}_p{pen}_h{int(height * 100)}_{place}_{polarity}_{background}.png"
        draw(*combo).save(args.out / name)
        factors[name] = {"canvas": canvas, "pen": pen, "height": height, "place": place, "polarity": polarity,
                         "background": background, "digit": digit}
    done = subprocess.run([str(args.binary), "predict", "--model", str(args.model), "--device", "cpu", "--json",
                           "--top-k", "1", str(args.out)], capture_output=True, text=True)
    by = defaultdict(lambda: [0, 0])
    warned = 0
    for line in done.stdout.splitlines():
        result = json.loads(line)
        name = Path(result["input"]).name
        f = factors[name]
        right = "predictions" in result and result["predictions"][0]["label"] == f["digit"]
        warned += "warning" in result
        for key in ("all", *(f"{k}={f[k]}" for k in ("canvas", "pen", "height", "place", "polarity", "background"))):
            by[key][0] += right
            by[key][1] += 1
    for key, (right, total) in by.items():
        print(f"{key:28} {right:4}/{total:<4} {right / total:.3f}")
    print(f"warnings: {warned}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
