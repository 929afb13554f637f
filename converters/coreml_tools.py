"""CoreML helpers every route that ends in CoreML shares.

- the precision settings: compute precision (``none`` = fp32, ``fp16``), weight compression with
  ``coremltools.optimize.coreml`` (``int8`` linear per-channel, ``palettize4``/``palettize6`` k-means),
- ``finish``: rename the model's features to the source's names (made valid CoreML names: ``feature_names``),
  make the saved ``.mlpackage`` deterministic, check it and return the ConvertedModel,
- the checks that need no macOS (``inspect_package`` + ``check``): the spec loads, it is an ML Program, input
  and output names/shapes/dtypes match the source, every MIL op is a core op available at the deployment target,
  weights are in the requested precision (counts of fp16/fp32/int8-quantized/palettized weight tensors), size.

CoreML *prediction* exists only on macOS (coremltools' ``MLModel.predict`` says "only supported on macOS");
elsewhere the converted model is not run and the bundle's validation is ``pending-device``.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError, UsageError, require
from edgepack.types import BuildOptions, ConvertedModel, ModelSource, QuantizationInfo, TensorSpec

from . import coreml_compat

MEMBER = "model.mlpackage"
DEFAULT_TARGET = "iOS18"  # = macOS15; what `--coreml-target` defaults to
DEPLOYMENT_TARGETS = (
    "iOS15",
    "iOS16",
    "iOS17",
    "iOS18",
    "iOS26",
    "macOS12",
    "macOS13",
    "macOS14",
    "macOS15",
    "macOS26",
)
# Weight tensors with at most this many elements stay float (biases, norms); larger ones are compressed.
WEIGHT_THRESHOLD = 64
PALETTE_BITS = {"palettize4": 4, "palettize6": 6}
QUANTIZE_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
PALETTE_OPS = ("constexpr_lut_to_dense",)
PENDING_REASON = (
    "CoreML prediction runs only on macOS; the model was checked statically here (spec, I/O, "
    "ops, weight precision) and is validated against the golden data by the runner on a Mac"
)

# CoreML has no 64-bit integer features: coremltools makes an int64 input (token ids) int32, and so does the runner
COREML_DTYPES = {"int64": "int32"}
_DTYPES = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "DOUBLE": "float64",
    "INT32": "int32",
    "INT8": "int8",
    "UINT8": "uint8",
}


def ct():
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # coremltools warns about every untested framework version and missing macOS-only proxies on import, and
    # imports torch + torchao when installed, which warn about their optional GPU kernels.
    for name in ("coremltools", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="coremltools")
    module = require("coremltools", "coreml")
    coreml_compat.apply()  # coremltools 9.0's torch frontend with numpy >= 2.4
    return module


def can_predict() -> bool:
    return sys.platform == "darwin"


def deployment_target(name: str | None):
    name = name or DEFAULT_TARGET
    lookup = {n.lower(): n for n in DEPLOYMENT_TARGETS}
    if name.lower() not in lookup:
        raise UsageError(f"--coreml-target {name} is not supported", f"use one of {', '.join(DEPLOYMENT_TARGETS)}")
    canonical = lookup[name.lower()]
    target = getattr(ct().target, canonical, None)
    if target is None:
        raise UsageError(
            f"this coremltools has no deployment target {canonical}",
            f"upgrade coremltools, or pass an older --coreml-target (default {DEFAULT_TARGET})",
        )
    return canonical, target


def check_options(options: BuildOptions, calibration: dict | None) -> None:
    """What every CoreML route refuses before converting: an unknown deployment target, and activation int8
    off macOS (it calibrates by *running* the model, which coremltools can do only on macOS)."""
    deployment_target(options.convert.coreml_target)
    if options.convert.quantize == "int8" and calibration is not None and not can_predict():
        raise UsageError(
            "CoreML activation int8 (--calibration with --quantize int8) runs the model to calibrate, "
            "which coremltools can do only on macOS",
            "drop --calibration for int8 weights with fp16 activations, or build on a Mac",
        )


def compute_precision(mode: str):
    """``none`` computes in fp32; everything else in fp16 (CoreML's default)."""
    c = ct()
    return c.precision.FLOAT32 if mode == "none" else c.precision.FLOAT16


def feature_names(specs: list[TensorSpec]) -> list[str]:
    """CoreML feature names for tensors: ML Program names must match [a-zA-Z_][a-zA-Z0-9_]*, so others (ONNX's
    ``input.1``) get '_' for each other character, and a leading '_' before a digit; kept unique."""
    out: list[str] = []
    for s in specs:
        name = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in s.name) or "_"
        name = "_" + name if name[0].isdigit() else name
        base, i = name, 1
        while name in out:
            name, i = f"{base}_{i}", i + 1
        out.append(name)
    return out


