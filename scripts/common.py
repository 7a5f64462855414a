"""What every Python script and test of mnist-tch shares, written once.

- where things are: `ROOT`, `BINARY` (target/release/mnist-tch), `DEFAULT_DATA` (data/mnist);
- the IDX format: `read_idx` and `write_idx` (raw or .gz), and the data as mnist-tch cuts it:
  `load_raw` / `load_data` apply a run's `data.selection` (`--labels`, `--limit`), `keras_split` the
  validation split (the LAST fraction of the training files, as Keras does);
- mnist-tch's output: `parse_test_accuracy` reads its `Test accuracy: X` line;
- the model of a run: `model_layers` (config.json's `layers`, or the layer list derived from the other
  fields for runs that predate it), `build_torch_model` (the equivalent `nn.Sequential`, whose state dict
  is `model.safetensors`), `load_torch_model` (a run directory's weights in it), and `build_keras_model`
  (the same architecture in Keras, the Keras tutorial's framework).

Imports of torch and keras are local to the functions that need them, so scripts that only read data
stay light.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "mnist-tch"
DEFAULT_DATA = ROOT / "data" / "mnist"

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
IMAGE_FILES = (TRAIN_IMAGES, TEST_IMAGES)
LABEL_FILES = (TRAIN_LABELS, TEST_LABELS)

#: The `Test accuracy: X` line that mnist-tch, baseline.py and the Keras program print last.
TEST_ACCURACY = re.compile(r"^Test accuracy: ([0-9.]+)$", re.M)
#: An epoch line: `Epoch 3/10 - 1500 steps - 0.6s - loss: ...`.
EPOCH_SECONDS = re.compile(r"^Epoch \d+/\d+ - \d+ steps - ([0-9.]+)s - ", re.M)


# --- where a script may write ----------------------------------------------------------------------

#: The files of a run directory (src/destination.rs's RUN_FILES): no script writes over them.
RUN_FILES = ("config.json", "model.safetensors", "best.safetensors", "initial.safetensors", "optimizer.safetensors",
             "metrics.csv", "metrics.json", "evaluation.json", "learning_curves.png", "confusion_matrix.png", ".lock")


class DestinationError(Exception):
    """A file a script was asked to write cannot or may not be written there (one line)."""


def check_destination(paths, overwrite: bool, flag: str = "--out") -> None:
    """mnist-tch's rule for every file a command writes (src/destination.rs): never over a run
    directory's own files, never over an existing file without --overwrite, missing parent directories
    created, an unwritable place said in one line. Raises DestinationError."""
    for path in map(Path, paths):
        parent = path.parent
        if path.is_dir():
            raise DestinationError(f"{path}: is a directory; give {flag} a file name")
        if path.name in RUN_FILES and (parent / "config.json").is_file():
            raise DestinationError(f"{path}: is a file of the run directory {parent}, which {flag} never replaces "
                                   f"(not even with --overwrite); choose another {flag}")
        if path.exists() and not overwrite:
            raise DestinationError(f"{path}: already exists; choose another {flag} or pass --overwrite to replace it")
        blocking = next((a for a in [parent, *parent.parents] if a.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise DestinationError(f"{path}: cannot be written: {blocking} is a file, not a directory")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DestinationError(f"{path}: cannot be written: cannot create the directory {parent}: "
                                   f"{err.strerror.lower()}") from None
        if not os.access(parent, os.W_OK):
            raise DestinationError(f"{path}: cannot be written (permission denied in {parent}); choose another {flag}")


# --- IDX files ---------------------------------------------------------------------------------------

def idx_path(directory: Path, name: str) -> Path:
    """The file holding `name` in `directory`: raw or .gz, standard (`train-images-idx3-ubyte`) or dot
    spelling (`train-images.idx3-ubyte`), as mnist-tch accepts them."""
    directory = Path(directory)
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise SystemExit(f"error: {directory}: missing {name} (or {name}.gz)")


def read_idx(path: Path, name: str | None = None) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (raw or .gz) into a uint8 array shaped by its header.
    `read_idx(directory, "train-images-idx3-ubyte")` finds the file in a data directory."""
    path = idx_path(path, name) if name is not None else Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise SystemExit(f"error: {path}: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim == 0:
        raise SystemExit(f"error: {path}: not an IDX file of unsigned bytes (magic {magic})")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise SystemExit(f"error: {path}: truncated header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = offset + math.prod(dims)
    if len(data) != expected:
        raise SystemExit(f"error: {path}: {len(data)} bytes, the header needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes `array` (values 0..255, any number of dimensions) as an IDX file of unsigned bytes;
    gzip-compressed when `path` ends in `.gz`."""
    array = np.asarray(array)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{path}: IDX unsigned bytes hold 0..255, got {array.min()}..{array.max()}")
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    body = header + array.astype(np.uint8).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(body) if path.suffix == ".gz" else body)


def write_data_dir(directory: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """Writes the four files of an MNIST-format directory: `train` and `test` are (images [N, rows, cols],
    labels [N])."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for (images_name, labels_name), (images, labels) in zip(zip(IMAGE_FILES, LABEL_FILES), (train, test)):
        write_idx(directory / images_name, images)
        write_idx(directory / labels_name, labels)
    return directory


# --- the data as mnist-tch cuts it ---------------------------------------------------------------------

def keras_split(n: int, fraction: float) -> int:
    """Number of training examples: Keras keeps the first floor(n * (1 - fraction)) for training."""
    return int(math.floor(n * (1.0 - fraction)))


def select_labels(images: np.ndarray, labels: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The examples whose label is in `keep`, in file order, relabelled to the label's position in `keep`
    (mnist-tch's `--labels`)."""
    table = np.full(256, -1, dtype=np.int64)
    table[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep))
    mapped = table[labels.astype(np.int64)]
    mask = mapped >= 0
    return images[mask], mapped[mask]


def load_raw(directory: Path, selection: dict | None = None) -> dict:
    """The four arrays of a data directory as bytes: `train_x`, `test_x` uint8 [N, rows, cols], `train_y`,
    `test_y` int64 [N], with a run's `data.selection` applied the way mnist-tch applies it: `labels` to
    both parts (kept classes relabelled 0..k), then the first `limit` training images. The validation
    split is left to the caller (`keras_split`)."""
    train_x, test_x = (read_idx(directory, n) for n in IMAGE_FILES)
    train_y, test_y = (read_idx(directory, n).astype(np.int64) for n in LABEL_FILES)
    selection = selection or {}
    if selection.get("labels"):
        train_x, train_y = select_labels(train_x, train_y, selection["labels"])
        test_x, test_y = select_labels(test_x, test_y, selection["labels"])
    if selection.get("limit"):
        train_x, train_y = train_x[: selection["limit"]], train_y[: selection["limit"]]
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def to_inputs(pixels: np.ndarray) -> np.ndarray:
    """Network inputs from uint8 pixels: float32 pixel / 255 (a division, as mnist-tch does, so the
    inputs are bit-identical)."""
    return pixels.astype(np.float32) / np.float32(255.0)


def load_data(directory: Path, selection: dict | None = None):
    """(train_images, train_labels, test_images, test_labels): images float32 [N, rows, cols] in [0, 1],
    labels int64 [N]; `selection` as in `load_raw`."""
    raw = load_raw(directory, selection)
    return to_inputs(raw["train_x"]), raw["train_y"], to_inputs(raw["test_x"]), raw["test_y"]


# --- mnist-tch and its output ------------------------------------------------------------------------

def parse_test_accuracy(text: str) -> float:
    """The value of the last `Test accuracy: X` line of a tool's output."""
    found = TEST_ACCURACY.findall(text)
    if not found:
        raise ValueError(f"no 'Test accuracy: X' line in the output:\n{text[-2000:]}")
    return float(found[-1])


def mnist_tch(*args, binary: Path = BINARY, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the binary with `args` (converted to strings); output captured as text. With `check`, a
    failure raises SystemExit with the command and its stderr."""
    command = [str(binary), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return done


def run_config(run_dir: Path) -> dict:
    """A run directory's config.json."""
    return json.loads((Path(run_dir) / "config.json").read_text())


def dump_logits(run_dir: Path, out: Path, binary: Path = BINARY, data: Path | None = None) -> np.ndarray:
    """mnist-tch's own test-set logits for a run (`evaluate --dump-logits`), float32 [N, classes]."""
    extra = ["--data", data] if data else []
    mnist_tch("evaluate", "--model", run_dir, "--device", "cpu", "--dump-logits", out, *extra, binary=binary)
    return np.load(out)


# --- the model ---------------------------------------------------------------------------------------

def derive_layers(model_config: dict) -> list[dict]:
    """The `nn.Sequential` layer list mnist-tch derives from `arch`, `input_shape`, `hidden`,
    `num_classes` and `dropout` (src/model.rs): for runs written before config.json had `layers`
    (they are MLPs), and for overriding those fields (baseline.py --hidden)."""
    arch = model_config.get("arch", "mlp")
    rows, cols = model_config["input_shape"]
    classes, dropout = model_config["num_classes"], model_config.get("dropout", 0.0) or 0.0
    layers: list[dict] = [{"type": "Flatten"}]
    if arch in ("mlp", "linear"):
        widths = [rows * cols, *(model_config.get("hidden") or []), classes]
        for i, (inputs, outputs) in enumerate(zip(widths, widths[1:])):
            layers.append({"type": "Linear", "in_features": inputs, "out_features": outputs})
            if i < len(widths) - 2:
                layers.append({"type": "ReLU"})
                if dropout > 0:
                    layers.append({"type": "Dropout", "p": dropout})
        return layers
    if arch == "cnn":
        conv1, conv2, kernel, pool = 32, 64, 3, 2
        side = lambda n: max(((n - kernel + 1) // pool - kernel + 1) // pool, 0)
        layers += [
            {"type": "Unflatten", "dim": 1, "unflattened_size": [1, rows, cols]},
            {"type": "Conv2d", "in_channels": 1, "out_channels": conv1, "kernel_size": kernel},
            {"type": "ReLU"},
            {"type": "MaxPool2d", "kernel_size": pool},
            {"type": "Conv2d", "in_channels": conv1, "out_channels": conv2, "kernel_size": kernel},
            {"type": "ReLU"},
            {"type": "MaxPool2d", "kernel_size": pool},
            {"type": "Flatten"},
        ]
        if dropout > 0:
            layers.append({"type": "Dropout", "p": dropout})
        layers.append({"type": "Linear", "in_features": conv2 * side(rows) * side(cols), "out_features": classes})
        return layers
    raise ValueError(f"unknown architecture {arch!r} (mlp, linear or cnn)")


def model_layers(model_config: dict) -> list[dict]:
    """config.json's `layers`, or, for runs that predate it, the list derived from the other fields."""
    return model_config.get("layers") or derive_layers(model_config)


def build_torch_model(model_config: dict):
    """The run's model as `nn.Sequential`, built from config.json's `model` (its `layers` list, each
    `{"type": <torch.nn class>, **kwargs}`), so that `load_state_dict(model.safetensors)` fits it:
    `1.weight`, `1.bias`, ... are the indices of the layers in this Sequential. Initialised by PyTorch's
    defaults, which are mnist-tch's."""
    import torch.nn as nn

    def layer(spec: dict):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        if spec["type"] == "Unflatten":
            kwargs["unflattened_size"] = tuple(kwargs["unflattened_size"])
        return getattr(nn, spec["type"])(**kwargs)

    return nn.Sequential(*(layer(spec) for spec in model_layers(model_config)))


def load_torch_model(run_dir: Path, weights: str = "model.safetensors"):
    """(config, model): a run directory's model rebuilt in PyTorch with its weights, in eval mode."""
    import safetensors.torch

    config = run_config(run_dir)
    model = build_torch_model(config["model"])
    model.load_state_dict(safetensors.torch.load_file(str(Path(run_dir) / weights)))
    model.eval()
    return config, model


def build_keras_model(model_config: dict):
    """The same architecture in Keras (the Keras tutorial's framework), from the same layer list: Dense for Linear
    (with the ReLU that follows it as its activation), Conv2D/MaxPooling2D (channels last: Unflatten
    becomes Reshape((rows, cols, 1))), Dropout, and a softmax on the output layer, as the tutorial's
    `Dense(10, activation="softmax")`. The convnet is Keras's "Simple MNIST convnet": Reshape, Conv2D(32, 3,
    relu), MaxPooling2D(2), Conv2D(64, 3, relu), MaxPooling2D(2), Flatten, Dropout, Dense(softmax).
    Keras initialises with its own defaults (Glorot-uniform weights, zero biases)."""
    import keras

    rows, cols = model_config["input_shape"]
    specs = model_layers(model_config)
    layers: list = [keras.Input(shape=(rows, cols))]
    last_weighted = max(i for i, s in enumerate(specs) if s["type"] in ("Linear", "Conv2d"))
    for i, spec in enumerate(specs):
        kind = spec["type"]
        followed_by_relu = i + 1 < len(specs) and specs[i + 1]["type"] == "ReLU"
        activation = "relu" if followed_by_relu else ("softmax" if i == last_weighted else None)
        if kind == "Flatten":
            if i + 1 < len(specs) and specs[i + 1]["type"] == "Unflatten":
                continue  # Keras's Reshape takes the (rows, cols) input as it is
            layers.append(keras.layers.Flatten())
        elif kind == "Unflatten":
            channels, height, width = spec["unflattened_size"]
            layers.append(keras.layers.Reshape((height, width, channels)))
        elif kind == "Linear":
            layers.append(keras.layers.Dense(spec["out_features"], activation=activation))
        elif kind == "Conv2d":
            layers.append(keras.layers.Conv2D(spec["out_channels"], spec["kernel_size"], activation=activation))
        elif kind == "MaxPool2d":
            layers.append(keras.layers.MaxPooling2D(spec["kernel_size"]))
        elif kind == "Dropout":
            layers.append(keras.layers.Dropout(spec["p"]))
        elif kind == "ReLU":
            if i == 0 or specs[i - 1]["type"] not in ("Linear", "Conv2d"):
                layers.append(keras.layers.ReLU())
        else:
            raise ValueError(f"no Keras layer for {kind}")
    return keras.Sequential(layers)
