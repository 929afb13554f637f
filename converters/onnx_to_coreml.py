"""Route onnx -> coreml: onnx2tf rewrites the ONNX graph as a TensorFlow SavedModel (``onnx_tools.to_saved_model``),
then coremltools' TensorFlow 2 frontend converts its serving signature to an ML Program ``.mlpackage``, with the
precisions of every CoreML route (coreml_tools).

coremltools dropped its ONNX frontend (coremltools 6+), and the usual ONNX -> PyTorch bridge (onnx2torch) imports
torchvision on load, which does not load with the CPU torch edgepack pins; onnx2tf is the maintained converter
edgepack already runs for ONNX -> TFLite.

I/O are exactly the source's: inputs of rank 3-5 stay channels-first (onnx2tf
``keep_ncw_or_nchw_or_ncdhw_input_names``), and outputs onnx2tf made channels-last are transposed back inside the
converted function. Which outputs need that is decided by running the SavedModel, not guessed from shapes (a
[1, 8, 8, 8] output reads the same either way).

The half that runs here is checked numerically: the SavedModel against onnxruntime on the build's inputs
(calibration data, else seeded random), recorded in the manifest as ``validation.checks.tensorflow_stage`` and
failing the build below fp32 agreement. The CoreML half runs only on macOS (validation ``pending-device``).
Limits: what onnx2tf or coremltools' TensorFlow frontend cannot lower (custom ops, some dynamic shapes) fails the
build with the converter's message; dynamic dimensions are fixed to 1 (or to ``--input`` NAME:SHAPE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.data import random_dataset, take
from edgepack.device_runners.runner_common import compare
from edgepack.errors import EdgepackError, ValidationFailed
from edgepack.types import BuildOptions, ConvertedModel, ModelSource, TensorSpec
from edgepack.validate import MIN_COSINE, reference_outputs, run_batches

from . import coreml_tools, import_tensorflow, keep_layout, onnx_tools

STAGE_SAMPLES = 8


def _static(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) else 1 for d in spec.shape]


def _to_channels_first(rank: int) -> list[int]:
    """The permutation that undoes onnx2tf's channels-last output: [0, r-1, 1, ..., r-2]."""
    return [0, rank - 1, *range(1, rank - 1)]


def _match_names(specs: list[TensorSpec], names: list[str], what: str) -> dict[str, str]:
    """Source tensor name -> the SavedModel signature's name: equal, or equal after onnx2tf's sanitising
    (non-alphanumerics -> '_'); by position when that leaves one of each."""
    def canon(n: str) -> str:
        return "".join(ch if ch.isalnum() else "_" for ch in n).strip("_").lower()

    out, free = {}, list(names)
    for s in specs:
        hit = next((n for n in free if n == s.name), None) or next((n for n in free if canon(n) == canon(s.name)),
                                                                    None)
        if hit is not None:
            out[s.name] = hit
            free.remove(hit)
    rest = [s for s in specs if s.name not in out]
    if len(rest) == 1 and len(free) == 1:
        out[rest[0].name] = free[0]
    elif rest:
        raise EdgepackError(f"onnx2tf renamed the {what}s {[s.name for s in rest]} to {free}: cannot pair them",
                            "give the ONNX model's tensors alphanumeric names and retry")
    return out


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    tf = import_tensorflow()
    coreml_tools.check_options(options, calibration)
    keep_layout(source, options, "--layout is not supported for --to coreml",
                "drop --layout (CoreML keeps the source's)")
    keep = [s.name for s in source.inputs if 3 <= len(s.shape) <= 5]
    saved = onnx_tools.to_saved_model(source, workdir, keep, "CoreML")
    owner = tf.saved_model.load(str(saved))
    fn = owner.signatures["serving_default"]
    in_names = _match_names(source.inputs, list(fn.structured_input_signature[1]), "input")
    out_names = _match_names(source.outputs, list(fn.structured_outputs), "output")

    def run_saved(feeds: dict) -> dict:
        res = fn(**{in_names[s.name]: tf.constant(feeds[s.name]) for s in source.inputs})
        return {s.name: res[out_names[s.name]].numpy() for s in source.outputs}

    # the TensorFlow stage, run: it decides the output transposes and checks onnx2tf against onnxruntime
    data = take(calibration, STAGE_SAMPLES) if calibration is not None else \
        random_dataset(source.inputs, STAGE_SAMPLES, options.seed)
    reference = reference_outputs(source, data)
    raw = run_batches(run_saved, data, source.inputs, [s.name for s in source.outputs])
    perms, metrics = [], {}
    for s in source.outputs:
        perm, best = _best_orientation(raw[s.name], reference[s.name])
        perms.append(perm)
        metrics[s.name] = best
    stage = _stage_check(metrics, options, calibration is not None, len(next(iter(data.values()))))

    signature = [tf.TensorSpec(_static(s), tf.as_dtype(s.dtype), name=n)
                 for n, s in zip(coreml_tools.feature_names(source.inputs), source.inputs)]

    def call(*args):
        res = fn(**{in_names[s.name]: a for s, a in zip(source.inputs, args)})
        return [tf.transpose(res[out_names[s.name]], perm) if perm else res[out_names[s.name]]
                for s, perm in zip(source.outputs, perms)]

    mlmodel = coreml_tools.convert_tensorflow(
        lambda: (tf.function(call, input_signature=signature).get_concrete_function(), owner), source, options,
        "ONNX (as onnx2tf's SavedModel)")
    converted = coreml_tools.finish(mlmodel, source, options, calibration, workdir,
                                    {"onnx2tf": onnx_tools.onnx2tf_version(), "tensorflow": tf.__version__})
    converted.checks["tensorflow_stage"] = stage
    return converted


def _best_orientation(got: np.ndarray, want: np.ndarray) -> tuple[list[int] | None, dict]:
    """(transpose back to the source layout or None, agreement): the orientation that agrees best with the
    source among those giving its shape."""
    candidates = [None] if got.shape == want.shape else []
    if got.ndim >= 3:
        perm = _to_channels_first(got.ndim)
        if got.transpose(perm).shape == want.shape:
            candidates.append(perm)
    if not candidates:
        raise EdgepackError(f"onnx2tf changed an output's shape to {list(got.shape)} (the source's is "
                            f"{list(want.shape)})", "try --to onnx or --to tflite for this model")
    scored = [(p, compare(want, got if p is None else got.transpose(p))) for p in candidates]
    return max(scored, key=lambda pm: pm[1]["cosine"])


def _stage_check(metrics: dict, options: BuildOptions, calibrated: bool, n: int) -> dict:
    threshold = MIN_COSINE["none"] if options.min_cosine is None else options.min_cosine  # this stage is fp32
    stage = {"stage": "onnx2tf SavedModel (fp32) against onnxruntime on the source", "samples": n,
             "inputs_from": "calibration" if calibrated else "random", "min_cosine": threshold,
             "outputs": {k: {"cosine": m["cosine"], "max_abs_err": m["max_abs_err"]} for k, m in metrics.items()}}
    bad = [(k, m) for k, m in metrics.items() if m.get("nonfinite") or m["cosine"] < threshold]
    if bad and not options.allow_mismatch:
        name, m = bad[0]
        raise ValidationFailed(
            f"onnx2tf's TensorFlow model disagrees with the ONNX source on output {name!r} before CoreML conversion: "
            f"cosine {m['cosine']:.5f} < {threshold}",
            "try --to onnx or --to tflite for this model, or pass --allow-mismatch to bundle anyway")
    stage["status"] = "failed-overridden" if bad else "passed"
    return stage
