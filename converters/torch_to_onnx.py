"""Route torch -> onnx: torch.onnx.export (the dynamo exporter for nn.Module and ExportedProgram,
the TorchScript exporter for ScriptModules, which the dynamo exporter does not take), then the
shared ONNX precision step."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError, first_line, require
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import EXPLAIN_QUANT, KEEP_FLOAT, OPSET, onnx_tools


def export(source: ModelSource, path: Path, opset: int) -> None:
    torch = require("torch", "torch")
    require("onnxscript", "torch")
    args = tuple(torch.from_numpy(np.zeros(s.static_shape(), np.dtype(s.dtype))) for s in source.inputs)
    names_in = [s.name for s in source.inputs]
    names_out = [s.name for s in source.outputs]
    dynamo = source.kind != "torchscript"
    captured = io.StringIO()
    for name in ("torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(captured), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                source.handle,
                args,
                str(path),
                input_names=names_in,
                output_names=names_out,
                opset_version=opset,
                dynamo=dynamo,
                external_data=False,
                **({"optimize": True} if dynamo else {}),
            )
    except Exception as e:
        first = first_line(e)
        summary = [ln for ln in str(e).splitlines() if "Exception summary" in ln]
        detail = str(e).split("## Exception summary")[-1].strip().splitlines()[0] if summary else first
        raise EdgepackError(
            f"torch.onnx.export failed: {detail[:300]}",
            "the model uses an op or Python construct the exporter cannot handle; "
            "rewrite that part or export it to ONNX yourself and pass the .onnx",
        )


def _tools(converted: ConvertedModel) -> ConvertedModel:
    converted.tools["torch"] = require("torch", "torch").__version__.split("+")[0]
    try:
        import onnxscript

        converted.tools["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return converted


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    fp32 = workdir / "export.fp32.onnx"
    export(source, fp32, options.convert.opset)
    return _tools(onnx_tools.finish(fp32, source, workdir, options, calibration))


def via_onnx(
    onnx_convert, source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path
) -> ConvertedModel:
    """A torch source through an ONNX route: export it (names and shapes kept), then hand the ONNX file to
    ``onnx_convert`` as the model to convert; the reference outputs stay PyTorch's (the build validates the
    result against torch, not against the intermediate ONNX)."""
    import dataclasses

    onnx_path = workdir / "torch_export.onnx"
    export(source, onnx_path, options.convert.opset)
    converted = onnx_convert(dataclasses.replace(source, path=onnx_path), options, calibration, workdir)
    converted.quantization.method = (converted.quantization.method or "fp32") + " (from torch via ONNX)"
    return _tools(converted)


ROUTE = Route(
    name="torch-onnx",
    sources=("torch",),
    target="onnx",
    precisions=("none", "fp16", "dynamic", "int8"),
    convert=convert,
    extra="torch",
    requires=("torch", "onnxscript"),
    options=(OPSET, KEEP_FLOAT, EXPLAIN_QUANT),
    summary="torch.onnx.export (dynamo exporter; TorchScript exporter for TorchScript files)",
)
