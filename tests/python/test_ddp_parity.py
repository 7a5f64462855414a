"""Parity with PyTorch DistributedDataParallel (scripts/ddp_parity.py): mnist-tch trained by 2 torchrun
workers × batch 16 (Gloo) ends with the weights of PyTorch's DDP loop (DistributedDataParallel,
DistributedSampler, Gloo) run under torchrun from the same initial.safetensors and the same order."""

from __future__ import annotations

import ddp_parity
from conftest import CLASSES


def test_two_torchrun_workers_end_where_pytorch_ddp_does(data_dir, tmp_path):
    run = tmp_path / "run"
    ddp_parity.train(run, data_dir, "shuffled", world_size=2, batch=16, limit=2000, epochs=1,
                     extra=["--num-classes", str(CLASSES)])
    exact = ddp_parity.replay(run, 2, "libtorch")
    plain = ddp_parity.replay(run, 2, "torch")
    for result in (exact, plain):
        assert result["world_size"] == 2 and result["batch_per_process"] == 16 and result["order"] == "shuffled"
    # Adam as libtorch computes it (tch's nn::Adam), gradients averaged by DDP: the same floats.
    assert exact["max_abs_diff"] == 0.0, exact
    # torch.optim.Adam rounds one op differently; over 50 steps it stays far inside 1e-5.
    assert 0.0 < plain["max_abs_diff"] <= ddp_parity.TOLERANCE, plain
