"""Fixtures for the Python-side tests: a tiny learnable MNIST-format data set written with numpy, and a
short mnist-tch run on it (trained, exported and evaluated by the real binary)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "mnist-tch"
sys.path.insert(0, str(ROOT / "scripts"))

SIDE, CLASSES = 8, 4


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def synthetic(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c lights up rows 2c and 2c+1 over noise: easy to learn, impossible to guess."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    images = rng.integers(0, 100, (count, SIDE, SIDE))
    for i, c in enumerate(labels):
        images[i, 2 * c:2 * c + 2, :] += 155
    return images, labels


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    for prefix, count, seed in (("train", 2000, 1), ("t10k", 300, 2)):
        images, labels = synthetic(count, seed)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)
    return directory


@pytest.fixture(scope="session")
def trained(data_dir, tmp_path_factory) -> dict:
    """A 2-epoch run with its TorchScript exports and its own logits on the test images."""
    out = tmp_path_factory.mktemp("run")
    run_dir = out / "run"
    run(BINARY, "train", "--data", data_dir, "--out", run_dir, "--epochs", "2", "--num-classes", str(CLASSES),
        "--hidden", "32,16", "--device", "cpu")
    run(BINARY, "export", "--model", run_dir, "--out", out / "logits.pt")
    run(BINARY, "export", "--model", run_dir, "--out", out / "probs.pt", "--probabilities")
    run(BINARY, "evaluate", "--model", run_dir, "--device", "cpu", "--dump-logits", out / "logits.npy")
    _, _, test_x, test_y = __import__("baseline").load_data(data_dir)
    return {
        "run_dir": run_dir,
        "config": json.loads((run_dir / "config.json").read_text()),
        "logits_pt": out / "logits.pt",
        "probs_pt": out / "probs.pt",
        "logits": np.load(out / "logits.npy"),
        "test_x": test_x,
        "test_y": test_y,
    }
