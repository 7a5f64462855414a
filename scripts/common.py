"""What every Python script and test of mnist-tch shares, written once.

- where things are: `ROOT`, `BINARY` (target/release/mnist-tch), `DEFAULT_DATA` (data/mnist);
- what the binary says of its own rules (`mnist-tch describe`), asked instead of copied: `run_files` (the
  files of a run directory), `check_destination` (where a script may write a file), `describe_model` and
  `model_layers` (the model and layer list the binary builds from a model's fields);
- the independent reference: `read_idx` / `write_idx` (the IDX format), `load_raw` / `load_data`
  (a run's `data.selection`: `--labels` through `select_labels`, `--limit`) and `keras_split` (the
  validation split: the LAST fraction of the training files, as Keras does). The baselines and parity
  checks read the data with these, on their own, so that a mistake in the binary's reader shows as a
  difference rather than being shared; the tests write their fixtures with `write_idx`. They must agree
  with the binary (tests/python/test_common.py checks them against `train --print-config`);
- mnist-tch's output: `parse_test_accuracy` reads its `Test accuracy: X` line;
- the model of a run: `build_torch_model` (the equivalent `nn.Sequential`, or scripts/vit.py's
  `VisionTransformer` for `--arch vit`, whose state dict is `model.safetensors`), `load_torch_model` (a run directory's weights in it), and `build_keras_model`
  (the same architecture in Keras, the Keras tutorial's framework).

Imports of torch and keras are local to the functions that need them, so scripts that only read data
stay light.
"""

from __future__ import annotations

import functools
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


