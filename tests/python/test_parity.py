"""mnist-tch's exports load in Python and reproduce mnist-tch's own logits; the baseline (every
architecture) and the comparison script run end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import safetensors.torch
import torch

import pytest

from common import build_torch_model, parse_test_accuracy
from conftest import CLASSES, ROOT, SIDE, run

TOLERANCE = 1e-5


def test_torchscript_gives_mnist_tch_logits_for_every_input_shape(trained):
    module = torch.jit.load(str(trained["logits_pt"]), map_location="cpu")
    images = torch.from_numpy(trained["test_x"])  # float32 [N, 12, 12] in [0, 1]
    n = len(images)
    for shaped in (images, images.view(n, 1, SIDE, SIDE), images.view(n, SIDE * SIDE), images[:1]):
        with torch.no_grad():
            logits = module(shaped)
        assert logits.dtype == torch.float32
        assert tuple(logits.shape) == (len(shaped), CLASSES)
        diff = np.abs(logits.numpy() - trained["logits"][: len(shaped)]).max()
        assert diff <= TOLERANCE, f"{tuple(shaped.shape)}: max abs diff {diff}"


def test_probabilities_export_is_the_softmax_of_the_logits(trained):
    module = torch.jit.load(str(trained["probs_pt"]))
    with torch.no_grad():
        probs = module(torch.from_numpy(trained["test_x"])).numpy()
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    expected = torch.from_numpy(trained["logits"]).softmax(-1).numpy()
    assert np.abs(probs - expected).max() <= TOLERANCE


def test_safetensors_load_into_the_baselines_sequential(trained):
    model = build_torch_model(trained["config"]["model"])
    state = safetensors.torch.load_file(str(trained["run_dir"] / "model.safetensors"))
    model.load_state_dict(state)  # strict: every name and shape must match nn.Sequential's
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(trained["test_x"])).numpy()
    assert np.abs(logits - trained["logits"]).max() <= TOLERANCE
    # The accuracy mnist-tch printed is the accuracy of these logits.
    accuracy = (logits.argmax(-1) == trained["test_y"]).mean()
    assert f"{accuracy:.4f}" == f"{trained['config']['result']['test_accuracy']:.4f}"


def test_baseline_runs_one_epoch_from_the_run_config(trained, data_dir):
    done = run(sys.executable, ROOT / "scripts" / "baseline.py", "--config", trained["run_dir"] / "config.json",
               "--epochs", "1")
    lines = done.stdout.splitlines()
    epoch_lines = [l for l in lines if l.startswith("Epoch ")]
    # 2000 examples, the last 20% for validation: 1600 / batch 32 = 50 steps.
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("Epoch 1/1 - 50 steps - "), done.stdout
    assert parse_test_accuracy(done.stdout) > 0.5, done.stdout


def test_baseline_without_a_config_asks_the_binary(data_dir):
    done = run(sys.executable, ROOT / "scripts" / "baseline.py", "--data", data_dir, "--epochs", "1")
    assert "Epoch 1/1 - 50 steps - " in done.stdout, done.stdout


def test_baseline_trains_the_cnn_of_the_config(arch_run):
    """The baseline builds the architecture config.json describes (here Keras's convnet, dropout 0.5)."""
    cnn = arch_run("cnn")
    done = run(sys.executable, ROOT / "scripts" / "baseline.py", "--config", cnn["run_dir"] / "config.json",
               "--epochs", "1")
    assert "Epoch 1/1 - 50 steps - " in done.stdout, done.stdout
    assert parse_test_accuracy(done.stdout) > 0.5, done.stdout


def test_baseline_arch_flag_asks_the_binary_for_that_model(data_dir):
    done = run(sys.executable, ROOT / "scripts" / "baseline.py", "--data", data_dir, "--epochs", "1", "--arch", "linear")
    assert "Epoch 1/1 - 50 steps - " in done.stdout, done.stdout


def test_keras_baseline_trains_the_cnn(arch_run):
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (scripts/setup.sh --with-keras)")
    cnn = arch_run("cnn")
    done = run(sys.executable, ROOT / "scripts" / "baseline.py", "--framework", "keras", "--config",
               cnn["run_dir"] / "config.json", "--epochs", "1")
    assert "Epoch 1/1 - 50 steps - " in done.stdout, done.stdout
    assert parse_test_accuracy(done.stdout) > 0.5, done.stdout


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_compare_writes_its_table_and_passes_parity(data_dir, tmp_path, arch):
    out = tmp_path / "compare"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), "--data", str(data_dir), "--arch", arch,
                           "--epochs", "3", "--out", str(out), "--no-keras", "--train-args", f"--num-classes {CLASSES}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in report["results"]] == ["mnist-tch", "PyTorch eager"]
    # Skipping Keras is said, once; the settings line counts epochs in words.
    assert done.stdout.count("Keras: skipped (--no-keras)") == 1, done.stdout
    assert ", 3 epochs, " in report["settings"], report["settings"]
    for result in report["results"]:
        # Epoch lines print tenths of a second; tiny epochs may round to 0.0.
        assert result["epochs"] == 3 and result["seconds_per_epoch"] >= 0
        assert result["wall_seconds"] > 0 and result["peak_rss_mb"] > 50, result
    verdicts = [c["pass"] for c in report["parity"]]
    # TorchScript, safetensors, accuracy; then per order: the exact replay (checked) and torch.optim.Adam (info).
    assert verdicts == [True, True, True, True, None, True, None], report["parity"]
    assert all(r["arch"] == arch for r in report["training_parity"])
    assert {r["order"] for r in report["training_parity"]} == {"shuffled", "no-shuffle"}
    table = (out / "compare.md").read_text()
    assert "| mnist-tch |" in table and table.count("| PASS |") == 5 and table.count("| info |") == 2


def test_compare_counts_in_words():
    import compare
    assert compare.counted(1, "epoch") == "1 epoch"
    assert compare.counted(3, "epoch") == "3 epochs"
