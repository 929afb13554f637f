"""Route tflite -> tflite: an existing .tflite bundled as it is (no conversion; precision is the file's own)."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgepack.errors import UsageError
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource, QuantizationInfo

from . import tflite_tools


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    if options.convert.quantize != "none":
        raise UsageError(
            f"{source.path.name} is already a TFLite model; it is bundled as it is",
            "drop --quantize, or quantize from the original Keras/PyTorch/ONNX model",
        )
    out = workdir / "model.tflite"
    shutil.copyfile(source.path, out)
    integer = any(s.quant for s in source.inputs + source.outputs)
    quant = QuantizationInfo(mode="none", method="as supplied" + (" (integer I/O)" if integer else ""))
    return tflite_tools.finish(
        out, source, options, quant, [s.layout for s in source.inputs], [s.layout for s in source.outputs], {}
    )


ROUTE = Route(
    name="tflite-tflite",
    sources=("tflite",),
    target="tflite",
    precisions=("none",),
    convert=convert,
    extra="tensorflow",
    requires=("ai_edge_litert",),
    precision_hint="the file is already a TFLite model and is bundled as it is: drop --quantize, or "
    "quantize from the original Keras/PyTorch/ONNX model",
    summary="an existing .tflite bundled as it is (its own precision)",
)
