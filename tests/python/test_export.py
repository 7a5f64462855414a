"""scripts/export.py: ONNX and torch.export (.pt2) files of every architecture reproduce mnist-tch's own
logits, with a dynamic batch dimension; a file that does not is never written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import export
from conftest import ARCHS, CLASSES, ROOT, SIDE

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript", "onnx"))
NO_ONNX = "onnx, onnxscript and onnxruntime are not installed (scripts/setup.sh --with-onnx)"
FORMATS = [pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason=NO_ONNX)), "pt2"]


def outputs(fmt: str, path, images: np.ndarray) -> np.ndarray:
    return export.loader(fmt, path)(np.ascontiguousarray(images))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", ARCHS)
def test_export_reproduces_mnist_tch_logits(arch, fmt, arch_run, tmp_path):
    trained = arch_run(arch)
    out = tmp_path / f"model.{fmt}"
    result = export.export(trained["run_dir"], fmt, out)
    assert out.is_file() and result["max_abs_diff"] <= export.TOLERANCE
    images = trained["test_x"]
    for batch in (images, images[:1], images[:5]):  # any N
        logits = outputs(fmt, out, batch)
        assert logits.dtype == np.float32 and logits.shape == (len(batch), CLASSES)
        assert np.abs(logits - trained["logits"][: len(batch)]).max() <= export.TOLERANCE
    info = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    assert info["format"] == fmt and info["input"]["shape"] == ["N", SIDE, SIDE] and info["output"] == "logits"
    assert info["class_names"] == trained["config"]["data"]["class_names"]


@pytest.mark.parametrize("layout, shape", [("nchw", (1, SIDE, SIDE)), ("flat", (SIDE * SIDE,))])
def test_other_input_layouts(layout, shape, arch_run, tmp_path):
    trained = arch_run("cnn")
    out = tmp_path / "model.pt2"
    export.export(trained["run_dir"], "pt2", out, layout=layout)
    images = trained["test_x"].reshape(-1, *shape)
    assert np.abs(outputs("pt2", out, images) - trained["logits"]).max() <= export.TOLERANCE
    assert json.loads((tmp_path / "model.pt2.json").read_text())["input"]["shape"] == ["N", *shape]


@pytest.mark.parametrize("fmt", FORMATS)
def test_probabilities(fmt, arch_run, tmp_path):
    trained = arch_run("mlp")
    out = tmp_path / f"probs.{fmt}"
    export.export(trained["run_dir"], fmt, out, probabilities=True)
    probabilities = outputs(fmt, out, trained["test_x"])
    expected = torch.from_numpy(trained["logits"]).softmax(-1).numpy()
    assert np.abs(probabilities - expected).max() <= export.TOLERANCE
    assert json.loads((tmp_path / f"probs.{fmt}.json").read_text())["output"] == "probabilities"


def test_a_file_that_disagrees_with_mnist_tch_is_not_written(arch_run, tmp_path, monkeypatch):
    trained = arch_run("linear")
    real = export.load_torch_model

    def perturbed(run_dir):
        config, model = real(run_dir)
        with torch.no_grad():
            model[1].bias += 1e-3
        return config, model

    monkeypatch.setattr(export, "load_torch_model", perturbed)
    out = tmp_path / "model.pt2"
    with pytest.raises(export.ExportError, match="differ from mnist-tch's"):
        export.export(trained["run_dir"], "pt2", out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_reports_success_and_failure_in_one_line(arch_run, tmp_path):
    trained = arch_run("mlp")
    script = str(ROOT / "scripts" / "export.py")
    done = subprocess.run([sys.executable, script, "--model", str(trained["run_dir"]), "--format", "pt2", "--out",
                           str(tmp_path / "m.pt2")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Exported ") and "Checked on 300 test images" in done.stdout
    assert done.stderr == "", done.stderr
    bad = subprocess.run([sys.executable, script, "--model", str(tmp_path), "--format", "pt2", "--out",
                          str(tmp_path / "x.pt2")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: "), bad.stderr


def test_export_follows_the_write_rule(arch_run, tmp_path, capsys):
    """Never over a run's own files (not even with --overwrite), never over an existing file without it."""
    trained = arch_run("linear")
    run_dir = trained["run_dir"]
    weights = run_dir / "model.safetensors"
    before = weights.read_bytes()
    for extra in ([], ["--overwrite"]):
        code = export.main(["--model", str(run_dir), "--format", "pt2", "--out", str(weights), *extra])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and "is a file of the run directory" in err, err
        assert weights.read_bytes() == before
    existing = tmp_path / "deeper" / "model.pt2"
    existing.parent.mkdir()
    existing.write_bytes(b"earlier export")
    code = export.main(["--model", str(run_dir), "--format", "pt2", "--out", str(existing)])
    err = capsys.readouterr().err
    assert code == 1 and "already exists" in err and "--overwrite" in err, err
    assert existing.read_bytes() == b"earlier export"
    fresh = tmp_path / "missing" / "dirs" / "model.pt2"
    assert export.main(["--model", str(run_dir), "--format", "pt2", "--out", str(fresh)]) == 0
    assert fresh.is_file() and (fresh.parent / "model.pt2.json").is_file()
    assert export.main(["--model", str(run_dir), "--format", "pt2", "--out", str(existing), "--overwrite"]) == 0
    assert existing.read_bytes() != b"earlier export"
