"""The Vision Transformer's PyTorch twin (scripts/vit.py): mnist-tch's `--arch vit` weights load into it as they
are and give mnist-tch's logits; 150 steps replayed in PyTorch from initial.safetensors on the same batches —
the defaults' cosine schedule, AdamW's decay and label smoothing included — end with mnist-tch's weights (bit for
bit with libtorch's Adam formula, within 1e-5 with torch.optim.Adam), with and without --accumulate, with random
shifts, plain Adam and plain cross-entropy, and with dropout; the TorchScript export gives mnist-tch's logits, and so do scripts/export.py's ONNX file (run
by ONNX Runtime, within 1e-4) and torch.export program."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import safetensors.torch
import torch

import export
import parity
from common import BINARY, build_torch_model, load_raw, run_config
from conftest import CLASSES, SIDE, run

TINY = ["--arch", "vit", "--patch", "4", "--width", "16", "--depth", "2", "--heads", "2", "--num-classes",
        str(CLASSES)]


@pytest.fixture(scope="module")
def replayed(data_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vit")
    results = {}
    variants = (("plain", []),
                ("accumulated", ["--batch-size", "16", "--accumulate", "2", "--random-shift", "1", "--weight-decay", "0",
                                 "--label-smoothing", "0"]),
                ("dropout", ["--random-shift", "2", "--dropout", "0.1"]))
    for name, extra in variants:
        for result in parity.train_and_replay(out / name, data_dir, "no-shuffle", TINY + extra, epochs=3,
                                              optimizers=parity.OPTIMIZERS):
            results[(name, result["optimizer"])] = result
    return results


@pytest.mark.parametrize("name", ("plain", "accumulated", "dropout"))
def test_150_steps_replayed_in_pytorch_end_with_mnist_tchs_weights(replayed, name):
    exact, plain = replayed[(name, "libtorch")], replayed[(name, "torch")]
    assert exact["arch"] == "vit" and exact["steps"] == 150, exact
    assert exact["accumulate"] == (2 if name == "accumulated" else 1)
    # A new ViT's defaults anneal the rate, decay the weights (AdamW 0.05) and smooth the labels (0.1), and do not
    # move these pictures, whose noise fills the frame; the replay does what the run did.
    assert exact["random_shift"] == {"plain": 0, "accumulated": 1, "dropout": 2}[name]
    assert exact["dropout"] == (0.1 if name == "dropout" else 0.0)
    assert exact["label_smoothing"] == (0.0 if name == "accumulated" else 0.1)
    assert exact["weight_decay"] == (0.0 if name == "accumulated" else 0.05)
    assert exact["max_abs_diff"] == 0.0 and exact["loss_abs_diff"] == 0.0, exact
    assert plain["max_abs_diff"] <= parity.TOLERANCE, plain
    # The weights moved: the comparison is not vacuous.
    initial = safetensors.torch.load_file(str(exact["run"] + "/initial.safetensors"))
    final = safetensors.torch.load_file(str(exact["run"] + "/model.safetensors"))
    assert max(float((initial[k] - final[k]).abs().max()) for k in final) > 1e-2


def test_the_twin_loads_the_weights_and_the_export_gives_mnist_tchs_logits(replayed, data_dir, tmp_path):
    run_dir = replayed[("plain", "libtorch")]["run"]
    run(BINARY, "evaluate", "--model", run_dir, "--device", "cpu", "--dump-logits",
        tmp_path / "logits.npy")
    expected = np.load(tmp_path / "logits.npy")
    config = run_config(run_dir)
    model = build_torch_model(config["model"])
    model.load_state_dict(safetensors.torch.load_file(f"{run_dir}/model.safetensors"))  # strict: every name
    model.eval()
    images = torch.from_numpy(load_raw(data_dir)["test_x"].astype(np.float32) / 255.0)
    with torch.no_grad():
        logits = model(images).numpy()
    assert np.abs(logits - expected).max() <= 1e-5
    run(BINARY, "export", "--model", run_dir, "--out", tmp_path / "vit.pt")
    module = torch.jit.load(str(tmp_path / "vit.pt"))
    n = len(images)
    for shaped in (images, images.view(n, 1, SIDE, SIDE), images.view(n, SIDE * SIDE), images[:1]):
        with torch.no_grad():
            traced = module(shaped).numpy()
        assert np.abs(traced - expected[: len(shaped)]).max() <= 1e-6, tuple(shaped.shape)


HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript", "onnx"))


@pytest.mark.parametrize("fmt", [pytest.param("onnx", marks=pytest.mark.skipif(
    not HAS_ONNX, reason="onnx, onnxscript and onnxruntime are not installed (scripts/setup.sh --with-onnx)")),
    "pt2"])
def test_onnx_and_torch_export_give_mnist_tchs_logits(replayed, data_dir, fmt, tmp_path):
    run_dir = replayed[("plain", "libtorch")]["run"]
    run(BINARY, "evaluate", "--model", run_dir, "--device", "cpu", "--dump-logits", tmp_path / "logits.npy")
    expected = np.load(tmp_path / "logits.npy")
    out = tmp_path / f"vit.{fmt}"
    export.export(run_dir, fmt, out)
    images = np.ascontiguousarray(load_raw(data_dir)["test_x"].astype(np.float32) / 255.0)
    for batch in (images, images[:1], images[:7]):
        logits = export.loader(fmt, out)(batch)
        assert logits.shape == (len(batch), CLASSES)
        assert np.abs(logits - expected[: len(batch)]).max() <= 1e-4, (fmt, len(batch))
