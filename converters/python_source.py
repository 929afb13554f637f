"""``path/to/file.py:callable``: run the user's own (trusted) code and hand the model it returns to the
loader of its framework (an nn.Module to torch_source, a keras.Model to keras_source, a Flax NNX module or an
``(apply_fn, params)`` pair to jax_source)."""

from __future__ import annotations

import importlib.util
import sys

from edgepack.errors import UsageError
from edgepack.types import ModelSource, TensorSpec

from . import split_callable


def call(source: str):
    path, name = split_callable(source)
    if not path.is_file():
        raise UsageError(f"python file {path} does not exist", "check the path in file.py:callable")
    # A stable name: it ends up in exported graphs' metadata (class hierarchy), and bundles must be
    # byte-identical for the same inputs (str hash() is salted per process).
    mod_name = "_edgepack_user_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.parent.resolve()))  # let the file import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"importing {path.name} failed: {type(e).__name__}: {e}", f"fix {path.name} so it imports")
    finally:
        sys.path.remove(str(path.parent.resolve()))
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        raise UsageError(f"{path.name} has no callable {name!r}", f"define def {name}(): return model")
    return path, fn()


def load(source: str, kind: str, input_specs: list[TensorSpec]) -> ModelSource:
    path, model = call(source)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from . import torch_source

        return torch_source.from_module(path, model, kind, input_specs)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        from . import keras_source

        return keras_source.from_model(path, model, kind, input_specs)
    from . import jax_source

    what = f"{path.name}:{source.rpartition(':')[2]}"
    if jax_source.is_jax_model(model):
        return jax_source.from_model(path, model, kind, input_specs, what)
    raise UsageError(
        f"{what} returned {type(model).__name__}, not a torch.nn.Module, keras.Model or JAX model",
        "return the model object from the callable (JAX: " + jax_source.PROTOCOL + ")",
    )