# --- what the binary says of its own rules -----------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _describe(binary: str, args: tuple[str, ...]) -> str:
    done = subprocess.run([binary, "describe", "--json", *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"error: {binary} describe failed (exit {done.returncode})"]
        raise SystemExit(lines[0] if lines[0].startswith("error: ") else f"error: {lines[0]}")
    return done.stdout


def describe(*args, binary: Path = BINARY) -> dict:
    """`mnist-tch describe --json ARGS`: the binary's own account of its rules (asked once per process for
    the same arguments). A failure raises SystemExit with the binary's one line."""
    return json.loads(_describe(str(binary), tuple(map(str, args))))  # a fresh dict: callers may edit it


def run_files(binary: Path = BINARY) -> tuple[str, ...]:
    """The files of a run directory (src/destination.rs's RUN_FILES, as the binary lists them): no script
    writes over them."""
    return tuple(describe(binary=binary)["run_files"])


class DestinationError(Exception):
    """A file a script was asked to write cannot or may not be written there (one line)."""


def check_destination(paths, overwrite: bool, flag: str = "--out", binary: Path = BINARY) -> None:
    """mnist-tch's rule for every file a command writes, applied by the binary itself
    (`mnist-tch describe --check-destination FLAG`): never over a run directory's own files, never over an
    existing file without --overwrite, missing parent directories created, an unwritable place said in one
    line. Raises DestinationError with that line (without `error: `)."""
    paths = [str(p) for p in paths]
    if not paths:
        return
    command = [str(binary), "describe", "--check-destination", flag, *(["--overwrite"] if overwrite else []),
               "--", *paths]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        line = (done.stderr.strip().splitlines() or [f"{' '.join(command)} failed (exit {done.returncode})"])[0]
        raise DestinationError(line.removeprefix("error: "))


def describe_model(arch: str | None = None, input_shape=None, hidden=None, num_classes: int | None = None,
                   dropout: float | None = None, binary: Path = BINARY) -> dict:
    """The model config (config.json's `model`, `layers` included) that mnist-tch builds from these
    fields, train's defaults for those left out or empty (`mnist-tch describe --json --arch ...`). A
    model the binary refuses raises SystemExit with its one line."""
    args: list = []
    if arch:
        args += ["--arch", arch]
    if input_shape:
        args += ["--input", "x".join(str(int(d)) for d in input_shape)]
    if hidden:
        args += ["--hidden", ",".join(str(int(w)) for w in hidden)]
    if num_classes is not None:
        args += ["--num-classes", int(num_classes)]
    if dropout is not None:
        args += ["--dropout", repr(float(dropout))]
    if not args:
        raise ValueError("describe_model needs at least one of the model's fields")
    return describe(*args, binary=binary)["model"]


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
    `read_idx(directory, "train-images-idx3-ubyte")` finds the file in a data directory. An independent
    reader (src/idx.rs is the binary's): what the baselines compare against must not share its bugs."""
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
    gzip-compressed when `path` ends in `.gz`. The tests' fixture writer, independent of src/idx.rs."""
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


# --- the data as mnist-tch cuts it, read independently ------------------------------------------------

def keras_split(n: int, fraction: float) -> int:
    """Number of training examples: Keras keeps the first floor(n * (1 - fraction)) for training. The
    independent reference for src/data.rs's `validation_split`, which must give the same count."""
    return int(math.floor(n * (1.0 - fraction)))


def select_labels(images: np.ndarray, labels: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The examples whose label is in `keep`, in file order, relabelled to the label's position in `keep`
    (mnist-tch's `--labels`). The independent reference for src/data.rs's `select_labels`."""
    table = np.full(256, -1, dtype=np.int64)
    table[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep))
    mapped = table[labels.astype(np.int64)]
    mask = mapped >= 0
    return images[mask], mapped[mask]


def load_raw(directory: Path, selection: dict | None = None) -> dict:
    """The four arrays of a data directory as bytes: `train_x`, `test_x` uint8 [N, rows, cols], `train_y`,
    `test_y` int64 [N], with a run's `data.selection` applied the way mnist-tch applies it: `labels` to
    both parts (kept classes relabelled 0..k), then the first `limit` training images. The validation
    split is left to the caller (`keras_split`). Read here, independently of the binary (the baselines'
    and parity checks' own reading of the data), by the same rules."""
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

def input_frame(model_config: dict) -> tuple[int, int, int]:
    """(channels, rows, cols) of a run's model: config.json's `input_shape` with its `channels`, which
    is written only when not 1 (grey runs, old runs)."""
    rows, cols = model_config["input_shape"]
    return int(model_config.get("channels", 1)), int(rows), int(cols)


def model_layers(model_config: dict, binary: Path = BINARY) -> list[dict]:
    """config.json's `layers`, or, for runs that predate it, the list the binary derives from the other
    fields (asked with `describe_model`; those runs are MLPs when `arch` is missing)."""
    if model_config.get("layers"):
        return model_config["layers"]
    return describe_model(arch=model_config.get("arch", "mlp"), input_shape=input_frame(model_config),
                          hidden=model_config.get("hidden"), num_classes=model_config["num_classes"],
                          dropout=model_config.get("dropout") or 0.0, binary=binary)["layers"]


def build_torch_model(model_config: dict):
    """The run's model as `nn.Sequential`, built from config.json's `model` (its `layers` list, each
    `{"type": <torch.nn class>, **kwargs}`), so that `load_state_dict(model.safetensors)` fits it:
    `1.weight`, `1.bias`, ... are the indices of the layers in this Sequential. Initialised by PyTorch's
    defaults, which are mnist-tch's."""
    import torch.nn as nn

    if model_config.get("arch") == "vit":
        from vit import build  # scripts/vit.py: the Vision Transformer's twin, not a Sequential

        return build(model_config)

    def layer(spec: dict):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        if spec["type"] == "Unflatten":
            kwargs["unflattened_size"] = tuple(kwargs["unflattened_size"])
        return getattr(nn, spec["type"])(**kwargs)

    return nn.Sequential(*(layer(spec) for spec in model_layers(model_config)))


def torch_adam(params, training: dict, lr: float | None = None):
    """torch.optim.Adam with a run's betas and epsilon (config.json's `training`), AdamW when the run decayed
    its weights: what mnist-tch's nn::Adam / nn::AdamW ran. `lr` defaults to the run's."""
    import torch

    decay = training.get("weight_decay", 0.0)
    adam = torch.optim.AdamW if decay > 0 else torch.optim.Adam
    return adam(params, lr=training["learning_rate"] if lr is None else lr,
                betas=(training["adam_beta1"], training["adam_beta2"]), eps=training["adam_epsilon"], weight_decay=decay)


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

    channels, rows, cols = input_frame(model_config)
    if channels != 1:
        raise SystemExit(f"the Keras model is built for grey frames; this run's frame has {channels} channels")
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
