"""Keras/TF sources → TFLite bundles in every precision, run with the real LiteRT interpreter; bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest

import edgepack
from conftest import needs_tensorflow
from edgepack.errors import UsageError
from helpers import cli, dataset, keras_files, one_line_error, two_io_onnx

pytestmark = [pytest.mark.tensorflow, needs_tensorflow]


@pytest.fixture(scope="module")
def kfiles(tmp_path_factory):
    return keras_files(tmp_path_factory.mktemp("keras"))


@pytest.fixture(scope="module")
def nhwc_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("nhwc")
    return {
        "calib": dataset(d / "calib.npz", shape=(8, 8, 1)),
        "eval": dataset(d / "eval.npz", n=20, seed=3, shape=(8, 8, 1), labels=True),
    }


def _keras_golden_check(res, model):
    from edgepack.bundle import read_member

    g = np.load(io.BytesIO(read_member(res.path, "golden.npz")))
    x = g[f"input/{res.manifest.inputs[0].name}"]
    want = model(x, training=False).numpy()
    np.testing.assert_allclose(g[f"output/{res.manifest.outputs[0].name}"], want, rtol=1e-4, atol=1e-5)


CASES = [("keras", q) for q in ("none", "fp16", "dynamic", "int8", "int16x8")] + [
    (k, q) for k in ("h5", "savedmodel", "callable") for q in ("none", "int8")
]


@pytest.mark.parametrize("kind,quantize", CASES, ids=[f"{k}-{q}" for k, q in CASES])
def test_keras_to_tflite(kind, quantize, kfiles, nhwc_data, tmp_path):
    calib = nhwc_data["calib"] if quantize in ("int8", "int16x8") else None
    inputs = ["image:1x8x8x1"] if kind == "callable" else []
    name = "image" if kind != "savedmodel" else "image"
    res = edgepack.build(
        kfiles[kind],
        to="tflite",
        quantize=quantize,
        calibration=calib,
        eval=nhwc_data["eval"],
        inputs=inputs,
        output=tmp_path / "m.edgepack",
    )
    m = res.manifest
    assert m.format == "tflite" and m.runtime == "litert" and m.model.member == "model.tflite"
    assert m.validation.status == "passed" and name in m.inputs[0].name
    assert m.inputs[0].layout == "NHWC" and m.inputs[0].shape == [1, 8, 8, 1]
    _keras_golden_check(res, kfiles["model"])
    bench = edgepack.bench(res.path, "local", runs=3, min_seconds=0).result
    assert bench.device.runtime == "litert" and bench.runtime_details["interpreter"] == "ai_edge_litert.interpreter"
    assert bench.runtime_details["xnnpack"] in (True, False) and "ops" in bench.runtime_details
    out = m.outputs[0].name
    assert bench.validation[out].cosine >= m.validation.thresholds["min_cosine"]
    assert bench.accuracy.n == 20
    if quantize in ("int8", "int16x8"):
        assert m.quantization.calibration_samples == 120


def test_int8_io_is_quantized_and_dequantized(kfiles, nhwc_data, tmp_path):
    res = edgepack.build(
        kfiles["keras"],
        to="tflite",
        quantize="int8",
        io_dtype="int8",
        calibration=nhwc_data["calib"],
        eval=nhwc_data["eval"],
        output=tmp_path / "m.edgepack",
    )
    spec_in, spec_out = res.manifest.inputs[0], res.manifest.outputs[0]
    assert spec_in.dtype == "int8" and spec_in.quant is not None and spec_in.quant.scale[0] > 0
    assert spec_out.dtype == "int8" and spec_out.quant is not None
    r = edgepack.bench(res.path, "local", runs=3, min_seconds=0).result
    assert r.runtime_details["inputs_quantized"] == [True] and r.runtime_details["outputs_quantized"] == [True]
    assert r.validation[spec_out.name].cosine > 0.98, "dequantized int8 outputs agree with Keras"
    assert "int8 I/O" in res.manifest.quantization.method


def test_tflite_file_is_bundled_as_is(kfiles, tmp_path):
    first = edgepack.build(kfiles["keras"], to="tflite", output=tmp_path / "a.edgepack")
    from edgepack.bundle import read_member

    tfl = tmp_path / "model.tflite"
    tfl.write_bytes(read_member(first.path, "model.tflite"))
    res = edgepack.build(tfl, to="tflite", output=tmp_path / "b.edgepack")
    assert read_member(res.path, "model.tflite") == tfl.read_bytes()
    assert res.manifest.source.framework == "tflite" and res.manifest.validation.status == "passed"
    assert edgepack.bench(res.path, "local", runs=2, min_seconds=0).result.latency_ms.p50 > 0
    with pytest.raises(UsageError, match="fp16 is not available for tflite -> tflite") as e:
        edgepack.build(tfl, to="tflite", quantize="fp16", output=tmp_path / "c.edgepack")
    assert "already a TFLite model" in e.value.hint


def test_rejected_op_is_named(kfiles, tmp_path):
    res = cli("build", kfiles["svd"], "--to", "tflite", "-o", str(tmp_path / "x.edgepack"))
    assert "tf.Svd" in one_line_error(res)
    assert not (tmp_path / "x.edgepack").exists()


def test_calibration_in_the_wrong_layout(kfiles, tmp_path):
    nchw = dataset(tmp_path / "nchw.npz", shape=(1, 8, 8))
    res = cli("build", kfiles["keras"], "--to", "tflite", "--quantize", "int8", "--calibration", str(nchw))
    assert "has shape [120, 1, 8, 8], expected [N, 8, 8, 1]" in one_line_error(res)


def test_corrupt_files(tmp_path):
    (tmp_path / "bad.tflite").write_bytes(b"TFL3 not really")
    assert "not a loadable TFLite model" in one_line_error(cli("build", str(tmp_path / "bad.tflite"), "--to", "tflite"))
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n garbage")
    assert "not a loadable Keras model" in one_line_error(cli("build", str(tmp_path / "bad.h5"), "--to", "tflite"))


def test_io_dtype_only_for_full_integer(kfiles, tmp_path):
    with pytest.raises(UsageError, match="--io-dtype int8 applies to --to tflite --quantize int8"):
        edgepack.build(kfiles["keras"], to="tflite", quantize="fp16", io_dtype="int8", output=tmp_path / "x.edgepack")


def test_missing_delegate_is_an_error_not_a_fallback(kfiles, tmp_path):
    import subprocess
    import sys

    from edgepack.devices import runner_dir

    res = edgepack.build(kfiles["keras"], to="tflite", output=tmp_path / "m.edgepack")
    out = subprocess.run(
        [
            sys.executable,
            str(runner_dir() / "tflite_runner.py"),
            str(res.path),
            "--runs",
            "1",
            "--delegate",
            str(tmp_path / "libnope.so"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert "delegate" in out.stderr and "libnope.so" in out.stderr and "failed to load" in out.stderr


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_onnx_to_tflite_layouts(layout, tiny_model, calib, tmp_path):
    from edgepack.bundle import sha256_file

    before = sha256_file(tiny_model)
    res = edgepack.build(
        tiny_model, to="tflite", quantize="int8", calibration=calib, layout=layout, output=tmp_path / "m.edgepack"
    )
    assert sha256_file(tiny_model) == before, "the user's source file is never modified"
    spec = res.manifest.inputs[0]
    assert spec.layout == layout.upper()
    assert spec.shape == ([1, 1, 8, 8] if layout == "nchw" else [1, 8, 8, 1])
    assert "onnx2tf" in res.manifest.tools and res.manifest.validation.reference.startswith("onnx")
    r = edgepack.bench(res.path, "local", runs=2, min_seconds=0).result
    assert r.validation[res.manifest.outputs[0].name].cosine > 0.98
    if layout == "nhwc":
        assert r.runtime_details["ops"].get("TRANSPOSE", 0) == 0


@pytest.mark.parametrize("quantize,layout", [("none", "nchw"), ("int8", "nchw"), ("int16x8", "nhwc")])
def test_onnx_to_tflite_two_inputs_two_outputs(quantize, layout, tmp_path):
    """Two inputs and two outputs: the TFLite model names its tensors ``PartitionedCall:0``..., orders its inputs
    by name (``bias`` before ``input.1``) and makes the [1,8,8,8] output channels-last although its shape looks
    the same. Outputs pair with the source's by signature name, calibration feeds each input by name, and the
    output layout comes from running onnx2tf's SavedModel, so validation and the device agree."""
    src = two_io_onnx(tmp_path / "two.onnx")
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npz"
    np.savez(
        calib,
        **{
            "input.1": rng.standard_normal((40, 3, 8, 8)).astype(np.float32),
            "bias": rng.standard_normal((40, 8)).astype(np.float32),
        },
    )
    res = edgepack.build(
        str(src),
        to="tflite",
        quantize=quantize,
        layout=layout,
        output=tmp_path / "m.edgepack",
        calibration=calib if quantize != "none" else None,
    )
    m = res.manifest
    assert [(t.shape, t.layout) for t in m.inputs] == [
        ([1, 3, 8, 8] if layout == "nchw" else [1, 8, 8, 3], layout.upper()),
        ([1, 8], "NC"),
    ]
    assert [(t.shape, t.layout) for t in m.outputs] == [([1, 8, 8, 8], "NHWC"), ([1, 8], "NC")]
    assert m.validation.status == "passed"
    assert all(o.cosine >= m.validation.thresholds["min_cosine"] for o in m.validation.outputs.values())
    r = edgepack.bench(res.path, "local", runs=2, min_seconds=0).result
    assert set(r.validation) == {t.name for t in m.outputs}
    assert all(v.cosine >= m.validation.thresholds["min_cosine"] for v in r.validation.values())


