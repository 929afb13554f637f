"""ONNX source → ONNX bundles in every precision, validated against onnxruntime on the source; bad input."""

from __future__ import annotations

import numpy as np
import pytest

import edgepack
from edgepack.errors import UsageError, ValidationFailed
from helpers import cli, dataset, one_line_error


@pytest.mark.parametrize("quantize", ["none", "fp16", "dynamic", "int8"])
def test_precisions_build_run_and_agree(quantize, tiny_model, calib, evalset, tmp_path):
    res = edgepack.build(
        tiny_model,
        quantize=quantize,
        calibration=calib if quantize == "int8" else None,
        eval=evalset,
        output=tmp_path / f"{quantize}.edgepack",
    )
    m = res.manifest
    assert m.quantization.mode == quantize and m.validation.status == "passed"
    assert m.validation.inputs_from == ("calibration" if quantize == "int8" else "random")
    import onnx

    from edgepack.bundle import read_member

    ops = {n.op_type for n in onnx.load_from_string(read_member(res.path, "model.onnx")).graph.node}
    if quantize == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert m.quantization.calibration_samples == 120
    if quantize == "dynamic":
        assert ops & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    if quantize == "fp16":
        init = onnx.load_from_string(read_member(res.path, "model.onnx")).graph.initializer
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in init)
        assert m.inputs[0].dtype == "float32", "fp16 keeps float32 I/O"
    bench = edgepack.bench(res.path, "local", runs=5, min_seconds=0)
    assert bench.result.validation["logits"].cosine >= m.validation.thresholds["min_cosine"]
    assert bench.result.accuracy.n == 40


def test_int8_without_calibration_is_an_error(tiny_model, tmp_path):
    with pytest.raises(UsageError, match="needs calibration"):
        edgepack.build(tiny_model, quantize="int8", output=tmp_path / "x.edgepack")


def test_calibration_of_the_wrong_shape(tiny_model, tmp_path):
    bad = dataset(tmp_path / "bad.npz", shape=(3, 8, 8))
    res = cli(
        "build", str(tiny_model), "--quantize", "int8", "--calibration", str(bad), "-o", str(tmp_path / "x.edgepack")
    )
    assert res.returncode == 2
    assert "has shape [120, 3, 8, 8], expected [N, 1, 8, 8]" in res.stderr
    one_line_error(res)
    assert not (tmp_path / "x.edgepack").exists()


def test_calibration_key_matching_no_input(tiny_model, tmp_path):
    bad = dataset(tmp_path / "bad.npz", name="img")
    with pytest.raises(UsageError, match=r"key\(s\) \['img'\] that match no model input"):
        edgepack.build(tiny_model, quantize="int8", calibration=bad, output=tmp_path / "x.edgepack")


def test_calibration_with_nan(tiny_model, tmp_path):
    arr = np.zeros((4, 1, 8, 8), np.float32)
    arr[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", image=arr)
    with pytest.raises(UsageError, match="NaN"):
        edgepack.build(tiny_model, quantize="int8", calibration=tmp_path / "nan.npz", output=tmp_path / "x.edgepack")


def test_pickled_npz_is_refused(tiny_model, tmp_path):
    np.savez(tmp_path / "obj.npz", image=np.array([object()], dtype=object))
    with pytest.raises(UsageError, match="pickle"):
        edgepack.build(tiny_model, quantize="int8", calibration=tmp_path / "obj.npz", output=tmp_path / "x.edgepack")


def test_eval_without_labels(tiny_model, calib, tmp_path):
    with pytest.raises(UsageError, match="no 'labels'"):
        edgepack.build(tiny_model, eval=calib, output=tmp_path / "x.edgepack")


def test_validation_gate_and_override(tiny_model, tmp_path):
    with pytest.raises(ValidationFailed, match="cosine"):
        edgepack.build(tiny_model, quantize="dynamic", min_cosine=1.01, output=tmp_path / "x.edgepack")
    assert not (tmp_path / "x.edgepack").exists()
    res = edgepack.build(
        tiny_model, quantize="dynamic", min_cosine=1.01, allow_mismatch=True, output=tmp_path / "x.edgepack"
    )
    assert res.manifest.validation.status == "failed-overridden"


def test_corrupt_onnx_and_unknown_files(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    res = cli("build", str(tmp_path / "bad.onnx"))
    assert res.returncode == 2 and "is not a valid ONNX model" in res.stderr
    (tmp_path / "w.pth").write_bytes(b"x")
    res = cli("build", str(tmp_path / "w.pth"))
    assert res.returncode == 2 and "pickled checkpoints are not loaded" in res.stderr
    res = cli("build", str(tmp_path / "bad.onnx"), "--to", "tensorrt")
    assert res.returncode == 2 and "unknown target format" in res.stderr


@pytest.mark.parametrize(
    "text,ok",
    [
        ("image:1x3x224x224", True),
        ("input:0:1x3:float16", True),
        ("image", False),
        ("image:1xx3", False),
        (":1x2", False),
    ],
)
def test_input_spec_parsing(text, ok):
    from edgepack.data import parse_input_spec

    if ok:
        spec = parse_input_spec(text)
        assert spec.name in ("image", "input:0")
    else:
        with pytest.raises(UsageError, match="bad --input"):
            parse_input_spec(text)
