"""TFLite helpers every route that ends in (or starts from) TFLite shares.

- an interpreter (ai_edge_litert, else tensorflow.lite) wrapped as ``predict(feeds) -> {name: array}``
  that quantizes integer inputs and dequantizes integer outputs like the device runner does,
- tensor specs (with scale/zero point for quantized I/O) read from a .tflite file,
- the TFLite converter's post-training quantization settings for each precision.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from edgepack.device_runners.runner_common import dequantize_output, iter_batches, quantize_input

from edgepack.errors import EdgepackError, UsageError, require
from edgepack.types import ConvertedModel, ModelSource, QuantizationInfo, QuantParams, TensorSpec


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        from . import import_tensorflow

        return import_tensorflow().lite.Interpreter


def runtime_versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("ai-edge-litert", "tensorflow-cpu", "tensorflow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def open_interpreter(path: Path, threads: int = 0):
    kwargs = {"model_path": str(path)}
    if threads:
        kwargs["num_threads"] = threads
    try:
        interp = interpreter_class()(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise UsageError(
            f"{Path(path).name} is not a loadable TFLite model: {str(e).splitlines()[0][:200]}",
            "re-convert the model, or check the file was copied completely",
        )
    return interp


def spec_from_detail(detail: dict, layout: Optional[str], name: Optional[str] = None) -> TensorSpec:
    qp = detail.get("quantization_parameters") or {}
    scales = [float(x) for x in np.asarray(qp.get("scales", [])).ravel()]
    quant = None
    if scales and np.dtype(detail["dtype"]).kind in "iu":
        zps = [int(x) for x in np.asarray(qp.get("zero_points", [])).ravel()]
        quant = QuantParams(
            scale=scales,
            zero_point=zps or [0] * len(scales),
            axis=int(qp.get("quantized_dimension", 0)) if len(scales) > 1 else None,
        )
    shape = [int(d) for d in detail["shape"]]
    return TensorSpec(
        name=name or detail["name"], shape=shape, dtype=np.dtype(detail["dtype"]).name, layout=layout, quant=quant
    )


def match_order(wanted: list[str], names: list[str]) -> list[int]:
    """Indices of ``names`` in the order of ``wanted`` (exact name, converter-decorated name, else position)."""
    order = []
    for i, w in enumerate(wanted):
        pattern = re.compile(rf"(^|[_/]){re.escape(w)}(:\d+)?$")
        hit = next((j for j, n in enumerate(names) if n == w), None)
        if hit is None:
            hit = next((j for j, n in enumerate(names) if pattern.search(n) and j not in order), None)
        if hit is None or hit in order:
            hit = i if i < len(names) and i not in order else next(j for j in range(len(names)) if j not in order)
        order.append(hit)
    return order


def signature_keys(interp) -> tuple[dict, dict]:
    """{tensor index: signature key} of the inputs and of the outputs of the model's one signature ({} when it
    has none or several). The TF converter names a SavedModel's tensors ``serving_default_x:0`` /
    ``StatefulPartitionedCall:0``; the signature keeps the model's own names."""
    try:
        sigs = interp.get_signature_list()
        if len(sigs) != 1:
            return {}, {}
        runner = interp.get_signature_runner(next(iter(sigs)))
        return (
            {d["index"]: n for n, d in runner.get_input_details().items()},
            {d["index"]: n for n, d in runner.get_output_details().items()},
        )
    except (AttributeError, ValueError, RuntimeError):  # an interpreter without signature support
        return {}, {}


def tensor_indices(interp, inputs: list[str], outputs: list[str]) -> tuple[dict, dict]:
    """Manifest names -> interpreter tensor indices: a tensor's own name (bundles before names came from the
    source, and routes whose signature does not carry them), else the key of the model's one signature."""
    found = []
    for names, details, which in ((inputs, interp.get_input_details(), 0), (outputs, interp.get_output_details(), 1)):
        by_name = {d["name"]: d["index"] for d in details}
        if any(n not in by_name for n in names):
            by_name = {**{key: i for i, key in signature_keys(interp)[which].items()}, **by_name}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise EdgepackError(
                f"the TFLite model has no {('input', 'output')[which]} tensor or signature key "
                f"{missing} (tensors: {sorted(by_name)})",
                "rebuild the bundle",
            )
        found.append({n: by_name[n] for n in names})
    return found[0], found[1]


