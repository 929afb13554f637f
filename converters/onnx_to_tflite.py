"""Route onnx -> tflite: onnx2tf rewrites the ONNX graph as a TensorFlow SavedModel (NCHW -> NHWC inside,
``onnx_tools.to_saved_model``), then the TFLite converter applies the requested precision exactly as for Keras
sources (tflite_tools.configure).

Layout: the default keeps the source's NCHW inputs (onnx2tf ``keep_ncw_or_nchw_or_ncdhw_input_names``, which costs
one Transpose per input); ``--layout nhwc`` gives channels-last inputs with no input Transpose.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.data import map_tensors
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import IO_DTYPE, LAYOUT, import_tensorflow, onnx_tools, tflite_tools

STAGE_SAMPLES = 4


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    tf = import_tensorflow()
    nhwc = options.convert.layout == "nhwc"
    keep = [s.name for s in source.inputs if len(s.shape) == 4 and not nhwc]
    saved = onnx_tools.to_saved_model(source, workdir, keep, "TFLite")
    in_specs = [s if s.name in keep else onnx_tools.nhwc(s) for s in source.inputs]
    # outputs: onnx2tf turns some channels-first outputs channels-last; which ones is read from a run of the
    # SavedModel against the source (shapes cannot tell for a [1,8,8,8] output)
    run = onnx_tools.run_saved_model(saved, source, calibration, options.data.seed, STAGE_SAMPLES, in_specs)
    out_layouts = [
        s.layout if perm is None else onnx_tools.nhwc(s).layout for s, perm in zip(source.outputs, run.perms)
    ]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    cal = map_tensors(calibration, source.inputs, in_specs) if calibration is not None else None
    quant = tflite_tools.configure(
        converter,
        options.convert.quantize,
        options.convert.io_dtype,
        cal,
        in_specs,
        [[s.name, run.in_names[s.name]] for s in source.inputs],
    )
    out = workdir / "model.tflite"
    out.write_bytes(tflite_tools.convert(converter))
    tools = {"onnx2tf": onnx_tools.onnx2tf_version(), "tensorflow": tf.__version__}
    return tflite_tools.finish(out, source, options, quant, [s.layout for s in in_specs], out_layouts, tools)


ONNX2TF_REQUIRES = ("tensorflow", "onnx2tf")

ROUTE = Route(
    name="onnx-onnx2tf",
    sources=("onnx",),
    target="tflite",
    precisions=("none", "fp16", "dynamic", "int8", "int16x8"),
    convert=convert,
    extra="tensorflow",
    requires=ONNX2TF_REQUIRES,
    options=(LAYOUT, IO_DTYPE),
    install=onnx_tools.ONNX2TF_INSTALL,
    summary="onnx2tf -> SavedModel -> the TFLite converter (its post-training quantization)",
)
