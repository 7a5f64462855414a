"""Fixtures for the Python-side tests: a tiny learnable MNIST-format data set (12x12 images, so the convnet
fits: 12 → conv 10 → pool 5 → conv 3 → pool 1), short mnist-tch runs of every architecture on it, trained,
exported and evaluated by the real binary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from common import BINARY, load_data, run_config, write_data_dir  # noqa: E402

SIDE, CLASSES = 12, 4
ARCHS = ("mlp", "linear", "cnn")


def synthetic(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c lights up rows 2c and 2c+1 over noise: easy to learn, impossible to guess."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    images = rng.integers(0, 100, (count, SIDE, SIDE))
    for i, c in enumerate(labels):
        images[i, 2 * c:2 * c + 2, :] += 155
    return images, labels


def run(*args, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("data"), synthetic(2000, 1), synthetic(300, 2))


def _test_set(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    _, _, test_x, test_y = load_data(data_dir)
    return test_x, test_y


@pytest.fixture(scope="session")
def trained(data_dir, tmp_path_factory) -> dict:
    """A 2-epoch MLP run (784-32-16-4 on 12x12) with its TorchScript exports and its own logits on the
    test images."""
    out = tmp_path_factory.mktemp("run")
    run_dir = out / "run"
    run(BINARY, "train", "--data", data_dir, "--out", run_dir, "--epochs", "2", "--num-classes", str(CLASSES),
        "--hidden", "32,16", "--device", "cpu")
    run(BINARY, "export", "--model", run_dir, "--out", out / "logits.pt")
    run(BINARY, "export", "--model", run_dir, "--out", out / "probs.pt", "--probabilities")
    run(BINARY, "evaluate", "--model", run_dir, "--device", "cpu", "--dump-logits", out / "logits.npy")
    test_x, test_y = _test_set(data_dir)
    return {
        "run_dir": run_dir,
        "config": run_config(run_dir),
        "logits_pt": out / "logits.pt",
        "probs_pt": out / "probs.pt",
        "logits": np.load(out / "logits.npy"),
        "test_x": test_x,
        "test_y": test_y,
    }


@pytest.fixture(scope="session")
def arch_run(data_dir, tmp_path_factory):
    """`arch_run("cnn")`: a 1-epoch run of that architecture (default flags: the CNN with dropout 0.5)
    and its own logits on the test images; each trained once per session."""
    runs: dict = {}

    def get(arch: str) -> dict:
        if arch not in runs:
            out = tmp_path_factory.mktemp(f"run-{arch}")
            run_dir = out / "run"
            run(BINARY, "train", "--data", data_dir, "--out", run_dir, "--epochs", "1", "--arch", arch,
                "--num-classes", str(CLASSES), "--device", "cpu", "--quiet")
            run(BINARY, "evaluate", "--model", run_dir, "--device", "cpu", "--dump-logits", out / "logits.npy")
            test_x, test_y = _test_set(data_dir)
            runs[arch] = {"run_dir": run_dir, "config": run_config(run_dir), "logits": np.load(out / "logits.npy"),
                          "test_x": test_x, "test_y": test_y}
        return runs[arch]

    return get
