"""An .npz written by NumPy itself (numpy.savez_compressed, as Keras's mnist.npz is) trains exactly like the
IDX files of the same data, with uint8 or int64 labels."""

from __future__ import annotations

import numpy as np

from conftest import BINARY, CLASSES, run, synthetic


def metrics_without_seconds(run_dir) -> list[str]:
    return [line.rsplit(",", 1)[0] for line in (run_dir / "metrics.csv").read_text().splitlines()]


def test_numpy_npz_trains_exactly_like_idx(data_dir, tmp_path):
    (train_x, train_y), (test_x, test_y) = synthetic(2000, 1), synthetic(300, 2)  # conftest's data_dir
    arrays = {"x_train": train_x.astype(np.uint8), "y_train": train_y.astype(np.uint8),
              "x_test": test_x.astype(np.uint8), "y_test": test_y.astype(np.uint8)}
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    np.savez(tmp_path / "int64.npz", **{k: v.astype(np.int64) if k.startswith("y") else v for k, v in arrays.items()})
    common = ["--epochs", "2", "--num-classes", str(CLASSES), "--device", "cpu", "--quiet"]
    outputs = {}
    for name, data in (("idx", data_dir), ("npz", tmp_path / "mnist.npz"), ("int64", tmp_path / "int64.npz")):
        outputs[name] = run(BINARY, "train", "--data", data, "--out", tmp_path / name, *common).stdout
    assert outputs["npz"] == outputs["idx"] == outputs["int64"]
    assert metrics_without_seconds(tmp_path / "npz") == metrics_without_seconds(tmp_path / "idx")
    assert metrics_without_seconds(tmp_path / "int64") == metrics_without_seconds(tmp_path / "idx")
