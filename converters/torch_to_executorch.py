"""Route torch -> executorch: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner ->
an ExecuTorch program (``model.pte``).

Sources: an ``nn.Module`` from ``file.py:callable`` and a ``.pt2`` ExportedProgram (``ep.module()``); TorchScript
is not taken (torch.export cannot read it). The program returns the source's outputs as a flat list in the
loader's order and names (dicts, ModelOutputs, nested tuples flattened like ``torch_source._flatten``).
Precisions, I/O always float32 (or the source's integer dtypes):

- ``none``: fp32, every op XNNPACK takes is delegated to it;
- ``fp16``: the module and its float inputs in float16 (XNNPACK's fp16 kernels); the casts at the edges and the
  ops XNNPACK has no fp16 kernel for (e.g. GELU) stay on ExecuTorch's portable kernels;
- ``int8``: PT2E static quantization with ExecuTorch's ``XNNPACKQuantizer`` (symmetric, per-channel weights,
  int8 activations) calibrated on ``--calibration``, then lowered to XNNPACK's int8 kernels.

Ops XNNPACK cannot take are not an error: they run on the portable kernels and the build says which (the device
runner's ``placement`` counts them per op type). The build-time check runs the ``.pte`` with the
``executorch.runtime`` Python API, the same runtime the device runner uses, after a first load and inference in a
child process (``crash_probe``): a program that crashes the runtime fails the route instead of the build process.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from edgepack.device_runners.runner_common import iter_batches

from edgepack.errors import EdgepackError, UsageError, first_line, require
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource, QuantizationInfo, TensorSpec
from edgepack.ui import note, safe

from .torch_source import flat_module

EXTRA = "executorch"


def _flat(torch, module):
    """``module`` returning its outputs as a flat tuple (one tensor returned twice: two program outputs)."""
    return flat_module(torch, module, lambda t: t.clone(), single=False)


def _half(torch, module):
    """An fp16 copy of ``module`` with float32 I/O: float inputs cast to float16, float outputs back to float32."""

    class Half(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            xs = tuple(x.half() if x.is_floating_point() else x for x in xs)
            return tuple(t.float() if t.is_floating_point() else t for t in self.inner(*xs))

    return Half(copy.deepcopy(module).half())


def _quantize_int8(torch, module, args, source: ModelSource, calibration: dict | None, as_args):
    """PT2E static int8 with the XNNPACK quantizer, calibrated on every calibration sample."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calibration is None:
        raise UsageError("--quantize int8 needs calibration data", "pass --calibration DATA.npz")

    class Quantizer(XNNPACKQuantizer):  # type: ignore[misc]
        def transform_for_annotation(self, model):
            return super().transform_for_annotation(integer_scalars_kept(torch, model))

    quantizer = Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(module, args, strict=False).module(), quantizer)
    with torch.no_grad():
        for feeds in iter_batches(calibration, [s.model_dump() for s in source.inputs]):
            prepared(*as_args(feeds))
    converted = convert_pt2e(prepared)
    check_integer_compute(converted)
    return converted


def integer_scalars_kept(torch, model):
    """Integer ``add``/``mul`` with a Python number, as their ``.Scalar`` overloads. XNNPACKQuantizer's
    ``transform_for_annotation`` turns the number operand of every ``add.Tensor``/``mul.Tensor`` into a float32
    buffer (for observers to see); on an integer tensor that makes the result float: index arithmetic such as
    Hugging Face's attention-mask ``arange(n) + 0`` then fails with "tensors used as indices must be long, int,
    byte or bool tensors" (BERT, DETR). The ``.Scalar`` overloads compute the same and are left alone."""
    aten = torch.ops.aten
    scalar = {aten.add.Tensor: aten.add.Scalar, aten.mul.Tensor: aten.mul.Scalar}
    changed = False
    for n in model.graph.nodes:
        val = n.meta.get("val")
        if (
            n.op == "call_function"
            and n.target in scalar
            and len(n.args) == 2
            and isinstance(n.args[0], torch.fx.Node)
            and isinstance(n.args[1], (int, bool))
            and not n.kwargs
            and isinstance(val, torch.Tensor)
            and not val.is_floating_point()
        ):
            n.target = scalar[n.target]
            changed = True
    if changed:
        model.recompile()
    return model


