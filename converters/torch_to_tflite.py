"""Route torch -> tflite with litert-torch (torch.export -> TFLite directly, no TensorFlow needed).

Layout: ``--layout nhwc`` wraps the module with ``litert_torch.to_channel_last_io`` so 4-D inputs and outputs are
channels-last without Transpose ops in the graph (TFLite kernels are NHWC); the default keeps the source's NCHW.
Precisions:
- none (fp32); dynamic (PT2E dynamic int8; embedding tables symmetric int8: ``_dynamic_quantizer``);
- int8 (default, float I/O): the fp32 model quantized after conversion by ai-edge-quantizer (``static_wi8_ai8``,
  calibrated on --calibration: converters/tflite_quantizer.py). Measured on the MobileNetV2 sample (x86, XNNPACK,
  benchmarks/tflite_quant.py): 0.452x the fp32 p50, PT2E int8 0.536x — PT2E leaves the residual ADDs and the MEAN
  float (22 QUANTIZE/DEQUANTIZE ops in the graph), AEQ quantizes every op (Q/DQ only at the float I/O);
- int8 with ``--io-dtype int8``: PT2E static int8 (per-channel weights) whose model takes and returns int8 tensors
  (what an NPU build wants; scale/zero point in the manifest);
- int16x8 (AEQ ``static_wi8_ai16``) and int8-weights (AEQ ``weight_only_wi8_afp32``: int8 weights, float compute).
``--explain-quant`` / ``--keep-float`` (AEQ int8/int16x8): converters/quant_debug.py.
fp16 is not offered by this route; TorchScript (which torch.export cannot read) is not taken.
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

from . import EXPLAIN_QUANT, IO_DTYPE, KEEP_FLOAT, LAYOUT, tflite_tools


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


def convert(
    source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path, pt2e_int8: bool = False
) -> ConvertedModel:
    """``pt2e_int8``: int8 by PT2E inside litert-torch (the ``torch-litert-pt2e`` route) even with float I/O."""
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
    if options.convert.io_dtype not in ("float32", "int8"):
        raise UsageError(f"--io-dtype {options.convert.io_dtype} is not offered by torch-litert", "use --io-dtype int8")
    pt2e = options.convert.quantize == "dynamic" or (
        options.convert.quantize == "int8" and (pt2e_int8 or options.convert.io_dtype == "int8")
    )
    if (
        pt2e
        and options.convert.quantize == "int8"
        and (options.convert.keep_float is not None or options.convert.explain_quant)
    ):
        raise UsageError(
            "--keep-float/--explain-quant work on the float-I/O int8 model (ai-edge-quantizer)",
            "drop --io-dtype int8",
        )
    for name in ("torch.export", "torch._dynamo", "litert_torch", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if pt2e:
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
            out = workdir / ("model.tflite" if pt2e or options.convert.quantize == "none" else "model.fp32.tflite")
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

    tools = {"torch": torch.__version__.split("+")[0], "litert-torch": metadata.version("litert-torch")}
    if not pt2e and options.convert.quantize != "none":
        batches = [
            [
                np.ascontiguousarray(relayout(np.asarray(f[s.name]), s.layout, lay))
                for s, lay in zip(source.inputs, in_layouts)
            ]
            for f in (iter_batches(calibration, [s.model_dump() for s in source.inputs]) if calibration else ())
        ]
        out, quant = quantize_after_conversion(out, workdir / "model.tflite", options, batches)
        tools["ai-edge-quantizer"] = metadata.version("ai-edge-quantizer")
    if options.convert.quantize == "int8":
        check_integer_compute(out, set(quant.kept_float or ()))
    return tflite_tools.finish(out, source, options, quant, in_layouts, out_layouts, tools)


def quantize_after_conversion(
    fp32: Path, out: Path, options: BuildOptions, batches: list[list[np.ndarray]]
) -> tuple[Path, QuantizationInfo]:
    """The fp32 TFLite model quantized by ai-edge-quantizer in the build's precision (``batches``: calibration, one
    array per input in the model's layout); ``--explain-quant``/``--keep-float`` rank its layers and keep some float."""

    from . import quant_debug, tflite_quantizer

    interp = tflite_tools.open_interpreter(fp32)
    feeds = tflite_quantizer.signature_feeds(interp, batches)
    q = tflite_quantizer.Quantizer(fp32, options.convert.quantize, feeds if batches else None)
    q.quantize(out)
    info = QuantizationInfo(
        mode=options.convert.quantize,  # type: ignore[arg-type]
        method=q.method,
        calibration_samples=len(batches) if options.convert.quantize in ("int8", "int16x8") else None,
    )
    if not (options.convert.explain_quant or options.convert.keep_float is not None):
        return out, info
    key = next(iter(feeds))
    debug = {key: feeds[key][: options.data.validation_samples]}
    float_runner = tflite_tools.open_interpreter(fp32).get_signature_runner(key)
    reference = [float_runner(**f) for f in debug[key]]
    trial = [0]

    def requantize(keep: list[str]) -> Path:
        trial[0] += 1
        return q.quantize(out.with_name(f"model.keep{trial[0]}.tflite"), keep)

    def agreement(path: Path) -> float:
        runner = tflite_tools.open_interpreter(path).get_signature_runner(key)
        return quant_debug.min_cosine(reference, [runner(**f) for f in debug[key]])

    layers = lambda path: quant_debug.tflite_layers(fp32, path, debug)  # noqa: E731
    return out, quant_debug.mixed_precision(info, out, layers, requantize, agreement, options)


