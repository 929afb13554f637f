"""The built-in samples through the whole flow: real accuracy on the digits eval split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgepack
from conftest import needs_torch

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "samples" / "digits"

pytestmark = [pytest.mark.torch, needs_torch]


def _torch_top1() -> float:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("digits_model", DIGITS / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build_model()
    data = np.load(DIGITS / "eval.npz")
    with torch.inference_mode():
        logits = model(torch.from_numpy(data["image"])).numpy()
    return float(np.mean(logits.argmax(-1) == data["labels"]))


def test_digits_fp32_and_int8_accuracy_on_device(tmp_path):
    source_top1 = _torch_top1()
    assert source_top1 > 0.9, "the committed weights should classify digits well"
    common = dict(inputs=["image:1x1x8x8"], eval=DIGITS / "eval.npz")
    fp32 = edgepack.build(f"{DIGITS / 'model.py'}:build_model", output=tmp_path / "fp32.edgepack", **common)
    int8 = edgepack.build(
        f"{DIGITS / 'model.py'}:build_model",
        quantize="int8",
        calibration=DIGITS / "calib.npz",
        output=tmp_path / "int8.edgepack",
        **common,
    )
    r32 = edgepack.bench(fp32.path, "local", runs=10, min_seconds=0).result
    r8 = edgepack.bench(int8.path, "local", runs=10, min_seconds=0).result
    assert r32.accuracy.n == r8.accuracy.n == len(np.load(DIGITS / "eval.npz")["labels"])
    n = r32.accuracy.n
    assert abs(r32.accuracy.top1 - source_top1) <= 1.0 / n + 1e-9, "fp32 ONNX classifies like torch (±1 near-tie)"
    assert abs(r8.accuracy.top1 - source_top1) <= 0.02, (r8.accuracy.top1, source_top1)
    assert r8.validation["output"].top1_agreement >= 0.75
    assert int8.manifest.quantization.calibration_samples >= 100


def test_digits_int8_tflite_within_one_point_of_source(tmp_path):
    from conftest import have_tensorflow

    if not have_tensorflow():
        pytest.skip("needs the tensorflow extra")
    source_top1 = _torch_top1()
    built = edgepack.build(
        f"{DIGITS / 'model.py'}:build_model",
        to="tflite",
        quantize="int8",
        layout="nhwc",
        calibration=DIGITS / "calib.npz",
        eval=DIGITS / "eval.npz",
        inputs=["image:1x1x8x8"],
        output=tmp_path / "int8.tflite.edgepack",
    )
    r = edgepack.bench(built.path, "local", runs=5, min_seconds=0).result
    # the default torch -> TFLite int8 (ai-edge-quantizer): integer compute behind float I/O
    assert built.manifest.inputs[0].dtype == "float32" and built.manifest.quantization.mode == "int8"
    assert "ai-edge-quantizer" in (built.manifest.quantization.method or ""), built.manifest.quantization.method
    assert abs(r.accuracy.top1 - source_top1) <= 0.01, (r.accuracy.top1, source_top1)
