"""Route torch -> coreml with coremltools (ML Program ``.mlpackage``).

The model goes through coremltools' TorchScript frontend, its most complete one: an ``nn.Module`` (from
``file.py:callable``) and a ``.pt2`` ExportedProgram (``ep.module()``) are traced with ``torch.jit.trace`` on
zero inputs of the ``--input`` / saved shapes, through a wrapper returning the outputs as a flat tuple (dicts,
ModelOutputs, nested tuples: ``_trace``); a TorchScript file is converted as it is. I/O keep the source's
names, shapes and layout (NCHW stays NCHW) and float32 dtype; precisions are in coreml_tools.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError, UsageError, first_line, require
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import COREML_TARGET, coreml_tools, keep_layout
from .torch_source import flat_module


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    torch = require("torch", "torch")
    ct = coreml_tools.ct()
    coreml_tools.check_options(options, calibration)
    keep_layout(
        source, options, "--layout is not supported for --to coreml", "drop --layout (CoreML keeps the source's)"
    )
    args = tuple(torch.from_numpy(np.zeros(s.static_shape(), np.dtype(s.dtype))) for s in source.inputs)
    for name in ("torch.export", "torch._dynamo"):  # coremltools' own: coreml_tools.ct()
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if source.kind == "torchscript":
                model = source.handle
            else:
                # an ExportedProgram's module() is already in inference form (and refuses .eval())
                module = source.handle.module() if source.kind == "torch-export" else source.handle.eval()
                model = _trace(torch, module, args)
            inputs = [
                ct.TensorType(name=n, shape=tuple(int(a) for a in t.shape), dtype=np.dtype(s.dtype).type)
                for n, s, t in zip(coreml_tools.feature_names(source.inputs), source.inputs, args)
            ]
            mlmodel = ct.convert(
                model,
                inputs=inputs,
                **coreml_tools.convert_kwargs(
                    options, source.outputs, [f"edgepack_output_{i}" for i in range(len(source.outputs))]
                ),
            )
    except UsageError:
        raise
    except Exception as e:
        first = first_line(e)
        raise EdgepackError(
            f"coremltools could not convert the PyTorch model: {first[:300]}",
            "the model uses an op coremltools cannot lower; try --to onnx or --to tflite",
        )
    return coreml_tools.finish(
        mlmodel, source, options, calibration, workdir, {"torch": torch.__version__.split("+")[0]}
    )


def _trace(torch, module, args):
    """``torch.jit.trace`` of ``module`` returning its outputs as a flat tuple of tensors, in the order and
    selection of the source's outputs (``torch_source._flatten``): coremltools has no converter for the
    ``prim::DictConstruct`` a dict / ModelOutput result traces to. nn.MultiheadAttention's inference fast path
    (``aten::_native_multi_head_attention``, no coremltools converter either) is off while tracing: the traced
    graph then has the same math in ops coremltools lowers."""

    # a value returned twice would be one CoreML output: the repeat becomes `t + 0`, which coremltools keeps as an op
    flat = flat_module(torch, module, lambda t: t + 0, single=True)
    mha = torch.backends.mha
    fastpath = mha.get_fastpath_enabled()
    try:
        mha.set_fastpath_enabled(False)
        with torch.no_grad():
            return torch.jit.trace(flat, args, strict=False)
    finally:
        mha.set_fastpath_enabled(fastpath)


ROUTE = Route(
    name="torch-coreml",
    sources=("torch",),
    target="coreml",
    precisions=("none", "fp16", "int8", "palettize4", "palettize6"),
    convert=convert,
    extra="coreml",
    requires=("torch", "coremltools"),
    calibrated=(),
    options=(COREML_TARGET,),
    summary="coremltools' TorchScript frontend (nn.Module and .pt2 traced with torch.jit.trace) -> ML Program",
)
