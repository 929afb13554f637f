"""torch -> TFLite of a model with an embedding (int64 token ids): every precision loads and validates.

``--quantize dynamic`` used to give a model the interpreter refused (``EMBEDDING_LOOKUP ... zero_point == 0``):
the LiteRT converter quantized the float embedding table with a zero point. Real litert-torch conversions, run
with the real LiteRT interpreter at build time and by the local runner.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgepack
from conftest import have_tensorflow, needs_torch

pytestmark = [
    pytest.mark.torch,
    pytest.mark.tensorflow,
    needs_torch,
    pytest.mark.skipif(not have_tensorflow(), reason="needs the tensorflow extra (ai-edge-litert)"),
]

MODEL_PY = """
import torch
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.hidden = nn.Linear(32, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, ids):
        return self.head(self.hidden(self.embed(ids)).relu()).mean(1)


def build_model():
    torch.manual_seed(0)
    return Tagger().eval()
"""


@pytest.mark.slow
@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_embedding_model_quantizes_to_a_loadable_model(quantize, tmp_path):
    py = tmp_path / "tagger.py"
    py.write_text(MODEL_PY)
    rng = np.random.default_rng(0)
    calib = tmp_path / "ids.npz"
    np.savez(calib, ids=rng.integers(0, 100, (32, 6)).astype(np.int64))
    res = edgepack.build(
        f"{py}:build_model",
        to="tflite",
        quantize=quantize,
        inputs=["ids:1x6:int64"],
        calibration=calib if quantize == "int8" else None,
        output=tmp_path / "m.edgepack",
    )
    m = res.manifest
    assert m.validation.status == "passed" and m.quantization.mode == quantize
    out = m.outputs[0].name
    assert m.validation.outputs[out].cosine >= m.validation.thresholds["min_cosine"]
    assert m.inputs[0].dtype in ("int32", "int64") and m.inputs[0].quant is None  # token ids, not quantized

    r = edgepack.bench(res.path, "local", runs=3, min_seconds=0).result
    assert r.runtime_details["ops"].get("EMBEDDING_LOOKUP", 0) + r.runtime_details["ops"].get("GATHER", 0) >= 1
    assert r.validation[out].cosine >= m.validation.thresholds["min_cosine"]
    if quantize == "dynamic":
        assert "embedding tables symmetric" in m.quantization.method
        from edgepack.converters.tflite_tools import interpreter_class

        from edgepack.bundle import read_member

        model = tmp_path / "model.tflite"
        model.write_bytes(read_member(res.path, "model.tflite"))
        tensors = interpreter_class()(model_path=str(model)).get_tensor_details()
        table = [t for t in tensors if list(t["shape"]) == [100, 32]]
        assert len(table) == 1 and table[0]["dtype"] == np.int8, "the embedding table is int8"
        assert list(table[0]["quantization_parameters"]["zero_points"]) == [0]


@pytest.mark.slow
def test_embedding_int8_through_onnx2tf(tmp_path):
    """Regression (zoo: BERT's int8 fallback): the onnx2tf routes calibrated every input as float32, so token ids
    reached the TFLite calibrator as floats and the build failed; they are fed in their integer dtype now."""
    py = tmp_path / "tagger.py"
    py.write_text(MODEL_PY)
    calib = tmp_path / "ids.npz"
    np.savez(calib, ids=np.random.default_rng(0).integers(0, 100, (32, 6)).astype(np.int64))
    res = edgepack.build(
        f"{py}:build_model",
        to="tflite",
        quantize="int8",
        route="torch-onnx2tf",
        inputs=["ids:1x6:int64"],
        calibration=calib,
        output=tmp_path / "m.edgepack",
    )
    m = res.manifest
    assert m.route.name == "torch-onnx2tf" and m.quantization.mode == "int8" and m.validation.status == "passed"
    assert m.inputs[0].dtype in ("int32", "int64") and m.inputs[0].quant is None
