"""Load an .onnx file as a source model; reference outputs come from onnxruntime on the original file."""

from __future__ import annotations

from pathlib import Path

from edgepack.bundle import sha256_file
from edgepack.errors import UsageError
from edgepack.types import ModelSource, TensorSpec


def load(source: str, kind: str, input_specs: list[TensorSpec]) -> ModelSource:
    import onnx

    from . import onnx_tools

    path = Path(source)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist", "check the path")
    model = onnx_tools.load_model(path)
    ins, outs = onnx_tools.read_specs(model)
    ins = _apply_overrides(ins, input_specs, path.name)
    return ModelSource(
        path=path,
        kind=kind,
        framework="onnx",
        framework_version=onnx.__version__,
        sha256=sha256_file(path),
        inputs=ins,
        outputs=outs,
        handle=path,
        predict=onnx_tools.session_predict(path),
    )


def _apply_overrides(ins: list[TensorSpec], overrides: list[TensorSpec], name: str) -> list[TensorSpec]:
    """--input may pin dynamic dims (for random validation data) and set the layout; names must match."""
    by_name = {s.name: s for s in ins}
    for o in overrides:
        if o.name not in by_name:
            raise UsageError(
                f"--input {o.name!r} is not an input of {name} (inputs: {list(by_name)})", "use the model's input names"
            )
        cur = by_name[o.name]
        if len(o.shape) != len(cur.shape) or any(isinstance(c, int) and c != d for c, d in zip(cur.shape, o.shape)):
            raise UsageError(
                f"--input {o.name}:{o.shape_text()} contradicts the model's shape {cur.shape_text()}",
                "only dynamic dimensions can be set with --input for an ONNX source",
            )
        by_name[o.name] = cur.model_copy(update={"shape": o.shape, "layout": o.layout or cur.layout})
    return [by_name[s.name] for s in ins]
