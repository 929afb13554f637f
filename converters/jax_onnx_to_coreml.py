"""Route jax -> coreml through ONNX: jax2onnx, then the ONNX -> CoreML route (onnx2tf -> SavedModel, checked
against onnxruntime, -> coremltools' TensorFlow 2 frontend). CoreML prediction (the check against JAX) runs on
macOS only; elsewhere the bundle is checked statically and validation is pending-device."""

from __future__ import annotations

from pathlib import Path

from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import COREML_TARGET, OPSET, jax_to_onnx, onnx_to_coreml


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    return jax_to_onnx.via_onnx(onnx_to_coreml.convert, source, options, calibration, workdir)


ROUTE = Route(
    name="jax-onnx-coreml",
    sources=("jax",),
    target="coreml",
    precisions=onnx_to_coreml.ROUTE.precisions,
    convert=convert,
    extra="coreml",
    requires=jax_to_onnx.ROUTE.requires + onnx_to_coreml.ROUTE.requires,
    calibrated=(),
    options=(COREML_TARGET, OPSET),
    install=onnx_to_coreml.ROUTE.install,
    summary="jax2onnx, then the ONNX -> CoreML route (onnx2tf, TensorFlow, coremltools)",
)
