"""Load a JAX source from ``file.py:callable`` (the user's own, trusted code). The callable returns one of:

- a Flax NNX module (``nnx.Module``): run as ``module(*inputs)``, in eval mode (BatchNorm running averages,
  no Dropout);
- a pair ``(apply_fn, params)``: run as ``apply_fn(params, *inputs)``. Flax Linen: ``(model.apply, variables)``;
  a plain ``jax.numpy`` function: ``(fn, weights)`` with any pytree of weights, or ``(fn, None)`` for a function
  of the inputs alone (``fn(*inputs)``).

JAX code carries no input shapes: they come from ``--input`` (one per input, in argument order). The parameters
are closed over, so every route converts one pure function of the inputs (``ModelSource.handle``, returning the
flat tuple of output arrays) and the reference outputs come from JAX itself (``jax.jit`` of that function).
Outputs are named from the result's pytree: one array ``output``, a tuple ``output_0``, ``output_1``, …, a dict
by its keys (nested: ``outer.inner``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.bundle import sha256_file
from edgepack.data import guess_layout
from edgepack.errors import UsageError, require
from edgepack.types import ModelSource, TensorSpec

PROTOCOL = (
    "return an nnx.Module, or (apply_fn, params) run as apply_fn(params, *inputs) (Linen: (model.apply, variables))"
)


def _jax():
    return require("jax", "jax")


def is_jax_model(model: Any) -> bool:
    """What python_source asks: is the callable's result a JAX model (this module's protocol)? Decided without
    importing JAX: only code that imported it can have returned one."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        return True
    return (
        "jax" in sys.modules
        and isinstance(model, tuple)
        and len(model) == 2
        and callable(model[0])
        and not isinstance(model[0], type)
    )


def _key(entry) -> str:
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def output_names(jax, out) -> list[str]:
    """Names of the flattened outputs (``jax.tree_util`` leaf order), like torch_source's."""
    pairs = jax.tree_util.tree_flatten_with_path(out)[0]
    if len(pairs) == 1 and not pairs[0][0]:
        return ["output"]
    if isinstance(out, (tuple, list)) and len(out) == 1:
        return [".".join(["output"] + [_key(k) for k in path[1:]]) for path, _ in pairs]
    names = []
    for path, _ in pairs:
        parts = [_key(k) for k in path]
        if isinstance(out, (tuple, list)):
            parts[0] = f"output_{parts[0]}"
        names.append(".".join(parts))
    return names


def pure_function(model: Any):
    """The model as ``f(*inputs) -> pytree`` with its parameters closed over."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        if hasattr(model, "eval"):
            model.eval()
        graphdef, state = nnx.split(model)

        def run_module(*xs):
            return nnx.merge(graphdef, state)(*xs)

        return run_module
    apply_fn, params = model
    if params is None:
        return apply_fn

    def run(*xs):
        return apply_fn(params, *xs)

    return run


def _layout(shape: list) -> str | None:
    """JAX and Flax images are channels-last: 4-D tensors are NHWC unless the shape clearly says NCHW."""
    guess = guess_layout(shape)
    if len(shape) == 4 and guess == "NCHW" and not (shape[1] <= 4 < shape[3]):
        return "NHWC"
    return guess


def from_model(path: Path, model: Any, kind: str, input_specs: list[TensorSpec], what: str) -> ModelSource:
    jax = _jax()
    if not input_specs:
        raise UsageError(
            f"{what} returns a JAX model: its input shapes are not in the code",
            "pass --input NAME:1x28x28x1[:float32] (one per input, in the function's argument order)",
        )
    fn = pure_function(model)
    ins = [s.model_copy(update={"layout": _layout(s.shape)}) for s in input_specs]
    names: list[str] = []

    def flat(*xs):  # what the routes convert: the outputs as a flat tuple, in ``names`` order
        return tuple(jax.tree_util.tree_leaves(fn(*xs)))

    jitted = jax.jit(flat)

    def predict(feeds: dict) -> dict:
        out = jitted(*[np.ascontiguousarray(feeds[s.name]) for s in ins])
        return {n: np.asarray(a) for n, a in zip(names, out)}

    zeros = [np.zeros(s.static_shape(), np.dtype(s.dtype)) for s in ins]
    try:
        names[:] = output_names(jax, fn(*zeros))
        sample = predict({s.name: z for s, z in zip(ins, zeros)})
    except Exception as e:
        raise UsageError(
            f"running {what} on inputs {[s.shape_text() for s in ins]} failed: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
            "check the --input shapes and dtypes match what the function expects; " + PROTOCOL,
        )
    outs = [
        TensorSpec(name=n, shape=list(a.shape), dtype=a.dtype.name, layout=_layout(list(a.shape)))
        for n, a in sample.items()
    ]
    version = jax.__version__
    flax = sys.modules.get("flax")
    if flax is not None:
        version += f" (flax {getattr(flax, '__version__', '?')})"
    return ModelSource(
        path=path,
        kind=kind,
        framework="jax",
        framework_version=version,
        sha256=sha256_file(path),
        inputs=ins,
        outputs=outs,
        handle=flat,
        predict=predict,
    )
