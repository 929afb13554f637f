"""ONNX helpers every route that ends in (or starts from) ONNX shares.

- tensor specs read from a model file,
- an onnxruntime session wrapped as ``predict(feeds) -> {name: array}``,
- the ONNX precision step (fp16, dynamic int8, static int8 QDQ) through
  onnxruntime.quantization and onnxruntime's own float16 converter,
- ``to_saved_model``: onnx2tf's rewrite of an ONNX graph as a TensorFlow SavedModel, the first half of the
  routes ONNX -> TFLite and ONNX -> CoreML, and ``run_saved_model``: that SavedModel run against the source,
  which tells which outputs onnx2tf made channels-last (by agreement: a [1,8,8,8] output reads the same either
  way) and how closely the SavedModel agrees.

onnx2tf, offline: it downloads a calibration sample for 3-channel 4-D inputs unless the file is already in its
working directory, so it runs in a scratch directory holding a placeholder (edgepack quantizes with its own
--calibration). onnx2tf pins old TensorFlow/numpy versions; install it with ``ONNX2TF_INSTALL`` (see README).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from edgepack.device_runners.runner_common import compare, iter_batches

from edgepack.data import guess_layout
from edgepack.errors import EdgepackError, MissingExtraError, UsageError
from edgepack.types import QuantizationInfo, TensorSpec


def _dims(value_info) -> list:
    t = value_info.type.tensor_type
    dims = []
    for d in t.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:  # unset, or a value <= 0: paddle2onnx and some exporters write dynamic dims as dim_value -1
            dims.append(None)
    return dims


def _dtype(value_info) -> str:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)).name


def read_specs(model, layouts: dict | None = None) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (minus initializers) and outputs as TensorSpecs."""
    layouts = layouts or {}
    inits = {i.name for i in model.graph.initializer}

    def spec(vi):
        shape = _dims(vi)
        return TensorSpec(name=vi.name, shape=shape, dtype=_dtype(vi), layout=layouts.get(vi.name, guess_layout(shape)))

    ins = [spec(vi) for vi in model.graph.input if vi.name not in inits]
    outs = [spec(vi) for vi in model.graph.output]
    return ins, outs