def ordered_details(interp, source_inputs: list[TensorSpec], source_outputs: list[TensorSpec]):
    """The interpreter's input and output details in the source's order. Converters from a SavedModel name
    tensors ``PartitionedCall:0``..., so the model's signature names come first when its one signature names
    every source tensor; else ``match_order`` on the tensor names."""
    sig_in, sig_out = signature_keys(interp)

    def order(wanted: list[str], details: list[dict], sig: dict) -> list[dict]:
        names = [sig.get(d["index"]) for d in details]
        if all(w in names for w in wanted):
            return [details[names.index(w)] for w in wanted]
        return [details[j] for j in match_order(wanted, [d["name"] for d in details])]

    return (
        order([s.name for s in source_inputs], interp.get_input_details(), sig_in),
        order([s.name for s in source_outputs], interp.get_output_details(), sig_out),
    )


def read_specs(
    path: Path,
    source_inputs: list[TensorSpec],
    source_outputs: list[TensorSpec],
    in_layouts: list[Optional[str]],
    out_layouts: list[Optional[str]],
):
    """Specs of the .tflite's I/O, ordered like the source's (so tensors map by position), each named like the
    source's tensor when the model's signature has that key for it (Keras, SavedModel), else by the interpreter's
    tensor name; runners find both (``tensor_indices``)."""
    interp = open_interpreter(path)
    ins, outs = ordered_details(interp, source_inputs, source_outputs)
    sig_in, sig_out = signature_keys(interp)

    def specs(details, layouts, source, keys):  # the source's name where the signature carries it
        return [
            spec_from_detail(d, lay, s.name if keys.get(d["index"]) == s.name else None)
            for d, lay, s in zip(details, layouts, source)
        ]

    return specs(ins, in_layouts, source_inputs, sig_in), specs(outs, out_layouts, source_outputs, sig_out)


def session_predict(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], threads: int = 0):
    interp = open_interpreter(path, threads)
    in_index, out_index = tensor_indices(interp, [s.name for s in inputs], [s.name for s in outputs])
    in_specs = [s.model_dump() for s in inputs]
    out_specs = [s.model_dump() for s in outputs]

    def predict(feeds: dict) -> dict:
        for spec in in_specs:
            interp.set_tensor(in_index[spec["name"]], quantize_input(feeds[spec["name"]], spec))
        interp.invoke()
        return {s["name"]: dequantize_output(interp.get_tensor(out_index[s["name"]]), s) for s in out_specs}

    return predict


# --------------------------------------------------------------------------- the TF converter


def representative(
    calibration: dict, inputs: list[TensorSpec], signature_names: Optional[list[list[str]]] = None
) -> Callable:
    """tf.lite representative_dataset over the calibration set, one model batch per step: a list in input order,
    or with ``signature_names`` a dict. A SavedModel's converter orders its inputs by signature name, not as the
    source does, and its names may be sanitised (``input.1`` / ``input_1``): each input is keyed by every name
    in its list (the calibrator reads only the ones it knows)."""
    specs = [s.model_dump() for s in inputs]

    def gen():
        for feeds in iter_batches(calibration, specs):
            # float inputs as float32 (quantized I/O is calibrated in float too); integer ones (token ids) as
            # the source's integer dtype: float ids fail the calibrator ("Cannot set tensor: Got value of type
            # FLOAT32 but expected type INT64")
            arrays = [
                feeds[s["name"]].astype(s["dtype"] if np.dtype(s["dtype"]).kind in "iub" else np.float32) for s in specs
            ]
            if signature_names:
                yield {name: a for names, a in zip(signature_names, arrays) for name in names}
            else:
                yield arrays

    return gen


