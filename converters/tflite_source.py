"""An existing .tflite file as the source: bundled as it is; reference outputs from the interpreter on it."""

from __future__ import annotations

from pathlib import Path

from edgepack.bundle import sha256_file
from edgepack.data import guess_layout
from edgepack.errors import UsageError
from edgepack.types import ModelSource, TensorSpec

from . import tflite_tools


def load(source: str, kind: str, input_specs: list[TensorSpec]) -> ModelSource:
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist", "check the path")
    interp = tflite_tools.open_interpreter(path)
    ins = [
        tflite_tools.spec_from_detail(d, guess_layout([int(x) for x in d["shape"]])) for d in interp.get_input_details()
    ]
    outs = [
        tflite_tools.spec_from_detail(d, guess_layout([int(x) for x in d["shape"]]))
        for d in interp.get_output_details()
    ]
    by_name = {o.name: o for o in input_specs}
    ins = [
        s.model_copy(update={"layout": by_name[s.name].layout}) if s.name in by_name and by_name[s.name].layout else s
        for s in ins
    ]
    version = tflite_tools.runtime_versions()
    return ModelSource(
        path=path,
        kind=kind,
        framework="tflite",
        framework_version=version.get("ai-edge-litert") or next(iter(version.values()), None),
        sha256=sha256_file(path),
        inputs=ins,
        outputs=outs,
        handle=path,
        predict=tflite_tools.session_predict(path, ins, outs),
    )