HEAVY_OPS = ("conv1d", "conv2d", "conv3d", "convolution", "linear", "conv_transpose1d", "conv_transpose2d")
MAX_FLOAT_SHARE = 0.1


def check_integer_compute(graph_module) -> None:
    """An int8 build must compute in int8: the quantizer leaves a convolution/linear float when it annotates no
    pattern for it (its weight then is no dequantized int8 tensor). More than MAX_FLOAT_SHARE of them in float
    fails the build, as the torch-litert route does."""
    heavy, floating = 0, []
    for node in graph_module.graph.nodes:
        name = str(node.target).split(".")
        if node.op != "call_function" or len(name) < 2 or name[0] != "aten" or name[1] not in HEAVY_OPS:
            continue
        heavy += 1
        weight = node.args[1] if len(node.args) > 1 else None
        if not (getattr(weight, "op", "") == "call_function" and "dequantize" in str(weight.target)):
            floating.append(name[1])
    if heavy and len(floating) > MAX_FLOAT_SHARE * heavy:
        from collections import Counter

        kinds = ", ".join(f"{k} ×{n}" for k, n in Counter(floating).most_common())
        raise EdgepackError(
            f"PT2E int8 with the XNNPACK quantizer left {len(floating)} of {heavy} convolutions/linears in float "
            f"({kinds}): the model would not be int8",
            "build --quantize fp16 or none for --to executorch, or --to tflite/onnx int8",
        )


