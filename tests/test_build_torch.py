"""PyTorch sources (file.py:callable, torch.export .pt2, TorchScript) → ONNX, against torch's own outputs."""

from __future__ import annotations

import numpy as np
import pytest

import edgepack
from conftest import needs_torch
from edgepack.errors import UsageError
from helpers import cli, dataset, torch_model_py

pytestmark = [pytest.mark.torch, needs_torch]


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("torch")
    py = torch_model_py(d)
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_torch_mod", py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build_model()
    x = torch.zeros(1, 1, 8, 8)
    torch.export.save(torch.export.export(model, (x,)), str(d / "tiny.pt2"))
    torch.jit.trace(model, x).save(str(d / "tiny.pt"))
    return {"callable": f"{py}:build_model", "pt2": str(d / "tiny.pt2"), "ts": str(d / "tiny.pt"), "model": model}


@pytest.mark.parametrize("kind", ["callable", "pt2", "ts"])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_torch_sources_to_onnx(kind, quantize, torch_files, tmp_path):
    import torch

    # .pt2 stores its input name (forward's argument); the others take it from --input
    name = {"pt2": "input", "callable": "image", "ts": "x"}[kind]
    calib = dataset(tmp_path / "calib.npz", name=name) if quantize == "int8" else None
    res = edgepack.build(
        torch_files[kind],
        quantize=quantize,
        calibration=calib,
        inputs=[] if kind == "pt2" else [f"{name}:1x1x8x8"],
        output=tmp_path / "m.edgepack",
    )
    m = res.manifest
    assert m.source.framework == "torch" and m.validation.reference.startswith("torch")
    assert m.validation.status == "passed"
    # the golden outputs in the bundle are torch's own
    import io

    from edgepack.bundle import read_member

    g = np.load(io.BytesIO(read_member(res.path, "golden.npz")))
    assert m.inputs[0].name == name
    with torch.inference_mode():
        want = torch_files["model"](torch.from_numpy(g[f"input/{name}"])).numpy()
    np.testing.assert_allclose(g["output/output"], want, rtol=1e-5, atol=1e-6)
    bench = edgepack.bench(res.path, "local", runs=3, min_seconds=0)
    assert bench.result.validation["output"].cosine >= m.validation.thresholds["min_cosine"]


def test_callable_needs_input_shapes(torch_files, tmp_path):
    with pytest.raises(UsageError, match="input shapes are not stored") as e:
        edgepack.build(torch_files["callable"], output=tmp_path / "m.edgepack")
    assert "--input NAME:1x3x224x224" in e.value.hint


def test_callable_must_return_a_module(torch_files, tmp_path):
    src = torch_files["callable"].replace(":build_model", ":not_a_module")
    res = cli("build", src, "--input", "image:1x1x8x8", "-o", str(tmp_path / "m.edgepack"))
    assert res.returncode == 2 and "returned int, not a torch.nn.Module, keras.Model or JAX model" in res.stderr


def test_wrong_input_shape_is_clear(torch_files, tmp_path):
    res = cli("build", torch_files["callable"], "--input", "image:1x3x8x8", "-o", str(tmp_path / "m.edgepack"))
    assert res.returncode == 2 and "running the model on inputs ['1x3x8x8'] failed" in res.stderr


@pytest.mark.tensorflow
@pytest.mark.parametrize("layout", [None, "nhwc"])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_torch_to_tflite_layouts(layout, quantize, torch_files, tmp_path):
    from conftest import have_tensorflow

    if not have_tensorflow():
        pytest.skip("needs the tensorflow extra")
    calib = dataset(tmp_path / "calib.npz", name="image") if quantize == "int8" else None
    res = edgepack.build(
        torch_files["callable"],
        to="tflite",
        quantize=quantize,
        calibration=calib,
        layout=layout,
        inputs=["image:1x1x8x8"],
        output=tmp_path / "m.edgepack",
    )
    spec = res.manifest.inputs[0]
    assert spec.layout == ("NHWC" if layout == "nhwc" else "NCHW")
    assert spec.shape == ([1, 8, 8, 1] if layout == "nhwc" else [1, 1, 8, 8])
    if quantize == "int8":  # ai-edge-quantizer int8 keeps float I/O (PT2E's int8 I/O: --io-dtype int8)
        assert spec.dtype == "float32" and spec.quant is None
        assert "ai-edge-quantizer" in res.manifest.quantization.method
    r = edgepack.bench(res.path, "local", runs=3, min_seconds=0).result
    out = res.manifest.outputs[0].name
    assert r.validation[out].cosine >= res.manifest.validation.thresholds["min_cosine"]
    if layout == "nhwc":
        assert r.runtime_details["ops"].get("TRANSPOSE", 0) == 0, r.runtime_details["ops"]


def test_torchscript_to_tflite_goes_through_onnx(torch_files, tmp_path):
    from conftest import have_tensorflow

    if not have_tensorflow():
        pytest.skip("needs the tensorflow extra")
    res = edgepack.build(
        torch_files["ts"], to="tflite", inputs=["x:1x1x8x8"], layout="nhwc", output=tmp_path / "m.edgepack"
    )
    m = res.manifest
    assert m.validation.reference.startswith("torch") and "onnx2tf" in m.tools
    assert m.inputs[0].shape == [1, 8, 8, 1] and "via ONNX" in m.quantization.method
    # litert-torch reads torch.export programs only: the build says so and takes torch -> ONNX -> onnx2tf
    assert m.route.name == "torch-onnx2tf" and not m.route.pinned
    assert [(a.route, a.status) for a in m.route.attempts] == [
        ("torch-litert", "skipped"),
        ("torch-litert-pt2e", "skipped"),
        ("torch-onnx2tf", "used"),
    ]
    assert "torchscript" in m.route.attempts[0].reason
    r = edgepack.bench(res.path, "local", runs=2, min_seconds=0).result
    assert r.validation[m.outputs[0].name].cosine > 0.9999


@pytest.mark.slow
def test_callable_builds_are_byte_identical_across_processes(torch_files, tmp_path):
    """Same inputs, two processes (each with its own str-hash salt) -> the same bundle bytes."""
    outs = []
    for i in range(2):
        out = tmp_path / f"b{i}.edgepack"
        cli("build", torch_files["callable"], "--input", "image:1x1x8x8", "-o", str(out), check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_int8_onnx_keeps_layernorm_float(tmp_path):
    """Regression (zoo: ViT cosine 0.969, YOLOS 0.643 in int8): static int8 quantized LayerNormalization too. With
    norms (and attention-mask Wheres) left float, a toy ViT agrees at 0.999+ instead of 0.990, with every top-1."""
    from pathlib import Path

    import onnx

    from edgepack.bundle import read_member

    calib = tmp_path / "c.npz"
    np.savez(calib, pixel_values=np.random.default_rng(0).standard_normal((100, 3, 32, 32)).astype(np.float32))
    src = f"{Path(__file__).parent / 'models' / 'tiny_vit.py'}:build_model"
    built = edgepack.build(
        src,
        to="onnx",
        quantize="int8",
        calibration=calib,
        inputs=["pixel_values:1x3x32x32"],
        output=tmp_path / "v.edgepack",
    )
    m = built.manifest.validation.outputs["output"]
    assert m.cosine >= 0.998 and m.top1_agreement == 1.0, m
    (tmp_path / "m.onnx").write_bytes(read_member(built.path, "model.onnx"))
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert "LayerNormalization" in built.manifest.quantization.method
    assert any(n.op_type == "QuantizeLinear" for n in graph.node), "the rest is quantized"
