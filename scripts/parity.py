#!/usr/bin/env python3
"""Training parity: a mnist-tch training run replayed step for step in plain PyTorch.

mnist-tch writes the weights before the first step (`train --save-initial` → initial.safetensors) and
walks its batches in an order Python can reproduce: file order with `--no-shuffle`, otherwise, for epoch
e, `torch.manual_seed(seed * 1000003 + e); torch.randperm(n)` on libtorch's CPU generator, which tch and
PyTorch share. From those weights and batches, plain PyTorch — the run's `nn.Sequential` rebuilt from
config.json, pixel / 255 inputs, `F.cross_entropy`, Adam (AdamW with weight decay) at the rate of each
epoch in metrics.json, the last batch taking the remainder — must end with the weights mnist-tch saved:
every element within 1e-5.

`--random-shift P` is replayed too: each epoch's moves are drawn after the shuffle, as mnist-tch draws them
(`torch.manual_seed(shift_seed(seed, e)); torch.randint(-P, P + 1, (n, 2))`), and applied the same way.

Dropout is replayed too: mnist-tch and PyTorch both call libtorch's `at::dropout` (a Bernoulli mask on the
CPU generator) once per step, in the same order, after the same shuffle draws; in a --no-shuffle run the
generator's state is that left by the weight initialisation, which the replay reproduces by drawing
PyTorch's own initialisation from the seed first (the same number of uniform draws; the drawn values are
then replaced by initial.safetensors).

    .venv/bin/python scripts/parity.py [--data DIR] [--arch mlp|linear|cnn|vit] [--engine autograd|fused]
                                       [--limit N] [--epochs 1] [--train-args "..."] [--out runs/parity]
    .venv/bin/python scripts/parity.py --run RUN_DIR     # replay an existing run (trained with --save-initial)

Trains one mnist-tch run per order (shuffled, file order) and replays each twice: with Adam written op
for op as libtorch's C++ torch::optim::Adam computes it (what tch's nn::Adam runs), and with
torch.optim.Adam, which computes the same update with one op rounded differently (m.lerp_ instead of
m.mul_().add_()). Prints the largest absolute weight difference and the largest difference of an
epoch's mean training loss. The check (PASS/FAIL, exit 1 on a FAIL) is the autograd engine against the
libtorch formula: measured bit-identical (0.0) for the MLP, the linear model and the CNN with dropout, in
both orders. torch.optim.Adam's replay and the fused engine's (own backward pass and Adam arithmetic) are
reported as "info": they start within ~1e-7, but over an epoch a rounding difference can flip a ReLU unit
at the edge, and Adam, which divides by the gradient's own scale, turns that into full-size steps that
spread (measured: digit MNIST, MLP in file order: every weight within 3.7e-7 after 360 steps; by step 400
hidden unit 26's weights differ by 5e-4, and after the epoch every weight differs, by up to 0.36).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BINARY, DEFAULT_DATA, ROOT, build_torch_model, input_frame, keras_split, load_raw,  # noqa: E402
                    mnist_tch, run_config, torch_adam)

TOLERANCE = 1e-5
INITIAL_WEIGHTS = "initial.safetensors"
ORDERS = ("shuffled", "no-shuffle")
#: "torch": torch.optim.Adam / AdamW, what a PyTorch user writes. "libtorch": the same algorithm written
#: as libtorch's C++ torch::optim::Adam / AdamW computes it (the autograd engine's nn::Adam), op for op.
OPTIMIZERS = ("torch", "libtorch")


def libtorch_adam(params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float = 0.0):
    """Adam (AdamW when weight_decay > 0) in the order of operations of libtorch's C++
    torch::optim::Adam/AdamW (torch/csrc/api/src/optim/adam.cpp, adamw.cpp), which tch's nn::Adam calls:
    m.mul_(b1).add_(g, 1 - b1); v.mul_(b2).addcmul_(g, g, 1 - b2); p.addcdiv_(m, v.sqrt() / sqrt(c2) + eps,
    -lr / c1). torch.optim.Adam computes the same update with m.lerp_(g, 1 - b1) and so rounds differently
    in the last bit."""
    import torch

    class LibtorchAdam(torch.optim.Optimizer):
        def __init__(self):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                    state["step"] += 1
                    correction1 = 1 - beta1 ** state["step"]
                    correction2 = 1 - beta2 ** state["step"]
                    if group["weight_decay"] > 0:
                        p.mul_(1 - group["lr"] * group["weight_decay"])  # AdamW's decoupled decay
                    state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (state["exp_avg_sq"].sqrt() / math.sqrt(correction2)).add_(group["eps"])
                    p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / correction1)

    return LibtorchAdam()


def shuffle_seed(seed: int, epoch: int) -> int:
    """The generator seed of an epoch's shuffle in mnist-tch (`training::shuffle_seed`)."""
    return seed * 1_000_003 + epoch


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool):
    """The order of the training examples in `epoch`, as mnist-tch draws it (`training::epoch_order`)."""
    import torch

    if not shuffle:
        return torch.arange(n)
    torch.manual_seed(shuffle_seed(seed, epoch))
    return torch.randperm(n)


