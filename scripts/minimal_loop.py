#!/usr/bin/env python3
"""The training loop a PyTorch user would write for a mnist-tch run's model, and nothing more: per epoch
`randperm`, then per batch index, forward, `F.cross_entropy`, `zero_grad`, `backward`, Adam step (AdamW
and label smoothing where the run has them). No
per-step metrics, no host synchronisation, no validation pass; the images are converted to float32
(pixel / 255) once, up front. It is the speed reference of scripts/bench.py.

    .venv/bin/python scripts/minimal_loop.py --config RUN/config.json [--data DIR] [--epochs 3]
                                             [--threads 2] [--device cpu|cuda] [--batch-size N]
                                             [--metrics-json FILE]

Model, data selection (--labels, --limit), validation split, batch size, epochs, Adam settings (weight decay
included) and label smoothing come from the config (the same architecture: MLP, linear or CNN). Prints one line per epoch with its seconds
(training steps only), then `Test accuracy: X`; --metrics-json writes the epochs' seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_torch_model, keras_split, load_raw, to_inputs, torch_adam  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a mnist-tch config.json")
    parser.add_argument("--data", type=Path, help="data directory (default: the config's)")
    parser.add_argument("--epochs", type=int, help="default: the config's")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device (the data set lives there, as a user would do)")
    parser.add_argument("--batch-size", type=int, help="default: the config's")
    parser.add_argument("--metrics-json", type=Path)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    config = json.loads(args.config.read_text())
    t = config["training"]
    epochs = args.epochs or t["epochs"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(t["seed"])
    raw = load_raw(args.data or Path(config["data"]["dir"]), config["data"].get("selection"))
    n = keras_split(len(raw["train_x"]), t["validation_split"])
    device = torch.device(args.device)
    x = torch.from_numpy(to_inputs(raw["train_x"][:n])).to(device)
    y = torch.from_numpy(raw["train_y"][:n].copy()).to(device)
    model = build_torch_model(config["model"]).to(device)
    optimizer = torch_adam(model.parameters(), t)
    smoothing = t.get("label_smoothing", 0.0)
    batch = args.batch_size or t["batch_size"]
    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(n, device=device)
        for start in range(0, n, batch):
            rows = order[start:start + batch]
            loss = F.cross_entropy(model(x[rows]), y[rows], label_smoothing=smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        history.append({"epoch": epoch, "seconds": seconds})
        print(f"Epoch {epoch}/{epochs} - {(n + batch - 1) // batch} steps - {seconds:.3f}s", flush=True)
    model.eval()
    with torch.no_grad():
        test_x = torch.from_numpy(to_inputs(raw["test_x"])).to(device)
        predictions = torch.cat([model(test_x[i:i + 2560]).argmax(-1) for i in range(0, len(test_x), 2560)])
        accuracy = (predictions.cpu() == torch.from_numpy(raw["test_y"])).double().mean().item()
    if args.metrics_json:
        args.metrics_json.write_text(json.dumps(history, indent=2) + "\n")
    print(f"Test accuracy: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
