#!/usr/bin/env python3
"""The PyTorch DistributedDataParallel loop a user would write for a mnist-tch run's model, run under
torchrun: Gloo process group, `DistributedDataParallel`, `DistributedSampler`, `torch.optim.Adam` (eps from
the config: Keras's 1e-7), `--batch-size` per process. Two modes:

  Parity: replays a mnist-tch run trained under torchrun with --save-initial, from its
  initial.safetensors, with the same per-epoch order (file order: `DistributedSampler(shuffle=False)`
  itself; shuffled: mnist-tch's permutation, split the way DistributedSampler splits), and rank 0
  prints the largest absolute difference from the run's model.safetensors as one JSON line.

    .venv/bin/torchrun --standalone --nproc-per-node 2 scripts/ddp_baseline.py --replay RUN_DIR \\
        [--optimizer torch|libtorch]

  `--optimizer libtorch` swaps torch.optim.Adam for scripts/parity.py's op-for-op copy of libtorch's
  C++ Adam (what mnist-tch's nn::Adam runs); torch.optim.Adam rounds one op differently (lerp_).

  Speed: trains from scratch for --epochs and prints one line per epoch with its seconds (training
  steps only: no validation, no per-step metrics), then rank 0's `Test accuracy: X`.

    .venv/bin/torchrun --standalone --nproc-per-node 2 scripts/ddp_baseline.py --config RUN/config.json \\
        [--data DIR] [--epochs 3] [--batch-size 16] [--threads 1] [--metrics-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_torch_model, keras_split, load_raw, to_inputs  # noqa: E402


def mnist_tch_sampler(seed: int, n: int):
    """A DistributedSampler whose epoch order is mnist-tch's (`training::epoch_order`: the run's seeded
    randperm), split as DistributedSampler splits any order: padded with its start, then rank r takes
    positions r, r+W, r+2W, ..."""
    import torch
    from torch.utils.data import DistributedSampler
    from parity import epoch_order

    class MnistTchOrder(DistributedSampler):
        def __iter__(self):
            order = epoch_order(seed, self.epoch, n, True).tolist()
            order += order[: self.total_size - len(order)]
            return iter(order[self.rank:self.total_size:self.num_replicas])

    return MnistTchOrder(range(n), shuffle=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replay", dest="run", type=Path, help="parity: a mnist-tch run trained under torchrun with --save-initial")
    parser.add_argument("--optimizer", choices=("torch", "libtorch"), default="torch")
    parser.add_argument("--config", type=Path, help="speed: a mnist-tch config.json (model, data, Adam, batch)")
    parser.add_argument("--data", type=Path, help="data directory (default: the config's)")
    parser.add_argument("--epochs", type=int, help="default: the config's")
    parser.add_argument("--batch-size", type=int, help="per process (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process (default 1)")
    parser.add_argument("--metrics-json", type=Path, help="rank 0 writes the epochs' seconds here")
    args = parser.parse_args(argv)
    if (args.run is None) == (args.config is None):
        parser.error("give --replay (parity) or --config (speed)")
    if "RANK" not in os.environ:
        parser.error("run it under torchrun: .venv/bin/torchrun --standalone --nproc-per-node 2 scripts/ddp_baseline.py ...")

    import safetensors.torch
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = json.loads(((args.run / "config.json") if args.run else args.config).read_text())
    t = config["training"]
    raw = load_raw(args.data or Path(config["data"]["dir"]), config["data"].get("selection"))
    n = keras_split(len(raw["train_x"]), t["validation_split"])
    x = torch.from_numpy(to_inputs(raw["train_x"][:n]))
    y = torch.from_numpy(raw["train_y"][:n].copy())
    torch.manual_seed(t["seed"])
    model = build_torch_model(config["model"])
    if args.run:
        model.load_state_dict(safetensors.torch.load_file(str(args.run / "initial.safetensors")))
        batch = t["distributed"]["batch_size_per_process"] if t.get("distributed") else t["batch_size"]
        epochs = config["state"]["epochs_completed"]
    else:
        batch = args.batch_size or t["batch_size"]
        epochs = args.epochs or t["epochs"]
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's weights, averages gradients in buckets
    settings = dict(lr=t["learning_rate"], betas=(t["adam_beta1"], t["adam_beta2"]), eps=t["adam_epsilon"])
    if args.optimizer == "libtorch":
        from parity import libtorch_adam
        optimizer = libtorch_adam(list(ddp.parameters()), **settings)
    else:
        optimizer = torch.optim.Adam(ddp.parameters(), **settings)
    if args.run and t.get("shuffle", True):
        sampler = mnist_tch_sampler(t["seed"], n)
    else:
        sampler = DistributedSampler(range(n), shuffle=not args.run and t.get("shuffle", True), seed=t["seed"])
    history = []
    ddp.train()
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(iter(sampler)))
        started = time.perf_counter()
        for start in range(0, len(indices), batch):
            rows = indices[start:start + batch]
            loss = F.cross_entropy(ddp(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "seconds": seconds})
        if rank == 0:
            print(f"Epoch {epoch}/{epochs} - {(len(indices) + batch - 1) // batch} steps - {seconds:.3f}s", flush=True)
    if rank == 0:
        if args.run:
            final = safetensors.torch.load_file(str(args.run / "model.safetensors"))
            state = model.state_dict()
            per_tensor = {name: float((state[name] - final[name]).abs().max()) for name in final}
            print(json.dumps({"run": str(args.run), "world_size": world, "batch_per_process": batch,
                              "order": "shuffled" if t.get("shuffle", True) else "no-shuffle",
                              "optimizer": args.optimizer, "epochs": epochs,
                              "max_abs_diff": max(per_tensor.values()), "per_tensor": per_tensor}), flush=True)
        else:
            model.eval()
            with torch.no_grad():
                test_x = torch.from_numpy(to_inputs(raw["test_x"]))
                predictions = torch.cat([model(test_x[i:i + 2560]).argmax(-1) for i in range(0, len(test_x), 2560)])
                accuracy = (predictions == torch.from_numpy(raw["test_y"])).double().mean().item()
            if args.metrics_json:
                args.metrics_json.write_text(json.dumps(history, indent=2) + "\n")
            print(f"Test accuracy: {accuracy:.4f}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
