"""Each session's event files begin with `SessionLog.START`, and TensorBoard's own reader (EventAccumulator)
acts on it: a new run written into a DIR that already holds one replaces it on the charts, as
docs/tensorboard.md says (the old files stay on disk)."""

from __future__ import annotations

import json

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2

from common import BINARY
from conftest import CLASSES, run


def read_run(path):
    return event_accumulator.EventAccumulator(str(path), size_guidance={"scalars": 0}).Reload()


def test_a_new_run_in_the_same_directory_replaces_the_old_one(data_dir, tmp_path):
    logs = tmp_path / "logs"
    common = ["--data", data_dir, "--num-classes", str(CLASSES), "--hidden", "16", "--device", "cpu",
              "--tensorboard", logs]
    run(BINARY, "train", "--out", tmp_path / "three", "--epochs", "3", *common)
    run(BINARY, "train", "--out", tmp_path / "one", "--epochs", "1", "--seed", "7", *common)
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for name, column in (("train", "loss"), ("validation", "val_loss")):
        assert len(list((logs / name).glob("events.out.tfevents.*"))) == 2
        logged = [(e.step, e.value) for e in read_run(logs / name).Scalars("epoch_loss")]
        assert logged == [(0, float(np.float32(metrics[0][column])))], name


def test_every_session_file_starts_with_session_log_start(data_dir, tmp_path):
    logs = tmp_path / "logs"
    run(BINARY, "train", "--data", data_dir, "--out", tmp_path / "run", "--epochs", "1", "--num-classes",
        str(CLASSES), "--hidden", "16", "--device", "cpu", "--tensorboard", logs)
    for name in ("train", "validation", "test"):
        (path,) = (logs / name).glob("events.out.tfevents.*")
        data = path.read_bytes()
        events = []
        while data:
            length = int.from_bytes(data[:8], "little")
            events.append(event_pb2.Event.FromString(data[12:12 + length]))
            data = data[16 + length:]
        assert events[0].file_version == "brain.Event:2"
        assert events[1].WhichOneof("what") == "session_log", name
        assert events[1].session_log.status == event_pb2.SessionLog.START
        assert events[1].step == 0