def shift_seed(seed: int, epoch: int) -> int:
    """The generator seed of an epoch's --random-shift moves in mnist-tch (`augment::shift_seed`)."""
    return seed * 1_000_033 + epoch + 7_919


def epoch_moves(seed: int, epoch: int, n: int, pixels: int):
    """The (rows, columns) move of each of the `n` training examples in `epoch` (`augment::EpochShifts`)."""
    import torch

    torch.manual_seed(shift_seed(seed, epoch))
    return torch.randint(-pixels, pixels + 1, (n, 2))


def shifted(images, moves, frame: tuple[int, int, int], pixels: int):
    """`images` (uint8 [B, pixels]) each moved by its row of `moves`, zeros coming in (`augment::shift`)."""
    import torch
    import torch.nn.functional as F

    b, (c, h, w) = len(images), frame
    padded = F.pad(images.view(b, c, h, w), (pixels,) * 4)
    start = pixels - moves
    rows = start[:, 0].view(b, 1, 1, 1) + torch.arange(h).view(1, 1, h, 1)
    cols = start[:, 1].view(b, 1, 1, 1) + torch.arange(w).view(1, 1, 1, w)
    return padded[torch.arange(b).view(b, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols].reshape(b, -1)


def replay(run_dir: Path, data: Path | None = None, optimizer: str = "torch") -> dict:
    """Replays the training of `run_dir` (trained with --save-initial) in plain PyTorch and compares
    the weights it ends with to the run's model.safetensors. `optimizer`: "torch" (torch.optim.Adam) or
    "libtorch" (`libtorch_adam`). Returns the largest absolute difference overall and per tensor, the
    largest difference of an epoch's mean training loss, and what was replayed."""
    import safetensors.torch
    import torch
    import torch.nn.functional as F

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    t, m = config["training"], config["model"]
    initial = run_dir / INITIAL_WEIGHTS
    if not initial.exists():
        raise SystemExit(f"error: {initial} is missing: train the run with --save-initial")
    if t.get("early_stopping"):
        raise SystemExit("error: the run used early stopping (its final weights are a restored epoch): not replayable")
    if t.get("precision", "f32") != "f32":
        raise SystemExit(f"error: the run trained with --precision {t['precision']}; the replay is float32")
    if config.get("state", {}).get("resumes"):
        raise SystemExit("error: the run was resumed; the replay starts from initial.safetensors in one go")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs = config["state"]["epochs_completed"]
    if epochs < 1 or len(metrics) < epochs:
        raise SystemExit(f"error: {run_dir} has no completed epoch to replay")

    raw = load_raw(Path(data or config["data"]["dir"]), config["data"].get("selection"))
    split = keras_split(len(raw["train_x"]), t["validation_split"])
    images = torch.from_numpy(raw["train_x"][:split].reshape(split, -1).copy())  # uint8 [n, pixels]
    labels = torch.from_numpy(raw["train_y"][:split].copy())
    n, batch, seed, shuffle = split, t["batch_size"], t["seed"], t.get("shuffle", True)
    accumulate = t.get("accumulate", 1)
    pixels = t.get("random_shift", 0)
    smoothing = t.get("label_smoothing", 0.0)
    frame = input_frame(m)

    # PyTorch's initialisation drawn from the seed, as mnist-tch draws its own: afterwards the CPU generator
    # is where mnist-tch's is when its first step starts (what dropout in a --no-shuffle run draws from).
    torch.manual_seed(seed)
    model = build_torch_model(m)
    model.load_state_dict(safetensors.torch.load_file(str(initial)))
    frozen = set((config.get("lineage") or {}).get("frozen", []))
    trainable = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)
        if name not in frozen:
            trainable.append(parameter)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    optimizer_name = optimizer
    if optimizer == "libtorch":
        optimizer = libtorch_adam(trainable, lr=t["learning_rate"], betas=(t["adam_beta1"], t["adam_beta2"]),
                                  eps=t["adam_epsilon"], weight_decay=t.get("weight_decay", 0.0))
    else:
        optimizer = torch_adam(trainable, t)
    model.train()
    losses, steps = [], 0
    for epoch in range(1, epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = metrics[epoch - 1]["lr"]  # the rate mnist-tch trained this epoch with (any schedule)
        order = epoch_order(seed, epoch, n, shuffle)
        moves = epoch_moves(seed, epoch, n, pixels) if pixels else None

        def inputs(rows):
            batch = images[rows] if moves is None else shifted(images[rows], moves[rows], frame, pixels)
            return batch.float().div_(255.0)

        loss_sum = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, batch * accumulate):
            rows = order[start:start + batch * accumulate]
            optimizer.zero_grad()
            if len(rows) > batch:  # --accumulate: each micro-batch's mean loss weighted by its share
                loss = torch.zeros(())
                for micro in rows.split(batch):
                    weighted = F.cross_entropy(model(inputs(micro)), labels[micro], label_smoothing=smoothing) * (
                        len(micro) / len(rows))
                    weighted.backward()
                    loss = loss + weighted.detach()
            else:
                loss = F.cross_entropy(model(inputs(rows)), labels[rows], label_smoothing=smoothing)
                loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(rows)
            steps += 1
        losses.append(loss_sum.item() / n)

    final = safetensors.torch.load_file(str(run_dir / "model.safetensors"))
    state = model.state_dict()
    per_tensor = {name: float((state[name] - final[name]).abs().max()) for name in final}
    loss_diffs = [abs(ours - theirs["loss"]) for ours, theirs in zip(losses, metrics)]
    return {
        "run": str(run_dir),
        "arch": m.get("arch", "mlp"),
        "engine": t.get("engine", "fused"),
        "order": "shuffled" if shuffle else "no-shuffle",
        "optimizer": optimizer_name,
        "dropout": m.get("dropout", 0.0),
        "accumulate": accumulate,
        "random_shift": pixels,
        "label_smoothing": smoothing,
        "weight_decay": t.get("weight_decay", 0.0),
        "epochs": epochs,
        "steps": steps,
        "max_abs_diff": max(per_tensor.values()),
        "per_tensor": per_tensor,
        "loss_abs_diff": max(loss_diffs),
        "pass": max(per_tensor.values()) <= TOLERANCE,
    }


