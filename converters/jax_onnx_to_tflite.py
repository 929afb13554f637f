"""Route jax -> tflite through ONNX: jax2onnx, then the ONNX -> TFLite route (onnx2tf + the TFLite converter).
The fallback when jax2tf or the TFLite converter cannot take a function, and the route for int16x8. Validated
against JAX. The ONNX file has NCHW 4-D tensors (what onnx2tf expects); the TFLite model gets JAX's NHWC inputs
back by default (``--layout nhwc``, no input Transpose), ``--layout nchw`` keeps them channels-first."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import IO_DTYPE, LAYOUT, OPSET, jax_to_onnx, onnx_to_tflite


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    options = dataclasses.replace(
        options, convert=dataclasses.replace(options.convert, layout=options.convert.layout or "nhwc")
    )
    return jax_to_onnx.via_onnx(onnx_to_tflite.convert, source, options, calibration, workdir)


ROUTE = Route(
    name="jax-onnx2tf",
    sources=("jax",),
    target="tflite",
    precisions=onnx_to_tflite.ROUTE.precisions,
    convert=convert,
    extra="jax",
    requires=jax_to_onnx.ROUTE.requires + onnx_to_tflite.ONNX2TF_REQUIRES,
    options=(LAYOUT, IO_DTYPE, OPSET),
    install=onnx_to_tflite.ROUTE.install,
    summary="fallback: jax2onnx, then onnx2tf -> the TFLite converter (needs TensorFlow)",
)
