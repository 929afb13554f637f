"""JAX sources (issue 17): ``file.py:callable`` returning a jax.numpy function with its weights, a Flax NNX module or
Linen's ``apply`` with its variables -> ONNX (jax2onnx) and TFLite (jax2tf) bundles, validated against JAX at build
time and run by the device runner on the local device. Every route × precision is built from the plain function in
tests/test_routes.py (conformance); this file covers the three ways to hand a model over."""

from __future__ import annotations

import pytest

import edgepack
from conftest import have_jax, have_tensorflow
from edgepack.errors import UsageError
from helpers import cli, dataset, jax_model_py, one_line_error

pytestmark = pytest.mark.skipif(not have_jax(), reason="needs the jax extra (pip install 'edgepack[jax]')")
needs_tf = pytest.mark.skipif(not have_tensorflow(), reason="needs the tensorflow extra")


@pytest.fixture(scope="module")
def jax_py(tmp_path_factory):
    return jax_model_py(tmp_path_factory.mktemp("jax"))


def _check(built, bench: bool = True):
    m = built.manifest
    assert m.source.framework == "jax" and m.source.kind == "python-callable"
    assert m.validation.status == "passed" and m.validation.reference.startswith("jax ")
    manifest, problems = edgepack.verify(built.path)
    assert problems == []
    if bench:
        res = edgepack.bench(built.path, "local", runs=3, min_seconds=0).result
        for out, metrics in res.validation.items():
            assert metrics.cosine >= m.validation.thresholds["min_cosine"], out
    return m


def test_callable_without_input_is_refused(jax_py, tmp_path):
    out = tmp_path / "m.edgepack"
    with pytest.raises(UsageError, match="returns a JAX model: its input shapes are not in the code") as e:
        edgepack.build(f"{jax_py}:plain", output=out)
    assert "--input NAME:1x28x28x1" in e.value.hint
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_wrong_input_shape_is_clear(jax_py, tmp_path):
    with pytest.raises(UsageError, match=r"running tiny_jax.py:plain on inputs \['1x8x8x3'\] failed") as e:
        edgepack.build(f"{jax_py}:plain", inputs=["image:1x8x8x3"], output=tmp_path / "m.edgepack")
    assert "--input shapes" in e.value.hint


@pytest.mark.slow
def test_cli_missing_input_is_one_line(jax_py, tmp_path):
    proc = cli("build", f"{jax_py}:plain", "--to", "onnx", "-o", str(tmp_path / "m.edgepack"))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "input shapes are not in the code" in line and "--input NAME:" in line
    assert not (tmp_path / "m.edgepack").exists()


@pytest.mark.slow
def test_plain_function_to_onnx(jax_py, tmp_path):
    evalset = dataset(tmp_path / "eval.npz", n=20, shape=(8, 8, 1), labels=True)
    built = edgepack.build(
        f"{jax_py}:plain", to="onnx", inputs=["image:1x8x8x1"], eval=evalset, output=tmp_path / "p.edgepack"
    )
    m = _check(built)
    assert m.route.name == "jax-onnx"
    assert [(s.name, s.shape, s.layout) for s in m.inputs] == [("image", [1, 8, 8, 1], "NHWC")]
    assert [(s.name, s.shape) for s in m.outputs] == [("output", [1, 10])]
    # (fn, None): a function of the inputs alone
    built = edgepack.build(f"{jax_py}:no_params", to="onnx", inputs=["x:1x16"], output=tmp_path / "n.edgepack")
    assert _check(built, bench=False).validation.outputs["output"].cosine > 0.9999


@pytest.mark.slow
@needs_tf
def test_nnx_module_onnx_int8_and_tflite_int8(jax_py, tmp_path):
    calib = dataset(tmp_path / "calib.npz", n=64, shape=(8, 8, 1))
    for target in ("onnx", "tflite"):
        built = edgepack.build(
            f"{jax_py}:nnx_cnn",
            to=target,
            quantize="int8",
            calibration=calib,
            inputs=["image:1x8x8x1"],
            output=tmp_path / f"cnn.{target}.edgepack",
        )
        m = _check(built)
        assert m.quantization.mode == "int8" and m.quantization.calibration_samples == 64
        assert m.route.name == f"jax-{target}"
        assert [(s.name, s.shape) for s in m.outputs] == [("output", [1, 10])]


@pytest.mark.slow
@needs_tf
def test_linen_apply_with_dict_outputs(jax_py, tmp_path):
    for target in ("onnx", "tflite"):
        built = edgepack.build(
            f"{jax_py}:linen_mlp", to=target, inputs=["image:1x8x8x1"], output=tmp_path / f"mlp.{target}.edgepack"
        )
        m = _check(built)
        # a dict result: outputs named by its keys (jax.tree_util order: sorted)
        assert [(s.name, s.shape) for s in m.outputs] == [("features", [1, 64]), ("logits", [1, 10])]
