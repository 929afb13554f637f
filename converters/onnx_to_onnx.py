"""Route onnx -> onnx: the source model as it is, in the requested precision."""

from __future__ import annotations

from pathlib import Path

from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import EXPLAIN_QUANT, KEEP_FLOAT, onnx_tools


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    return onnx_tools.finish(source.path, source, workdir, options, calibration)


ROUTE = Route(
    name="onnx-onnx",
    sources=("onnx",),
    target="onnx",
    precisions=("none", "fp16", "dynamic", "int8"),
    convert=convert,
    extra="",
    requires=("onnx", "onnxruntime"),
    options=(KEEP_FLOAT, EXPLAIN_QUANT),
    summary="the ONNX model as it is; precisions from onnxruntime.quantization / float16",
)
