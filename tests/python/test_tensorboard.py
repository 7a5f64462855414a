"""`train --tensorboard DIR` and `train --resume ... --tensorboard DIR`, read back with TensorBoard's own reader
(EventAccumulator): Keras's runs and tags, steps from 0, exactly the run's metrics, the config as text and the
confusion matrix as a picture; a resumed run continues the same curves."""

from __future__ import annotations

import csv
import subprocess
import json
import textwrap

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from common import BINARY
from conftest import CLASSES, run


def read_run(path):
    """Everything TensorBoard keeps of one run directory (no sampling: size_guidance 0 keeps all events)."""
    return event_accumulator.EventAccumulator(
        str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0}).Reload()


def scalars(accumulator, tag) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


@pytest.fixture(scope="module")
def logged(data_dir, tmp_path_factory) -> dict:
    """Two epochs with a learning rate that halves every epoch, then resumed for a third."""
    tmp = tmp_path_factory.mktemp("tensorboard")
    run_dir, logs = tmp / "run", tmp / "logs"
    run(BINARY, "train", "--data", data_dir, "--out", run_dir, "--epochs", "2", "--num-classes", str(CLASSES),
        "--hidden", "16", "--lr-schedule", "step:1:0.5", "--device", "cpu", "--tensorboard", logs)
    first_session = json.loads((run_dir / "config.json").read_text())
    done = run(BINARY, "train", "--resume", run_dir, "--epochs", "3", "--tensorboard", logs, "--device", "cpu")
    assert f"TensorBoard: {logs} (tensorboard --logdir {logs})" in done.stdout.splitlines()
    return {"run": run_dir, "logs": logs, "first_config": first_session}


def test_runs_and_tags_are_keras_s(logged):
    logs = logged["logs"]
    assert sorted(p.name for p in logs.iterdir()) == ["test", "train", "validation"]
    train, validation, test = (read_run(logs / name) for name in ("train", "validation", "test"))
    assert sorted(train.Tags()["scalars"]) == ["epoch_accuracy", "epoch_learning_rate", "epoch_loss"]
    assert train.Tags()["tensors"] == ["config"]
    assert sorted(validation.Tags()["scalars"]) == ["epoch_accuracy", "epoch_loss"]
    assert sorted(test.Tags()["scalars"]) == ["epoch_accuracy", "epoch_loss"]
    assert test.Tags()["images"] == ["confusion_matrix"]
    # One new file per session in each run that trained twice; the test run is written at each end.
    for name in ("train", "validation", "test"):
        assert len(list((logs / name).glob("events.out.tfevents.*"))) == 2


def test_scalars_are_exactly_the_metrics_of_the_run(logged):
    metrics = json.loads((logged["run"] / "metrics.json").read_text())
    with open(logged["run"] / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    logs = logged["logs"]
    train, validation = read_run(logs / "train"), read_run(logs / "validation")
    expected = {(train, "epoch_loss"): "loss", (train, "epoch_accuracy"): "accuracy",
                (train, "epoch_learning_rate"): "lr", (validation, "epoch_loss"): "val_loss",
                (validation, "epoch_accuracy"): "val_accuracy"}
    for (accumulator, tag), column in expected.items():
        logged_values = scalars(accumulator, tag)
        # Keras's steps: epoch N is step N - 1; the resumed session continues at step 2.
        assert [step for step, _ in logged_values] == [0, 1, 2], tag
        # Event files hold float32: exactly metrics.json's float64 rounded to float32 ...
        assert [value for _, value in logged_values] == [float(np.float32(m[column])) for m in metrics], tag
        # ... and metrics.csv's printed digits.
        for (_, value), row in zip(logged_values, rows):
            assert abs(value - float(row[column])) <= 5e-7 + 1e-7 * abs(value), (tag, value, row[column])
    assert [value for _, value in scalars(train, "epoch_learning_rate")] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_config_is_text_at_each_session_start(logged):
    train = read_run(logged["logs"] / "train")
    events = train.Tensors("config")
    assert [event.step for event in events] == [0, 2]
    texts = [textwrap.dedent(event.tensor_proto.string_val[0].decode()) for event in events]
    first, resumed = (json.loads(text) for text in texts)
    assert first["model"] == logged["first_config"]["model"]
    assert first["training"] == logged["first_config"]["training"]
    assert first["state"]["epochs_completed"] == 0
    assert resumed["state"]["epochs_completed"] == 2
    assert [r["after_epoch"] for r in resumed["state"]["resumes"]] == [2]


def test_test_evaluation_and_confusion_matrix_at_the_end(logged):
    evaluation = json.loads((logged["run"] / "evaluation.json").read_text())
    test = read_run(logged["logs"] / "test")
    # The second session's evaluation (after epoch 3, step 2) is the run's final one.
    assert scalars(test, "epoch_loss")[-1] == (2, float(np.float32(evaluation["loss"])))
    assert scalars(test, "epoch_accuracy")[-1] == (2, float(np.float32(evaluation["accuracy"])))
    image = test.Images("confusion_matrix")[-1]
    assert image.step == 2
    assert (image.width, image.height) == (900, 800)
    png = image.encoded_image_string
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20], "big") == 900 and int.from_bytes(png[20:24], "big") == 800
    # No temporary picture is left beside the event files.
    assert [p.name for p in (logged["logs"] / "test").iterdir() if not p.name.startswith("events.")] == []


def test_a_file_is_refused_before_anything_is_written(data_dir, tmp_path):
    (tmp_path / "logs").write_text("not a directory")
    done = subprocess.run(
        [str(BINARY), "train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--epochs", "1",
         "--num-classes", str(CLASSES), "--tensorboard", str(tmp_path / "logs")], capture_output=True, text=True)
    assert done.returncode == 2
    assert f"{tmp_path / 'logs'} exists and is not a directory" in done.stderr
    assert not (tmp_path / "run").exists()