def train_and_replay(out: Path, data: Path, order: str, train_args: list[str], epochs: int = 1,
                     binary: Path = BINARY, optimizers: tuple[str, ...] = ("torch",)) -> list[dict]:
    """Trains a mnist-tch run into `out` (--save-initial, `order` = shuffled or no-shuffle, `epochs`,
    `train_args` such as --arch cnn or --engine fused) and replays it in PyTorch once per optimizer
    formulation (`replay`); one result each."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    started = time.perf_counter()
    mnist_tch("train", "--data", data, "--out", out, "--overwrite", "--device", "cpu", "--quiet", "--epochs", epochs,
              "--save-initial", *(["--no-shuffle"] if order == "no-shuffle" else []), *train_args, binary=binary)
    trained = time.perf_counter()
    results = []
    for optimizer in optimizers:
        replay_started = time.perf_counter()
        result = replay(out, optimizer=optimizer)
        result.update(mnist_tch_seconds=trained - started, replay_seconds=time.perf_counter() - replay_started,
                      train_args=" ".join(map(str, train_args)))
        results.append(result)
    return results


OPTIMIZER_NAMES = {"torch": "torch.optim.Adam", "libtorch": "libtorch's Adam formula"}


def checked(result: dict) -> bool:
    """Whether a replay is a check (it should be bit-exact): the autograd engine (tch's nn::Adam, libtorch's
    autograd) against PyTorch with libtorch's Adam formula. torch.optim.Adam's replays and the fused
    engine's (its own backward pass and Adam arithmetic) are measurements."""
    return result["optimizer"] == "libtorch" and result["engine"] == "autograd"


