"""Route jax -> tflite: ``jax.experimental.jax2tf`` wraps the source's function (StableHLO inside a TF function,
parameters as constants), a SavedModel whose ``serving_default`` signature carries the source's input and output
names, then the TFLite converter (which lowers the StableHLO to TFLite builtins) with its post-training
quantization, as for Keras sources. JAX images are channels-last already: I/O keep the source's layout."""

from __future__ import annotations

from pathlib import Path

from edgepack.errors import EdgepackError, first_line, require
from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import IO_DTYPE, LAYOUT, import_tensorflow, keep_layout, tflite_tools


def saved_model(source: ModelSource, workdir: Path) -> Path:
    """The source's function as a SavedModel (signature ``serving_default``: inputs and outputs by name)."""
    tf = import_tensorflow()
    jax = require("jax", "jax")
    from jax.experimental import jax2tf

    names = [s.name for s in source.outputs]
    wrapped = jax2tf.convert(source.handle, with_gradient=False)
    signature = [tf.TensorSpec(s.static_shape(), s.dtype, name=s.name) for s in source.inputs]

    @tf.function(autograph=False, input_signature=signature)
    def serve(*xs):
        return dict(zip(names, wrapped(*xs)))

    module = tf.Module()
    module.serve = serve
    out = workdir / "jax_savedmodel"
    try:
        tf.saved_model.save(module, str(out), signatures={"serving_default": serve.get_concrete_function()})
    except Exception as e:
        raise EdgepackError(
            f"jax2tf could not convert the function (jax {jax.__version__}): {type(e).__name__}: {first_line(e)[:300]}",
            "the function must trace with static shapes (jax.jit-able with the --input shapes)",
        )
    return out


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    tf = import_tensorflow()
    keep_layout(
        source,
        options,
        f"--layout {options.convert.layout} differs from the JAX function's own layout",
        "JAX models keep their layout; drop --layout (or write the function in that layout)",
    )
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model(source, workdir)))
    tools = {"jax": require("jax", "jax").__version__, "tensorflow": tf.__version__}
    return tflite_tools.convert_named(converter, source, options, calibration, workdir, tools)


ROUTE = Route(
    name="jax-tflite",
    sources=("jax",),
    target="tflite",
    # int16x8 is left out: the converter's int16-activation model of a jax2tf function missed the gate (cosine
    # 0.98 < 0.995 on the conformance model); jax-onnx2tf offers it
    precisions=("none", "fp16", "dynamic", "int8"),
    convert=convert,
    extra="jax",
    requires=("jax", "tensorflow"),
    options=(LAYOUT, IO_DTYPE),
    install="pip install 'edgepack[jax,tensorflow]'",
    summary="jax2tf (StableHLO in a SavedModel), then the TFLite converter and its post-training quantization",
)
