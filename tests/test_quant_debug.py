"""Quantization debugging (issue 13): --explain-quant ranks the quantized layers by their error against float,
--keep-float N|auto leaves the most sensitive in float, and the manifest records both; and the default
torch -> TFLite int8 (ai-edge-quantizer after litert-torch) computes its convolutions/linears in int8 with float I/O.

The quantization-hostile model is tests/models/outlier_mlp.py: its first layer reads a raw-unit feature (~10 000)
next to standardized ones, so int8 flattens the small features there; float top-1 is 100% by construction.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import edgepack
from conftest import have_tensorflow, have_torch
from edgepack.errors import ValidationFailed
from helpers import cli, one_line_error

MODELS = Path(__file__).parent / "models"
HOSTILE = f"{MODELS / 'outlier_mlp.py'}:build_model"
REPO = Path(__file__).resolve().parents[1]

needs_torch = pytest.mark.skipif(not have_torch(), reason="needs the torch extra")
needs_tflite = pytest.mark.skipif(not (have_torch() and have_tensorflow()), reason="needs the torch and tflite extras")


@pytest.fixture
def hostile_data(tmp_path):
    sys.path.insert(0, str(MODELS))
    import outlier_mlp

    calib, evalset = tmp_path / "calib.npz", tmp_path / "eval.npz"
    np.savez(calib, **outlier_mlp.dataset(200, seed=1))
    np.savez(evalset, **outlier_mlp.dataset(300, seed=2, labels=True))
    return calib, evalset


def _build(to, calib, evalset, out, **kw):
    return edgepack.build(
        HOSTILE, to=to, quantize="int8", calibration=calib, eval=evalset, inputs=["x:1x16"], output=out, **kw
    )


def _top1(path) -> float:
    return edgepack.bench(path, "local", runs=3, min_seconds=0).result.accuracy.top1


def _hostile_recovers(to, route, hostile_data, tmp_path):
    calib, evalset = hostile_data
    # plain int8 fails the build's agreement gate on this model
    with pytest.raises(ValidationFailed):
        _build(to, calib, evalset, tmp_path / "plain.edgepack", route=route)
    plain = _build(to, calib, evalset, tmp_path / "plain.edgepack", route=route, allow_mismatch=True)
    mixed = _build(to, calib, evalset, tmp_path / "mixed.edgepack", route=route, keep_float="auto")
    q = mixed.manifest.quantization
    ranked = q.sensitivity
    assert ranked and len(ranked) == 3  # the three linears
    first = ranked[0]
    # the layer reading the raw feature is where the error appears: ranked first, by far
    assert first.loss_db > 20 and all(r.loss_db < 3 for r in ranked[1:]), ranked
    assert first.sqnr_db < 10 and first.input_sqnr_db > 15, first
    # auto kept exactly that one layer float, and the bundle passed the build's gate
    assert q.kept_float == [first.name] and first.kept_float and not any(r.kept_float for r in ranked[1:])
    assert mixed.manifest.validation.status == "passed"
    assert min(m.cosine for m in mixed.manifest.validation.outputs.values()) >= 0.98
    assert "kept in float" in q.method
    # and on the device (the local runner) the accuracy is back
    top1_plain, top1_mixed = _top1(plain.path), _top1(mixed.path)
    assert top1_plain < 0.7 and top1_mixed >= 0.95, (top1_plain, top1_mixed)
    assert edgepack.verify(mixed.path)[1] == []
    return mixed, first


@pytest.mark.torch
@pytest.mark.slow
@needs_torch
def test_onnx_keep_float_auto_recovers_the_hostile_layer(hostile_data, tmp_path):
    mixed, first = _hostile_recovers("onnx", "torch-onnx", hostile_data, tmp_path)
    import onnx

    from edgepack.bundle import read_member

    model = onnx.load_from_string(read_member(mixed.path, "model.onnx"))
    node = next(n for n in model.graph.node if n.name == first.name)
    # kept float: it reads the graph input itself, not a DequantizeLinear, and its weight is a float initializer
    assert node.op_type == "Gemm" and node.input[0] == "x"
    assert node.input[1] in {i.name for i in model.graph.initializer}
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) >= 2  # the rest stays int8


@pytest.mark.torch
@pytest.mark.slow
@needs_tflite
def test_tflite_keep_float_auto_recovers_the_hostile_layer(hostile_data, tmp_path):
    mixed, first = _hostile_recovers("tflite", "torch-litert", hostile_data, tmp_path)
    assert "fc1" in first.name  # litert-torch names tensors after the module path
    from edgepack.converters.tflite_tools import open_interpreter

    from edgepack.bundle import read_member

    path = tmp_path / "m.tflite"
    path.write_bytes(read_member(mixed.path, "model.tflite"))
    interp = open_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    fcs = [op for op in interp._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    kinds = [np.dtype(details[op["inputs"][0]]["dtype"]).name for op in fcs]
    assert kinds == ["float32", "int8", "int8"], kinds
    assert interp.get_input_details()[0]["dtype"] == np.float32  # float I/O


@pytest.mark.torch
@pytest.mark.slow
@needs_torch
def test_cli_explain_quant_prints_the_ranked_table_and_keep_float_n(hostile_data, tmp_path):
    calib, evalset = hostile_data
    out = tmp_path / "m.edgepack"
    proc = cli(
        "build", HOSTILE, "--input", "x:1x16", "--quantize", "int8", "--calibration", str(calib),
        "--explain-quant", "--keep-float", "1", "-o", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stderr.split())  # the table title wraps at the terminal's width
    assert "quantization sensitivity (int8): 3 quantized layers, most sensitive first; 1 kept in float" in text
    import json

    m = json.loads(proc.stdout)
    q = m["quantization"]
    assert len(q["kept_float"]) == 1 and q["kept_float"][0] == q["sensitivity"][0]["name"]
    assert m["build_options"]["keep_float"] == "1" and m["build_options"]["explain_quant"] is True


def test_keep_float_bad_values_are_one_line_usage_errors(tmp_path):
    from helpers import tiny_onnx

    src = tiny_onnx(tmp_path / "m.onnx")
    proc = cli("build", str(src), "--quantize", "int8", "--keep-float", "most", "-o", str(tmp_path / "x.edgepack"))
    assert proc.returncode == 2 and "--keep-float most is not a layer count" in one_line_error(proc)
    proc = cli("build", str(src), "--keep-float", "2", "-o", str(tmp_path / "x.edgepack"))
    assert proc.returncode == 2 and "not --quantize none" in one_line_error(proc)
    assert not (tmp_path / "x.edgepack").exists()


def test_onnx_explain_quant_on_a_tiny_model(tmp_path):
    """Fast path: an ONNX source, every quantized node is a row, nothing kept float without --keep-float."""
    from helpers import dataset, tiny_onnx

    src = tiny_onnx(tmp_path / "m.onnx")
    calib = dataset(tmp_path / "c.npz", name="image")
    built = edgepack.build(src, quantize="int8", calibration=calib, explain_quant=True, output=tmp_path / "m.edgepack")
    q = built.manifest.quantization
    assert q.kept_float is None and q.sensitivity
    assert {r.op_type for r in q.sensitivity} >= {"Conv", "Gemm"}
    assert [r.loss_db for r in q.sensitivity] == sorted((r.loss_db for r in q.sensitivity), reverse=True)
    assert all(-100 <= r.sqnr_db <= 100 and 0 <= r.loss_db for r in q.sensitivity)
    assert edgepack.verify(built.path)[1] == []


@pytest.mark.torch
@pytest.mark.slow
@needs_tflite
def test_default_torch_tflite_int8_is_integer_with_float_io(tmp_path):
    """The default torch -> TFLite int8 (ai-edge-quantizer after litert-torch): every convolution/linear takes int8,
    I/O stays float, and the digits sample keeps its accuracy (within 1 point of fp32 on the device)."""
    digits = REPO / "samples" / "digits"
    tops = {}
    for mode in ("none", "int8"):
        built = edgepack.build(
            f"{digits / 'model.py'}:build_model",
            to="tflite",
            quantize=mode,
            calibration=digits / "calib.npz" if mode == "int8" else None,
            eval=digits / "eval.npz",
            inputs=["image:1x1x8x8"],
            layout="nhwc",
            output=tmp_path / f"{mode}.edgepack",
        )
        tops[mode] = _top1(built.path)
    m = built.manifest
    assert m.route.name == "torch-litert" and "ai-edge-quantizer static_wi8_ai8" in m.quantization.method
    assert m.inputs[0].dtype == "float32" and m.outputs[0].dtype == "float32" and m.inputs[0].quant is None
    from edgepack.converters.tflite_tools import open_interpreter

    from edgepack.bundle import read_member

    path = tmp_path / "m.tflite"
    path.write_bytes(read_member(built.path, "model.tflite"))
    interp = open_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    heavy = [
        op for op in interp._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]
    assert len(heavy) == 4
    for op in heavy:
        assert np.dtype(details[op["inputs"][0]]["dtype"]) == np.int8, op
        assert np.dtype(details[op["inputs"][1]]["dtype"]) == np.int8, op
    assert tops["none"] - tops["int8"] <= 0.01, tops


def test_keep_float_skips_the_routes_that_would_ignore_it():
    """torch -> TFLite int8 falls back to torch-litert-pt2e and torch-onnx2tf, which have no mixed precision: with
    --keep-float they are skipped with that reason (recorded in manifest.route), never taken silently."""
    from edgepack import registry
    from edgepack.builder import _routes_reading_options
    from edgepack.types import ConvertOptions

    full = registry.plan("torch", "python-callable", "tflite", "int8")
    assert [r.name for r in full.candidates][:1] == ["torch-litert"] and len(full.candidates) >= 3
    plan = _routes_reading_options(ConvertOptions(target="tflite", quantize="int8", keep_float="auto"), full)
    assert [r.name for r in plan.candidates] == ["torch-litert"]
    skipped = dict(plan.skipped)
    assert skipped["torch-litert-pt2e"] == skipped["torch-onnx2tf"] == "does not read --keep-float"
    # without the option the fallbacks stay
    assert _routes_reading_options(ConvertOptions(target="tflite", quantize="int8"), full).candidates == full.candidates
