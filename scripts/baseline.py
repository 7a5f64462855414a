#!/usr/bin/env python3
"""The seed's model in plain PyTorch (or the seed's own Keras program), for comparison with mnist-tch.

Same model, data, split (the last fraction of the training files for validation, as Keras does),
normalisation (pixel / 255), batch size, epochs and Adam settings as mnist-tch, read from one place:
a mnist-tch config.json. Without --config, the script asks the binary for the config it would use
(`mnist-tch train --print-config`), so no hyperparameter is written down twice.

Prints the same per-epoch line as mnist-tch and `Test accuracy: X`.

    .venv/bin/python scripts/baseline.py                       # PyTorch, mnist-tch's defaults
    .venv/bin/python scripts/baseline.py --config runs/train1/config.json
    .venv/bin/python scripts/baseline.py --framework keras     # needs scripts/setup.sh --with-keras
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "mnist-tch"
IMAGE_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
LABEL_FILES = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")


# --- data ------------------------------------------------------------------------------------------

def read_idx(directory: Path, name: str) -> np.ndarray:
    """Reads one IDX file (raw or .gz) into a uint8 array shaped by its header."""
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.exists():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as f:
                data = f.read()
            break
    else:
        raise SystemExit(f"error: {directory}: missing {name} (or {name}.gz)")
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise SystemExit(f"error: {candidate}: not an IDX file of unsigned bytes (magic {magic})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + math.prod(dims)
    if len(data) != expected:
        raise SystemExit(f"error: {candidate}: {len(data)} bytes, the header needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def load_data(directory: Path):
    """(train_images, train_labels, test_images, test_labels): images float32 [N, rows, cols] in
    [0, 1], labels int64 [N]."""
    train_x, test_x = (read_idx(directory, n).astype(np.float32) / 255.0 for n in IMAGE_FILES)
    train_y, test_y = (read_idx(directory, n).astype(np.int64) for n in LABEL_FILES)
    return train_x, train_y, test_x, test_y


def keras_split(n: int, fraction: float) -> int:
    """Number of training examples: Keras keeps the first floor(n * (1 - fraction)) for training."""
    return int(math.floor(n * (1.0 - fraction)))


# --- config ----------------------------------------------------------------------------------------

def load_config(args) -> dict:
    """The run config: from --config, or from `mnist-tch train --print-config` with the given flags."""
    if args.config:
        config = json.loads(Path(args.config).read_text())
    else:
        command = [str(BINARY), "train", "--print-config", "--device", "cpu"]
        if args.data:
            command += ["--data", str(args.data)]
        for flag, value in (("--epochs", args.epochs), ("--seed", args.seed)):
            if value is not None:
                command += [flag, str(value)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr.strip() or f"error: {' '.join(command)} failed")
        config = json.loads(done.stdout)
    # Explicit flags win over the config file.
    if args.data:
        config["data"]["dir"] = str(args.data)
    if args.epochs is not None:
        config["training"]["epochs"] = args.epochs
    if args.seed is not None:
        config["training"]["seed"] = args.seed
    if getattr(args, "batch_size", None) is not None:
        config["training"]["batch_size"] = args.batch_size
    if getattr(args, "hidden", None):
        config["model"]["hidden"] = [int(w) for w in args.hidden.split(",")]
    return config


def build_torch_model(model_config: dict):
    """nn.Sequential(Flatten, Linear, ReLU, [Dropout,] ..., Linear): the module whose state dict matches
    mnist-tch's model.safetensors names (1.weight, 1.bias, 3.weight, ...; 1, 4, 7 with dropout)."""
    import torch.nn as nn

    rows, cols = model_config["input_shape"]
    widths = [rows * cols, *model_config["hidden"], model_config["num_classes"]]
    layers: list = [nn.Flatten()]
    for i, (inputs, outputs) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(inputs, outputs))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
            if model_config.get("dropout", 0.0) > 0:
                layers.append(nn.Dropout(model_config["dropout"]))
    return nn.Sequential(*layers)


def epoch_line(epoch, epochs, steps, seconds, loss, accuracy, val_loss, val_accuracy) -> str:
    return (f"Epoch {epoch}/{epochs} - {steps} steps - {seconds:.1f}s - loss: {loss:.4f} - accuracy: {accuracy:.4f}"
            f" - val_loss: {val_loss:.4f} - val_accuracy: {val_accuracy:.4f}")


# --- PyTorch ---------------------------------------------------------------------------------------

