"""Conformance: every registered route builds → bundles → runs → agrees, for each precision its target offers.

A new route in converters.ROUTES without a source factory here fails this file, so no route lands untested.
"""

from __future__ import annotations

import pytest

import edgepack
from edgepack import converters
from conftest import have_tensorflow, have_torch
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
    return str(path), [], built.manifest.inputs[0].name


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
    source, inputs, name = SOURCE_FACTORIES[framework](tmp_path)
    shape = (1, 8, 8) if framework in ("onnx", "torch") else (8, 8, 1)
    calib = dataset(tmp_path / "calib.npz", name=name, shape=shape) if quantize in ("int8", "int16x8") else None
    evalset = dataset(tmp_path / "eval.npz", n=20, name=name, shape=shape, labels=True)
    built = edgepack.build(source, to=target, quantize=quantize, calibration=calib, eval=evalset, inputs=inputs,
                           output=tmp_path / "m.edgepack")
    m = built.manifest
    assert m.format == target and m.source.framework == framework and m.validation.status == "passed"
    manifest, problems = edgepack.verify(built.path)
    assert problems == []
    res = edgepack.bench(built.path, "local", runs=3, min_seconds=0).result
    assert res.device.runtime == converters.TARGETS[target].runtime
    for out, metrics in res.validation.items():
        assert metrics.cosine >= m.validation.thresholds["min_cosine"], out
    # the eval set ran on the device
    assert res.accuracy.n == 20
