#!/usr/bin/env python3
"""The Keras tutorial's model in plain PyTorch (or the tutorial's own Keras program), for comparison with mnist-tch.

Same model (whatever architecture the config describes: the MLP, the linear model or the convnet, built
from config.json's layer list by scripts/common.py), data (with the run's --labels/--limit selection), split (the last fraction of the training files for validation, as Keras does),
normalisation (pixel / 255), batch size, epochs and Adam settings as mnist-tch, read from one place:
a mnist-tch config.json. Without --config, the script asks the binary for the config it would use
(`mnist-tch train --print-config`), so no hyperparameter is written down twice.

Prints the same per-epoch line as mnist-tch and `Test accuracy: X`.

    .venv/bin/python scripts/baseline.py                       # PyTorch, mnist-tch's defaults
    .venv/bin/python scripts/baseline.py --config runs/train1/config.json
    .venv/bin/python scripts/baseline.py --arch cnn            # Keras's Simple MNIST convnet in PyTorch
    .venv/bin/python scripts/baseline.py --framework keras     # needs scripts/setup.sh --with-keras
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BINARY, build_keras_model, build_torch_model, describe_model, input_frame,  # noqa: E402
                    keras_split, load_raw, to_inputs, torch_adam)


# --- config ----------------------------------------------------------------------------------------

def load_config(args) -> dict:
    """The run config: from --config, or from `mnist-tch train --print-config` with the given flags."""
    if args.config:
        config = json.loads(Path(args.config).read_text())
    else:
        command = [str(BINARY), "train", "--print-config", "--device", "cpu"]
        if args.data:
            command += ["--data", str(args.data)]
        for flag, value in (("--epochs", args.epochs), ("--seed", args.seed), ("--arch", getattr(args, "arch", None)),
                            ("--hidden", getattr(args, "hidden", None))):
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
    model = config["model"]
    arch = getattr(args, "arch", None) or model.get("arch", "mlp")
    new_arch = arch != model.get("arch", "mlp")
    # Another architecture takes train's defaults for what the flags leave out; the same one keeps the config's.
    hidden = [int(w) for w in args.hidden.split(",")] if getattr(args, "hidden", None) else (
        None if new_arch else model.get("hidden"))
    dropout = args.dropout if getattr(args, "dropout", None) is not None else (
        None if new_arch else model.get("dropout"))
    if new_arch or hidden != model.get("hidden") or dropout != model.get("dropout"):
        # The binary builds the model of the new fields, with its layer list, as train would.
        config["model"] = describe_model(arch=arch, input_shape=input_frame(model), hidden=hidden,
                                         num_classes=model["num_classes"], dropout=dropout)
    return config


#: What the baseline reproduces of a config's training settings: everything not named by
#: `unsupported_settings` (model, data selection, split, batch size, epochs, seed, learning rate, Adam's betas
#: and epsilon, AdamW's weight decay, shuffled or file order). The engine does not change the arithmetic
#: being compared, and --save-best only keeps an extra file.
HONOURED = ("model", "data selection", "validation_split", "batch_size", "epochs", "learning_rate", "adam_beta1/2",
            "adam_epsilon", "weight_decay", "label_smoothing", "shuffle")


def unsupported_settings(config: dict, framework: str = "torch") -> list[str]:
    """The training settings of `config` that the baseline does not reproduce, as `name value` phrases."""
    t = config["training"]
    found = []
    if str(t.get("lr_schedule", "constant")) != "constant":
        found.append(f"lr_schedule {t['lr_schedule']}")
    if t.get("random_shift", 0):
        found.append(f"random_shift {t['random_shift']}")
    if t.get("early_stopping"):
        stopping = t["early_stopping"]
        found.append(f"early_stopping (patience {stopping.get('patience')}, min_delta {stopping.get('min_delta')})")
    if t.get("precision", "f32") != "f32":
        found.append(f"precision {t['precision']}")
    if config.get("lineage"):
        found.append(f"fine-tuning from {config['lineage'].get('parent')} (its weights and frozen layers)")
    if framework == "keras" and t.get("weight_decay", 0.0) > 0:
        found.append(f"weight_decay {t['weight_decay']} (the Keras baseline is the tutorial's plain Adam)")
    if framework == "keras" and t.get("label_smoothing", 0.0) > 0:
        found.append(f"label_smoothing {t['label_smoothing']} (the Keras baseline's sparse cross-entropy has none)")
    return found


def refuse_unsupported(config: dict, framework: str, source: str) -> None:
    """Exits with one line when the baseline would train something other than the config describes."""
    found = unsupported_settings(config, framework)
    if found:
        raise SystemExit(f"error: {source}: the {framework} baseline does not reproduce {', '.join(found)}; "
                         f"compare a run trained without them (it honours {', '.join(HONOURED)})")


def load_data(config: dict):
    """The run's data as float32 inputs (pixel / 255) and int64 labels, with its selection applied
    (--labels, --limit): (train_x, train_y, test_x, test_y)."""
    raw = load_raw(Path(config["data"]["dir"]), config["data"].get("selection"))
    return to_inputs(raw["train_x"]), raw["train_y"], to_inputs(raw["test_x"]), raw["test_y"]


def epoch_line(epoch, epochs, steps, seconds, loss, accuracy, val_loss, val_accuracy) -> str:
    return (f"Epoch {epoch}/{epochs} - {steps} steps - {seconds:.1f}s - loss: {loss:.4f} - accuracy: {accuracy:.4f}"
            f" - val_loss: {val_loss:.4f} - val_accuracy: {val_accuracy:.4f}")


# --- PyTorch ---------------------------------------------------------------------------------------

def run_torch(config: dict, device: str, metrics_json: Path | None = None) -> float:
    import torch
    import torch.nn.functional as F

    t = config["training"]
    torch.manual_seed(t["seed"])
    train_x, train_y, test_x, test_y = load_data(config)
    split = keras_split(len(train_x), t["validation_split"])
    dev = torch.device(device)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)
    x_train, y_train = as_tensor(train_x[:split]), as_tensor(train_y[:split])
    x_valid, y_valid = as_tensor(train_x[split:]), as_tensor(train_y[split:])
    x_test, y_test = as_tensor(test_x), as_tensor(test_y)

    model = build_torch_model(config["model"]).to(dev)
    # Adam, or AdamW when the run used weight decay. (Schedules, early stopping and bf16 are refused by
    # refuse_unsupported before training.)
    optimizer = torch_adam(model.parameters(), t)

    def evaluate(x, y):
        model.eval()
        with torch.no_grad():
            loss_sum, correct = 0.0, 0
            for start in range(0, len(x), 2560):
                logits = model(x[start:start + 2560])
                loss_sum += F.cross_entropy(logits, y[start:start + 2560], reduction="sum").item()
                correct += (logits.argmax(-1) == y[start:start + 2560]).sum().item()
        model.train()
        return loss_sum / len(x), correct / len(x)

    print(f"Device: {dev}", flush=True)
    history = []
    batch, n = t["batch_size"], len(x_train)
    steps = math.ceil(n / batch)
    for epoch in range(1, t["epochs"] + 1):
        started = time.perf_counter()
        order = (torch.randperm(n) if t.get("shuffle", True) else torch.arange(n)).to(dev)
        xs, ys = x_train[order], y_train[order]
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for step in range(steps):
            x, y = xs[step * batch:(step + 1) * batch], ys[step * batch:(step + 1) * batch]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=t.get("label_smoothing", 0.0))
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


# --- Keras (the tutorial's own program) ------------------------------------------------------------------

def run_keras(config: dict) -> float:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # no TensorFlow needed; honours a preset backend
    try:
        import keras
    except ImportError:
        raise SystemExit("error: keras is not installed; run scripts/setup.sh --with-keras")

    t, m = config["training"], config["model"]
    keras.utils.set_random_seed(t["seed"])
    train_x, train_y, test_x, test_y = load_data(config)
    # The tutorial's program (or Keras's Simple MNIST convnet), with its hyperparameters taken from the config.
    model = build_keras_model(m)
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
              validation_split=t["validation_split"], shuffle=t.get("shuffle", True), verbose=0,
              callbacks=[EpochLine()])
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
    parser.add_argument("--arch", choices=("mlp", "linear", "cnn"), help="override the config's architecture")
    parser.add_argument("--hidden", help="override the config's hidden widths, e.g. 1024,1024,512")
    parser.add_argument("--dropout", type=float, help="override the config's dropout rate")
    parser.add_argument("--metrics-json", type=Path, help="write each epoch's metrics (full-precision seconds)")
    args = parser.parse_args(argv)
    config = load_config(args)
    refuse_unsupported(config, args.framework, args.config or "mnist-tch's defaults")
    if args.framework == "keras":
        run_keras(config)
    else:
        run_torch(config, args.device, args.metrics_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