def convert_kwargs(options: BuildOptions, outputs: list[TensorSpec], names: list[str]) -> dict:
    """ct.convert settings shared by the routes: ML Program, deployment target, compute precision, and outputs
    ``names`` (the frontend's names for them) kept float32 like the source even when computing in fp16."""
    c = ct()
    _, target = deployment_target(options.convert.coreml_target)
    return {
        "convert_to": "mlprogram",
        "minimum_deployment_target": target,
        "compute_precision": compute_precision(options.convert.quantize),
        "outputs": [
            c.TensorType(name=n, dtype=np.float32) if np.dtype(s.dtype) == np.float32 else c.TensorType(name=n)
            for n, s in zip(names, outputs)
        ],
    }


def convert_tensorflow(make_function, source: ModelSource, options: BuildOptions, what: str):
    """ct.convert through the TensorFlow 2 frontend. ``make_function() -> (concrete function, owner)`` takes the
    source's inputs by position and returns its outputs in order; ``owner`` holds its variables while converting."""
    import contextlib
    import io

    c = ct()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cf, owner = make_function()
            out_names = [t.name.split(":")[0] for t in cf.outputs]
            inputs = [
                c.TensorType(name=n, shape=tuple(s.static_shape()), dtype=np.dtype(s.dtype).type)
                for n, s in zip(feature_names(source.inputs), source.inputs)
            ]
            mlmodel = c.convert(
                [cf], source="tensorflow", inputs=inputs, **convert_kwargs(options, source.outputs, out_names)
            )
            del owner
    except UsageError:
        raise
    except Exception as e:
        lines = [
            ln.strip()
            for ln in str(e).splitlines()
            if ln.strip() and not ln.strip().startswith(("in user code", "File "))
        ]
        first = lines[-1] if lines else type(e).__name__
        raise EdgepackError(
            f"coremltools could not convert the {what} model: {first[:300]}",
            "the model uses an op coremltools' TensorFlow frontend cannot lower; try --to tflite",
        )
    return mlmodel


def compress(mlmodel, mode: str, calibration: dict | None, inputs: list[TensorSpec]):
    """Weight compression (coremltools.optimize.coreml) for int8 / palettize4 / palettize6; returns
    (model, method)."""
    if mode in ("none", "fp16"):
        return mlmodel, f"coremltools compute precision {'fp32' if mode == 'none' else 'fp16'}"
    cto = require("coremltools.optimize.coreml", "coreml")
    if mode == "int8":
        cfg = cto.OptimizationConfig(
            global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD
            )
        )
        model = cto.linear_quantize_weights(mlmodel, cfg)
        method = "coremltools linear_quantize_weights (int8 symmetric, per-channel weights; fp16 compute)"
        if calibration is not None:
            model = _quantize_activations(model, calibration, inputs)
            method = "coremltools int8 weights + int8 activations (linear_quantize_activations, calibrated)"
        return model, method
    if mode in PALETTE_BITS:
        nbits = PALETTE_BITS[mode]
        require("sklearn", "coreml")  # coremltools' k-means runs scikit-learn
        cfg = cto.OptimizationConfig(
            global_config=cto.OpPalettizerConfig(
                mode="kmeans", nbits=nbits, granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD
            )
        )
        return (
            cto.palettize_weights(mlmodel, cfg),
            f"coremltools palettize_weights (k-means, {nbits}-bit lookup table per tensor; fp16 compute)",
        )
    raise UsageError(f"--quantize {mode} is not available for coreml", "use none, fp16, int8, palettize4 or palettize6")


def _quantize_activations(mlmodel, calibration: dict, inputs: list[TensorSpec]):
    """Activation int8 calibrates by *running* the model (macOS only: ``check_options`` refused it elsewhere)."""
    cto = require("coremltools.optimize.coreml", "coreml")
    from edgepack.device_runners.runner_common import iter_batches

    samples = list(iter_batches(calibration, [s.model_dump() for s in inputs]))
    cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
    return cto.linear_quantize_activations(mlmodel, cfg, samples)


# --------------------------------------------------------------------------- package


