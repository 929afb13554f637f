"""torch -> TFLite int8 by PT2E inside litert-torch (XNNPACK quantizer), float or int8 I/O: tried when
ai-edge-quantizer's int8 of the same fp32 graph (route torch-litert) misses the validation gate. Measured on the
model zoo: AEQ's int8 misses the 0.98 gate on YOLOS (0.83), Wav2Vec2 (0.92) and BERT (0.96), where PT2E, which
keeps residual ADDs, MEANs and attention matmuls in float, passes."""

from __future__ import annotations

from pathlib import Path

from edgepack.errors import EdgepackError
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import IO_DTYPE, LAYOUT, torch_to_tflite


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    if options.convert.io_dtype == "int8" and not options.convert.route:
        raise EdgepackError(
            "torch-litert already converted this model with PT2E int8 (--io-dtype int8)", "try another --to"
        )
    return torch_to_tflite.convert(source, options, calibration, workdir, pt2e_int8=True)


ROUTE = Route(
    name="torch-litert-pt2e",
    sources=("torch",),
    kinds=torch_to_tflite.ROUTE.kinds,
    target="tflite",
    precisions=("int8",),
    convert=convert,
    extra="tflite",
    requires=("torch", "litert_torch"),
    options=(LAYOUT, IO_DTYPE),
    summary="litert-torch with PT2E static int8 inside the export (residual ADDs/MEANs may stay float)",
)
