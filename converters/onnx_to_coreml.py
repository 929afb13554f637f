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

from edgepack.errors import ValidationFailed
from edgepack.registry import Route, min_cosine
from edgepack.types import BuildOptions, CheckOptions, ConvertedModel, ModelSource

from . import COREML_TARGET, coreml_tools, import_tensorflow, keep_layout, onnx_tools

STAGE_SAMPLES = 8


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    tf = import_tensorflow()
    coreml_tools.check_options(options, calibration)
    keep_layout(
        source, options, "--layout is not supported for --to coreml", "drop --layout (CoreML keeps the source's)"
    )
    keep = [s.name for s in source.inputs if 3 <= len(s.shape) <= 5]
    saved = onnx_tools.to_saved_model(source, workdir, keep, "CoreML")
    # the TensorFlow stage, run: it decides the output transposes and checks onnx2tf against onnxruntime
    run = onnx_tools.run_saved_model(saved, source, calibration, options.data.seed, STAGE_SAMPLES)
    stage = stage_check(run, options.check)

    signature = [
        tf.TensorSpec(s.static_shape(), tf.as_dtype(s.dtype), name=n)
        for n, s in zip(coreml_tools.feature_names(source.inputs), source.inputs)
    ]

    def call(*args):
        res = run.fn(**{run.in_names[s.name]: a for s, a in zip(source.inputs, args)})
        outs = [res[run.out_names[s.name]] for s in source.outputs]
        return [tf.transpose(t, perm) if perm else t for t, perm in zip(outs, run.perms)]

    mlmodel = coreml_tools.convert_tensorflow(
        lambda: (tf.function(call, input_signature=signature).get_concrete_function(), run.owner),
        source,
        options,
        "ONNX (as onnx2tf's SavedModel)",
    )
    converted = coreml_tools.finish(
        mlmodel,
        source,
        options,
        calibration,
        workdir,
        {"onnx2tf": onnx_tools.onnx2tf_version(), "tensorflow": tf.__version__},
    )
    converted.checks["tensorflow_stage"] = stage
    return converted


def stage_check(run: onnx_tools.SavedModelRun, options: CheckOptions) -> dict:
    """The SavedModel's agreement with the source as a manifest record; below the fp32 threshold (or
    ``--min-cosine``) the build fails unless ``--allow-mismatch``."""
    threshold = min_cosine("none") if options.min_cosine is None else options.min_cosine  # this stage is fp32
    stage = {
        "stage": "onnx2tf SavedModel (fp32) against onnxruntime on the source",
        "samples": run.samples,
        "inputs_from": run.inputs_from,
        "min_cosine": threshold,
        "outputs": {k: {"cosine": m["cosine"], "max_abs_err": m["max_abs_err"]} for k, m in run.metrics.items()},
    }
    bad = [(k, m) for k, m in run.metrics.items() if m.get("nonfinite") or m["cosine"] < threshold]
    if bad and not options.allow_mismatch:
        name, m = bad[0]
        raise ValidationFailed(
            f"onnx2tf's TensorFlow model disagrees with the ONNX source on output {name!r} before CoreML conversion: "
            f"cosine {m['cosine']:.5f} < {threshold}",
            "try --to onnx or --to tflite for this model, or pass --allow-mismatch to bundle anyway",
        )
    stage["status"] = "failed-overridden" if bad else "passed"
    return stage


ROUTE = Route(
    name="onnx-coreml",
    sources=("onnx",),
    target="coreml",
    precisions=("none", "fp16", "int8", "palettize4", "palettize6"),
    convert=convert,
    extra="coreml",
    requires=("tensorflow", "onnx2tf", "coremltools"),
    calibrated=(),
    options=(COREML_TARGET,),
    install=onnx_tools.ONNX2TF_INSTALL,
    summary="onnx2tf -> SavedModel (checked against onnxruntime) -> coremltools' TensorFlow 2 frontend",
)
