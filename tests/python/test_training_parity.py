"""Training parity (scripts/parity.py): one epoch of mnist-tch, from the weights it saved before the first
step, replayed in plain PyTorch with the same batches ends with the same weights."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import safetensors.torch
import torch

import parity
from conftest import ARCHS, CLASSES, ROOT, run

ORDERS = ("no-shuffle", "shuffled")


@pytest.fixture(scope="module")
def replays(data_dir, tmp_path_factory) -> dict:
    """For each architecture and order: a 1-epoch run (50 steps, the CNN with its default dropout 0.5)
    replayed with both formulations of Adam."""
    out = tmp_path_factory.mktemp("parity")
    cache: dict = {}

    def get(arch: str, order: str, engine: str = "autograd") -> dict:
        key = (arch, order, engine)
        if key not in cache:
            results = parity.train_and_replay(out / "-".join(key), data_dir, order,
                                              ["--arch", arch, "--engine", engine, "--num-classes", str(CLASSES)],
                                              optimizers=parity.OPTIMIZERS)
            cache[key] = {r["optimizer"]: r for r in results}
        return cache[key]

    return get


def test_shuffled_order_is_the_seeds_randperm():
    """mnist-tch's order of epoch e is torch.manual_seed(seed * 1000003 + e); torch.randperm(n)."""
    first = parity.epoch_order(42, 1, 1000, shuffle=True)
    assert sorted(first.tolist()) == list(range(1000))
    assert torch.equal(first, parity.epoch_order(42, 1, 1000, shuffle=True))
    assert not torch.equal(first, parity.epoch_order(42, 2, 1000, shuffle=True))
    assert torch.equal(parity.epoch_order(42, 1, 5, shuffle=False), torch.arange(5))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("arch", ARCHS)
def test_one_epoch_replayed_in_pytorch_ends_with_mnist_tchs_weights(replays, arch, order):
    results = replays(arch, order)
    exact, plain = results["libtorch"], results["torch"]
    assert exact["steps"] == 50 and exact["order"] == order and exact["arch"] == arch
    if arch == "cnn":
        assert exact["dropout"] == 0.5, "the convnet trains with dropout, and its masks are replayed too"
    # Adam as libtorch computes it (tch's nn::Adam): the same floats, step for step.
    assert exact["max_abs_diff"] <= parity.TOLERANCE, exact
    assert exact["max_abs_diff"] == 0.0 and exact["loss_abs_diff"] == 0.0, exact
    # torch.optim.Adam rounds one op differently; over 50 steps it stays far inside 1e-5.
    assert plain["max_abs_diff"] <= parity.TOLERANCE, plain


@pytest.mark.parametrize("order", ORDERS)
def test_fused_engine_stays_close_to_pytorch(replays, order):
    """The fused engine has its own backward pass and Adam arithmetic: close, not identical."""
    results = replays("mlp", order, "fused")
    for result in results.values():
        assert 0.0 < result["max_abs_diff"] <= parity.TOLERANCE, result
        assert not parity.checked(result)


def test_replay_detects_a_different_run(replays, tmp_path):
    """A replay that starts from other weights than the run's is caught: the check has teeth."""
    source = replays("mlp", "shuffled")["libtorch"]["run"]
    copy = tmp_path / "tampered"
    shutil.copytree(source, copy)
    initial = safetensors.torch.load_file(str(copy / parity.INITIAL_WEIGHTS))
    initial["1.bias"][0] += 1e-3
    safetensors.torch.save_file(initial, str(copy / parity.INITIAL_WEIGHTS))
    result = parity.replay(copy, optimizer="libtorch")
    assert not result["pass"] and result["max_abs_diff"] > parity.TOLERANCE


def test_parity_script_reports_and_exits_zero(data_dir, tmp_path):
    done = run(sys.executable, ROOT / "scripts" / "parity.py", "--data", data_dir, "--arch", "linear", "--out", tmp_path,
               "--train-args", f"--num-classes {CLASSES}", "--json", tmp_path / "parity.json")
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and sum(line.startswith("PASS: linear autograd") for line in lines) == 2, done.stdout
    assert all("weights max abs diff" in line for line in lines)
    assert np.isfinite([r["max_abs_diff"] for r in json.loads((tmp_path / "parity.json").read_text())]).all()
