"""Conversion routes, registered once here by name; nothing heavy is imported until a route runs.

- ``SOURCES``: how to recognise a source file (by its name alone) and which module loads it.
- ``ROUTES``: one module per (source framework, target format) pair; each exposes
  ``convert(source, options, calibration, workdir) -> ConvertedModel``.
- ``TARGETS``: what each target format runs on and which device runner measures it.
- ``NPU_COMPILERS``: accelerator family (``--npu`` prefix) -> module compiling a built TFLite model for it,
  exposing ``compile_model(model, options, workdir) -> (path, NpuCompile)``.

A new format is one converter module, one runner module and rows here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import UsageError


@dataclass(frozen=True)
class Target:
    format: str
    runtime: str
    runner: str  # file in device_runners/
    precisions: tuple[str, ...]
    extra: str  # pip extra that installs the runtime on the host
    device_packages: tuple[str, ...] = ()  # what `bench --install-runtime` pip-installs on a device
    calibrated: tuple[str, ...] = ("int8", "int16x8")  # precisions that need --calibration


TARGETS: dict[str, Target] = {
    "onnx": Target("onnx", "onnxruntime", "onnx_runner.py", ("none", "fp16", "dynamic", "int8"), "",
                   ("numpy", "onnxruntime")),
    "tflite": Target("tflite", "litert", "tflite_runner.py", ("none", "fp16", "dynamic", "int8", "int16x8"),
                     "tensorflow", ("numpy", "ai-edge-litert")),
    # CoreML predicts only on macOS: built and checked statically anywhere, run by the runner on a Mac.
    # int8 = int8 weights (no calibration needed; --calibration adds int8 activations, macOS only).
    "coreml": Target("coreml", "coreml", "coreml_runner.py", ("none", "fp16", "int8", "palettize4", "palettize6"),
                     "coreml", ("numpy", "coremltools"), calibrated=()),
}

# source kind -> (framework, loader module). Kinds are recognised from the path only.
SOURCES: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "onnx_source"),
    "torch-export": ("torch", "torch_source"),
    "torchscript": ("torch", "torch_source"),
    "python-callable": ("python", "python_source"),  # framework decided by what the callable returns
    "keras": ("keras", "keras_source"),
    "keras-h5": ("keras", "keras_source"),
    "savedmodel": ("tensorflow", "keras_source"),
    "tflite": ("tflite", "tflite_source"),
}

ROUTES: dict[tuple[str, str], str] = {
    ("onnx", "onnx"): "onnx_to_onnx",
    ("torch", "onnx"): "torch_to_onnx",
    ("keras", "tflite"): "keras_to_tflite",
    ("tensorflow", "tflite"): "keras_to_tflite",
    ("tflite", "tflite"): "tflite_to_tflite",
    ("torch", "tflite"): "torch_to_tflite",
    ("onnx", "tflite"): "onnx_to_tflite",
    ("torch", "coreml"): "torch_to_coreml",
    ("onnx", "coreml"): "onnx_to_coreml",
    ("keras", "coreml"): "keras_to_coreml",
    ("tensorflow", "coreml"): "keras_to_coreml",
}

# --npu NAME: the first entry whose prefix NAME starts with compiles the converted model.
# Any precision is accepted: what the NPU cannot run (float ops) is reported as CPU fallback with the fix.
NPU_COMPILERS: dict[str, tuple[str, tuple[str, ...]]] = {
    # prefix: (module, target formats)
    "ethos-u": ("vela_compile", ("tflite",)),
}

# Routes that bundle a model as it is offer only "none".
AS_IS_ROUTES = {("tflite", "tflite")}


# Routes that offer fewer precisions than their target (the converter has no such mode).
ROUTE_PRECISIONS = {("torch", "tflite"): ("none", "dynamic", "int8")}


def precisions(framework: str, target_format: str) -> tuple[str, ...]:
    if (framework, target_format) in AS_IS_ROUTES:
        return ("none",)
    return ROUTE_PRECISIONS.get((framework, target_format), TARGETS[target_format].precisions)


_SUFFIX_KIND = {
    ".onnx": "onnx",
    ".pt2": "torch-export",
    ".pt": "torchscript",
    ".jit": "torchscript",
    ".torchscript": "torchscript",
    ".keras": "keras",
    ".h5": "keras-h5",
    ".tflite": "tflite",
}
_PICKLES = {".pth", ".pkl", ".pickle", ".ckpt", ".bin"}


def split_callable(source: str) -> tuple[Path, str] | None:
    """``path/to/file.py:callable`` -> (path, callable name); None for a plain file."""
    head, sep, name = source.rpartition(":")
    if sep and head.endswith(".py") and name.isidentifier():
        return Path(head), name
    return None


def source_kind(source: str) -> str:
    if split_callable(source):
        return "python-callable"
    if Path(source).is_dir():
        if (Path(source) / "saved_model.pb").is_file():
            return "savedmodel"
        raise UsageError(f"{source} is a directory but not a SavedModel (no saved_model.pb)",
                         "pass a SavedModel directory, or a model file")
    suffix = Path(source).suffix.lower()
    if suffix in _SUFFIX_KIND:
        return _SUFFIX_KIND[suffix]
    if suffix in _PICKLES:
        raise UsageError(
            f"{Path(source).name}: pickled checkpoints are not loaded (unpickling runs arbitrary code)",
            "save the model with torch.export.save(...) as .pt2, as TorchScript, as ONNX, "
            "or pass path/to/file.py:callable that builds it")
    if suffix == ".py":
        raise UsageError(f"{source}: name the callable that returns the model",
                         f"pass {source}:build_model (any function returning an nn.Module)")
    raise UsageError(f"{source}: unknown model type {suffix or '(no suffix)'}",
                     "pass .onnx, .pt2, TorchScript .pt/.jit, .keras, .h5, .tflite, a SavedModel directory, "
                     "or path/to/file.py:callable")


def import_tensorflow():
    """TensorFlow, imported quietly (its C++ start-up logs ignore TF_CPP_MIN_LOG_LEVEL for oneDNN's notice)."""
    import os

    from edgepack.errors import require

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    return require("tensorflow", "tensorflow")


def keep_layout(source, options, problem: str, fix: str) -> None:
    """Routes that keep the source's layout: refuse a ``--layout`` that differs from its 4-D inputs'."""
    if options.layout and any(s.layout and s.layout.lower() != options.layout for s in source.inputs
                              if len(s.shape) == 4):
        raise UsageError(problem, fix)


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(f"unknown target format {name!r}", f"use --to with one of {sorted(TARGETS)}")


def load_source(source: str, input_specs: list):
    kind = source_kind(source)
    framework, module = SOURCES[kind]
    return _module(module).load(source, kind, input_specs)


def route(framework: str, target_format: str):
    try:
        name = ROUTES[(framework, target_format)]
    except KeyError:
        raise UsageError(f"no route from {framework} to {target_format}",
                         f"routes available: {', '.join(f'{a}->{b}' for a, b in sorted(ROUTES))}")
    return _module(name)


def npu_compiler(name: str, target_format: str):
    """The compile module for ``--npu name``, after checking the build can feed it."""
    hit = next(((p, v) for p, v in NPU_COMPILERS.items() if name.lower().startswith(p)), None)
    if hit is None:
        raise UsageError(f"unknown --npu {name!r}",
                         f"use one of {', '.join(p + '…' for p in NPU_COMPILERS)} (e.g. ethos-u55-128)")
    prefix, (module, formats) = hit
    if target_format not in formats:
        raise UsageError(f"--npu {name} needs --to {'|'.join(formats)}",
                         f"build with --to {formats[0]} --quantize int8 --calibration DATA.npz")
    return _module(module)
