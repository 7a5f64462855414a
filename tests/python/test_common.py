"""scripts/common.py: the IDX reader and writer, the output parser, and the model builders for every
architecture — checked against the binary's own layer lists and logits; the independent reading of the
data (selection, validation split) against the counts the binary records; and the binary's answers
(`mnist-tch describe`) that replace copies of its rules: the run directory's files, the write rule."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from common import (BINARY, DestinationError, build_keras_model, build_torch_model, check_destination,
                    input_frame, keras_split, load_raw, load_torch_model, model_layers, parse_test_accuracy, read_idx,
                    run_config, run_files, select_labels, write_idx)
from conftest import ARCHS, CLASSES, SIDE, run

TOLERANCE = 1e-5


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 4)).astype(np.uint8)
    labels = np.array([0, 9, 3, 3, 255])
    write_idx(tmp_path / f"i{suffix}", images)
    write_idx(tmp_path / f"l{suffix}", labels)
    assert np.array_equal(read_idx(tmp_path / f"i{suffix}"), images)
    assert np.array_equal(read_idx(tmp_path / f"l{suffix}"), labels)
    # A data directory is searched for raw, .gz and the dot spelling.
    (tmp_path / f"i{suffix}").rename(tmp_path / f"t10k-images.idx3-ubyte{suffix}")
    assert np.array_equal(read_idx(tmp_path, "t10k-images-idx3-ubyte"), images)


def test_idx_reader_refuses_bad_files(tmp_path):
    write_idx(tmp_path / "ok", np.zeros((2, 2, 2)))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    (tmp_path / "magic").write_bytes(b"\x00\x00\x0d\x03" + (tmp_path / "ok").read_bytes()[4:])
    for name, message in (("short", "the header needs"), ("magic", "not an IDX file"), ("missing", "missing")):
        with pytest.raises(SystemExit, match=message):
            read_idx(tmp_path, name) if name == "missing" else read_idx(tmp_path / name)
    with pytest.raises(ValueError, match="0..255"):
        write_idx(tmp_path / "big", np.array([256]))


def test_selection_keeps_classes_in_order_then_limits(tmp_path):
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1)
    kept_x, kept_y = select_labels(images, np.array([5, 1, 7, 5, 0, 7]), [7, 5])
    assert kept_x.ravel().tolist() == [0, 2, 3, 5] and kept_y.tolist() == [1, 0, 1, 0]
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.array([5, 1, 7, 5, 0, 7]))
    raw = load_raw(tmp_path, {"labels": [7, 5], "limit": 3})
    assert raw["train_y"].tolist() == [1, 0, 1] and raw["test_y"].tolist() == [1, 0, 1, 0]


def test_test_accuracy_is_the_last_such_line():
    assert parse_test_accuracy("Epoch 1/1 ...\nTest accuracy: 0.5\nTest loss: 1\nTest accuracy: 0.9755\n") == 0.9755
    with pytest.raises(ValueError):
        parse_test_accuracy("no result")


@pytest.mark.parametrize("arch", ARCHS)
def test_layers_of_configs_without_them_are_the_binarys(arch, data_dir):
    """The layer list of a model given by its fields alone (old runs, overrides), which the binary builds
    (`describe --arch ...`), is the one mnist-tch writes into config.json."""
    for extra in ([], ["--dropout", "0.25"] if arch != "linear" else [], ["--hidden", "16,8"] if arch == "mlp" else []):
        done = run(BINARY, "train", "--print-config", "--data", data_dir, "--arch", arch, "--num-classes",
                   str(CLASSES), *extra)
        model = json.loads(done.stdout)["model"]
        assert model["layers"] == model_layers({k: v for k, v in model.items() if k != "layers"}), extra


@pytest.mark.parametrize("flags", [[], ["--limit", "777"], ["--labels", "2,0"],
                                   ["--labels", "3,1", "--limit", "333", "--validation-split", "0.3"]])
def test_the_independent_reading_cuts_the_data_as_the_binary_does(flags, data_dir, tmp_path):
    """load_raw (with select_labels) and keras_split read the data on their own, for the baselines and the
    parity checks: they must give the training, validation and test counts the binary records."""
    classes = [] if "--labels" in flags else ["--num-classes", str(CLASSES)]
    config = json.loads(run(BINARY, "train", "--print-config", "--data", data_dir, *classes, *flags).stdout)
    data = config["data"]
    raw = load_raw(data_dir, data["selection"])
    n = keras_split(len(raw["train_x"]), config["training"]["validation_split"])
    counts = (n, len(raw["train_x"]) - n, len(raw["test_x"]))
    assert counts == (data["train_examples"], data["validation_examples"], data["test_examples"]), flags
    if "--labels" in flags:
        # The relabelling too: the binary's per-class test counts are those of the classes in --labels order.
        run(BINARY, "train", "--data", data_dir, "--out", tmp_path / "run", "--epochs", "1", "--device", "cpu",
            *flags)
        examples = [c["examples"] for c in json.loads((tmp_path / "run" / "evaluation.json").read_text())["classes"]]
        assert examples == np.bincount(raw["test_y"]).tolist(), flags
        assert run_config(tmp_path / "run")["data"]["selection"] == data["selection"]


def test_the_write_rule_is_the_binarys(tmp_path, trained, monkeypatch):
    """check_destination asks the binary: the same one-line messages as mnist-tch's own commands."""
    assert "config.json" in run_files() and ".lock" in run_files()
    own = trained["run_dir"] / "model.safetensors"
    for overwrite in (False, True):
        with pytest.raises(DestinationError, match="is a file of the run directory .* which --out never replaces"):
            check_destination([tmp_path / "x.onnx", own], overwrite)
    existing = tmp_path / "new" / "dirs" / "x.onnx"
    check_destination([existing, existing.with_name("x.onnx.json")], False)
    assert existing.parent.is_dir() and not any(existing.parent.iterdir()), "directories made, nothing written"
    existing.write_bytes(b"mine")
    with pytest.raises(DestinationError) as refused:
        check_destination([existing], False, flag="--dump-logits")
    message = str(refused.value)
    assert message == f"{existing}: already exists; choose another --dump-logits or pass --overwrite to replace it"
    check_destination([existing], True)
    with pytest.raises(DestinationError, match="is a directory; give --out a file name"):
        check_destination([tmp_path], True)
    with pytest.raises(DestinationError, match="is a file, not a directory"):
        check_destination([existing / "y.onnx"], True)
    # A name that looks like a flag is a file name all the same.
    monkeypatch.chdir(tmp_path)
    check_destination(["--out"], False)