def _normalize_package(path: Path) -> None:
    """Make the saved .mlpackage byte-identical for identical inputs: its Manifest.json keys items by random
    UUIDs; replace them with UUIDs derived from each item's path (they are opaque identifiers)."""
    manifest_path = path / "Manifest.json"
    data = json.loads(manifest_path.read_text())
    remap = {
        old: str(uuid.uuid5(uuid.NAMESPACE_URL, "edgepack:" + item["path"]))
        for old, item in data.get("itemInfoEntries", {}).items()
    }
    data["itemInfoEntries"] = {remap[k]: v for k, v in data["itemInfoEntries"].items()}
    if data.get("rootModelIdentifier") in remap:
        data["rootModelIdentifier"] = remap[data["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")


def save(mlmodel, source: ModelSource, path: Path) -> None:
    """Rename features to the source's names (by position, ``feature_names``), drop the conversion date, save,
    normalise."""
    c = ct()
    spec = mlmodel.get_spec()
    for feats, wanted in ((spec.description.input, source.inputs), (spec.description.output, source.outputs)):
        if len(feats) != len(wanted):
            raise EdgepackError(
                f"the CoreML model has {len(feats)} features where the source has {len(wanted)}",
                "report this model to the edgepack issue tracker",
            )
        for feat, want in zip(list(feats), feature_names(wanted)):
            if feat.name != want:
                c.utils.rename_feature(spec, feat.name, want)
    meta = spec.description.metadata.userDefined
    if "com.github.apple.coremltools.conversion_date" in meta:  # the only part that changes from day to day
        del meta["com.github.apple.coremltools.conversion_date"]
    model = c.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    model.save(str(path))
    _normalize_package(path)


def package_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _tensor(feature) -> dict:
    arr = feature.type.multiArrayType
    return {
        "name": feature.name,
        "shape": [int(d) for d in arr.shape],
        "dtype": _DTYPES.get(type(arr).ArrayDataType.Name(arr.dataType), str(arr.dataType)),
    }


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def inspect_package(path: Path) -> dict:
    """Everything about a saved .mlpackage that can be read without macOS."""
    c = ct()
    from coremltools.converters.mil.frontend.milproto import load as milproto
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    try:
        model = c.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
    except Exception as e:
        raise EdgepackError(
            f"{Path(path).name} does not load as a CoreML model spec: {str(e).splitlines()[0][:200]}",
            "re-convert the model",
        )
    kind = spec.WhichOneof("Type")
    facts = {
        "model_type": kind,
        "specification_version": int(spec.specificationVersion),
        "inputs": [_tensor(f) for f in spec.description.input],
        "outputs": [_tensor(f) for f in spec.description.output],
        "bytes": package_bytes(path),
    }
    if kind != "mlProgram":
        return facts
    prog = milproto.load(spec, spec.specificationVersion, file_weights_dir=model.weights_dir)
    ops: Counter = Counter()
    weights: Counter = Counter()
    unsupported = []
    lut_sizes = set()
    for fn in prog.functions.values():
        for op in fn.operations:
            ops[op.op_type] += 1
            variants = SSAOpRegistry.core_ops.get(op.op_type)
            if not variants:
                unsupported.append(op.op_type)
            elif min(v.value for v in variants) > spec.specificationVersion:
                unsupported.append(f"{op.op_type} (needs a newer deployment target)")
            if op.op_type in QUANTIZE_OPS:
                data = op.inputs.get("quantized_data", op.inputs.get("data"))
                weights[f"quantized_{_dtype_name(data) if data is not None else '?'}"] += 1
            elif op.op_type in PALETTE_OPS:
                weights["palettized"] += 1
                lut = op.inputs.get("lut")
                if lut is not None and lut.shape:
                    lut_sizes.add(int(lut.shape[-2] if len(lut.shape) > 2 else lut.shape[-1]))
            elif op.op_type == "const":
                val = op.outputs[0]
                dt = _dtype_name(val)
                children = list(getattr(val, "child_ops", []) or [])
                if children and all(ch.op_type.startswith("constexpr_") for ch in children):
                    continue  # scales / lookup tables of a compressed weight, counted with it
                if dt in ("fp16", "fp32") and val.shape and int(np.prod(val.shape)) > 1:
                    weights[dt] += 1
    facts.update(
        {
            "ops": dict(sorted(ops.items())),
            "unsupported_ops": sorted(set(unsupported)),
            "weights": dict(sorted(weights.items())),
            "palette_sizes": sorted(lut_sizes),
            "compute_precision": "fp16"
            if ops.get("cast") and weights.get("fp16", 0) >= weights.get("fp32", 0) and not weights.get("fp32")
            else "fp32",
        }
    )
    return facts


def check(facts: dict, inputs: list[TensorSpec], outputs: list[TensorSpec], mode: str) -> list[str]:
    """Problems with a package against the expected tensors and precision (empty = all checks passed)."""
    problems = []
    if facts["model_type"] != "mlProgram":
        problems.append(f"model type is {facts['model_type']}, not an ML Program")
    for kind, got, want in (("input", facts["inputs"], inputs), ("output", facts["outputs"], outputs)):
        if len(got) != len(want):
            problems.append(f"{len(got)} {kind}s, the source has {len(want)}")
        for g, w in zip(got, want):
            if g["name"] != w.name:
                problems.append(f"{kind} {g['name']!r} should be named {w.name!r}")
            if g["shape"] != w.static_shape():
                problems.append(f"{kind} {w.name!r} has shape {g['shape']}, the source {list(w.shape)}")
            if g["dtype"] != w.dtype:
                problems.append(f"{kind} {w.name!r} has dtype {g['dtype']}, the source {w.dtype}")
    if facts.get("unsupported_ops"):
        problems.append(f"ops CoreML does not support at this deployment target: {facts['unsupported_ops']}")
    weights = facts.get("weights", {})
    quantized = sum(v for k, v in weights.items() if k.startswith("quantized_"))
    palettized = weights.get("palettized", 0)
    precision = facts.get("compute_precision")
    if mode == "none" and (precision != "fp32" or weights.get("fp16")):
        problems.append(
            f"fp32 was requested, the program computes in {precision} with {weights.get('fp16', 0)} fp16 weights"
        )
    if mode in ("fp16", "int8", "palettize4", "palettize6") and precision != "fp16":
        problems.append(f"fp16 compute was expected, the program computes in {precision}")
    if mode == "int8":
        if not weights.get("quantized_int8"):
            problems.append(f"int8 was requested, no weight is int8-quantized (weights: {weights})")
        if palettized:
            problems.append(f"int8 was requested, {palettized} weights are palettized")
    if mode in PALETTE_BITS:
        nbits = PALETTE_BITS[mode]
        if not palettized:
            problems.append(f"{mode} was requested, no weight is palettized (weights: {weights})")
        if any(size > 2**nbits for size in facts.get("palette_sizes", [])):
            problems.append(f"{mode} was requested, lookup tables have {facts['palette_sizes']} entries")
        if quantized:
            problems.append(f"{mode} was requested, {quantized} weights are linearly quantized")
    return problems


def predictor(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]):
    """``predict(feeds)`` with CoreML on this Mac (CPU only, for build-time validation); None elsewhere."""
    if not can_predict():
        return None
    c = ct()
    model = c.models.MLModel(str(path), compute_units=c.ComputeUnit.CPU_ONLY)

    def predict(feeds: dict) -> dict:
        res = model.predict({s.name: np.asarray(feeds[s.name], np.dtype(s.dtype)) for s in inputs})
        return {s.name: np.asarray(res[s.name]) for s in outputs}

    return predict