NAMED_KERAS_PY = '''
import keras


def build_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1), batch_size=1, name="pixels")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(x))


def two_heads():
    """Dict in, dict out, declared score before emb (Keras sorts output_names: emb, score)."""
    keras.utils.set_random_seed(0)
    feat, mask = keras.Input((4,), batch_size=1, name="feat"), keras.Input((4,), batch_size=1, name="mask")
    h = keras.layers.Dense(6, activation="tanh")(keras.layers.Concatenate()([feat, mask]))
    return keras.Model({"feat": feat, "mask": mask},
                       {"score": keras.layers.Dense(1, name="score")(h), "emb": keras.layers.Dense(3, name="emb")(h)})
'''


@pytest.fixture(scope="module")
def named_keras(tmp_path_factory):
    import contextlib

    d = tmp_path_factory.mktemp("named")
    py = d / "named.py"
    py.write_text(NAMED_KERAS_PY)
    ns: dict = {}
    exec(compile(NAMED_KERAS_PY, str(py), "exec"), ns)
    model = ns["build_model"]()
    model.save(d / "named.keras")
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(d / "named_saved", verbose=False)
    return {"py": py, "keras": d / "named.keras", "savedmodel": d / "named_saved", "model": model, "ns": ns}


def _golden(res):
    from edgepack.bundle import read_member

    return np.load(io.BytesIO(read_member(res.path, "golden.npz")))


