"""Route torch -> tflite through ONNX: ``torch.onnx.export``, then the ONNX -> TFLite route (onnx2tf + the TFLite
converter). The fallback when litert-torch cannot lower a model, the route for TorchScript files (which
torch.export cannot read), and for the precisions litert-torch does not offer (fp16, int16x8). Validated against
PyTorch like every torch route."""

from __future__ import annotations

from pathlib import Path

from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import IO_DTYPE, LAYOUT, OPSET, onnx_to_tflite, torch_to_onnx


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    return torch_to_onnx.via_onnx(onnx_to_tflite.convert, source, options, calibration, workdir)


ROUTE = Route(
    name="torch-onnx2tf",
    sources=("torch",),
    target="tflite",
    precisions=onnx_to_tflite.ROUTE.precisions,
    convert=convert,
    extra="tensorflow",
    requires=("torch", "onnxscript") + onnx_to_tflite.ONNX2TF_REQUIRES,
    options=(LAYOUT, IO_DTYPE, OPSET),
    install=onnx_to_tflite.ROUTE.install,
    summary="torch.onnx.export, then onnx2tf -> the TFLite converter (needs TensorFlow)",
)
