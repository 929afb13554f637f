"""PyTorch, Keras and ONNX sources → CoreML bundles in every precision, checked with what runs on Linux; the runner.

Conversions are real (coremltools 9). CoreML prediction exists only on macOS: here the bundle's validation is
``pending-device`` and the Linux-side checks (spec, I/O, ops, weight precision) are asserted, including that they
fail on a wrong spec; bench on Linux must fail with the clear macOS message. The prediction path is tested only on
macOS (skipped elsewhere with that reason), never faked.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import zipfile

import numpy as np
import pytest

import edgepack
from conftest import have_coremltools, have_tensorflow, have_torch
from edgepack.errors import DeviceError, EdgepackError, UsageError
from helpers import cli, dataset, keras_files, one_line_error, tiny_onnx, torch_model_py, two_io_onnx

pytestmark = [
    pytest.mark.coreml,
    pytest.mark.skipif(not have_coremltools(), reason="needs the coreml extra (pip install 'edgepack[coreml]')"),
]

PRECISIONS = ("none", "fp16", "int8", "palettize4", "palettize6")
ON_MAC = sys.platform == "darwin"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("coreml-src")
    out = {}
    if have_torch():
        out["torch"] = (f"{torch_model_py(d)}:build_model", ["image:1x1x8x8"], (1, 8, 8))
    if have_tensorflow():
        out["keras"] = (keras_files(d)["callable"], [], (8, 8, 1))
        out["onnx"] = (str(tiny_onnx(d / "m.onnx")), [], (1, 8, 8))  # through onnx2tf, part of that extra
    return out


class _Bundles(dict):
    """(framework, precision) -> BuildResult, each built once on first use (~1-3 s each after the imports)."""

    def __init__(self, sources, directory):
        super().__init__()
        self.sources, self.dir = sources, directory

    def __missing__(self, key):
        fw, q = key
        src, inputs, shape = self.sources[fw]
        evalset = dataset(self.dir / f"{fw}-eval.npz", n=20, shape=shape, labels=True)
        self[key] = edgepack.build(
            src, to="coreml", quantize=q, inputs=inputs, eval=evalset, output=self.dir / f"{fw}.{q}.edgepack"
        )
        return self[key]


@pytest.fixture(scope="module")
def bundles(sources, tmp_path_factory):
    return _Bundles(sources, tmp_path_factory.mktemp("coreml-out"))


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    """An ONNX bundle of this module's own (the session's tiny_model is left to the tests that own it)."""
    d = tmp_path_factory.mktemp("coreml-onnx")
    return edgepack.build(tiny_onnx(d / "m.onnx"), output=d / "m.edgepack").path


def _need(sources, fw):
    if fw not in sources:
        pytest.skip(f"needs the {'torch' if fw == 'torch' else 'tensorflow'} extra")


CASES = [(fw, q) for fw in ("torch", "keras", "onnx") for q in PRECISIONS]


@pytest.mark.parametrize("fw,quantize", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_build_checks_on_linux(fw, quantize, sources, bundles):
    _need(sources, fw)
    res = bundles[fw, quantize]
    m = res.manifest
    assert m.format == "coreml" and m.runtime == "coreml" and m.model.member == "model.mlpackage"
    assert m.quantization.mode == quantize
    v = m.validation
    if not ON_MAC:
        assert v.status == "pending-device" and "only on macOS" in v.pending_reason and v.outputs == {}
    c = v.checks
    assert c["model_type"] == "mlProgram" and c["deployment_target"] == "iOS18" and c["specification_version"] == 9
    # I/O exactly the source's (names, shapes, float32), in its layout
    src_in = {
        "torch": ("image", [1, 1, 8, 8], "NCHW"),
        "keras": ("image", [1, 8, 8, 1], "NHWC"),
        "onnx": ("image", [1, 1, 8, 8], "NCHW"),
    }[fw]
    assert [(t["name"], t["shape"], t["dtype"]) for t in c["inputs"]] == [(src_in[0], src_in[1], "float32")]
    assert (m.inputs[0].name, m.inputs[0].shape, m.inputs[0].layout) == src_in
    assert [(t["shape"], t["dtype"]) for t in c["outputs"]] == [([1, 10], "float32")]
    assert c["outputs"][0]["name"] == m.outputs[0].name
    assert c["unsupported_ops"] == [] and "conv" in c["ops"] and ("linear" in c["ops"] or "matmul" in c["ops"])
    w = c["weights"]
    if quantize == "none":
        assert c["compute_precision"] == "fp32" and "cast" not in c["ops"] and not w.get("fp16") and w["fp32"] >= 2
    else:  # fp16 compute: inputs cast to fp16, float weights stored as fp16
        assert c["compute_precision"] == "fp16" and c["ops"]["cast"] >= 1 and not w.get("fp32")
    if quantize == "int8":  # conv + dense weights, int8 per-channel
        assert w["quantized_int8"] == 2 and not w.get("palettized")
    elif quantize.startswith("palettize"):
        assert w["palettized"] == 2 and not any(k.startswith("quantized") for k in w)
        assert c["palette_sizes"] and max(c["palette_sizes"]) <= 2 ** int(quantize[-1])
    else:
        assert not w.get("palettized") and not any(k.startswith("quantized") for k in w)
    assert m.model.bytes == c["bytes"] > 1000
    manifest, problems = edgepack.verify(res.path)
    assert problems == []


def test_mlpackage_round_trips_through_the_bundle(sources, bundles, tmp_path):
    """Every file of the .mlpackage is a member with its sha256; extracted by the runner's own code, the package
    loads with coremltools and gives the same facts as at build time."""
    fw = next(iter(sources), None)
    if fw is None:
        pytest.skip("needs the torch or tensorflow extra")
    from edgepack.converters import coreml_tools
    from edgepack.device_runners.runner_common import Bundle

    res = bundles[fw, "int8"]
    with zipfile.ZipFile(res.path) as zf:
        names = [n for n in zf.namelist() if n.startswith("model.mlpackage/")]
    assert sorted(names) == sorted(n for n in res.manifest.members if n.startswith("model.mlpackage/"))
    assert {
        "model.mlpackage/Manifest.json",
        "model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
        "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin",
    } <= set(names)
    with Bundle(str(res.path), str(tmp_path)) as b:
        facts = coreml_tools.inspect_package(b.member(res.manifest.model.member))
    want = dict(res.manifest.validation.checks)
    want.pop("deployment_target")
    assert facts == want


def test_bundle_is_deterministic(sources, tmp_path):
    _need(sources, "torch")
    src, inputs, _ = sources["torch"]
    a = edgepack.build(src, to="coreml", quantize="palettize4", inputs=inputs, output=tmp_path / "a.edgepack")
    b = edgepack.build(src, to="coreml", quantize="palettize4", inputs=inputs, output=tmp_path / "b.edgepack")
    assert a.path.read_bytes() == b.path.read_bytes()


def test_checks_fail_on_a_wrong_spec(sources, bundles):
    """The static checks are not a rubber stamp: a tampered expected spec or the wrong precision fails them."""
    fw = next(iter(sources), None)
    if fw is None:
        pytest.skip("needs the torch or tensorflow extra")
    from edgepack.converters.coreml_tools import check

    def facts(q):
        return bundles[fw, q].manifest.validation.checks

    m = bundles[fw, "int8"].manifest
    ins, outs = m.inputs, m.outputs
    assert check(facts("int8"), ins, outs, "int8") == []
    wrong_shape = [ins[0].model_copy(update={"shape": [1, 3, 8, 8]})]
    assert any("has shape [" in p for p in check(facts("int8"), wrong_shape, outs, "int8"))
    wrong_name = [ins[0].model_copy(update={"name": "pixels"})]
    assert any("should be named 'pixels'" in p for p in check(facts("int8"), wrong_name, outs, "int8"))
    wrong_dtype = [outs[0].model_copy(update={"dtype": "float16"})]
    assert any("has dtype float32" in p for p in check(facts("int8"), ins, wrong_dtype, "int8"))
    assert any("no weight is palettized" in p for p in check(facts("int8"), ins, outs, "palettize4"))
    assert any("no weight is int8-quantized" in p for p in check(facts("fp16"), ins, outs, "int8"))
    assert any("fp32 was requested" in p for p in check(facts("fp16"), ins, outs, "none"))
    assert any("fp16 compute was expected" in p for p in check(facts("none"), ins, outs, "fp16"))
    pal6 = facts("palettize6")
    assert max(pal6["palette_sizes"]) > 16, "6-bit palettes have up to 64 entries"
    assert any("lookup tables" in p for p in check(pal6, ins, outs, "palettize4"))
    bad_ops = {**facts("int8"), "unsupported_ops": ["my_custom_op"]}
    assert any("my_custom_op" in p for p in check(bad_ops, ins, outs, "int8"))


def test_inspect_and_verify_cli(sources, bundles):
    fw = next(iter(sources), None)
    if fw is None:
        pytest.skip("needs the torch or tensorflow extra")
    path = bundles[fw, "palettize6"].path
    out = cli("inspect", str(path), check=True).stdout
    assert "model.mlpackage" in out and "palettize6" in out and "static checks passed" in out
    if not ON_MAC:
        assert "pending-device" in out
    assert "OK (" in cli("verify", str(path), check=True).stdout


@pytest.mark.skipif(ON_MAC, reason="checks the message given on a non-macOS device")
def test_bench_on_linux_says_macos_is_needed(sources, bundles):
    """The real runner on this Linux host, as `edgepack bench --device local`: one clear line, exit 5, no number."""
    fw = next(iter(sources), None)
    if fw is None:
        pytest.skip("needs the torch or tensorflow extra")
    path = bundles[fw, "fp16"].path
    proc = cli("bench", str(path), "--device", "local", "--runs", "3", "--min-seconds", "0", "--compute-units", "cpu")
    line = one_line_error(proc)
    assert proc.returncode == 5 and "(exit 3)" in line and "CoreML prediction needs macOS" in line
    assert "--device user@mac" in line and "p50" not in proc.stdout
    with pytest.raises(DeviceError, match="needs macOS"):
        edgepack.bench(path, "local", runs=3, min_seconds=0)


def test_int8_activation_calibration_needs_macos(sources, tmp_path, monkeypatch):
    """Refused before converting (for ONNX: before onnx2tf's minutes on a real model), nothing written."""
    if ON_MAC:
        pytest.skip("on macOS activation calibration runs")
    if not sources:
        pytest.skip("needs the torch or tensorflow extra")
    from edgepack.converters import onnx_tools

    monkeypatch.setattr(onnx_tools, "to_saved_model", lambda *a: pytest.fail("onnx2tf ran before the refusal"))
    for src, inputs, shape in sources.values():
        calib = dataset(tmp_path / "calib.npz", n=8, shape=shape)
        with pytest.raises(UsageError, match="only on macOS"):
            edgepack.build(
                src, to="coreml", quantize="int8", calibration=calib, inputs=inputs, output=tmp_path / "m.edgepack"
            )
        assert not (tmp_path / "m.edgepack").exists()


def test_bad_options(onnx_bundle, sources, tmp_path):
    with pytest.raises(UsageError, match="--compute-units do\\(es\\) not apply to a onnx bundle"):
        edgepack.bench(onnx_bundle, "local", compute_units="ane")
    with pytest.raises(UsageError, match="palettize4 is not available for onnx"):
        edgepack.build(tiny_onnx(tmp_path / "m.onnx"), to="onnx", quantize="palettize4")
    if have_tensorflow():  # refused before onnx2tf runs, nothing written
        with pytest.raises(UsageError, match="--layout is not supported for --to coreml"):
            edgepack.build(tiny_onnx(tmp_path / "m.onnx"), to="coreml", layout="nhwc", output=tmp_path / "l.edgepack")
        assert not (tmp_path / "l.edgepack").exists()
    fw = next(iter(sources), None)
    if fw is not None:
        src, inputs, _ = sources[fw]
        with pytest.raises(UsageError, match="--coreml-target iOS9"):
            edgepack.build(src, to="coreml", inputs=inputs, coreml_target="iOS9", output=tmp_path / "x.edgepack")


def test_older_deployment_target(sources, tmp_path):
    """--coreml-target iOS16 gives spec 7 and the iOS16 form of int8 weights (constexpr_affine_dequantize)."""
    _need(sources, "torch")
    src, inputs, _ = sources["torch"]
    res = edgepack.build(
        src, to="coreml", quantize="int8", inputs=inputs, coreml_target="ios16", output=tmp_path / "m.edgepack"
    )
    c = res.manifest.validation.checks
    assert c["deployment_target"] == "iOS16" and c["specification_version"] == 7
    assert c["ops"].get("constexpr_affine_dequantize") == 2 and c["weights"]["quantized_int8"] == 2
    assert res.manifest.build_options["coreml_target"] == "ios16"


# --------------------------------------------------------------------------- the runner's pure-Python parts


def test_runner_refuses_non_macos_with_exit_3():
    from edgepack.device_runners import coreml_runner, runner_common

    with pytest.raises(runner_common.RunnerError) as e:
        coreml_runner.check_platform("Linux")
    assert e.value.code == runner_common.EXIT_RUNTIME_MISSING == 3 and "needs macOS" in e.value.message
    coreml_runner.check_platform("Darwin")  # no error


def test_runner_arguments_and_compute_units():
    import coremltools as ct
    from edgepack.device_runners import coreml_runner, runner_common

    parser = runner_common.build_parser("x")
    coreml_runner.CoreMLBackend().add_arguments(parser)
    assert parser.parse_args(["b.edgepack"]).compute_units == "all"
    assert parser.parse_args(["b.edgepack", "--compute-units", "ane", "--runs", "7"]).compute_units == "ane"
    with pytest.raises(SystemExit):
        parser.parse_args(["b.edgepack", "--compute-units", "npu"])
    for unit in coreml_runner.COMPUTE_UNITS.values():
        assert hasattr(ct.ComputeUnit, unit)


@pytest.mark.skipif(ON_MAC, reason="checks the message given on a non-macOS device")
def test_runner_script_exit_code(onnx_bundle):
    """The runner file itself, as it runs on a device: exit 3 and one stderr line."""
    import subprocess
    from pathlib import Path

    import edgepack.device_runners as dr

    proc = subprocess.run(
        [sys.executable, "-I", str(Path(dr.__file__).parent / "coreml_runner.py"), str(onnx_bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.strip().startswith("edgepack-runner: error: CoreML prediction needs macOS")


@pytest.mark.skipif(sys.platform != "darwin", reason="CoreML prediction needs macOS")
@pytest.mark.parametrize("quantize", ["none", "int8", "palettize6"])
def test_prediction_on_macos(quantize, sources, bundles):
    """On a Mac: build-time validation ran against the source, and the runner predicts, times and checks golden."""
    fw = next(iter(sources))
    res = bundles[fw, quantize]
    m = res.manifest
    assert m.validation.status == "passed"
    for unit in ("cpu", "all"):
        r = edgepack.bench(res.path, "local", runs=3, min_seconds=0, compute_units=unit).result
        assert r.device.runtime == "coreml" and r.runtime_details["compute_units"] == unit
        for out, metrics in r.validation.items():
            assert metrics.cosine >= m.validation.thresholds["min_cosine"], out
        assert r.accuracy.n == 20


def _golden(path):
    from edgepack.bundle import read_member

    return np.load(io.BytesIO(read_member(path, "golden.npz")))


def test_golden_holds_source_outputs(sources, bundles):
    """The device's reference: golden.npz carries the source framework's outputs under the CoreML names."""
    _need(sources, "torch")
    import torch

    res = bundles["torch", "fp16"]
    g = _golden(res.path)
    ns: dict = {}
    exec(compile(open(sources["torch"][0].rpartition(":")[0]).read(), "m", "exec"), ns)
    with torch.no_grad():
        want = ns["build_model"]()(torch.from_numpy(g["input/image"])).numpy()
    np.testing.assert_allclose(g[f"output/{res.manifest.outputs[0].name}"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["pt2", "ts", "savedmodel", "keras-file"])
def test_other_source_kinds(kind, tmp_path):
    """.pt2 (ExportedProgram), TorchScript, SavedModel and .keras files convert too, with the source's I/O names."""
    if kind in ("pt2", "ts"):
        if not have_torch():
            pytest.skip("needs the torch extra")
        import torch

        ns: dict = {}
        exec(compile(open(torch_model_py(tmp_path)).read(), "m", "exec"), ns)
        model, x = ns["build_model"](), torch.zeros(1, 1, 8, 8)
        if kind == "pt2":
            torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "m.pt2"))
            src, inputs, name = str(tmp_path / "m.pt2"), [], "input"
        else:
            torch.jit.trace(model, x).save(str(tmp_path / "m.pt"))
            src, inputs, name = str(tmp_path / "m.pt"), ["x:1x1x8x8"], "x"
    else:
        if not have_tensorflow():
            pytest.skip("needs the tensorflow extra")
        files = keras_files(tmp_path)
        src, inputs = files["savedmodel" if kind == "savedmodel" else "keras"], []
        name = "image"
    res = edgepack.build(src, to="coreml", quantize="fp16", inputs=inputs, output=tmp_path / "m.edgepack")
    c = res.manifest.validation.checks
    assert res.manifest.inputs[0].name == name and c["inputs"][0]["name"] == name
    assert c["outputs"][0]["name"] == res.manifest.outputs[0].name and c["unsupported_ops"] == []
    assert c["compute_precision"] == "fp16" and edgepack.verify(res.path)[1] == []


# --------------------------------------------------------------------------- ONNX -> CoreML (onnx2tf stage)


@pytest.mark.skipif(not have_tensorflow(), reason="ONNX -> CoreML runs onnx2tf: needs the tensorflow extra")
def test_onnx_source_keeps_its_io_and_checks_the_tensorflow_stage(tmp_path):
    """Names made valid for CoreML (``input.1`` -> ``input_1``), channels-first I/O exactly as the source's, the
    onnx2tf SavedModel checked numerically against onnxruntime, and the user's file left untouched."""
    import hashlib

    import onnxruntime as ort

    src = two_io_onnx(tmp_path / "two.onnx")
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    res = edgepack.build(str(src), to="coreml", quantize="fp16", output=tmp_path / "two.edgepack")
    m = res.manifest
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    assert [(t.name, t.shape, t.layout) for t in m.inputs] == [
        ("input_1", [1, 3, 8, 8], "NCHW"),
        ("bias", [1, 8], "NC"),
    ]
    assert [(t.name, t.shape) for t in m.outputs] == [("mask", [1, 8, 8, 8]), ("vec", [1, 8])]
    c = m.validation.checks
    assert [t["name"] for t in c["inputs"]] == ["input_1", "bias"] and c["unsupported_ops"] == []
    assert "onnx2tf" in m.tools and "transpose" in c["ops"]  # mask back to channels-first inside the program
    stage = c["tensorflow_stage"]
    assert stage["status"] == "passed" and stage["samples"] == 8 and stage["inputs_from"] == "random"
    assert set(stage["outputs"]) == {"mask", "vec"}
    assert all(o["cosine"] > 0.9999 for o in stage["outputs"].values())
    # golden.npz: the source's own outputs on the device's inputs, under the CoreML names, source layout
    g = _golden(res.path)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input.1": g["input/input_1"], "bias": g["input/bias"]})
    np.testing.assert_allclose(g["output/mask"], want[0], rtol=1e-5, atol=1e-5)
    out = cli("inspect", str(res.path), check=True).stdout
    assert "intermediate stage run here, passed" in out and "onnx2tf SavedModel" in out


def test_onnx_stage_orientation_and_failure():
    """The orientation is chosen by agreement, not shape (a [1,8,8,8] output reads the same both ways); a
    SavedModel that disagrees fails the build unless --allow-mismatch, which records it."""
    from edgepack.converters import onnx_to_coreml, onnx_tools

    from edgepack.errors import ValidationFailed
    from edgepack.types import CheckOptions

    rng = np.random.default_rng(0)
    want = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    perm, metrics = onnx_tools.best_orientation(want.transpose(0, 2, 3, 1), want)
    assert perm == [0, 3, 1, 2] and metrics["cosine"] > 0.99999
    perm, _ = onnx_tools.best_orientation(want, want)
    assert perm is None
    with pytest.raises(EdgepackError, match="changed an output's shape"):
        onnx_tools.best_orientation(np.zeros((2, 5)), np.zeros((2, 8)))
    noisy = onnx_tools.best_orientation(want + rng.standard_normal(want.shape), want)[1]
    run = onnx_tools.SavedModelRun(None, None, {}, {}, [None], {"logits": noisy}, 2, "random")
    opts = CheckOptions()
    with pytest.raises(ValidationFailed, match="disagrees with the ONNX source on output 'logits'"):
        onnx_to_coreml.stage_check(run, opts)
    stage = onnx_to_coreml.stage_check(run, dataclasses.replace(opts, allow_mismatch=True))
    assert stage["status"] == "failed-overridden" and stage["outputs"]["logits"]["cosine"] < 0.9