def finish(
    mlmodel, source: ModelSource, options: BuildOptions, calibration: dict | None, workdir: Path, tools: dict
) -> ConvertedModel:
    """Compress, save as model.mlpackage (features named like the source), check it; the ConvertedModel."""
    canonical, _ = deployment_target(options.convert.coreml_target)
    import contextlib
    import io

    out = workdir / MEMBER
    with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars
        mlmodel, method = compress(mlmodel, options.convert.quantize, calibration, source.inputs)
        save(mlmodel, source, out)

    def as_featured(specs: list[TensorSpec]) -> list[TensorSpec]:  # CoreML's names, static shapes
        return [
            TensorSpec(name=n, shape=s.static_shape(), dtype=COREML_DTYPES.get(s.dtype, s.dtype), layout=s.layout)
            for n, s in zip(feature_names(specs), specs)
        ]

    inputs, outputs = as_featured(source.inputs), as_featured(source.outputs)
    facts = inspect_package(out)
    problems = check(facts, inputs, outputs, options.convert.quantize)
    if problems:
        raise EdgepackError(
            f"the CoreML package failed its checks: {'; '.join(problems)}",
            "report the model to the edgepack issue tracker; try another --quantize",
        )
    facts["deployment_target"] = canonical
    from importlib import metadata

    predict = predictor(out, inputs, outputs)
    n = (
        len(next(iter(calibration.values())))
        if calibration is not None and options.convert.quantize == "int8"
        else None
    )
    return ConvertedModel(
        path=out,
        member=MEMBER,
        inputs=inputs,
        outputs=outputs,
        tools={"coremltools": metadata.version("coremltools"), **tools},
        predict=predict,
        quantization=QuantizationInfo(
            mode=options.convert.quantize, method=method, calibration_samples=n if "activations" in method else None
        ),
        pending_reason=None if predict else PENDING_REASON,
        checks=facts,
    )
