"""Conformance: every registered route builds → bundles → runs → agrees, for each precision its target offers.

A new route in converters.ROUTES without a source factory here fails this file, so no route lands untested.
CoreML predicts only on macOS: elsewhere its routes must bundle with validation ``pending-device`` and the
runner must refuse with the clear macOS error (never a number).
"""

from __future__ import annotations

import sys

import pytest

import edgepack
from edgepack import converters
from edgepack.errors import DeviceError
from conftest import have_coremltools, have_tensorflow, have_torch
from helpers import dataset, keras_files, tiny_onnx, torch_model_py


def _onnx_source(tmp_path):
    return str(tiny_onnx(tmp_path / "m.onnx")), [], "image"


def _torch_source(tmp_path):
    if not have_torch():
        pytest.skip("needs the torch extra")
    return f"{torch_model_py(tmp_path)}:build_model", ["image:1x1x8x8"], "image"


def _keras(tmp_path, kind):
    if not have_tensorflow():
        pytest.skip("needs the tensorflow extra")
    return keras_files(tmp_path)[kind], [], "image"


def _tflite_source(tmp_path):
    src, _, name = _keras(tmp_path, "keras")
    from edgepack.bundle import read_member

    built = edgepack.build(src, to="tflite", output=tmp_path / "src.edgepack")
    path = tmp_path / "m.tflite"
    path.write_bytes(read_member(built.path, "model.tflite"))
    from edgepack.converters.tflite_tools import open_interpreter  # a .tflite source's names are its tensors'

    return str(path), [], open_interpreter(path).get_input_details()[0]["name"]


SOURCE_FACTORIES = {
    "onnx": _onnx_source,
    "torch": _torch_source,
    "keras": lambda tmp: _keras(tmp, "keras"),
    "tensorflow": lambda tmp: _keras(tmp, "savedmodel"),
    "tflite": _tflite_source,
}

CASES = [(fw, tgt, q) for (fw, tgt) in sorted(converters.ROUTES) for q in converters.precisions(fw, tgt)]


def test_every_route_has_a_source_factory():
    assert {fw for fw, _ in converters.ROUTES} <= set(SOURCE_FACTORIES)


@pytest.mark.parametrize("framework,target,quantize", CASES, ids=[f"{a}-{b}-{c}" for a, b, c in CASES])
def test_route(framework, target, quantize, tmp_path):
    if target == "coreml" and not have_coremltools():
        pytest.skip("needs the coreml extra")
    source, inputs, name = SOURCE_FACTORIES[framework](tmp_path)
    shape = (1, 8, 8) if framework in ("onnx", "torch") else (8, 8, 1)
    needs_calibration = quantize in converters.TARGETS[target].calibrated
    calib = dataset(tmp_path / "calib.npz", name=name, shape=shape) if needs_calibration else None
    evalset = dataset(tmp_path / "eval.npz", n=20, name=name, shape=shape, labels=True)
    built = edgepack.build(source, to=target, quantize=quantize, calibration=calib, eval=evalset, inputs=inputs,
                           output=tmp_path / "m.edgepack")
    m = built.manifest
    manifest, problems = edgepack.verify(built.path)
    assert problems == []
    if target == "coreml" and sys.platform != "darwin":
        assert m.format == target and m.source.framework == framework and m.validation.status == "pending-device"
        assert m.validation.checks["unsupported_ops"] == [] and m.validation.pending_reason
        with pytest.raises(DeviceError, match="CoreML prediction needs macOS"):
            edgepack.bench(built.path, "local", runs=3, min_seconds=0)
        return
    assert m.format == target and m.source.framework == framework and m.validation.status == "passed"
    res = edgepack.bench(built.path, "local", runs=3, min_seconds=0).result
    assert res.device.runtime == converters.TARGETS[target].runtime
    for out, metrics in res.validation.items():
        assert metrics.cosine >= m.validation.thresholds["min_cosine"], out
    # the eval set ran on the device
    assert res.accuracy.n == 20
