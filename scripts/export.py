#!/usr/bin/env python3
"""Exports a mnist-tch run as ONNX or as a torch.export program (.pt2), checked against mnist-tch.

    .venv/bin/python scripts/export.py --model RUN_DIR --format onnx --out model.onnx
    .venv/bin/python scripts/export.py --model RUN_DIR --format pt2 --out model.pt2 [--input nhw|nchw|flat]
                                       [--probabilities] [--data DIR] [--binary target/release/mnist-tch]

The PyTorch module is rebuilt from the run's config.json and model.safetensors (scripts/common.py, the
same builder as every other script), in eval mode (dropout off), and exported with a dynamic batch
dimension:
  onnx  `torch.onnx.export(..., dynamo=True)` (needs onnxscript), weights inside the file, opset 18;
        checked with onnxruntime.
  pt2   `torch.export.export` + `torch.export.save`; checked with `torch.export.load(...).module()`.
Input: float32 pixels / 255 (white ink on black, as in MNIST), shaped by --input:
  nhw   [N, rows, cols] (default)   nchw  [N, 1, rows, cols]   flat  [N, rows*cols]
with any N >= 1. Output: float32 [N, classes] logits, or probabilities with --probabilities. (The
TorchScript export of `mnist-tch export` accepts all three shapes in one file; an ONNX graph and an exported
program fix the rank of their input, so choose one here.)

Before it reports success, the file is loaded back and run on every test image of the run's data (the
run's --labels selection applied) in one batch, and on the first images in batches of 1 and 7, and its
outputs are compared with mnist-tch's own (`mnist-tch evaluate --dump-logits`, one pass): within 1e-5,
scaled by the largest logit when logits exceed 1 in magnitude (tolerance = 1e-5 * max(1, max |logit|)),
or the script exits 1 with one line and leaves no file at --out. Why scaled: ONNX Runtime multiplies
matrices with its own kernels (MLAS), which round differently from libtorch's; measured on a 10-epoch
MLP whose logits reach 57, its logits differ by 1.9e-5 (3.4e-7 of the largest), while the .pt2 program,
run by libtorch, reproduces the one-pass logits exactly (0.0) and differs by up to 7.6e-6 only at
batch 1, where libtorch itself takes another GEMM path. A `.json` sidecar beside the file describes it (input shape, class
names, normalisation, output kind, format), as `mnist-tch export` does for TorchScript.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BINARY, DestinationError, check_destination, dump_logits, input_frame, load_raw,  # noqa: E402
                    load_torch_model, to_inputs)

TOLERANCE = 1e-5
FORMATS = ("onnx", "pt2")
INPUTS = ("nhw", "nchw", "flat")
ONNX_OPSET = 18


class ExportError(Exception):
    """A failure to report as one line."""


def input_shape(layout: str, rows: int, cols: int, n: int, channels: int = 1) -> tuple[int, ...]:
    if layout == "nhw" and channels != 1:
        raise ExportError(f"--layout nhw has no channel axis; this run's frame has {channels} channels (use nchw)")
    return {"nhw": (n, rows, cols), "nchw": (n, channels, rows, cols), "flat": (n, channels * rows * cols)}[layout]


def exportable_module(run_dir: Path, probabilities: bool):
    """(config, module): the run's nn.Sequential with its weights, eval mode, softmax appended on request."""
    import torch.nn as nn

    config, model = load_torch_model(run_dir)
    if probabilities:
        model = nn.Sequential(model, nn.Softmax(dim=-1)).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return config, model


def quiet_library_warnings() -> None:
    """torch 2.11's exporters warn about things that do not concern this model (torchvision's operators
    are not installed; a deprecated pytree class inside torch; non-writable buffers while loading a .pt2)."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)


def export_onnx(module, example, path: Path) -> None:
    import torch

    try:
        import onnxscript  # noqa: F401  (torch.onnx.export's dynamo exporter is built on it)
    except ImportError:
        raise ExportError("onnxscript is not installed (pip install onnx onnxscript onnxruntime, "
                          "or scripts/setup.sh --with-onnx)")
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                input_names=["pixels"], output_names=["output"], opset_version=ONNX_OPSET,
                                external_data=False, verbose=False)
    program.save(str(path), external_data=False)


def export_pt2(module, example, path: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def loader(fmt: str, path: Path):
    """A function images (np.float32) -> outputs (np.float32) running the saved file."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ExportError("onnxruntime is not installed, so the ONNX file cannot be checked "
                              "(pip install onnxruntime, or scripts/setup.sh --with-onnx)")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    import torch

    module = torch.export.load(str(path)).module()

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return run


def tolerance_for(expected: np.ndarray) -> float:
    """1e-5, scaled by the largest magnitude among the expected outputs when it exceeds 1."""
    return TOLERANCE * max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)


