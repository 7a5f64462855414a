#!/usr/bin/env python3
"""The server a Python user would write for an exported mnist-tch model: FastAPI + uvicorn + the TorchScript
file, one image per forward pass, as the FastAPI and PyTorch tutorials show it. It is what
scripts/bench_serve.py compares `mnist-tch serve` with, on the same two routes:

    POST /predict                 a picture (PNG, JPEG, ...) → {"predictions": [{"label", "name", "probability"}]}
    POST /v2/models/mnist/infer   an Open Inference Protocol JSON request → logits and probabilities

    .venv/bin/python scripts/fastapi_server.py --model model.pt [--host 127.0.0.1] [--port 8000]

The model is `mnist-tch export --model RUN --out model.pt` (with model.pt.json beside it for the class
names). Pictures are made grayscale, resized to the model's input and inverted when their border is light,
which is what such a server usually does (not mnist-tch's centring by centre of mass).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from PIL import Image


def create_app(model_path: Path) -> FastAPI:
    model = torch.jit.load(str(model_path), map_location="cpu").eval()
    info = json.loads(Path(f"{model_path}.json").read_text())
    rows, cols = info["input_shape"]
    names = info["class_names"]
    app = FastAPI()

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = model(images)
        return logits, logits.softmax(-1)

    @app.post("/predict")
    async def predict(request: Request, top: int = 3):
        body = await request.body()
        try:
            picture = Image.open(io.BytesIO(body)).convert("L").resize((cols, rows))
        except Exception as err:  # noqa: BLE001 - any decoding problem is the client's
            raise HTTPException(400, f"not a readable image: {err}") from None
        pixels = np.asarray(picture, dtype=np.float32) / 255
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        if border.mean() > 0.5:
            pixels = 1 - pixels
        _, probabilities = run(torch.from_numpy(pixels).unsqueeze(0))
        p, i = probabilities[0].topk(min(top, len(names)))
        return {"predictions": [{"label": int(c), "name": names[int(c)], "probability": float(q)}
                                for q, c in zip(p, i)]}

    @app.post("/v2/models/mnist/infer")
    def infer(request: dict):
        tensor = request["inputs"][0]
        images = torch.tensor(tensor["data"], dtype=torch.float32).reshape(-1, rows, cols)
        if tensor["datatype"] == "UINT8":
            images = images / 255
        logits, probabilities = run(images)
        shape = list(logits.shape)
        return {"model_name": "mnist", "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": shape, "data": logits.flatten().tolist()},
            {"name": "probabilities", "datatype": "FP32", "shape": shape, "data": probabilities.flatten().tolist()},
        ]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="TorchScript file written by mnist-tch export")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