def test_old_runs_without_layers_build_an_mlp():
    old = {"input_shape": [28, 28], "hidden": [128], "num_classes": 10, "dropout": 0.0}
    names = [name for name, _ in build_torch_model(old).named_parameters()]
    assert names == ["1.weight", "1.bias", "3.weight", "3.bias"]
    dropped = build_torch_model({**old, "hidden": [64, 32], "dropout": 0.5})
    assert [n for n, _ in dropped.named_parameters()][::2] == ["1.weight", "4.weight", "7.weight"]
    assert isinstance(dropped[3], torch.nn.Dropout) and dropped[3].p == 0.5


def test_a_colour_frame_builds_from_channels_and_grey_runs_have_none():
    assert input_frame({"input_shape": [28, 28]}) == (1, 28, 28)
    colour = {"arch": "cnn", "input_shape": [12, 12], "channels": 3, "num_classes": 4, "dropout": 0.5}
    assert input_frame(colour) == (3, 12, 12)
    model = build_torch_model(colour)  # no "layers": the binary's describe builds them for the frame
    assert model[2].in_channels == 3
    assert model(torch.rand(2, 3, 12, 12)).shape == (2, 4)


@pytest.mark.parametrize("arch", ARCHS)
def test_builder_loads_the_weights_and_gives_mnist_tchs_logits(arch, arch_run):
    trained = arch_run(arch)
    config, model = load_torch_model(trained["run_dir"])  # strict load_state_dict
    assert not model.training, "load_torch_model returns the model in eval mode (dropout off)"
    images = torch.from_numpy(trained["test_x"])
    n = len(images)
    with torch.no_grad():
        for shaped in (images, images.view(n, 1, SIDE, SIDE), images.view(n, SIDE * SIDE)):
            logits = model(shaped).numpy()
            assert np.abs(logits - trained["logits"]).max() <= TOLERANCE, tuple(shaped.shape)
    accuracy = (logits.argmax(-1) == trained["test_y"]).mean()
    assert f"{accuracy:.4f}" == f"{config['result']['test_accuracy']:.4f}"


@pytest.mark.parametrize("arch", ARCHS)
def test_keras_builder_makes_the_same_architecture(arch, arch_run):
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed (scripts/setup.sh --with-keras)")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    model_config = arch_run(arch)["config"]["model"]
    model = build_keras_model(model_config)
    torch_model = build_torch_model(model_config)
    assert model.count_params() == sum(p.numel() for p in torch_model.parameters())
    probabilities = np.asarray(model.predict(np.zeros((3, SIDE, SIDE), dtype=np.float32), verbose=0))
    assert probabilities.shape == (3, CLASSES) and np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    kinds = [type(layer).__name__ for layer in model.layers]
    if arch == "cnn":
        # Keras's Simple MNIST convnet.
        assert kinds == ["Reshape", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dropout", "Dense"]
    else:
        assert kinds == ["Flatten"] + ["Dense"] * (2 if arch == "mlp" else 1)
