"""Route torch -> coreml through ONNX: ``torch.onnx.export``, then the ONNX -> CoreML route (onnx2tf ->
SavedModel, checked against onnxruntime, -> coremltools' TensorFlow 2 frontend). The fallback when coremltools'
TorchScript frontend cannot convert a model."""

from __future__ import annotations

from pathlib import Path

from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import COREML_TARGET, OPSET, onnx_to_coreml, torch_to_onnx


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    return torch_to_onnx.via_onnx(onnx_to_coreml.convert, source, options, calibration, workdir)


ROUTE = Route(
    name="torch-onnx-coreml",
    sources=("torch",),
    target="coreml",
    precisions=onnx_to_coreml.ROUTE.precisions,
    convert=convert,
    extra="coreml",
    requires=("torch", "onnxscript") + onnx_to_coreml.ROUTE.requires,
    calibrated=(),
    options=(COREML_TARGET, OPSET),
    install=onnx_to_coreml.ROUTE.install,
    summary="torch.onnx.export, then the ONNX -> CoreML route (onnx2tf, TensorFlow, coremltools)",
)