def describe(result: dict) -> str:
    extras = f", random shift {result['random_shift']}" if result.get("random_shift") else ""
    extras += f", label smoothing {result['label_smoothing']}" if result.get("label_smoothing") else ""
    decay = result.get("weight_decay", 0.0)
    optimizer = OPTIMIZER_NAMES[result["optimizer"]]
    if decay:
        optimizer = f"{optimizer.replace('Adam', 'AdamW')} (decay {decay})"
    verdict = ("PASS" if result["pass"] else "FAIL") if checked(result) else (
        "info (within 1e-5)" if result["pass"] else "info (over 1e-5)")
    return (f"{verdict}: {result['arch']} {result['engine']} {result['order']}"
            f" (dropout {result['dropout']}{extras}, {result['epochs']} epoch(s), {result['steps']} steps) vs PyTorch with "
            f"{optimizer}: weights max abs diff {result['max_abs_diff']:.2e} "
            f"(tolerance {TOLERANCE:.0e}), mean loss diff {result['loss_abs_diff']:.2e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--arch", choices=("mlp", "linear", "cnn", "vit"), default="mlp")
    parser.add_argument("--engine", choices=("autograd", "fused"), default="autograd")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, help="train on the first N training images only (mnist-tch --limit)")
    parser.add_argument("--orders", default=",".join(ORDERS), help="shuffled, no-shuffle or both (comma-separated)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help="torch (torch.optim.Adam), libtorch (libtorch's C++ Adam, op for op) or both")
    parser.add_argument("--train-args", default="", help="more flags for mnist-tch train, e.g. \"--dropout 0\"")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "parity")
    parser.add_argument("--binary", type=Path, default=BINARY)
    parser.add_argument("--run", type=Path, help="replay this existing run instead of training new ones")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    optimizers = tuple(o.strip() for o in args.optimizers.split(","))
    if args.run:
        results = [replay(args.run, optimizer=o) for o in optimizers]
        for result in results:
            print(describe(result))
    else:
        train_args = ["--arch", args.arch, "--engine", args.engine, *shlex.split(args.train_args)]
        if args.limit:
            train_args += ["--limit", str(args.limit)]
        results = []
        for order in args.orders.split(","):
            out = args.out / f"{args.arch}-{args.engine}-{order}"
            for result in train_and_replay(out, args.data, order.strip(), train_args, args.epochs, args.binary,
                                           optimizers):
                results.append(result)
                print(describe(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["pass"] for r in results if checked(r)) else 1


if __name__ == "__main__":
    sys.exit(main())
