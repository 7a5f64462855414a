"""`mnist-tch serve` with a real Open Inference Protocol client: tritonclient.http (what talks to Triton and
KServe) against the binary on 127.0.0.1, in its default binary-tensor mode and in JSON, for UINT8 and
FP32 inputs of both shapes; the logits are `evaluate --dump-logits`'s."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http", reason="pip install -r scripts/requirements.txt")

from common import BINARY  # noqa: E402
from conftest import CLASSES, SIDE  # noqa: E402


class Server:
    """`mnist-tch serve --port 0` on a model; its address is what it prints."""

    def __init__(self, model: Path, *flags: str):
        self.process = subprocess.Popen([str(BINARY), "serve", "--model", str(model), "--port", "0", "--device", "cpu",
                                         *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in self.process.stdout:
            if "listening on http://" in line:
                self.url = line.split("http://")[1].split()[0]
                break
        else:
            raise AssertionError(f"serve ended before listening: {self.process.stderr.read()}")
        self.client = tritonclient_http.InferenceServerClient(self.url)

    def stop(self) -> int:
        self.client.close()
        self.process.terminate()
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(trained):
    server = Server(trained["run_dir"])
    yield server
    assert server.stop() == 0, "a graceful stop exits 0"


def pixels(trained, count: int) -> np.ndarray:
    """The first `count` test images as their uint8 pixels (the fixture keeps them as float inputs)."""
    return np.rint(trained["test_x"][:count] * 255).astype(np.uint8)


def infer(client, images: np.ndarray, datatype: str, binary: bool, outputs=None):
    tensor = tritonclient_http.InferInput("input", list(images.shape), datatype)
    tensor.set_data_from_numpy(images, binary_data=binary)
    return client.infer("mnist", [tensor], outputs=outputs)


def test_health_and_metadata(served):
    client = served.client
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mnist")
    metadata = client.get_model_metadata("mnist")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, SIDE, SIDE]}]
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "probabilities"]
    assert metadata["outputs"][0]["shape"] == [-1, CLASSES]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
@pytest.mark.parametrize("flat", [False, True], ids=["NxHxW", "Nx784"])
def test_logits_are_evaluates(served, trained, binary, datatype, flat):
    images = pixels(trained, 100)
    want = trained["logits"][:100]
    if datatype == "FP32":
        images = images.astype(np.float32) / 255
    if flat:
        images = images.reshape(len(images), -1)
    result = infer(served.client, np.ascontiguousarray(images), datatype, binary)
    np.testing.assert_allclose(result.as_numpy("logits"), want, atol=1e-5, rtol=0)
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert (probabilities.argmax(1) == want.argmax(1)).all()


def test_one_output_asked_for_comes_alone(served, trained):
    images = pixels(trained, 3)
    asked = [tritonclient_http.InferRequestedOutput("probabilities", binary_data=False)]
    result = infer(served.client, images, "UINT8", True, outputs=asked)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("logits") is None


def test_errors_reach_the_client_with_their_message(served, trained):
    with pytest.raises(tritonclient_http.InferenceServerException, match="datatype 'INT32' is not supported"):
        infer(served.client, pixels(trained, 2).astype(np.int32), "INT32", False)
    with pytest.raises(tritonclient_http.InferenceServerException, match=r"is not \[N, 12, 12\]"):
        infer(served.client, np.zeros((2, 5, 5), np.float32), "FP32", True)
    with pytest.raises(tritonclient_http.InferenceServerException, match="not served here"):
        served.client.get_model_metadata("resnet")


def test_a_probabilities_export_answers_probabilities_only(trained):
    server = Server(trained["probs_pt"])
    try:
        metadata = server.client.get_model_metadata("mnist")
        assert [o["name"] for o in metadata["outputs"]] == ["probabilities"]
        result = infer(server.client, pixels(trained, 50), "UINT8", True)
        want = np.exp(trained["logits"][:50])
        want /= want.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
    finally:
        assert server.stop() == 0