def load_model(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, ...
        raise UsageError(
            f"{Path(path).name} is not a valid ONNX model: {str(e).splitlines()[0][:200]}",
            "re-export the model, or check the file was copied completely",
        )
    return model


def session_predict(path: Path, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise EdgepackError(
            f"onnxruntime cannot load {Path(path).name}: {str(e).splitlines()[0][:300]}",
            "the converted model uses an op or opset this onnxruntime lacks; "
            "try another --opset or upgrade onnxruntime",
        )
    names = [o.name for o in sess.get_outputs()]

    def predict(feeds: dict) -> dict:
        return dict(zip(names, sess.run(names, feeds)))

    return predict


def _topological_sort(graph) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (Kahn's algorithm)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a missing producer: leave the order for the checker
            ordered.extend(rest)
            break
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM", "GRU"]
# Static int8 leaves these in float: quantizing LayerNormalization (and an attention mask's Where, whose -inf a
# uint8 scale cannot hold) wrecked transformers — measured on the zoo's ViT: cosine 0.969 -> 0.9996 with them
# float, YOLOS 0.643 -> 0.9992 — while CNNs have none of them and keep their fully quantized graph.
STATIC_FLOAT_OPS = {"LayerNormalization", "InstanceNormalization", "Where"}


def _opset_13_or_later(path: Path) -> bool:
    """Per-channel quantization writes DequantizeLinear's ``axis``, which exists from opset 13: an older model
    (e.g. paddle2onnx's opset 12) is converted to opset 13 in place; where the converter cannot, the weights are
    quantized per tensor instead (measured on PP-OCRv4 det: 'Unrecognized attribute: axis' before)."""
    import onnx

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return True
    try:
        from onnx import version_converter

        upgraded = version_converter.convert_version(model, 13)
        onnx.checker.check_model(upgraded)
        onnx.save(upgraded, str(path))
        return True
    except Exception:
        return False


def static_ops() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry

    return sorted(set(QDQRegistry) - STATIC_FLOAT_OPS)


class _Reader:
    """onnxruntime CalibrationDataReader over a sample-major data set."""

    def __init__(self, dataset: dict, inputs: list[TensorSpec]):
        self._batches = list(iter_batches(dataset, [s.model_dump() for s in inputs]))
        self._it = iter(self._batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._batches)


def apply_precision(
    fp32: Path, out: Path, mode: str, inputs: list[TensorSpec], calibration: dict | None, options=None
) -> tuple[QuantizationInfo, dict]:
    """Write ``out`` from the fp32 model at ``fp32`` in precision ``mode`` (``options``: the build's, for
    ``--explain-quant``/``--keep-float`` of an int8 build)."""
    import onnxruntime

    tools = {"onnxruntime": onnxruntime.__version__}
    if mode == "none":
        shutil.copyfile(fp32, out)
        return QuantizationInfo(mode="none"), tools
    if mode == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(fp32))
        half = convert_float_to_float16(model, keep_io_types=True)
        _topological_sort(half.graph)  # the converter appends its I/O Casts at the end
        onnx.save(half, str(out))
        return QuantizationInfo(mode="fp16", method="onnxruntime.transformers.float16 (fp32 I/O)"), tools
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepped = out.with_name(out.stem + ".prep.onnx")
    try:
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantize the plain model if it fails
        shutil.copyfile(fp32, prepped)
    per_channel = _opset_13_or_later(prepped)
    try:
        if mode == "dynamic":
            # onnxruntime recommends dynamic quantization for MatMul/Gemm/RNN/attention weights; a dynamic
            # Conv becomes ConvInteger, which its CPU provider runs ~15x slower than fp32 (measured on
            # MobileNetV2), so convolutions keep fp32 here and CNNs should use static int8.
            quantize_dynamic(
                str(prepped),
                str(out),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=DYNAMIC_OPS,
            )
            return QuantizationInfo(
                mode="dynamic",
                method="onnxruntime.quantization.quantize_dynamic "
                f"(int8 {'per-channel' if per_channel else 'per-tensor'} weights of "
                f"{'/'.join(DYNAMIC_OPS)}; Conv stays fp32)",
            ), tools
        if mode == "int8":
            if calibration is None:
                raise UsageError(
                    "--quantize int8 needs calibration data",
                    "pass --calibration DATA.npz with ~100+ representative samples per input",
                )
            # U8S8 (uint8 activations, int8 per-channel weights): onnxruntime's fast path on x86 (VNNI) and
            # arm64 (UDOT). S8S8 measured 2x slower than U8S8 on MobileNetV2 with x86 VNNI.
            cache = out.with_name("calibration.ranges.json")  # calibrated once, re-used by --keep-float trials

            def quantize(dest: Path, exclude: list[str]) -> Path:
                quantize_static(
                    str(prepped),
                    str(dest),
                    _Reader(calibration, inputs),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    op_types_to_quantize=static_ops(),
                    nodes_to_exclude=exclude,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibration_cache_path=str(cache),
                )
                return dest

            debug = options is not None and (options.convert.explain_quant or options.convert.keep_float is not None)
            if debug:
                _name_nodes(prepped)  # --keep-float names the nodes to exclude
            quantize(out, [])
            n = len(next(iter(calibration.values())))
            info = QuantizationInfo(
                mode="int8",
                method="onnxruntime.quantization.quantize_static "
                f"(QDQ, U8S8: uint8 activations, {'per-channel' if per_channel else 'per-tensor'} "
                "int8 weights, MinMax; "
                f"{'/'.join(sorted(STATIC_FLOAT_OPS))} stay float)",
                calibration_samples=n,
            )
            if debug:
                info = _mixed_precision(prepped, out, info, quantize, calibration, inputs, options)
            return info, tools
    finally:
        prepped.unlink(missing_ok=True)
    raise UsageError(f"unknown precision {mode!r} for ONNX", "use --quantize none|fp16|dynamic|int8")


def _name_nodes(path: Path) -> None:
    """Give every unnamed node a unique name (``OpType_index``): nodes are excluded from quantization by name."""
    import onnx

    model = onnx.load(str(path))
    taken = {n.name for n in model.graph.node if n.name}
    unnamed = [n for n in model.graph.node if not n.name]
    if not unnamed:
        return
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)
    onnx.save(model, str(path))


def _mixed_precision(prepped: Path, out: Path, info: QuantizationInfo, quantize, calibration, inputs, options):
    """--explain-quant / --keep-float on the QDQ model ``out`` quantized from ``prepped`` (converters/quant_debug)."""
    from edgepack.data import take

    from . import quant_debug

    batches = list(iter_batches(take(calibration, options.data.validation_samples), [s.model_dump() for s in inputs]))
    float_predict = session_predict(prepped)
    reference = [float_predict(f) for f in batches]
    trial = [0]

    def requantize(keep: list[str]) -> Path:
        trial[0] += 1
        return quantize(out.with_name(f"model.keep{trial[0]}.onnx"), keep)

    def agreement(path: Path) -> float:
        predict = session_predict(path)
        return quant_debug.min_cosine(reference, [predict(f) for f in batches])

    layers = lambda path: quant_debug.onnx_layers(prepped, path, batches, out.parent)  # noqa: E731
    return quant_debug.mixed_precision(info, out, layers, requantize, agreement, options)


def finish(fp32: Path, source, workdir: Path, options, calibration: dict | None):
    """fp32 ONNX of ``source`` -> requested precision -> ConvertedModel (specs read back from the final file, with the
    source's layouts)."""
    from edgepack.types import ConvertedModel

    layouts = {s.name: s.layout for s in source.inputs + source.outputs}
    out = workdir / "model.onnx"
    quant, tools = apply_precision(fp32, out, options.convert.quantize, _inputs_of(fp32, layouts), calibration, options)
    model = load_model(out)
    ins, outs = read_specs(model, layouts)
    import onnx

    tools["onnx"] = onnx.__version__
    return ConvertedModel(
        path=out,
        member="model.onnx",
        inputs=ins,
        outputs=outs,
        tools=tools,
        predict=session_predict(out),
        quantization=quant,
    )


def _inputs_of(path: Path, layouts: dict) -> list[TensorSpec]:
    import onnx

    return read_specs(onnx.load(str(path), load_external_data=False), layouts)[0]


# --------------------------------------------------------------------------- onnx2tf

# onnx2tf's releases hard-pin old TensorFlow/numpy/onnx, so it is installed without its declared dependencies.
# Its version is pinned here and nowhere else: the Makefile installs this list, errors and `edgepack routes` print it.
ONNX2TF_REQUIREMENTS = ("onnx2tf==1.29.24", "onnx-graphsurgeon", "sng4onnx", "psutil", "tf-keras")
ONNX2TF_INSTALL = "pip install --no-deps " + " ".join(ONNX2TF_REQUIREMENTS)
_CALIB_PLACEHOLDER = "calibration_image_sample_data_20x128x128x3_float32.npy"


def nhwc(spec: TensorSpec) -> TensorSpec:
    """The channels-last twin of a 4-D NCHW spec (what onnx2tf makes of it); anything else as it is."""
    if len(spec.shape) == 4 and spec.layout == "NCHW":
        n, c, h, w = spec.shape
        return spec.model_copy(update={"shape": [n, h, w, c], "layout": "NHWC"})
    return spec


def _named_dynamic_dims(path: Path) -> None:
    """Graph inputs whose dims are written as ``dim_value -1`` (paddle2onnx) get named dynamic dims instead, the
    form onnx2tf reads (it failed with "Dimension -1 must be >= 0" on PP-OCR models)."""
    import onnx

    model = onnx.load(str(path))
    changed = False
    for vi in model.graph.input:
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value <= 0:
                d.dim_param = f"{vi.name}_dim{i}"
                changed = True
    if changed:
        onnx.save(model, str(path))


def onnx2tf_version() -> str:
    from importlib import metadata

    return metadata.version("onnx2tf")


def to_saved_model(source, workdir: Path, keep_nchw: list[str], target: str) -> Path:
    """onnx2tf: the ONNX source as a SavedModel in ``workdir/saved_model``; inputs named in ``keep_nchw`` stay
    channels-first (one Transpose each), other 4-D inputs and outputs become channels-last."""
    from . import import_tensorflow

    import_tensorflow()
    try:
        import onnx2tf
    except ImportError as e:
        raise MissingExtraError(f"ONNX -> {target} needs onnx2tf, which is not installed ({e})", ONNX2TF_INSTALL)
    scratch = workdir / "onnx2tf"
    scratch.mkdir()
    np.save(scratch / _CALIB_PLACEHOLDER, np.zeros((20, 128, 128, 3), np.float32))
    saved = workdir / "saved_model"
    cwd = os.getcwd()
    # onnx2tf rewrites the ONNX file it is given (shape inference, renames): give it a copy, never the user's file
    model_path = str(scratch / "source.onnx")
    shutil.copyfile(source.path, model_path)
    _named_dynamic_dims(Path(model_path))
    log = io.StringIO()
    fix = "try --to onnx, or simplify the model (onnxsim) and retry"
    try:
        os.chdir(scratch)
        with contextlib.redirect_stdout(log):
            onnx2tf.convert(
                input_onnx_file_path=model_path,
                output_folder_path=str(saved),
                non_verbose=True,
                copy_onnx_input_output_names_to_tflite=True,
                keep_ncw_or_nchw_or_ncdhw_input_names=keep_nchw or None,
                not_use_onnxsim=True,
                # TFLite has no Erf builtin (GELU): onnx2tf writes it as TFLite-native ops
                replace_to_pseudo_operators=["erf"],
            )
    except SystemExit as e:  # onnx2tf exits on some failures
        last = re.sub(r"\x1b\[[0-9;]*m", "", (log.getvalue().strip().splitlines() or [""])[-1])
        raise EdgepackError(f"onnx2tf could not convert {source.path.name} (exit {e.code}): {last[:300]}", fix)
    except Exception as e:
        raise EdgepackError(f"onnx2tf could not convert {source.path.name}: {str(e).splitlines()[0][:300]}", fix)
    finally:
        os.chdir(cwd)
    return saved


@dataclass
class SavedModelRun:
    """onnx2tf's SavedModel, loaded and run against the source (``run_saved_model``)."""

    fn: object  # the serving_default signature
    owner: object  # the loaded SavedModel: keep it alive while ``fn`` is used
    in_names: dict[str, str]  # source tensor name -> signature name
    out_names: dict[str, str]
    perms: list[Optional[list[int]]]  # per source output: transpose back to the source layout, or None
    metrics: dict[str, dict]  # per source output: agreement with the source (runner_common.compare)
    samples: int
    inputs_from: str  # calibration | random


def to_channels_first(rank: int) -> list[int]:
    """The permutation that undoes onnx2tf's channels-last output: [0, r-1, 1, ..., r-2]."""
    return [0, rank - 1, *range(1, rank - 1)]


def match_names(specs: list[TensorSpec], names: list[str], what: str) -> dict[str, str]:
    """Source tensor name -> the SavedModel signature's name: equal, or equal after onnx2tf's sanitising
    (non-alphanumerics -> '_'); by position when that leaves one of each."""

    def canon(n: str) -> str:
        return "".join(ch if ch.isalnum() else "_" for ch in n).strip("_").lower()

    out, free = {}, list(names)
    for s in specs:
        hit = next((n for n in free if n == s.name), None) or next((n for n in free if canon(n) == canon(s.name)), None)
        if hit is not None:
            out[s.name] = hit
            free.remove(hit)
    rest = [s for s in specs if s.name not in out]
    if len(rest) == 1 and len(free) == 1:
        out[rest[0].name] = free[0]
    elif rest:
        raise EdgepackError(
            f"onnx2tf renamed the {what}s {[s.name for s in rest]} to {free}: cannot pair them",
            "give the ONNX model's tensors alphanumeric names and retry",
        )
    return out


def best_orientation(got: np.ndarray, want: np.ndarray) -> tuple[Optional[list[int]], dict]:
    """(transpose back to the source layout or None, agreement): the orientation that agrees best with the
    source among those giving its shape."""
    candidates: list = [None] if got.shape == want.shape else []
    if got.ndim >= 3:
        perm = to_channels_first(got.ndim)
        if got.transpose(perm).shape == want.shape:
            candidates.append(perm)
    if not candidates:
        raise EdgepackError(
            f"onnx2tf changed an output's shape to {list(got.shape)} (the source's is {list(want.shape)})",
            "try --to onnx for this model",
        )
    scored = [(p, compare(want, got if p is None else got.transpose(p))) for p in candidates]
    return max(scored, key=lambda pm: pm[1]["cosine"])


def run_saved_model(
    saved: Path,
    source,
    calibration: Optional[dict],
    seed: int,
    samples: int,
    saved_inputs: Optional[list[TensorSpec]] = None,
) -> SavedModelRun:
    """Load onnx2tf's SavedModel and run it next to the source on ``samples`` inputs: the calibration data's
    first ones, else seeded random. ``saved_inputs``: its input specs where they differ from the source's
    (``--layout nhwc``)."""
    from edgepack.data import map_tensors, random_dataset, take
    from edgepack.validate import reference_outputs, run_batches

    from . import import_tensorflow

    tf = import_tensorflow()
    owner = tf.saved_model.load(str(saved))
    fn = owner.signatures["serving_default"]
    in_names = match_names(source.inputs, list(fn.structured_input_signature[1]), "input")
    out_names = match_names(source.outputs, list(fn.structured_outputs), "output")
    saved_inputs = saved_inputs or source.inputs

    def predict(feeds: dict) -> dict:
        res = fn(**{in_names[s.name]: tf.constant(feeds[d.name]) for s, d in zip(source.inputs, saved_inputs)})
        return {s.name: res[out_names[s.name]].numpy() for s in source.outputs}

    data = take(calibration, samples) if calibration is not None else random_dataset(source.inputs, samples, seed)
    reference = reference_outputs(source, data)
    got = run_batches(
        predict, map_tensors(data, source.inputs, saved_inputs), saved_inputs, [s.name for s in source.outputs]
    )
    perms, metrics = [], {}
    for s in source.outputs:
        perm, metrics[s.name] = best_orientation(got[s.name], reference[s.name])
        perms.append(perm)
    return SavedModelRun(
        fn,
        owner,
        in_names,
        out_names,
        perms,
        metrics,
        len(next(iter(data.values()))),
        "calibration" if calibration is not None else "random",
    )


if __name__ == "__main__":  # python -m edgepack.converters.onnx_tools: the list for `pip install --no-deps`
    print(" ".join(ONNX2TF_REQUIREMENTS))
