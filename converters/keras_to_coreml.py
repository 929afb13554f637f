"""Route keras/tensorflow -> coreml with coremltools' TensorFlow 2 frontend (ML Program ``.mlpackage``).

coremltools 9 reads Keras 3 models (tested with keras 3.15 / tensorflow 2.21) but converts a SavedModel only as
one concrete function. Both are wrapped the same way: a ``tf.function`` with the source's input names and static
shapes that calls the Keras model (or the SavedModel's ``serving_default`` signature) and returns the outputs in
the source's order; its concrete function is what coremltools converts. I/O keep the Keras layout (NHWC).
"""

from __future__ import annotations

from pathlib import Path

from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import COREML_TARGET, coreml_tools, import_tensorflow, keep_layout


def concrete_function(source: ModelSource):
    """(concrete function, the object owning its variables: keep it alive while converting)."""
    tf = import_tensorflow()
    signature = [
        tf.TensorSpec(s.static_shape(), tf.as_dtype(s.dtype), name=n)
        for n, s in zip(coreml_tools.feature_names(source.inputs), source.inputs)
    ]
    names = [s.name for s in source.inputs]
    if source.kind == "savedmodel":
        owner = tf.saved_model.load(str(source.handle))
        fn = owner.signatures["serving_default"]

        def call(*args):
            res = fn(**dict(zip(names, args)))
            return [res[s.name] for s in source.outputs]
    else:
        model = owner = source.handle

        def call(*args):
            out = model(list(args) if len(args) > 1 else args[0], training=False)
            if isinstance(out, dict):
                return [out[s.name] for s in source.outputs]
            return list(out) if isinstance(out, (list, tuple)) else [out]

    return tf.function(call, input_signature=signature).get_concrete_function(), owner


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    tf = import_tensorflow()
    coreml_tools.check_options(options, calibration)
    keep_layout(
        source,
        options,
        f"--layout {options.convert.layout} differs from the Keras model's own layout",
        "Keras/TF models keep their layout; drop --layout",
    )
    mlmodel = coreml_tools.convert_tensorflow(lambda: concrete_function(source), source, options, "TensorFlow/Keras")
    return coreml_tools.finish(mlmodel, source, options, calibration, workdir, {"tensorflow": tf.__version__})


ROUTE = Route(
    name="keras-coreml",
    sources=("keras", "tensorflow"),
    target="coreml",
    precisions=("none", "fp16", "int8", "palettize4", "palettize6"),
    convert=convert,
    extra="coreml",
    requires=("tensorflow", "coremltools"),
    calibrated=(),
    options=(COREML_TARGET,),
    summary="coremltools' TensorFlow 2 frontend on one concrete function -> ML Program",
)
