"""Conformance: every declared route, pinned with ``route=``, builds → bundles → runs → agrees, for each precision
it declares. The cases are generated from the declarations (edgepack.registry), so a new route lands tested.

A route whose source framework has no factory here fails this file.
CoreML predicts only on macOS: elsewhere its routes must bundle with validation ``pending-device`` and the
runner must refuse with the clear macOS error (never a number).
"""

from __future__ import annotations

import sys

import pytest

import edgepack
from conftest import have_coremltools, have_tensorflow, have_torch
from edgepack import registry
from edgepack.errors import DeviceError
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

SLOW_ROUTES = {"torch-onnx2tf", "onnx-onnx2tf", "torch-onnx-coreml", "onnx-coreml"}  # onnx2tf: 10-40 s a build
CASES = [
    pytest.param(
        r.name, fw, r.target, q, id=f"{r.name}-{fw}-{q}", marks=[pytest.mark.slow] if r.name in SLOW_ROUTES else []
    )
    for r in registry.routes()
    for fw in r.sources
    for q in r.precisions
]


def test_every_route_has_a_source_factory():
    assert {fw for r in registry.routes() for fw in r.sources} <= set(SOURCE_FACTORIES)


def test_declarations_agree():
    """Precisions, runtimes and options named by the declarations exist; route names are unique."""
    from typing import get_args

    from edgepack.types import ConvertOptions, Precision

    assert set(registry.PRECISIONS) == set(get_args(Precision))
    names = [r.name for r in registry.routes()]
    assert len(names) == len(set(names))
    for r in registry.routes():
        assert set(r.precisions) <= set(registry.PRECISIONS), r.name
        assert registry.runtime(r.target).format == r.target
        for o in r.options:
            assert o.name in ConvertOptions.__dataclass_fields__, (r.name, o.name)
    from pathlib import Path

    import edgepack.device_runners as dr

    for rt in registry.runtimes():
        assert (Path(dr.__file__).parent / rt.runner).is_file(), rt.runner


@pytest.mark.parametrize("route,framework,target,quantize", CASES)
def test_route(route, framework, target, quantize, tmp_path):
    if registry.route(route).missing():
        pytest.skip(f"route {route} needs {registry.route(route).install_hint()}")
    if target == "coreml" and not have_coremltools():
        pytest.skip("needs the coreml extra")
    source, inputs, name = SOURCE_FACTORIES[framework](tmp_path)
    shape = (1, 8, 8) if framework in ("onnx", "torch") else (8, 8, 1)
    needs_calibration = quantize in registry.route(route).calibrated
    calib = dataset(tmp_path / "calib.npz", name=name, shape=shape) if needs_calibration else None
    evalset = dataset(tmp_path / "eval.npz", n=20, name=name, shape=shape, labels=True)
    built = edgepack.build(
        source,
        to=target,
        quantize=quantize,
        calibration=calib,
        eval=evalset,
        inputs=inputs,
        output=tmp_path / "m.edgepack",
        route=route,
    )
    m = built.manifest
    assert m.route.name == route and m.route.pinned and [a.status for a in m.route.attempts] == ["used"]
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
    assert res.device.runtime == registry.runtime(target).name
    for out, metrics in res.validation.items():
        assert metrics.cosine >= m.validation.thresholds["min_cosine"], out
    # the eval set ran on the device
    assert res.accuracy.n == 20
