"""Route torch -> tflite with litert-torch (torch.export -> TFLite directly, no TensorFlow needed).

Layout: ``--layout nhwc`` wraps the module with ``litert_torch.to_channel_last_io`` so 4-D inputs and outputs are
channels-last without Transpose ops in the graph (TFLite kernels are NHWC); the default keeps the source's NCHW.
Precisions: none (fp32), dynamic (PT2E dynamic int8; embedding tables symmetric int8: ``_dynamic_quantizer``)
and int8 (PT2E static, per-channel weights, calibrated on --calibration); the PT2E int8 model takes and returns
int8 tensors (scale/zero point in the manifest).
fp16 and int16x8 are not offered by this route; TorchScript (which torch.export cannot read) is not taken.
Both, and models litert-torch cannot lower, fall back to torch -> ONNX -> onnx2tf (torch_onnx_to_tflite).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
from edgepack.device_runners.runner_common import iter_batches

from edgepack.data import relayout
from edgepack.errors import EdgepackError, UsageError, first_line, require
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource, QuantizationInfo, TensorSpec

from . import LAYOUT, tflite_tools


def _layouts(specs: list[TensorSpec], want: str | None) -> list:
    out = []
    for s in specs:
        if want and len(s.shape) == 4 and s.layout in ("NCHW", "NHWC"):
            out.append(want.upper())
        else:
            out.append(s.layout)
    return out


def _dynamic_quantizer(torch):
    """litert-torch's PT2E quantizer, plus the weight of every ``aten.embedding`` as a symmetric per-tensor int8
    weight. PT2E leaves an embedding table float, but the LiteRT converter in dynamic mode quantizes the float
    weights it is left with itself, an embedding table with a zero point (-1 measured), and TFLite's hybrid
    EMBEDDING_LOOKUP then refuses to load (``qparams->zero_point->data[0] == 0 was not true``). Symmetric
    per-tensor is what that kernel takes on every LiteRT runtime."""
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.pt2e_quantizer_utils import _mark_nodes_as_annotated, annotate_input_qspec_map
    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    table = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
        is_dynamic=False,
        observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12),
    )

    class Quantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target == torch.ops.aten.embedding.default:
                    annotate_input_qspec_map(node, node.args[0], table)
                    _mark_nodes_as_annotated([node])
            return model

    return Quantizer()


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    torch = require("torch", "torch")
    litert_torch = require("litert_torch", "tflite")
    module = source.handle.module() if source.kind == "torch-export" else source.handle
    in_layouts = _layouts(source.inputs, options.convert.layout)
    out_layouts = _layouts(source.outputs, options.convert.layout)
    to_last_in = [
        i for i, (s, lay) in enumerate(zip(source.inputs, in_layouts)) if s.layout == "NCHW" and lay == "NHWC"
    ]
    to_last_out = [
        i for i, (s, lay) in enumerate(zip(source.outputs, out_layouts)) if s.layout == "NCHW" and lay == "NHWC"
    ]
    if any(s.layout == "NHWC" and lay == "NCHW" for s, lay in zip(source.inputs, in_layouts)):
        raise UsageError("--layout nchw for a channels-last torch model is not supported", "drop --layout")
    if to_last_in or to_last_out:
        module = litert_torch.to_channel_last_io(module, args=to_last_in or None, outputs=to_last_out or None)
    module = module.eval()

    def as_args(feeds: dict) -> tuple:
        return tuple(
            torch.from_numpy(np.ascontiguousarray(relayout(np.asarray(feeds[s.name]), s.layout, lay)))
            for s, lay in zip(source.inputs, in_layouts)
        )

    zeros = {s.name: np.zeros(s.shape, np.dtype(s.dtype)) for s in source.inputs}
    args = as_args(zeros)
    quant = QuantizationInfo(mode="none")
    quant_config = None
    for name in ("torch.export", "torch._dynamo", "litert_torch", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if options.convert.quantize in ("dynamic", "int8"):
                from litert_torch.quantize import pt2e_quantizer
                from litert_torch.quantize.quant_config import QuantConfig
                from torchao.quantization.pt2e import quantize_pt2e

                dynamic = options.convert.quantize == "dynamic"
                quantizer = (_dynamic_quantizer(torch) if dynamic else pt2e_quantizer.PT2EQuantizer()).set_global(
                    pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
                )
                prepared = quantize_pt2e.prepare_pt2e(torch.export.export(module, args).module(), quantizer)
                if dynamic:
                    prepared(*args)
                else:
                    if calibration is None:
                        raise UsageError("--quantize int8 needs calibration data", "pass --calibration DATA.npz")
                    with torch.no_grad():
                        for feeds in iter_batches(calibration, [s.model_dump() for s in source.inputs]):
                            prepared(*as_args(feeds))
                module = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
                quant_config = QuantConfig(pt2e_quantizer=quantizer)
                n = len(next(iter(calibration.values()))) if calibration is not None and not dynamic else None
                quant = QuantizationInfo(
                    mode=options.convert.quantize,
                    calibration_samples=n,
                    method=(
                        "litert-torch PT2E dynamic int8 (per-channel weights; embedding tables symmetric "
                        "per-tensor int8)"
                        if dynamic
                        else "litert-torch PT2E static int8 (per-channel weights, int8 I/O)"
                    ),
                )
            edge = litert_torch.convert(module, args, quant_config=quant_config)
            out = workdir / "model.tflite"
            edge.export(str(out))
    except UsageError:
        raise
    except Exception as e:
        first = first_line(e)
        raise EdgepackError(
            f"litert-torch could not convert the model: {first[:300]}",
            "the model uses an op litert-torch cannot lower; try --to onnx, or rewrite that op",
        )
    from importlib import metadata

    if options.convert.quantize == "int8":
        check_integer_compute(out)
    tools = {"torch": torch.__version__.split("+")[0], "litert-torch": metadata.version("litert-torch")}
    return tflite_tools.finish(out, source, options, quant, in_layouts, out_layouts, tools)


# ops carrying weights: an int8 model computes these in int8 (activation x activation BATCH_MATMULs of attention
# stay float under PT2E, as in most int8 transformers, and are not counted)
HEAVY_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
MAX_FLOAT_SHARE = 0.1


def check_integer_compute(path: Path) -> None:
    """An int8 build must compute in int8: PT2E leaves ops float where its quantizer annotates no pattern (e.g.
    EfficientNet's SiLU/squeeze-excite blocks: every convolution stayed float, the model as large as fp32). More
    than MAX_FLOAT_SHARE of the convolutions/linears in float fails the route, so the next one is tried."""
    interp = tflite_tools.open_interpreter(path)
    dtypes = {d["index"]: np.dtype(d["dtype"]) for d in interp.get_tensor_details()}
    heavy = [op for op in interp._get_ops_details() if op["op_name"] in HEAVY_OPS]
    floating = [op["op_name"] for op in heavy if dtypes[op["inputs"][0]].kind == "f"]
    if heavy and len(floating) > MAX_FLOAT_SHARE * len(heavy):
        from collections import Counter

        kinds = ", ".join(f"{k} ×{n}" for k, n in Counter(floating).most_common())
        raise EdgepackError(
            f"litert-torch's PT2E int8 left {len(floating)} of {len(heavy)} convolutions/linears in "
            f"float ({kinds}): the model would not be int8",
            "the TFLite converter's full-integer quantization (route torch-onnx2tf) quantizes them",
        )


ROUTE = Route(
    name="torch-litert",
    sources=("torch",),
    kinds=("torch-export", "python-callable"),
    target="tflite",
    precisions=("none", "dynamic", "int8"),
    convert=convert,
    extra="tflite",
    requires=("torch", "litert_torch"),
    options=(LAYOUT,),
    summary="litert-torch: torch.export -> TFLite directly (no TensorFlow); PT2E int8",
)
