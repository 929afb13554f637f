"""Route fallback on real converters: a route that fails hands over to the next; the manifest records which route
made the bundle and why the others were not used; --route pins one; a build fails only when every route did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgepack
from conftest import have_tensorflow, have_torch
from edgepack import registry
from edgepack.errors import EdgepackError, UsageError, ValidationFailed
from helpers import cli, one_line_error

MODELS = Path(__file__).parent / "models"
YOLO = f"{MODELS / 'cached_anchor.py'}:build_model"
YOLO_POW = f"{MODELS / 'cached_anchor.py'}:build_model_pow"
INPUT = ["image:1x3x64x64"]

needs_tflite = pytest.mark.skipif(
    not (have_torch() and have_tensorflow()), reason="needs the torch, tflite and tensorflow extras"
)


@pytest.mark.torch
@needs_tflite
def test_cached_anchor_head_converts_with_litert(tmp_path):
    """Regression: the reference run used to cache inference-mode anchor grids in the module, and torch.export
    then failed with 'Inference tensors cannot be saved for backward'."""
    built = edgepack.build(YOLO, to="tflite", inputs=INPUT, route="torch-litert", output=tmp_path / "y.edgepack")
    m = built.manifest
    assert m.route.name == "torch-litert" and m.validation.status == "passed" and len(m.outputs) == 2
    assert all(o.cosine >= 0.9999 for o in m.validation.outputs.values())
    res = edgepack.bench(built.path, "local", runs=2, min_seconds=0).result
    assert all(o.cosine >= 0.9999 for o in res.validation.values())


@pytest.mark.torch
@needs_tflite
def test_failed_route_falls_back_and_inspect_shows_it(tmp_path):
    out = tmp_path / "y.edgepack"
    built = edgepack.build(YOLO_POW, to="tflite", inputs=INPUT, output=out)
    m = built.manifest
    # torch-litert-pt2e (int8 only) is recorded as skipped for this fp32 build, with why
    assert [(a.route, a.status) for a in m.route.attempts] == [
        ("torch-litert-pt2e", "skipped"),
        ("torch-litert", "failed"),
        ("torch-onnx2tf", "used"),
    ]
    assert m.route.attempts[0].reason == "no none precision"
    assert "tfl.pow" in m.route.attempts[1].reason and not m.route.pinned
    assert m.route.name == "torch-onnx2tf" and m.validation.status == "passed"
    assert edgepack.verify(out)[1] == []
    shown = cli("inspect", str(out), check=True).stdout
    assert "route" in shown and "torch-onnx2tf" in shown and "torch-litert failed" in shown
    assert json.loads(cli("inspect", str(out), "--json", check=True).stdout)["route"]["name"] == "torch-onnx2tf"


@pytest.mark.torch
@needs_tflite
def test_every_route_failing_names_each(tmp_path):
    """No route passes: one error naming every route with its reason; the most telling exit code (validation)."""
    with pytest.raises(ValidationFailed) as e:
        edgepack.build(YOLO_POW, to="tflite", inputs=INPUT, min_cosine=1.5, output=tmp_path / "y.edgepack")
    assert "no route could build torch -> tflite (none)" in e.value.message
    assert "torch-litert: litert-torch could not convert" in e.value.message
    assert "torch-onnx2tf: converted model disagrees" in e.value.message
    assert not (tmp_path / "y.edgepack").exists()
    # --allow-mismatch: the route that converted is used, and the record says validation failed
    built = edgepack.build(
        YOLO_POW, to="tflite", inputs=INPUT, min_cosine=1.5, allow_mismatch=True, output=tmp_path / "y.edgepack"
    )
    assert built.manifest.validation.status == "failed-overridden"
    assert [(a.route, a.status) for a in built.manifest.route.attempts] == [
        ("torch-litert-pt2e", "skipped"),
        ("torch-litert", "failed"),
        ("torch-onnx2tf", "used"),
    ]


def test_route_pin_is_checked(tiny_model, tmp_path):
    with pytest.raises(UsageError, match="route torch-litert goes torch -> tflite"):
        edgepack.build(tiny_model, to="tflite", route="torch-litert", output=tmp_path / "x.edgepack")
    with pytest.raises(UsageError, match="unknown route 'nope'") as e:
        edgepack.build(tiny_model, to="onnx", route="nope", output=tmp_path / "x.edgepack")
    assert "onnx-onnx" in e.value.hint
    err = one_line_error(
        cli("build", str(tiny_model), "--to", "coreml", "--route", "onnx-onnx", "-o", str(tmp_path / "x.edgepack"))
    )
    assert "route onnx-onnx goes onnx -> onnx" in err
    built = edgepack.build(tiny_model, to="onnx", route="onnx-onnx", output=tmp_path / "x.edgepack")
    assert built.manifest.route.pinned and built.manifest.build_options["route"] == "onnx-onnx"


def test_route_option_that_no_route_reads(tiny_model, tmp_path):
    """--layout is read by some TFLite routes, not by ONNX -> ONNX: refused with the routes that read it."""
    err = one_line_error(cli("build", str(tiny_model), "--layout", "nhwc", "-o", str(tmp_path / "x.edgepack")))
    assert "--layout is not supported for --to onnx" in err and "onnx-onnx2tf" in err
    assert not (tmp_path / "x.edgepack").exists()


def test_routes_command_lists_declarations():
    rows = json.loads(cli("routes", "--json", check=True).stdout)
    assert [r["route"] for r in rows] == [r.name for r in registry.routes()]
    litert = next(r for r in rows if r["route"] == "torch-litert")
    assert litert["to"] == "tflite" and "fp16" not in litert["precisions"] and "--layout" in litert["options"]
    order = [r["route"] for r in rows if r["to"] == "tflite" and "torch" in r["from"]]
    assert order == ["torch-litert", "torch-litert-pt2e", "torch-onnx2tf"], (
        "litert-torch first (int8: ai-edge-quantizer, then PT2E), ONNX + onnx2tf as the fallback"
    )
    text = cli("routes", check=True).stdout
    assert "torch-onnx-coreml" in text


@pytest.mark.torch
@pytest.mark.slow
@needs_tflite
def test_int8_that_stays_float_is_a_failed_route(tmp_path):
    """Regression (zoo: Hugging Face EfficientNet): litert-torch's PT2E left every convolution in float, so the
    "int8" bundle was an fp32 model in disguise. That route now fails, naming the float ops. (The PT2E path is the
    int8-I/O one since the float-I/O int8 default became ai-edge-quantizer.)"""
    pytest.importorskip("transformers")
    import numpy as np

    calib = tmp_path / "c.npz"
    np.savez(calib, pixel_values=np.random.default_rng(0).standard_normal((100, 3, 32, 32)).astype(np.float32))
    with pytest.raises(EdgepackError, match=r"int8 model left \d+ of \d+ convolutions/linears in float") as e:
        edgepack.build(
            f"{MODELS / 'hf_efficientnet.py'}:build_model",
            to="tflite",
            quantize="int8",
            calibration=calib,
            inputs=["pixel_values:1x3x32x32"],
            route="torch-litert",
            io_dtype="int8",
            output=tmp_path / "e.edgepack",
        )
    assert "torch-onnx2tf" in e.value.hint


@pytest.mark.torch
@needs_tflite
def test_build_prints_only_its_own_lines_and_verbose_keeps_the_log(tmp_path):
    """TensorFlow/absl, torchao and torch write to the terminal on import and conversion; a build shows only
    edgepack's progress, and --verbose keeps the frameworks' output in OUT.log (named in errors)."""
    out = tmp_path / "y.edgepack"
    proc = cli(
        "build",
        YOLO,
        "--input",
        INPUT[0],
        "--to",
        "tflite",
        "--route",
        "torch-litert",
        "--verbose",
        "-o",
        str(out),
        check=True,
        env={"COLUMNS": "300"},
    )  # no wrapping: one line per step
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("✓ ") for ln in lines), proc.stderr
    log = tmp_path / "y.edgepack.log"
    assert log.is_file() and "torchao" in log.read_text(), "the frameworks' output went to the log"
    err = one_line_error(
        cli(
            "build",
            YOLO,
            "--input",
            INPUT[0],
            "--to",
            "tflite",
            "--route",
            "torch-litert",
            "--min-cosine",
            "1.5",
            "--verbose",
            "-o",
            str(tmp_path / "z.edgepack"),
        )
    )
    assert f"the converters' log is {tmp_path / 'z.edgepack.log'}" in err


@pytest.mark.torch
@pytest.mark.slow
@needs_tflite
def test_gelu_through_onnx2tf(tmp_path):
    """Regression (zoo: ConvNeXt fp16): onnx2tf kept ONNX's Erf as tf.Erf, which the TFLite converter refuses."""
    for quantize in ("none", "fp16"):
        built = edgepack.build(
            f"{MODELS / 'gelu_mlp.py'}:build_model",
            to="tflite",
            quantize=quantize,
            inputs=["x:1x16"],
            route="torch-onnx2tf",
            output=tmp_path / f"g.{quantize}.edgepack",
        )
        assert built.manifest.validation.status == "passed"
        assert min(o.cosine for o in built.manifest.validation.outputs.values()) >= 0.999


def test_failed_route_reason_is_the_telling_line():
    """A route's one-line reason: TensorFlow's "Graph execution error:" says nothing; the line that does is kept
    (zoo: onnx2tf SavedModels failing at run time were all reported as that bare header)."""
    from edgepack.errors import first_line

    tf_error = RuntimeError(
        "Graph execution error:\n\nDetected at node model/add defined at (most recent call last):\n"
        '  File "x.py", line 3, in call\n\nIncompatible shapes: [1,2,4,96] vs [1,4,4,96]\n'
        "\t [[{{node model/add}}]] [Op:__inference_call_1]"
    )
    assert first_line(tf_error) == "Graph execution error: Incompatible shapes: [1,2,4,96] vs [1,4,4,96]"
    assert first_line(ValueError("\n  a plain first line\nmore")) == "a plain first line"
    assert first_line(KeyError()) == "KeyError"