def check(run, images: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference between the file's outputs and `expected`: (the whole set in one
    batch, the first 21 images in batches of 1 and of 7 — the batch size is dynamic)."""
    outputs = run(images)
    if outputs.dtype != np.float32 or outputs.shape != expected.shape:
        raise ExportError(f"the file returns {outputs.dtype} {list(outputs.shape)}, expected float32 "
                          f"{list(expected.shape)}")
    one_pass = float(np.abs(outputs - expected).max())
    small = 0.0
    for size in (1, 7):
        for start in range(0, min(21, len(images)), size):
            part = run(images[start:start + size])
            small = max(small, float(np.abs(part - expected[start:start + size]).max()))
    return one_pass, small


def export(run_dir: Path, fmt: str, out: Path, layout: str = "nhw", probabilities: bool = False,
           data: Path | None = None, binary: Path = BINARY, overwrite: bool = False) -> dict:
    """Exports, reloads and checks; returns what was measured. Raises ExportError on a failed check
    (nothing is then left at `out`), or when `out` or its description may not be written (mnist-tch's
    rule: never a run's own files, never an existing file without `overwrite`)."""
    import torch

    quiet_library_warnings()
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {fmt}")
    out = Path(out)
    try:
        check_destination([out, out.with_name(out.name + ".json")], overwrite, binary=binary)
    except DestinationError as err:
        raise ExportError(str(err)) from None
    config, module = exportable_module(run_dir, probabilities)
    channels, rows, cols = input_frame(config["model"])
    example = torch.rand(input_shape(layout, rows, cols, 2, channels))
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / out.name
        try:
            (export_onnx if fmt == "onnx" else export_pt2)(module, example, staged)
        except ExportError:
            raise
        except Exception as err:  # the exporters raise many kinds; one line is what the user needs
            raise ExportError(f"{fmt} export failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        run = loader(fmt, staged)

        reference = dump_logits(run_dir, Path(tmp) / "mnist-tch-logits.npy", binary=binary, data=data)
        raw = load_raw(Path(data or config["data"]["dir"]), config["data"].get("selection"))
        images = to_inputs(raw["test_x"]).reshape(input_shape(layout, rows, cols, len(raw["test_x"]), channels))
        if len(images) != len(reference):
            raise ExportError(f"{len(images)} test images here, {len(reference)} logits from mnist-tch")
        expected = torch.from_numpy(reference).softmax(-1).numpy() if probabilities else reference
        one_pass, small_batches = check(run, np.ascontiguousarray(images), expected)
        diff = max(one_pass, small_batches)
        tolerance = tolerance_for(expected)
        if not diff <= tolerance:
            raise ExportError(f"{out}: the {fmt} file's outputs differ from mnist-tch's by {diff:.2e} "
                              f"(tolerance {tolerance:.2e}) on the test set; not written")
        os.replace(staged, out)
    sidecar = out.with_name(out.name + ".json")
    shape = ["N", *input_shape(layout, rows, cols, 0, channels)[1:]]
    info = {
        "format": fmt,
        "input_shape": [rows, cols],
        **({"channels": channels} if channels != 1 else {}),
        "input": {"dtype": "float32", "shape": shape, "batch": "dynamic, N >= 1"},
        "class_names": config["data"]["class_names"],
        "normalization": config["data"]["normalization"],
        "output": "probabilities" if probabilities else "logits",
        "source": str(Path(run_dir).resolve()),
        "checked": {"test_images": len(images), "max_abs_diff_vs_mnist_tch": diff, "one_batch": one_pass,
                    "batches_of_1_and_7": small_batches, "tolerance": tolerance},
    }
    staged_sidecar = sidecar.with_name(f".{sidecar.name}.tmp-{os.getpid()}")
    staged_sidecar.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(staged_sidecar, sidecar)
    return {"out": str(out), "sidecar": str(sidecar), "bytes": out.stat().st_size, "max_abs_diff": diff,
            "tolerance": tolerance, "one_batch": one_pass, "batches_of_1_and_7": small_batches, "max_abs_output": float(np.abs(expected).max()),
            "test_images": len(images), "input": shape, "format": fmt, "arch": config["model"].get("arch", "mlp")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="mnist-tch run directory")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", type=Path, required=True,
                        help="file to write, and FILE.json beside it; missing directories are created")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (a run directory's own files are never replaced)")
    parser.add_argument("--input", choices=INPUTS, default="nhw",
                        help="input layout: nhw [N, rows, cols] (default), nchw [N, 1, rows, cols], flat [N, rows*cols]")
    parser.add_argument("--probabilities", action="store_true", help="output softmax probabilities, not logits")
    parser.add_argument("--data", type=Path, help="data directory for the check (default: the run's)")
    parser.add_argument("--binary", type=Path, default=BINARY,
                        help="the mnist-tch binary: the reference logits and the rule for where --out may be written")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"error: {args.model}: not a mnist-tch run directory (no config.json)", file=sys.stderr)
        return 1
    try:
        result = export(args.model, args.format, args.out, args.input, args.probabilities, args.data, args.binary,
                        args.overwrite)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    shape = ", ".join(map(str, result["input"]))
    print(f"Exported {args.model} ({result['arch']}) as {args.format} to {result['out']} "
          f"({result['bytes'] / 1024:.1f} KB; input float32 [{shape}], pixel / 255; output "
          f"{'probabilities' if args.probabilities else 'logits'}) and its description to {result['sidecar']}")
    print(f"Checked on {result['test_images']} test images: max abs diff vs mnist-tch {result['one_batch']:.2e} in one "
          f"batch, {result['batches_of_1_and_7']:.2e} in batches of 1 and 7 (tolerance {result['tolerance']:.2e} = 1e-5 x max(1, largest |output| {result['max_abs_output']:.1f}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