@pytest.mark.parametrize("kind,quantize", [("keras", "none"), ("keras", "int8"), ("savedmodel", "dynamic")])
def test_tflite_bundle_carries_the_source_names(kind, quantize, named_keras, tmp_path):
    """Keras input "pixels" / output "probs" (a SavedModel: its signature keys "pixels" / "output_0") are the
    bundle's names, in the manifest and the golden data, not serving_default_pixels:0 / StatefulPartitionedCall:0;
    the runner finds the tensors by the model's signature."""
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npz"
    np.savez(calib, pixels=rng.standard_normal((40, 8, 8, 1)).astype(np.float32))
    res = edgepack.build(
        named_keras[kind],
        to="tflite",
        quantize=quantize,
        output=tmp_path / "m.edgepack",
        calibration=calib if quantize == "int8" else None,
    )
    m = res.manifest
    out = "probs" if kind == "keras" else "output_0"
    assert [t.name for t in m.inputs] == ["pixels"] and [t.name for t in m.outputs] == [out]
    assert set(_golden(res)) == {"input/pixels", f"output/{out}"}
    assert m.validation.status == "passed" and set(m.validation.outputs) == {out}
    r = edgepack.bench(res.path, "local", runs=3, min_seconds=0).result
    assert set(r.validation) == {out} and r.validation[out].cosine >= m.validation.thresholds["min_cosine"]
    _keras_golden_check(res, named_keras["model"])


