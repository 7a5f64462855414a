#!/usr/bin/env python3
"""Prints, as a markdown table, what mnist-tch says for each kind of bad input: the exact message and the
exit code. Builds every case in a temp dir from a tiny valid data set.

    .venv/bin/python scripts/error_table.py
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BINARY = str(ROOT / "target" / "release" / "mnist-tch")
NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x0800 | array.ndim
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.astype(np.uint8).tobytes()


def good(directory: Path, side: int = 8) -> None:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for part, count in (("train", 100), ("test", 20)):
        images, labels = NAMES[part]
        (directory / images).write_bytes(idx(rng.integers(0, 256, (count, side, side))))
        (directory / labels).write_bytes(idx(rng.integers(0, 10, count)))


def keras_arrays() -> dict[str, np.ndarray]:
    """A tiny valid data set as the arrays of Keras's mnist.npz."""
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (100, 8, 8)).astype(np.uint8), "y_train": rng.integers(0, 10, 100).astype(np.uint8),
            "x_test": rng.integers(0, 256, (20, 8, 8)).astype(np.uint8), "y_test": rng.integers(0, 10, 20).astype(np.uint8)}


def npy_bytes(array: np.ndarray) -> bytes:
    out = __import__("io").BytesIO()
    np.lib.format.write_array(out, array)
    return out.getvalue()