def delegation(edge_program) -> dict[str, Any]:
    """Per aten op of the lowered graph: how many ran inside XNNPACK delegates and how many stay portable."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge_program.graph_module)
    ops = {op: b for op, b in sorted(info.delegation_by_operator.items()) if op != "getitem"}  # tuple unpacking
    portable = {op: int(b.non_delegated) for op, b in ops.items() if b.non_delegated}
    return {
        "partitions": int(info.num_delegated_subgraphs),
        "delegated_ops": sum(int(b.delegated) for b in ops.values()),
        "portable_ops": sum(portable.values()),
        "portable_by_op": portable,
    }


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    torch = require("torch", "torch")
    require("executorch", EXTRA)
    require("torchao", EXTRA)
    if options.convert.layout and any(s.layout and s.layout.lower() != options.convert.layout for s in source.inputs):
        raise UsageError("--layout is not supported for --to executorch", "drop --layout (the source's is kept)")
    module = source.handle.module() if source.kind == "torch-export" else source.handle

    def as_args(feeds: dict) -> tuple:
        return tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in source.inputs)

    args = as_args({s.name: np.zeros(s.static_shape(), np.dtype(s.dtype)) for s in source.inputs})
    model = _flat(torch, module)
    quant = QuantizationInfo(mode="none", method="fp32, XNNPACK delegate")
    for name in ("torch.export", "torch._dynamo", "executorch", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out = workdir / "model.pte"
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            if options.convert.quantize == "fp16":
                model = _half(torch, model)
                quant = QuantizationInfo(mode="fp16", method="fp16 module (float32 I/O, casts at the edges), XNNPACK")
            elif options.convert.quantize == "int8":
                model = _quantize_int8(torch, model, args, source, calibration, as_args)
                quant = QuantizationInfo(
                    mode="int8",
                    method="PT2E static int8, XNNPACKQuantizer (symmetric, per-channel weights), XNNPACK",
                    calibration_samples=len(next(iter(calibration.values()))) if calibration else None,
                )
            with torch.no_grad():
                # no .eval(): the loader put the module in inference mode; an ExportedProgram's module() refuses it
                exported = torch.export.export(model, args, strict=False)
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            placed = delegation(edge.exported_program())
            program = edge.to_executorch()
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(program.buffer)
            tmp.replace(out)
    except EdgepackError:  # bad options, an int8 model left in float: their own message
        raise
    except Exception as e:
        raise EdgepackError(
            f"ExecuTorch could not export or lower the model: {first_line(e)[:300]}",
            "the model uses an op or Python construct torch.export cannot capture; try --to onnx or --to tflite",
        )
    if placed["portable_ops"]:
        ops = ", ".join(f"{op} ×{n}" for op, n in placed["portable_by_op"].items())
        note(f"[yellow]portable-op fallback:[/yellow] XNNPACK did not take {placed['portable_ops']} op(s): {safe(ops)}")
    inputs = [s.model_copy() for s in source.inputs]
    outputs = [s.model_copy() for s in source.outputs]
    crash_probe(out, inputs, outputs)
    from importlib import metadata

    tools = {
        "torch": torch.__version__.split("+")[0],
        "executorch": metadata.version("executorch"),
        "torchao": metadata.version("torchao"),
    }
    return ConvertedModel(
        path=out,
        member="model.pte",
        inputs=inputs,
        outputs=outputs,
        tools=tools,
        predict=session_predict(out, inputs, outputs),
        quantization=quant,
    )


# the device runner's own load and one inference on zeros (its backend: the same pybindings, the same checks)
_PROBE = """
import argparse, json, sys
import numpy as np
from edgepack.device_runners.executorch_runner import ExecuTorchBackend
specs = json.loads(sys.argv[2])
backend = ExecuTorchBackend()
backend.check()
backend.load(sys.argv[1], specs, argparse.Namespace(threads=None))
backend.run({s["name"]: np.zeros(s["shape"], s["dtype"]) for s in specs["inputs"]})
"""


def crash_probe(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    """Load ``path`` and run it once in a child process. The lowered program of some graphs crashes the runtime
    in native code (DETR int8 with executorch 1.4.1: SIGSEGV in ``load_method``, the XNNPACK delegate's set-up),
    which in this process would kill the build with no message. A crash is this route's failure; any other
    error is left to the in-process load, which words it."""
    specs = {
        "inputs": [{"name": s.name, "shape": list(s.static_shape()), "dtype": s.dtype} for s in inputs],
        "outputs": [{"name": s.name} for s in outputs],
    }
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), json.dumps(specs)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode < 0:
        from importlib import metadata

        sig = signal.Signals(-proc.returncode).name
        raise EdgepackError(
            f"the ExecuTorch runtime crashed ({sig}) loading or running the lowered program "
            f"(executorch {metadata.version('executorch')}; a runtime bug with this graph)",
            "build --to executorch with another --quantize (none, fp16), or --to onnx/tflite for int8",
        )


def open_program(path: Path):
    """The program's ``forward`` loaded with the ``executorch.runtime`` Python API; a file that does not load is a
    one-line error."""
    require("executorch", EXTRA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.runtime import Runtime

    try:
        program = Runtime.get().load_program(str(path))
        if "forward" not in program.method_names:
            raise ValueError(f"no forward method (methods: {sorted(program.method_names)})")
        return program.load_method("forward")
    except Exception as e:
        raise UsageError(
            f"{Path(path).name} is not a loadable ExecuTorch program: {first_line(e)[:200] or type(e).__name__}",
            "re-export it with edgepack build --to executorch, or check the file was copied completely",
        )


def session_predict(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]):
    torch = require("torch", "torch")
    method = open_program(path)

    def predict(feeds: dict) -> dict:
        got = method.execute([torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs])
        return {s.name: np.asarray(t.numpy() if hasattr(t, "numpy") else t) for s, t in zip(outputs, got)}

    return predict


ROUTE = Route(
    name="torch-executorch",
    sources=("torch",),
    kinds=("torch-export", "python-callable"),
    target="executorch",
    precisions=("none", "fp16", "int8"),
    convert=convert,
    extra=EXTRA,
    requires=("torch", "executorch", "torchao"),
    summary="torch.export -> to_edge_transform_and_lower with the XNNPACK partitioner -> .pte; PT2E int8",
)
