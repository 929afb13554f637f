"""Conversion routes and source loaders. Nothing heavy is imported until a route runs.

- ``ROUTE_MODULES``: one module per route, each declaring ``ROUTE = Route(...)`` (edgepack.registry) next to its
  ``convert(source, options, calibration, workdir) -> ConvertedModel``. For one source framework and target, the
  routes are tried in this order (automatic fallback); ``edgepack routes`` lists them.
- ``SOURCES``: how to recognise a source file (by its name alone) and which module loads it.
- ``NPU_COMPILERS``: accelerator family (``--npu`` prefix) -> module compiling a built TFLite model for it,
  exposing ``compile_model(model, options, workdir) -> (path, NpuCompile)``.

A new route = one module + its name here; a new runtime = one module in edgepack/runtimes (CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgepack.errors import UsageError
from edgepack.registry import Option

ROUTE_MODULES = (
    "onnx_to_onnx",
    "torch_to_onnx",
    "jax_to_onnx",
    "keras_to_tflite",
    "tflite_to_tflite",
    "torch_to_tflite",  # litert-torch; then, on failure:
    "torch_pt2e_to_tflite",  # int8: PT2E inside litert-torch, when ai-edge-quantizer's misses the gate
    "torch_onnx_to_tflite",  # torch -> ONNX -> onnx2tf
    "onnx_to_tflite",
    "jax_to_tflite",  # jax2tf + the TFLite converter; then, on failure:
    "jax_onnx_to_tflite",  # jax -> ONNX -> onnx2tf
    "torch_to_coreml",  # coremltools' TorchScript frontend; then, on failure:
    "torch_onnx_to_coreml",  # torch -> ONNX -> onnx2tf -> coremltools
    "keras_to_coreml",
    "onnx_to_coreml",
    "jax_onnx_to_coreml",
    "torch_to_executorch",
)

# Options several routes read (a route declares the ones it reads; the build command shows each once).
LAYOUT = Option("layout", "nhwc | nchw I/O of 4-D tensors (default: the source's)", choices=("nhwc", "nchw"))
IO_DTYPE = Option(
    "io_dtype",
    "int8 TFLite I/O: float32 | int8 | uint8 (default float32; int8 with --npu)",
    choices=("float32", "int8", "uint8"),
    default="float32",
)
OPSET = Option("opset", "ONNX opset of torch -> ONNX exports", type=int, default=18)
# Quantization debugging (issue 13): routes whose int8 build can rank layers and keep some in float.
KEEP_FLOAT = Option(
    "keep_float",
    "mixed precision: keep the N most quantization-sensitive layers in float, or 'auto': as many as the "
    "build's min cosine needs",
)
EXPLAIN_QUANT = Option(
    "explain_quant",
    "print (and record in the manifest) each quantized layer's error against float, most sensitive first",
    type=bool,
    default=False,
)
COREML_TARGET = Option(
    "coreml_target", "CoreML minimum deployment target: iOS15..iOS26, macOS12..macOS26 (default iOS18)"
)

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

# --npu NAME: the first entry whose prefix NAME starts with compiles the converted model.
# Any precision is accepted: what the NPU cannot run (float ops) is reported as CPU fallback with the fix.
NPU_COMPILERS: dict[str, tuple[str, tuple[str, ...]]] = {
    # prefix: (module, target formats)
    "ethos-u": ("vela_compile", ("tflite",)),
}

_SUFFIX_KIND = {
    ".onnx": "onnx",
    ".pt2": "torch-export",
    ".pt": "torchscript",
    ".jit": "torchscript",
    ".torchscript": "torchscript",
    ".keras": "keras",
    ".h5": "keras-h5",
    ".hdf5": "keras-h5",  # the same HDF5 format as .h5
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
        raise UsageError(
            f"{source} is a directory but not a SavedModel (no saved_model.pb)",
            "pass a SavedModel directory, or a model file",
        )
    suffix = Path(source).suffix.lower()
    if suffix in _SUFFIX_KIND:
        return _SUFFIX_KIND[suffix]
    if suffix in _PICKLES:
        raise UsageError(
            f"{Path(source).name}: pickled checkpoints are not loaded (unpickling runs arbitrary code)",
            "save the model with torch.export.save(...) as .pt2, as TorchScript, as ONNX, "
            "or pass path/to/file.py:callable that builds it",
        )
    if suffix == ".py":
        raise UsageError(
            f"{source}: name the callable that returns the model",
            f"pass {source}:build_model (any function returning an nn.Module)",
        )
    raise UsageError(
        f"{source}: unknown model type {suffix or '(no suffix)'}",
        "pass .onnx, .pt2, TorchScript .pt/.jit, .keras, .h5/.hdf5, .tflite, a SavedModel directory, "
        "or path/to/file.py:callable",
    )


def import_tensorflow():
    """TensorFlow, imported quietly (its C++ start-up logs ignore TF_CPP_MIN_LOG_LEVEL for oneDNN's notice)."""
    import os

    from edgepack.errors import require

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    return require("tensorflow", "tensorflow")


def keep_layout(source, options, problem: str, fix: str) -> None:
    """Routes that keep the source's layout: refuse a ``--layout`` that differs from its 4-D inputs'."""
    if options.convert.layout and any(
        s.layout and s.layout.lower() != options.convert.layout for s in source.inputs if len(s.shape) == 4
    ):
        raise UsageError(problem, fix)


def parse_keep_float(value: object):
    """``--keep-float`` as an int >= 0 or ``"auto"``."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise UsageError(f"--keep-float {value} is not a layer count", "pass --keep-float N (e.g. 3) or --keep-float auto")


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def load_source(source: str, input_specs: list):
    kind = source_kind(source)
    framework, module = SOURCES[kind]
    return _module(module).load(source, kind, input_specs)


def npu_compiler(name: str, target_format: str):
    """The compile module for ``--npu name``, after checking the build can feed it."""
    hit = next(((p, v) for p, v in NPU_COMPILERS.items() if name.lower().startswith(p)), None)
    if hit is None:
        raise UsageError(
            f"unknown --npu {name!r}", f"use one of {', '.join(p + '…' for p in NPU_COMPILERS)} (e.g. ethos-u55-128)"
        )
    prefix, (module, formats) = hit
    if target_format not in formats:
        raise UsageError(
            f"--npu {name} needs --to {'|'.join(formats)}",
            f"build with --to {formats[0]} --quantize int8 --calibration DATA.npz",
        )
    return _module(module)
