"""Route jax -> onnx: jax2onnx traces the source's pure function (parameters closed over, so they become
initializers) into an ONNX graph named like the source, then the shared ONNX precision step."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from pathlib import Path

from edgepack.errors import EdgepackError, first_line, require
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import OPSET, onnx_tools


def _load_plugins(jax2onnx) -> None:
    """jax2onnx registers its converters on the first export by importing every module under
    ``jax2onnx/plugins`` — its examples and Equinox plugins too, several of which build and compile models when
    imported (about a minute on 2 cores). A JAX source needs only the ``jax`` and ``flax`` plugin trees: import
    those and mark the registry as filled. If jax2onnx's layout changes, its own full import runs instead."""
    try:
        from jax2onnx.plugins import plugin_system

        if getattr(plugin_system, "_already_imported_plugins", True):
            return
        root = Path(plugin_system.__file__).parent
        for tree in ("jax", "flax"):
            plugin_system._import_tree(root / tree, f"jax2onnx.plugins.{tree}")
        plugin_system._already_imported_plugins = True
    except (ImportError, AttributeError):
        return


def _tidy(proto) -> None:
    """Two fixes to jax2onnx's graph, so that the ONNX tools downstream take it:

    - Conv weights come as ``Transpose(HWIO initializer)``: folded into OIHW initializers (onnx2tf reads a
      Conv's weights only from an initializer);
    - a Gemm without bias gets a scalar zero bias (``C`` of shape []), on which onnxruntime's static quantizer
      fails (``too many indices for array``): such biases are broadcast to the Gemm's ``[N]`` output width."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    for node in list(proto.graph.node):
        if node.op_type == "Transpose" and node.input[0] in inits:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            value = numpy_helper.to_array(inits[node.input[0]])
            folded = numpy_helper.from_array(value.transpose(perm) if perm else value.T, node.output[0])
            proto.graph.initializer.append(folded)
            inits[folded.name] = folded
            proto.graph.node.remove(node)
    _gemm_biases(proto, inits)
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    for t in [t for t in proto.graph.initializer if t.name not in used]:
        proto.graph.initializer.remove(t)


def _gemm_biases(proto, inits: dict) -> None:
    """jax2onnx gives a Gemm without bias a scalar zero bias (``C`` of shape []), on which onnxruntime's static
    quantizer fails (``too many indices for array``): broadcast scalar biases of Gemms with constant weights to
    their ``[N]`` output width."""
    from onnx import numpy_helper

    for node in proto.graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[1] not in inits:
            continue
        bias = inits.get(node.input[2])
        if bias is None or len(bias.dims) != 0:
            continue
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        width = inits[node.input[1]].dims[0 if trans_b else 1]
        value = numpy_helper.to_array(bias)
        wide = numpy_helper.from_array(value.reshape(1).repeat(width), f"{node.input[2]}_{node.output[0]}")
        proto.graph.initializer.append(wide)
        node.input[2] = wide.name


def export(source: ModelSource, path: Path, opset: int, nchw: bool = False) -> None:
    """The source's function as ONNX at ``path``; ``nchw``: its 4-D NHWC inputs and outputs as NCHW (a Transpose
    at each end), for the routes through onnx2tf, which reads 4-D inputs as channels-first."""
    jax = require("jax", "jax")
    jax2onnx = require("jax2onnx", "jax")
    onnx = require("onnx", "jax")
    for name in ("jax2onnx", "jax2onnx.plugins.plugin_system"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _load_plugins(jax2onnx)
    specs = [jax.ShapeDtypeStruct(tuple(s.static_shape()), s.dtype) for s in source.inputs]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            proto = jax2onnx.to_onnx(
                source.handle,
                specs,
                model_name=source.path.stem,
                opset=opset,
                input_names=[s.name for s in source.inputs],
                output_names=[s.name for s in source.outputs],
                inputs_as_nchw=_nhwc_indices(source.inputs) if nchw else None,
                outputs_as_nchw=_nhwc_indices(source.outputs) if nchw else None,
            )
    except Exception as e:
        raise EdgepackError(
            f"jax2onnx failed: {type(e).__name__}: {first_line(e)[:300]}",
            "the function uses a JAX primitive or Flax call jax2onnx cannot convert (call Flax functions with "
            "keyword arguments, e.g. nnx.avg_pool(x, window_shape=(2, 2))); the TFLite target goes through "
            "jax2tf instead",
        )
    _tidy(proto)
    onnx.save(proto, str(path))


def _nhwc_indices(specs) -> list[int]:
    return [i for i, s in enumerate(specs) if len(s.shape) == 4 and s.layout == "NHWC"]


def _nchw(spec):
    if len(spec.shape) == 4 and spec.layout == "NHWC":
        n, h, w, c = spec.shape
        return spec.model_copy(update={"shape": [n, c, h, w], "layout": "NCHW"})
    return spec


def _tools(converted: ConvertedModel) -> ConvertedModel:
    import jax2onnx

    converted.tools["jax"] = require("jax", "jax").__version__
    converted.tools["jax2onnx"] = getattr(jax2onnx, "__version__", "?")
    return converted


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    fp32 = workdir / "export.fp32.onnx"
    export(source, fp32, options.convert.opset)
    return _tools(onnx_tools.finish(fp32, source, workdir, options, calibration))


def via_onnx(
    onnx_convert, source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path
) -> ConvertedModel:
    """A JAX source through an ONNX route (onnx2tf): export it with 4-D NHWC tensors as NCHW (what onnx2tf
    expects of ONNX), then hand the ONNX file to ``onnx_convert`` as an NCHW source; the reference outputs stay
    JAX's (the build validates against JAX, not the ONNX, mapping layouts by position)."""
    from edgepack.data import map_tensors

    onnx_path = workdir / "jax_export.onnx"
    export(source, onnx_path, options.convert.opset, nchw=True)
    ins, outs = [_nchw(s) for s in source.inputs], [_nchw(s) for s in source.outputs]

    def predict(feeds: dict) -> dict:  # JAX itself, in the NCHW twin's layouts
        assert source.predict is not None
        return map_tensors(source.predict(map_tensors(feeds, ins, source.inputs)), source.outputs, outs)

    twin = dataclasses.replace(source, path=onnx_path, inputs=ins, outputs=outs, predict=predict)
    cal = map_tensors(calibration, source.inputs, twin.inputs) if calibration is not None else None
    converted = onnx_convert(twin, options, cal, workdir)
    converted.quantization.method = (converted.quantization.method or "fp32") + " (from JAX via ONNX)"
    return _tools(converted)


ROUTE = Route(
    name="jax-onnx",
    sources=("jax",),
    target="onnx",
    precisions=("none", "fp16", "dynamic", "int8"),
    convert=convert,
    extra="jax",
    requires=("jax", "jax2onnx"),
    options=(OPSET,),
    summary="jax2onnx on the function with its parameters (Flax NNX/Linen, jax.numpy)",
)
