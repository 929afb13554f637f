"""``edgepack build``: load → convert → validate → bundle. Each stage is one module; this wires them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgepack import __version__, converters
from edgepack.bundle import expand_members, member_digests, sha256_file, write_bundle
from edgepack.data import (eval_arrays, golden_arrays, load_dataset, map_tensors, npz_bytes, random_dataset,
                           take)
from edgepack.errors import UsageError
from edgepack.placement_view import npu_summary
from edgepack.types import (BuildOptions, BuildResult, DataMember, Manifest, ModelMember, SourceInfo,
                            ValidationInfo)
from edgepack.ui import note, step
from edgepack.validate import MIN_COSINE, reference_outputs, validate

QUANT_SUFFIX = {"none": "fp32", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8", "int16x8": "int16x8",
                "palettize4": "pal4", "palettize6": "pal6"}


def default_output(source: str, options: BuildOptions) -> Path:
    split = converters.split_callable(source)
    stem = split[0].stem if split else Path(source).stem
    npu = f".{options.npu}" if options.npu else ""
    return Path(f"{stem}.{options.target}.{QUANT_SUFFIX.get(options.quantize, options.quantize)}{npu}.edgepack")


def build(source: str, options: BuildOptions) -> BuildResult:
    target = converters.target(options.target)
    if options.quantize not in target.precisions:
        raise UsageError(f"--quantize {options.quantize} is not available for {target.format}",
                         f"use one of {', '.join(target.precisions)}")
    if options.io_dtype not in ("float32", "int8", "uint8"):
        raise UsageError(f"--io-dtype {options.io_dtype} is not supported", "use float32, int8 or uint8")
    if options.io_dtype != "float32" and (options.quantize != "int8" or target.format != "tflite"):
        raise UsageError(f"--io-dtype {options.io_dtype} applies to --to tflite --quantize int8 only",
                         "drop --io-dtype, or build a full-integer TFLite model")
    if options.layout not in (None, "nhwc", "nchw"):
        raise UsageError(f"--layout {options.layout} is not supported", "use nhwc or nchw")
    if not options.npu and (options.npu_config or options.npu_system_config or options.npu_memory_mode
                            or options.npu_strict):
        raise UsageError("--npu-config/--npu-system-config/--npu-memory-mode/--npu-strict need --npu",
                         "add --npu ethos-u55-128 (or your board's accelerator config)")
    npu = converters.npu_compiler(options.npu, target.format) if options.npu else None
    out = Path(options.output) if options.output else default_output(source, options)
    if out.exists() and out.is_dir():
        raise UsageError(f"output {out} is a directory", "pass -o path/to/name.edgepack")

    with step(f"load {source}"):
        src = converters.load_source(str(source), options.inputs)
    calibration = None
    if options.calibration:
        calibration = load_dataset(options.calibration, src.inputs, "calibration")
        n = len(next(iter(calibration.values())))
        if options.quantize in target.calibrated and n < 100:
            note(f"[yellow]warning:[/yellow] calibration has {n} samples; 100+ representative samples "
                 "usually give better int8 ranges")
    elif options.quantize in target.calibrated:
        raise UsageError(f"--quantize {options.quantize} needs calibration data",
                         "pass --calibration DATA.npz (one array per input, ~100+ representative samples)")
    evaluation = load_dataset(options.eval, src.inputs, "eval", need_labels=True) if options.eval else None

    route = converters.route(src.framework, target.format)
    with tempfile.TemporaryDirectory(prefix="edgepack-build-") as tmp:
        work = Path(tmp)
        label = f"convert {src.framework} → {target.format} ({options.quantize})"
        with step(label + (" with calibration" if calibration is not None else "")):
            converted = route.convert(src, options, calibration, work)

        if calibration is not None:
            val_data, inputs_from = take(calibration, options.validation_samples), "calibration"
        else:
            val_data, inputs_from = random_dataset(src.inputs, options.validation_samples, options.seed), "random"
        what = "validate against" if converted.predict else "reference outputs (for the device) from"
        with step(f"{what} {src.framework} on {len(next(iter(val_data.values())))} samples"):
            # from here on, tensors carry the converted model's names and layouts
            reference = map_tensors(reference_outputs(src, val_data), src.outputs, converted.outputs)
            val_data = map_tensors(val_data, src.inputs, converted.inputs)
            if converted.predict is None:
                validation = ValidationInfo(
                    status="pending-device", samples=0, inputs_from="none",
                    reference=f"{src.framework} {src.framework_version or ''}".strip(),
                    thresholds={"min_cosine": MIN_COSINE[options.quantize] if options.min_cosine is None
                                else options.min_cosine},
                    outputs={}, pending_reason=converted.pending_reason, checks=converted.checks)
            else:
                validation = validate(src, converted, val_data, reference, options.quantize, inputs_from,
                                      options.min_cosine, options.allow_mismatch)
                validation.checks = converted.checks
        if validation.status == "pending-device":
            note(f"[yellow]validation pending-device:[/yellow] {converted.pending_reason}")
        elif validation.status != "passed":
            note("[yellow]warning:[/yellow] validation failed and was overridden (--allow-mismatch)")

        npu_info = None
        if npu is not None:  # after validation: the NPU model's custom op cannot run on a CPU interpreter
            with step(f"compile for {options.npu} (vela)"):
                npu_path, npu_info = npu.compile_model(converted.path, options, work)
            npu_summary(npu_info)

        golden_n = min(options.golden_samples, len(next(iter(val_data.values()))))
        golden = golden_arrays(take(val_data, golden_n), take(reference, golden_n))
        members = {converted.member: converted.path, "golden.npz": npz_bytes(golden)}  # a dir: one per file
        if npu_info is not None:
            members[npu_info.model.member] = npu_path
        if evaluation is not None:
            members["eval.npz"] = npz_bytes(eval_arrays(map_tensors(evaluation, src.inputs, converted.inputs)))
        if calibration is not None and options.calibration:
            converted.quantization.calibration_sha256 = sha256_file(options.calibration)

        manifest = Manifest(
            format=target.format,
            runtime=target.runtime,
            model=ModelMember(member=converted.member, bytes=_size(converted.path)),
            members=member_digests(expand_members(members)),
            inputs=converted.inputs,
            outputs=converted.outputs,
            quantization=converted.quantization,
            source=SourceInfo(framework=src.framework, framework_version=src.framework_version, kind=src.kind,
                              file=src.path.name, sha256=src.sha256),
            tools={"edgepack": __version__, **converted.tools},
            build_options=options.recorded(),
            validation=validation,
            golden=DataMember(member="golden.npz", samples=golden_n),
            eval=DataMember(member="eval.npz", samples=len(evaluation["labels"])) if evaluation else None,
            npu=npu_info,
        )
        with step(f"write {out}"):
            size = write_bundle(out, manifest, expand_members(members))
    return BuildResult(path=out, manifest=manifest, bytes=size)


def _size(path: Path) -> int:
    """A model file's size, or the total of a model directory's files (an .mlpackage)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
