"""Load a PyTorch source: a torch.export archive (.pt2), TorchScript (.pt/.jit) or file.py:callable.

Pickled checkpoints (.pth state dicts or whole pickled modules) are refused before
we get here: unpickling runs arbitrary code. ``file.py:callable`` runs the user's
own (trusted) code and must return an ``nn.Module``; its input shapes come from --input.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgepack.bundle import sha256_file
from edgepack.data import guess_layout
from edgepack.errors import UsageError, require
from edgepack.types import ModelSource, TensorSpec


def _torch():
    return require("torch", "torch")


def _flatten(out, name: str = "") -> list:
    """(name, tensor) pairs of a forward() result, depth first in order: a tensor is ``output``; a dict's (and a
    transformers ModelOutput's) items and a dataclass's fields are named by their keys, ``None`` ones skipped;
    a tuple/list gives ``output_0``, ``output_1``, … (one element: ``output``); nested values are ``outer.inner``."""
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return [(name or "output", out)]
    if isinstance(out, dict):  # a ModelOutput is an OrderedDict of its non-None fields
        items = [(str(k), v) for k, v in out.items()]
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    elif isinstance(out, (list, tuple)):
        if name:
            items = [(str(i), v) for i, v in enumerate(out)]
        else:
            items = [("output", out[0])] if len(out) == 1 else [(f"output_{i}", v) for i, v in enumerate(out)]
    else:
        raise UsageError(
            f"the model returned {type(out).__name__}; edgepack handles tensors, tuples, lists, dicts "
            "and dataclasses of them",
            "make forward() return a tensor or a tuple of tensors",
        )
    return [pair for key, v in items if v is not None for pair in _flatten(v, f"{name}.{key}" if name else key)]


def flat_module(torch, module, repeat, single: bool):
    """``module`` returning its outputs as a flat tuple of tensors, in the order and selection of the source's outputs
    (``_flatten``), for exporters that take no dict / ModelOutput result. A tensor returned twice (a ModelOutput's
    last_hidden_state is hidden_states[-1]) would be one output of the converted model: its repeat is ``repeat(t)``.
    ``single``: one output is returned bare, not as a 1-tuple."""

    class Flat(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            outs, seen = [], set()
            for _, t in _flatten(self.inner(*xs)):
                outs.append(repeat(t) if id(t) in seen else t)
                seen.add(id(t))
            return outs[0] if single and len(outs) == 1 else tuple(outs)

    return Flat(module)


def _specs_from_overrides(overrides: list[TensorSpec], known_names: list[str] | None, what: str):
    if not overrides:
        raise UsageError(
            f"{what}: input shapes are not stored in the file",
            "pass --input NAME:1x3x224x224 (one per model input, in forward() order)",
        )
    if known_names is not None and len(known_names) != len(overrides):
        raise UsageError(
            f"{what} takes {len(known_names)} input(s) {known_names}, --input gave {len(overrides)}",
            "pass one --input per forward() argument",
        )
    return list(overrides)


def from_module(path: Path, module, kind: str, input_specs: list[TensorSpec]) -> ModelSource:
    """A live nn.Module (from file.py:callable); input shapes come from --input."""
    ins = _specs_from_overrides(input_specs, None, f"{path.name} (python callable)")
    return _finish(path, kind, module.eval(), ins, module)


def load(source: str, kind: str, input_specs: list[TensorSpec]) -> ModelSource:
    torch = _torch()
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist", "check the path")
    if kind == "torch-export":
        try:
            ep = torch.export.load(str(path))
        except Exception as e:
            raise UsageError(
                f"{path.name} is not a readable torch.export archive ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]})",
                "save it with torch.export.save(torch.export.export(model, args), 'model.pt2')",
            )
        names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        if input_specs:
            ins = _specs_from_overrides(input_specs, names, path.name)
        else:
            examples = (ep.example_inputs or ((), {}))[0]
            if len(examples) != len(names):  # no example inputs saved: the shapes must come from --input
                _specs_from_overrides([], names, path.name)
            ins = [
                TensorSpec(
                    name=n,
                    shape=list(t.shape),
                    dtype=str(t.dtype).replace("torch.", ""),
                    layout=guess_layout(list(t.shape)),
                )
                for n, t in zip(names, examples)
            ]
        handle = ep
        module = ep.module()
    else:
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:
            raise UsageError(
                f"{path.name} is not a readable TorchScript file ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                "save it with torch.jit.script(model).save(path) or torch.jit.trace(...)",
            )
        names = [a.name for a in module.forward.schema.arguments[1:]]
        ins = _specs_from_overrides(input_specs, names, path.name)
        handle = module
    return _finish(path, kind, module, ins, handle)


def _reference_copy(module):
    """The module the reference outputs come from: a copy, so that running it never changes the module a route
    then converts (detection heads cache anchor grids on their first forward; a cache made under
    inference_mode() breaks torch.export later). Modules that cannot be copied run as they are, under no_grad."""
    import copy

    try:
        return copy.deepcopy(module)
    except Exception:
        return module


def _finish(path: Path, kind: str, module, ins: list[TensorSpec], handle) -> ModelSource:
    torch = _torch()
    reference = _reference_copy(module)

    def predict(feeds: dict) -> dict:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in ins]
        with torch.no_grad():  # not inference_mode(): its tensors cannot be used by a later export
            out = reference(*args)
        return {n: t.detach().cpu().numpy() for n, t in _flatten(out)}

    zeros = {s.name: np.zeros(s.static_shape(), np.dtype(s.dtype)) for s in ins}
    try:
        sample = predict(zeros)
    except Exception as e:
        raise UsageError(
            f"running the model on inputs {[s.shape_text() for s in ins]} failed: "
            f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
            "check the --input shapes and dtypes match what forward() expects",
        )
    outs = [
        TensorSpec(name=n, shape=list(a.shape), dtype=a.dtype.name, layout=guess_layout(list(a.shape)))
        for n, a in sample.items()
    ]
    return ModelSource(
        path=path,
        kind=kind,
        framework="torch",
        framework_version=torch.__version__.split("+")[0],
        sha256=sha256_file(path),
        inputs=ins,
        outputs=outs,
        handle=handle,
        predict=predict,
    )
