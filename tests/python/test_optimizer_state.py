"""The optimizer state mnist-tch saves with a run (optimizer.safetensors: per parameter `NAME.step`,
`NAME.exp_avg`, `NAME.exp_avg_sq`, the entries of PyTorch's `optimizer.state_dict()`) loads into
torch.optim.Adam / AdamW, and one further step there lands where mnist-tch's own next step does."""

from __future__ import annotations

import shutil

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from common import BINARY, build_torch_model, keras_split, load_raw, run_config, torch_adam
from conftest import CLASSES, run
from parity import epoch_order

TOLERANCE = 1e-6


def torch_adam_from_run(model: torch.nn.Module, run_dir, lr: float, with_state: bool) -> torch.optim.Optimizer:
    """torch.optim.Adam (AdamW with weight decay) over `model`, holding the run's saved state."""
    t = run_config(run_dir)["training"]
    optimizer = torch_adam(model.parameters(), t, lr=lr)
    if with_state:
        saved = safetensors.torch.load_file(str(run_dir / "optimizer.safetensors"))
        state_dict = optimizer.state_dict()
        state_dict["state"] = {
            index: {what: saved[f"{name}.{what}"] for what in ("step", "exp_avg", "exp_avg_sq")}
            for index, (name, _) in enumerate(model.named_parameters())
        }
        optimizer.load_state_dict(state_dict)
    return optimizer


def one_step_in_pytorch(run_dir, data_dir, with_state: bool) -> dict:
    """Epoch 4 of the run (a single full batch) in PyTorch from its weights and optimizer state after
    epoch 3."""
    config = run_config(run_dir)
    t = config["training"]
    model = build_torch_model(config["model"])
    model.load_state_dict(safetensors.torch.load_file(str(run_dir / "model.safetensors")))
    raw = load_raw(data_dir, config["data"].get("selection"))
    n = keras_split(len(raw["train_x"]), t["validation_split"])
    assert t["batch_size"] == n, "the test's epochs are one step each"
    rows = epoch_order(t["seed"], 4, n, t.get("shuffle", True))
    images = torch.from_numpy(raw["train_x"][:n].reshape(n, -1).copy())[rows].float().div_(255.0)
    labels = torch.from_numpy(raw["train_y"][:n].copy())[rows]
    optimizer = torch_adam_from_run(model, run_dir, t["learning_rate"], with_state)
    model.train()
    optimizer.zero_grad()
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.mark.parametrize("decay", ["0", "0.01"])
def test_the_saved_state_continues_in_torch_optim_adam(data_dir, tmp_path, decay):
    three = tmp_path / "three"
    run(BINARY, "train", "--data", data_dir, "--out", three, "--epochs", "3", "--limit", "240", "--batch-size",
        "192", "--num-classes", str(CLASSES), "--hidden", "32", "--weight-decay", decay, "--device", "cpu",
        "--quiet")
    saved = safetensors.torch.load_file(str(three / "optimizer.safetensors"))
    assert int(saved.pop("epoch")) == 3
    names = [name for name, _ in build_torch_model(run_config(three)["model"]).named_parameters()]
    assert sorted(saved) == sorted(f"{n}.{w}" for n in names for w in ("step", "exp_avg", "exp_avg_sq"))
    assert all(float(saved[f"{n}.step"]) == 3.0 for n in names), "three epochs of one step each"

    four = tmp_path / "four"
    shutil.copytree(three, four)
    run(BINARY, "resume", four, "--epochs", "4", "--device", "cpu", "--quiet")
    ours = safetensors.torch.load_file(str(four / "model.safetensors"))

    theirs = one_step_in_pytorch(three, data_dir, with_state=True)
    worst = max(float((theirs[n] - ours[n]).abs().max()) for n in names)
    print(f"weight decay {decay}: torch.optim step vs mnist-tch max abs diff {worst:.2e}")
    assert worst <= TOLERANCE, f"torch.optim.Adam's step from the saved state is {worst:.2e} from mnist-tch's"
    # The state matters: from fresh moments the same step lands elsewhere.
    fresh = one_step_in_pytorch(three, data_dir, with_state=False)
    assert max(float((fresh[n] - ours[n]).abs().max()) for n in names) > 100 * TOLERANCE