def without_root_override() -> None:
    """Runs in the child before exec: drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the capability
    bounding set, so that even root is stopped by file permissions (a read-only directory is then
    read-only for the child as for any user). Not root: nothing to drop, permissions apply anyway."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run(*args: str, as_plain_user: bool = False, **kwargs) -> tuple[int, str]:
    done = subprocess.run([BINARY, *args], capture_output=True, text=True,
                          preexec_fn=without_root_override if as_plain_user else None, **kwargs)
    # mnist-tch prints one line; clap (exit 2) prints its error line, then usage: take the error line.
    lines = done.stderr.strip().splitlines() or [""]
    return done.returncode, next((l for l in lines if l.startswith("error:")), lines[-1])


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    rows = []

    def case(name: str, mutate, *extra: str) -> None:
        data = tmp / name.replace(" ", "-").replace("/", "-")
        good(data)
        mutate(data)
        defaults = [arg for flag, value in (("--device", "cpu"), ("--epochs", "1")) if flag not in extra
                    for arg in (flag, value)]
        code, message = run("train", "--data", str(data), *defaults, "--out", str(tmp / "out"), "--overwrite", *extra)
        rows.append((name, code, message.replace(str(tmp) + "/", "")))

    ti, tl = NAMES["train"]
    case("wrong magic", lambda d: (d / ti).write_bytes(b"\x00\x00\x09\x03" + (d / ti).read_bytes()[4:]))
    case("truncated header", lambda d: (d / ti).write_bytes((d / ti).read_bytes()[:10]))
    case("truncated body", lambda d: (d / ti).write_bytes((d / ti).read_bytes()[:-50]))
    case("empty file", lambda d: (d / tl).write_bytes(b""))
    case("trailing data", lambda d: (d / tl).write_bytes((d / tl).read_bytes() + b"xyz"))
    case("image/label count mismatch", lambda d: (d / tl).write_bytes(idx(np.zeros(99))))
    case("absurd header (2^32-1 images of 2^32-1 x 2^32-1)",
         lambda d: (d / ti).write_bytes((0x803).to_bytes(4, "big") + b"\xff" * 12))
    case("absurd count (2^32-1 images of 8x8)",
         lambda d: (d / ti).write_bytes((0x803).to_bytes(4, "big") + b"\xff\xff\xff\xff" + (8).to_bytes(4, "big") * 2 + b"\0" * 64))
    case("label out of range", lambda d: (d / tl).write_bytes(idx(np.full(100, 12))))
    case("zero images", lambda d: ((d / ti).write_bytes(idx(np.zeros((0, 8, 8)))), (d / tl).write_bytes(idx(np.zeros(0)))))
    case("missing file", lambda d: (d / tl).unlink())
    case("directory instead of a file", lambda d: ((d / tl).unlink(), (d / tl).mkdir()))
    case("swapped images and labels", lambda d: (d / ti).write_bytes(idx(np.zeros(100))))
    case("corrupt .gz", lambda d: ((d / tl).unlink(), (d / (tl + ".gz")).write_bytes(b"\x1f\x8b\x08\x00garbage")))
    case("truncated .gz", lambda d: ((d / ti).unlink(),
                                     (d / (ti + ".gz")).write_bytes(gzip.compress(idx(np.zeros((100, 8, 8))))[:-30])))
    case("--epochs 0", lambda d: None, "--epochs", "0")
    case("--batch-size=-1", lambda d: None, "--batch-size=-1")
    case("--validation-split 1.5", lambda d: None, "--validation-split", "1.5")
    case("--batch-size larger than the data", lambda d: None, "--batch-size", "500")
    case("--hidden 128,x", lambda d: None, "--hidden", "128,x")
    case("--device tpu", lambda d: None, "--device", "tpu")
    case("--device cuda:7", lambda d: None, "--device", "cuda:7")
    rows.append(("data directory missing", *run("train", "--data", str(tmp / "nowhere"), "--device", "cpu")))
    home = tmp / "empty-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MNIST_TCH_DATA", "XDG_DATA_HOME")}
    code, message = run("train", "--device", "cpu", cwd=home, env={**env, "HOME": str(home)})
    rows.append(("no --data and no digit MNIST installed", code, message.replace(str(tmp) + "/", "")))

    # Keras-style .npz files.
    def npz_case(name: str, mutate=None, write=None) -> None:
        path = tmp / (name.replace(" ", "-").replace("/", "-") + ".npz")
        if write:
            write(path)
        else:
            arrays = keras_arrays()
            if mutate:
                mutate(arrays)
            np.savez_compressed(path, **arrays)
        code, message = run("train", "--data", str(path), "--device", "cpu", "--epochs", "1", "--out", str(tmp / "out"),
                            "--overwrite", "--quiet")
        rows.append(("npz: " + name, code, message.replace(str(tmp) + "/", "") if code else "(trains)"))

    def good_npz_bytes() -> bytes:
        path = tmp / "good-for-bytes.npz"
        np.savez_compressed(path, **keras_arrays())
        return path.read_bytes()

    def lying_header(path: Path) -> None:
        # x_train's header says (100, 8, 8) but 100 bytes of pixels follow: tch's reader alone reads past its buffer.
        arrays = keras_arrays()
        with zipfile.ZipFile(path, "w") as archive:
            for key, array in arrays.items():
                data = npy_bytes(array)
                archive.writestr(key + ".npy", data[:len(data) - array.nbytes + 100] if key == "x_train" else data)

    npz_case("good file")
    npz_case("int64 labels", lambda a: a.update(y_train=a["y_train"].astype(np.int64), y_test=a["y_test"].astype(np.int64)))
    npz_case("wrong keys", lambda a: a.update(images=a.pop("x_train")))
    npz_case("float32 images", lambda a: a.update(x_train=a["x_train"].astype(np.float32) / 255))
    npz_case("float labels", lambda a: a.update(y_test=a["y_test"].astype(np.float64)))
    npz_case("flattened images", lambda a: a.update(x_train=a["x_train"].reshape(100, 64)))
    npz_case("image/label count mismatch", lambda a: a.update(y_train=a["y_train"][:99]))
    npz_case("label out of range", lambda a: a["y_test"].__setitem__(3, 12))
    npz_case("negative int64 label", lambda a: a.update(y_train=np.where(np.arange(100) == 7, -1, a["y_train"].astype(np.int64))))
    npz_case("zero images", lambda a: a.update(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, np.uint8)))
    npz_case("train/test sizes differ", lambda a: a.update(x_test=np.zeros((20, 6, 6), np.uint8)))
    npz_case("truncated zip", write=lambda p: p.write_bytes(good_npz_bytes()[:3000]))
    npz_case("corrupt zip data", write=lambda p: p.write_bytes(
        (lambda b: b[:200] + bytes(x ^ 0x5A for x in b[200:260]) + b[260:])(good_npz_bytes())))
    npz_case("header claims more data than the entry holds", write=lying_header)
    npz_case("object array (pickle)", lambda a: a.update(names=np.array(["a", None], dtype=object)))
    (tmp / "a-directory.npz").mkdir()
    rows.append(("npz: a directory named .npz", *run("train", "--data", str(tmp / "a-directory.npz"), "--device", "cpu")))
    rows.append(("npz: missing file", *run("train", "--data", str(tmp / "missing.npz"), "--device", "cpu")))
    good(tmp / "idx-file")
    rows.append(("npz: an IDX file as --data",
                 *run("train", "--data", str(tmp / "idx-file" / ti), "--device", "cpu")))
    rows[-3:] = [(name, code, message.replace(str(tmp) + "/", "")) for name, code, message in rows[-3:]]

    # Run directories.
    data = tmp / "good"
    good(data)
    run_dir = tmp / "run"
    subprocess.run([BINARY, "train", "--data", str(data), "--device", "cpu", "--epochs", "1", "--out", str(run_dir),
                    "--quiet"], check=True, capture_output=True)

    def run_case(name: str, mutate, command: str = "evaluate") -> None:
        broken = tmp / ("run-" + name.replace(" ", "-").replace("/", "-"))
        shutil.copytree(run_dir, broken)
        mutate(broken)
        args = ["evaluate", "--model", str(broken), "--device", "cpu"] if command == "evaluate" else \
            ["export", "--model", str(broken), "--out", str(tmp / "m.pt")]
        code, message = run(*args)
        rows.append((name, code, message.replace(str(tmp) + "/", "")))

    run_case("run dir: config.json missing", lambda d: (d / "config.json").unlink())
    run_case("run dir: config.json malformed", lambda d: (d / "config.json").write_text("{ not json"))
    run_case("run dir: config.json with 1 class", lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"num_classes": 10', '"num_classes": 1')))

    def other_architecture(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        config["model"]["hidden"] = [64]
        del config["model"]["layers"]  # as runs of earlier versions wrote it: the fields alone
        (d / "config.json").write_text(json.dumps(config))
    run_case("run dir: layer list contradicts the fields", lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"hidden": [\n      128\n    ]', '"hidden": [\n      64\n    ]')))
    run_case("run dir: weights of another architecture", other_architecture)
    run_case("run dir: truncated model.safetensors",
             lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]))
    run_case("export: config.json missing", lambda d: (d / "config.json").unlink(), command="export")
    other_case_missing = run("evaluate", "--model", str(tmp / "missing"))
    rows.append(("run dir does not exist", other_case_missing[0], other_case_missing[1].replace(str(tmp) + "/", "")))

    def other_case(name: str, *args: str, as_plain_user: bool = False) -> None:
        code, message = run(*args, as_plain_user=as_plain_user)
        rows.append((name, code, message.replace(str(tmp) + "/", "")))

    other_case("evaluate --weights best.safetensors without --save-best",
               "evaluate", "--model", str(run_dir), "--weights", "best.safetensors", "--device", "cpu")
    export = ("export", "--model", str(run_dir), "--out")
    (tmp / "taken.pt").write_bytes(b"an earlier export")
    other_case("export: --out exists (no --overwrite)", *export, str(tmp / "taken.pt"))
    other_case("export: --out RUN/config (its description would be config.json)", *export, str(run_dir / "config"),
               "--overwrite")
    other_case("export: --out RUN/model.safetensors", *export, str(run_dir / "model.safetensors"), "--overwrite")
    other_case("export: --out a directory", *export, str(tmp))
    read_only = tmp / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    other_case("export: --out in a read-only directory", *export, str(read_only / "model.pt"), as_plain_user=True)
    read_only.chmod(0o755)
    other_case("export: --out under a regular file", *export, str(tmp / "taken.pt" / "model.pt"))
    empty = tmp / "no-pictures"
    empty.mkdir()
    other_case("predict: a directory without pictures", "predict", "--model", str(run_dir), str(empty))
    other_case("predict: the only picture is unreadable", "predict", "--model", str(run_dir), str(tmp / "taken.pt"))
    other_case("train --monitor val-los", "train", "--data", str(data), "--monitor", "val-los")
    other_case("train --num-classes 1", "train", "--data", str(data), "--num-classes", "1")
    other_case("predict --top-k 0", "predict", "--model", str(run_dir), "--top-k", "0", str(empty))
    other_case("plot without a run directory", "plot")
    other_case("train --resume with flags that change the run", "train", "--resume", str(run_dir), "--epochs", "3",
               "--seed", "7", "--batch-size", "8")
    good(tmp / "good-12x12", side=12)
    other_case("train --arch cnn --engine fused", "train", "--data", str(tmp / "good-12x12"), "--arch", "cnn",
               "--engine", "fused")
    other_case("train --arch cnn on 8x8 images", "train", "--data", str(data), "--arch", "cnn")
    other_case("train --arch linear --hidden 64", "train", "--data", str(data), "--arch", "linear", "--hidden", "64")
    other_case("train --precision bf16 (autograd engine)", "train", "--data", str(data), "--precision", "bf16",
               "--out", str(tmp / "bf16"))
    other_case("train --labels 0,1,12 (no image of 12)", "train", "--data", str(data), "--labels", "0,1,12")
    # The one rule for every file a command writes (src/destination.rs), and the files and runs a user names.
    other_case("evaluate --dump-logits RUN/model.safetensors", "evaluate", "--model", str(run_dir), "--device", "cpu",
               "--dump-logits", str(run_dir / "model.safetensors"), "--overwrite")
    other_case("evaluate --dump-logits over an existing file", "evaluate", "--model", str(run_dir), "--device", "cpu",
               "--dump-logits", str(tmp / "taken.pt"))
    other_case("evaluate --weights a path outside the run", "evaluate", "--model", str(run_dir), "--weights",
               str(tmp / "taken.pt"))
    other_case("plot --out under a regular file", "plot", str(run_dir), "--out", str(tmp / "taken.pt" / "plots"))
    other_case("finetune --out its own --from", "finetune", "--from", str(run_dir), "--data", str(data), "--out",
               str(run_dir))
    other_case("train --lr -0.1", "train", "--data", str(data), "--lr", "-0.1")
    other_case("train --lr-schedule plateau:1:1", "train", "--data", str(data), "--lr-schedule", "plateau:1:1")
    other_case("train --labels 0,1 --num-classes 3", "train", "--data", str(data), "--labels", "0,1",
               "--num-classes", "3")
    (tmp / "model.pt2").write_bytes(b"PK\x03\x04")
    other_case("predict --model model.pt2", "predict", "--model", str(tmp / "model.pt2"), str(tmp / "taken.pt"))
    edited = tmp / "edited-run"
    shutil.copytree(run_dir, edited)
    config = json.loads((edited / "config.json").read_text())
    config["training"]["learning_rate"], config["state"]["epochs_completed"] = -5, 99
    (edited / "config.json").write_text(json.dumps(config))
    other_case("config.json edited: learning_rate -5, epochs_completed 99", "summary", str(edited))
    config["tool"] = 3
    (edited / "config.json").write_text(json.dumps(config))
    other_case("config.json edited: tool is a number", "summary", str(edited))

    # A run killed before its first epoch ended: a config in training, nothing else.
    killed = tmp / "killed-run"
    shutil.copytree(run_dir, killed)
    config = json.loads((killed / "config.json").read_text())
    config["state"] = {"status": "training", "epochs_completed": 0, "best_epoch": None}
    (killed / "config.json").write_text(json.dumps(config))
    for name in ("model.safetensors", "metrics.csv", "metrics.json", "evaluation.json"):
        (killed / name).unlink()
    other_case("evaluate a run killed before its first epoch", "evaluate", "--model", str(killed), "--device", "cpu")

    # A second writer while a run trains.
    busy = tmp / "busy"
    first = subprocess.Popen([BINARY, "train", "--data", str(data), "--device", "cpu", "--epochs", "100000", "--out",
                              str(busy), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        try:
            if json.loads((busy / "config.json").read_text())["state"]["epochs_completed"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    code, message = run("train", "--resume", str(busy), "--epochs", "100001", "--device", "cpu")
    rows.append(("train --resume on a run another process is training", code,
                 message.replace(str(tmp) + "/", "").replace(str(first.pid), "PID")))
    first.terminate()
    first.wait()

    print("| case | exit | message |\n|---|---|---|")
    for name, code, message in rows:
        print(f"| {name} | {code} | `{message}` |")
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