def run_torch(config: dict, device: str, metrics_json: Path | None = None) -> float:
    import torch
    import torch.nn.functional as F

    t = config["training"]
    torch.manual_seed(t["seed"])
    train_x, train_y, test_x, test_y = load_data(Path(config["data"]["dir"]))
    split = keras_split(len(train_x), t["validation_split"])
    dev = torch.device(device)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    x_train, y_train = as_tensor(train_x[:split]), as_tensor(train_y[:split])
    x_valid, y_valid = as_tensor(train_x[split:]), as_tensor(train_y[split:])
    x_test, y_test = as_tensor(test_x), as_tensor(test_y)

    model = build_torch_model(config["model"]).to(dev)
    # Adam, or AdamW when the run used weight decay. (Schedules and early stopping are not mirrored:
    # the baseline reproduces the seed's protocol.)
    adam = torch.optim.AdamW if t.get("weight_decay", 0.0) > 0 else torch.optim.Adam
    optimizer = adam(model.parameters(), lr=t["learning_rate"], betas=(t["adam_beta1"], t["adam_beta2"]),
                     eps=t["adam_epsilon"], weight_decay=t.get("weight_decay", 0.0))

    def evaluate(x, y):
        model.eval()
        with torch.no_grad():
            loss_sum, correct = 0.0, 0
            for start in range(0, len(x), 8192):
                logits = model(x[start:start + 8192])
                loss_sum += F.cross_entropy(logits, y[start:start + 8192], reduction="sum").item()
                correct += (logits.argmax(-1) == y[start:start + 8192]).sum().item()
        model.train()
        return loss_sum / len(x), correct / len(x)

    print(f"Device: {dev}", flush=True)
    history = []
    batch, n = t["batch_size"], len(x_train)
    steps = math.ceil(n / batch)
    for epoch in range(1, t["epochs"] + 1):
        started = time.perf_counter()
        order = torch.randperm(n).to(dev)
        xs, ys = x_train[order], y_train[order]
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for step in range(steps):
            x, y = xs[step * batch:(step + 1) * batch], ys[step * batch:(step + 1) * batch]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss.double() * len(y)
                correct += (logits.argmax(-1) == y).sum()
        val_loss, val_accuracy = evaluate(x_valid, y_valid)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "seconds": seconds, "loss": loss_sum.item() / n, "accuracy": correct.item() / n,
                        "val_loss": val_loss, "val_accuracy": val_accuracy})
        print(epoch_line(epoch, t["epochs"], steps, seconds, loss_sum.item() / n, correct.item() / n, val_loss,
                         val_accuracy), flush=True)
    if metrics_json:
        metrics_json.write_text(json.dumps(history, indent=2) + "\n")
    test_loss, test_accuracy = evaluate(x_test, y_test)
    print(f"Test loss: {test_loss:.4f}")
    print(f"Test accuracy: {test_accuracy:.4f}")
    return test_accuracy


# --- Keras (the seed's own program) ------------------------------------------------------------------

def run_keras(config: dict) -> float:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # no TensorFlow needed; honours a preset backend
    try:
        import keras
    except ImportError:
        raise SystemExit("error: keras is not installed; run scripts/setup.sh --with-keras")

    t, m = config["training"], config["model"]
    keras.utils.set_random_seed(t["seed"])
    train_x, train_y, test_x, test_y = load_data(Path(config["data"]["dir"]))
    rows, cols = m["input_shape"]
    # The seed's program, with its hyperparameters taken from the config.
    layers = [keras.Input(shape=(rows, cols)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(width, activation="relu") for width in m["hidden"]]
    layers += [keras.layers.Dense(m["num_classes"], activation="softmax")]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=t["learning_rate"], beta_1=t["adam_beta1"],
                                                  beta_2=t["adam_beta2"], epsilon=t["adam_epsilon"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    steps = math.ceil(keras_split(len(train_x), t["validation_split"]) / t["batch_size"])

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            print(epoch_line(epoch + 1, t["epochs"], steps, time.perf_counter() - self.started, logs["loss"],
                             logs["accuracy"], logs["val_loss"], logs["val_accuracy"]), flush=True)

    print(f"Device: keras {keras.__version__} on {keras.backend.backend()}", flush=True)
    model.fit(train_x, train_y, epochs=t["epochs"], batch_size=t["batch_size"],
              validation_split=t["validation_split"], verbose=0, callbacks=[EpochLine()])
    test_loss, test_accuracy = model.evaluate(test_x, test_y, verbose=0)
    print(f"Test loss: {test_loss:.4f}")
    print(f"Test accuracy: {test_accuracy:.4f}")
    return test_accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="a mnist-tch config.json to take every setting from")
    parser.add_argument("--data", type=Path, help="MNIST-format directory (default: the config's)")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--framework", choices=("torch", "keras"), default="torch")
    parser.add_argument("--device", default="cpu", help="PyTorch device (torch framework only)")
    parser.add_argument("--batch-size", type=int, help="override the config's batch size")
    parser.add_argument("--hidden", help="override the config's hidden widths, e.g. 1024,1024,512")
    parser.add_argument("--metrics-json", type=Path, help="write each epoch's metrics (full-precision seconds)")
    args = parser.parse_args(argv)
    config = load_config(args)
    if args.framework == "keras":
        run_keras(config)
    else:
        run_torch(config, args.device, args.metrics_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