def configure(
    converter,
    mode: str,
    io_dtype: str,
    calibration: Optional[dict],
    inputs: list[TensorSpec],
    signature_names: Optional[list[list[str]]] = None,
) -> QuantizationInfo:
    """Set the TFLite converter's post-training quantization for ``mode`` (``signature_names``: see
    ``representative``)."""
    from . import import_tensorflow

    tf = import_tensorflow()
    if mode == "none":
        return QuantizationInfo(mode="none")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        return QuantizationInfo(mode="fp16", method="TFLiteConverter float16 weights (fp32 compute on CPU)")
    if mode == "dynamic":
        return QuantizationInfo(mode="dynamic", method="TFLiteConverter dynamic range (int8 weights)")
    if calibration is None:
        raise UsageError(
            f"--quantize {mode} needs calibration data",
            "pass --calibration DATA.npz with ~100+ representative samples per input",
        )
    n = len(next(iter(calibration.values())))
    converter.representative_dataset = representative(calibration, inputs, signature_names)
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype in ("int8", "uint8"):
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)
        return QuantizationInfo(
            mode="int8", method=f"TFLiteConverter full integer ({io_dtype} I/O)", calibration_samples=n
        )
    if mode == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        return QuantizationInfo(
            mode="int16x8", method="TFLiteConverter int16 activations, int8 weights", calibration_samples=n
        )
    raise UsageError(f"unknown precision {mode!r} for TFLite", "use --quantize none|fp16|dynamic|int8|int16x8")


def keras_converter(source, workdir: Path):
    """A TFLiteConverter for a Keras model whose signature carries the model's own input and output names.
    ``from_keras_model`` exports ``model(x, training=False)`` through a Keras ExportArchive, which keys a single
    output ``output_0``; this exports the same call the same way, returning ``{output name: tensor}`` in the
    loader's names (``keras_source``), with the inputs named like the model's."""
    import contextlib
    import io

    from . import import_tensorflow

    tf = import_tensorflow()
    keras = require("keras", "tensorflow")
    model = source.handle
    names = [s.name for s in source.outputs]
    signature = [tf.TensorSpec(t.shape, t.dtype, name=s.name) for t, s in zip(model.inputs, source.inputs)]

    def serve(*xs):
        out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        if isinstance(out, dict):
            return {n: out[n] for n in names}
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out]))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, signature)
    exported = workdir / "keras_savedmodel"
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the endpoint's signature
        archive.write_out(str(exported), verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(str(exported))


def convert(converter) -> bytes:
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # keras' export prints its signature to stdout
            return converter.convert()
    except Exception as e:
        text = str(e)
        ops = sorted(set(re.findall(r"'(tf\.[A-Za-z0-9_]+)' op", text)))
        if ops:
            raise EdgepackError(
                f"the TFLite converter cannot convert op(s) {', '.join(ops)}",
                "replace those ops with TFLite builtins (see the TFLite op compatibility list)",
            )
        first = next((ln for ln in text.splitlines() if "error" in ln.lower()), text.splitlines()[0] if text else "")
        raise EdgepackError(
            f"the TFLite converter failed: {first.strip()[:300]}",
            "check the model uses TFLite-compatible ops and static shapes",
        )


def finish(
    model: Path, source, options, quant: QuantizationInfo, in_layouts, out_layouts, tools: dict
) -> ConvertedModel:
    ins, outs = read_specs(model, source.inputs, source.outputs, in_layouts, out_layouts)
    return ConvertedModel(
        path=model,
        member="model.tflite",
        inputs=ins,
        outputs=outs,
        tools={**runtime_versions(), **tools},
        predict=session_predict(model, ins, outs),
        quantization=quant,
    )


def convert_named(converter, source: ModelSource, options, calibration: dict | None, workdir: Path, tools: dict):
    """Run a TFLite converter whose signature is keyed by the source's input names (Keras, SavedModel, jax2tf) in the
    build's precision; the model keeps the source's layouts."""
    quant = configure(
        converter,
        options.convert.quantize,
        options.convert.io_dtype,
        calibration,
        source.inputs,
        signature_names=[[s.name] for s in source.inputs],
    )
    out = workdir / "model.tflite"
    out.write_bytes(convert(converter))
    ins, outs = [s.layout for s in source.inputs], [s.layout for s in source.outputs]
    return finish(out, source, options, quant, ins, outs, tools)