def test_dict_outputs_keep_their_names_and_values(named_keras, tmp_path):
    """A dict-returning Keras model: each output named by its key and holding that key's values (output_names is
    sorted, the dict is not), inputs by their names."""
    model = named_keras["ns"]["two_heads"]()
    model.save(tmp_path / "two.keras")
    res = edgepack.build(tmp_path / "two.keras", to="tflite", output=tmp_path / "two.edgepack")
    m = res.manifest
    assert [(t.name, t.shape) for t in m.inputs] == [("feat", [1, 4]), ("mask", [1, 4])]
    assert [(t.name, t.shape) for t in m.outputs] == [("score", [1, 1]), ("emb", [1, 3])]
    g = _golden(res)
    want = model({"feat": g["input/feat"], "mask": g["input/mask"]}, training=False)
    for name in ("score", "emb"):
        np.testing.assert_allclose(g[f"output/{name}"], np.asarray(want[name]), rtol=1e-5, atol=1e-6)
    r = edgepack.bench(res.path, "local", runs=2, min_seconds=0).result
    assert set(r.validation) == {"score", "emb"} and min(v.cosine for v in r.validation.values()) > 0.9999


def test_runner_resolves_old_and_new_names(named_keras, tmp_path):
    """Bundles written before (manifest = the interpreter's tensor names) and now (the source's names, found as
    signature keys) both resolve to the same tensors, in the device runner and in the build-time predictor."""
    from edgepack.converters import tflite_tools
    from edgepack.device_runners import tflite_runner

    from edgepack.bundle import read_member
    from edgepack.errors import EdgepackError

    res = edgepack.build(named_keras["keras"], to="tflite", output=tmp_path / "m.edgepack")
    path = tmp_path / "model.tflite"
    path.write_bytes(read_member(res.path, "model.tflite"))
    interp = tflite_tools.open_interpreter(path)
    (tin,), (tout,) = interp.get_input_details(), interp.get_output_details()
    assert tin["name"] != "pixels" and tout["name"] != "probs"  # the converter's names, e.g. serving_default_...
    old = {"inputs": [{"name": tin["name"]}], "outputs": [{"name": tout["name"]}]}
    new = {"inputs": [{"name": "pixels"}], "outputs": [{"name": "probs"}]}
    assert tflite_runner.tensor_indices(interp, old) == ({tin["name"]: tin["index"]}, {tout["name"]: tout["index"]})
    assert tflite_runner.tensor_indices(interp, new) == ({"pixels": tin["index"]}, {"probs": tout["index"]})
    with pytest.raises(Exception, match="no output tensor or signature key"):
        tflite_runner.tensor_indices(interp, {"inputs": new["inputs"], "outputs": [{"name": "logits"}]})
    x = _golden(res)["input/pixels"][:1]
    by_old = tflite_tools.session_predict(
        path,
        [m.model_copy(update={"name": tin["name"]}) for m in res.manifest.inputs],
        [m.model_copy(update={"name": tout["name"]}) for m in res.manifest.outputs],
    )
    by_new = tflite_tools.session_predict(path, res.manifest.inputs, res.manifest.outputs)
    np.testing.assert_array_equal(by_old({tin["name"]: x})[tout["name"]], by_new({"pixels": x})["probs"])
    with pytest.raises(EdgepackError, match="no input tensor or signature key"):
        tflite_tools.session_predict(path, [res.manifest.inputs[0].model_copy(update={"name": "image"})], [])


def test_legacy_hdf5_suffix_is_a_keras_file(kfiles, tmp_path):
    """A legacy Keras .hdf5 file (the same HDF5 format as .h5) was refused as an unknown model type."""
    import shutil

    hdf5 = tmp_path / "tiny.hdf5"
    shutil.copyfile(kfiles["h5"], hdf5)
    built = edgepack.build(hdf5, to="tflite", output=tmp_path / "t.edgepack")
    assert built.manifest.source.kind == "keras-h5" and built.manifest.validation.status == "passed"