# ops carrying weights: an int8 model computes these in int8 (activation x activation BATCH_MATMULs of attention
# stay float under PT2E, as in most int8 transformers, and are not counted)
HEAVY_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
MAX_FLOAT_SHARE = 0.1


def check_integer_compute(path: Path, kept: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """An int8 build must compute in int8: PT2E leaves ops float where its quantizer annotates no pattern (e.g.
    EfficientNet's SiLU/squeeze-excite blocks: every convolution stayed float, the model as large as fp32). More
    than MAX_FLOAT_SHARE of the convolutions/linears in float fails the route, so the next one is tried. Ops kept
    float on request (``kept``: --keep-float, by first output tensor name) are not counted."""
    interp = tflite_tools.open_interpreter(path)
    details = {d["index"]: d for d in interp.get_tensor_details()}
    heavy = [
        op
        for op in interp._get_ops_details()
        if op["op_name"] in HEAVY_OPS and details[op["outputs"][0]]["name"] not in kept
    ]
    floating = [op["op_name"] for op in heavy if np.dtype(details[op["inputs"][0]]["dtype"]).kind == "f"]
    if heavy and len(floating) > MAX_FLOAT_SHARE * len(heavy):
        from collections import Counter

        kinds = ", ".join(f"{k} ×{n}" for k, n in Counter(floating).most_common())
        raise EdgepackError(
            f"litert-torch's int8 model left {len(floating)} of {len(heavy)} convolutions/linears in "
            f"float ({kinds}): the model would not be int8",
            "the TFLite converter's full-integer quantization (route torch-onnx2tf) quantizes them",
        )


ROUTE = Route(
    name="torch-litert",
    sources=("torch",),
    kinds=("torch-export", "python-callable"),
    target="tflite",
    precisions=("none", "dynamic", "int8", "int16x8", "int8-weights"),
    convert=convert,
    extra="tflite",
    requires=("torch", "litert_torch", "ai_edge_quantizer"),
    options=(LAYOUT, IO_DTYPE, KEEP_FLOAT, EXPLAIN_QUANT),
    summary="litert-torch: torch.export -> TFLite directly (no TensorFlow); int8 by ai-edge-quantizer after it",
)
