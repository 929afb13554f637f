"""Load a TensorFlow/Keras source: a Keras ``.keras`` file, a legacy ``.h5`` file, a SavedModel directory,
or (through python_source) the keras.Model a ``file.py:callable`` returns.

``.keras`` files are loaded with Keras' safe mode (no arbitrary Lambda code). Reference outputs come
from Keras (or the SavedModel's serving signature) itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.bundle import sha256_file
from edgepack.data import guess_layout
from edgepack.errors import UsageError, require
from edgepack.types import ModelSource, TensorSpec


def _quiet_tf():
    from . import import_tensorflow

    return import_tensorflow()


def _shape(dims, override: TensorSpec | None) -> list:
    if override is not None:
        return list(override.shape)
    return [1 if (d is None and i == 0) else d for i, d in enumerate(dims)]


def _keras_layout(shape: list) -> str | None:
    """Keras image tensors follow keras.config.image_data_format() (channels-last by default)."""
    if len(shape) == 4:
        keras = require("keras", "tensorflow")
        return "NCHW" if keras.config.image_data_format() == "channels_first" else "NHWC"
    return guess_layout(shape)


def from_model(
    path: Path, model, kind: str, input_specs: list[TensorSpec], sha_path: Path | None = None
) -> ModelSource:
    keras = require("keras", "tensorflow")
    overrides = {s.name: s for s in input_specs}
    ins = []
    for t in model.inputs:
        name = t.name
        shape = _shape(list(t.shape), overrides.get(name))
        if any(not isinstance(d, int) for d in shape):
            raise UsageError(
                f"input {name!r} of {path.name} has dynamic dims {list(t.shape)}",
                f"pass --input {name}:1x... with the full shape",
            )
        ins.append(
            TensorSpec(
                name=name,
                shape=shape,
                dtype=np.dtype(t.dtype).name if not isinstance(t.dtype, str) else t.dtype,
                layout=_keras_layout(shape),
            )
        )
    unknown = set(overrides) - {s.name for s in ins}
    if unknown:
        raise UsageError(
            f"--input {sorted(unknown)} is not an input of {path.name} (inputs: {[s.name for s in ins]})",
            "use the model's input names",
        )

    def predict(feeds: dict) -> dict:
        out = model([feeds[s.name] for s in ins] if len(ins) > 1 else feeds[ins[0].name], training=False)
        return dict(zip(names, _as_list(out)))

    zeros = {s.name: np.zeros(s.shape, np.dtype(s.dtype)) for s in ins}
    names = list(getattr(model, "output_names", None) or [])
    raw = model([zeros[s.name] for s in ins] if len(ins) > 1 else zeros[ins[0].name], training=False)
    sample = _as_list(raw)
    if isinstance(raw, dict):  # a dict result comes in its own order; output_names is sorted
        names = [str(k) for k in raw]
    if len(names) != len(sample):
        names = ["output"] if len(sample) == 1 else [f"output_{i}" for i in range(len(sample))]
    outs = [
        TensorSpec(name=n, shape=list(a.shape), dtype=np.asarray(a).dtype.name, layout=_keras_layout(list(a.shape)))
        for n, a in zip(names, sample)
    ]
    return ModelSource(
        path=path,
        kind=kind,
        framework="keras",
        framework_version=keras.__version__,
        sha256=sha256_file(sha_path or path),
        inputs=ins,
        outputs=outs,
        handle=model,
        predict=predict,
    )


def _as_list(out) -> list:
    if isinstance(out, dict):
        return [np.asarray(v) for v in out.values()]
    if isinstance(out, (list, tuple)):
        return [np.asarray(v) for v in out]
    return [np.asarray(out)]


def _saved_model(path: Path, input_specs: list[TensorSpec]) -> ModelSource:
    tf = _quiet_tf()
    try:
        loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
    except Exception as e:
        raise UsageError(
            f"{path} is not a loadable SavedModel with a serving_default signature "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})",
            "export it with model.export(dir) or tf.saved_model.save(model, dir, signatures=...)",
        )
    overrides = {s.name: s for s in input_specs}
    ins = []
    for name, spec in sorted(fn.structured_input_signature[1].items()):
        shape = _shape(spec.shape.as_list(), overrides.get(name))
        ins.append(TensorSpec(name=name, shape=shape, dtype=spec.dtype.name, layout=_keras_layout(shape)))
    names = sorted(fn.structured_outputs)

    def predict(feeds: dict) -> dict:
        res = fn(**{s.name: tf.constant(feeds[s.name]) for s in ins})
        return {n: res[n].numpy() for n in names}

    sample = predict({s.name: np.zeros(s.shape, np.dtype(s.dtype)) for s in ins})
    outs = [
        TensorSpec(
            name=n, shape=list(sample[n].shape), dtype=sample[n].dtype.name, layout=_keras_layout(list(sample[n].shape))
        )
        for n in names
    ]
    pb = path / "saved_model.pb"
    return ModelSource(
        path=path,
        kind="savedmodel",
        framework="tensorflow",
        framework_version=tf.__version__,
        sha256=sha256_file(pb),
        inputs=ins,
        outputs=outs,
        handle=path,
        predict=predict,
    )


def load(source: str, kind: str, input_specs: list[TensorSpec]) -> ModelSource:
    path = Path(source)
    if not path.exists():
        raise UsageError(f"model {path} does not exist", "check the path")
    if kind == "savedmodel":
        return _saved_model(path, input_specs)
    _quiet_tf()
    keras = require("keras", "tensorflow")
    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:
        raise UsageError(
            f"{path.name} is not a loadable Keras model ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''})",
            "save it with model.save('model.keras'); files with Lambda layers need "
            "file.py:callable (trusted code) instead",
        )
    return from_model(path, model, kind, input_specs)
