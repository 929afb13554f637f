"""Route keras/tensorflow -> tflite: the TFLite converter (from the Keras model or the SavedModel) with its own
post-training quantization. Keras models are channels-last already: I/O keep the source's layout."""

from __future__ import annotations

from pathlib import Path

from edgepack.registry import Route
from edgepack.types import BuildOptions, ConvertedModel, ModelSource

from . import IO_DTYPE, LAYOUT, import_tensorflow, keep_layout, tflite_tools


def convert(source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path) -> ConvertedModel:
    tf = import_tensorflow()
    keep_layout(
        source,
        options,
        f"--layout {options.convert.layout} differs from the Keras model's own layout",
        "Keras/TF models keep their layout; drop --layout (or build the model in that layout)",
    )
    if source.kind == "savedmodel":
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source.handle))
    else:  # the signature keyed by the model's own names: the bundle's tensors are named like the source's
        converter = tflite_tools.keras_converter(source, workdir)
    return tflite_tools.convert_named(converter, source, options, calibration, workdir, {"tensorflow": tf.__version__})


ROUTE = Route(
    name="keras-tflite",
    sources=("keras", "tensorflow"),
    target="tflite",
    precisions=("none", "fp16", "dynamic", "int8", "int16x8"),
    convert=convert,
    extra="tensorflow",
    requires=("tensorflow",),
    options=(LAYOUT, IO_DTYPE),
    summary="tf.lite.TFLiteConverter from the Keras model or SavedModel, its post-training quantization",
)
