"""``edgepack build``: load → convert (route fallback) → validate → bundle. Each stage is a function that takes
what the previous one returned; the conversion routes are declared in converters/ (edgepack.registry)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

from edgepack import __version__, converters, registry  # type: ignore[attr-defined]  # converters/: package-dir
from edgepack.bundle import Content, expand_members, member_digests, sha256_file, write_bundle
from edgepack.capture import framework_output
from edgepack.data import eval_arrays, golden_arrays, load_dataset, map_tensors, npz_bytes, random_dataset, take
from edgepack.errors import EdgepackError, MissingExtraError, UsageError, ValidationFailed, first_line
from edgepack.outputs import check_build_output
from edgepack.placement_view import npu_summary
from edgepack.types import (
    BuildOptions,
    BuildResult,
    CheckOptions,
    ConvertedModel,
    ConvertOptions,
    DataMember,
    DataOptions,
    Manifest,
    ModelMember,
    ModelSource,
    NpuCompile,
    RouteAttempt,
    RouteInfo,
    SourceInfo,
    ValidationInfo,
)
from edgepack.ui import note, safe, step
from edgepack.validate import reference_outputs, validate


def default_output(source: str, options: BuildOptions) -> Path:
    split = converters.split_callable(source)
    stem = split[0].stem if split else Path(source).stem
    npu = f".{options.npu.accelerator}" if options.npu else ""
    c = options.convert
    return Path(f"{stem}.{c.target}.{registry.suffix(c.quantize)}{npu}.edgepack")


@dataclass
class Data:
    """The build's data sets, in the source's names and layouts."""

    calibration: Optional[dict[str, Any]]
    evaluation: Optional[dict[str, Any]]
    validation: dict[str, Any]  # the inputs both models run on at build time
    inputs_from: Literal["calibration", "random"]


@dataclass
class Built:
    """A converted model that passed (or was allowed past) validation, and how it was reached."""

    converted: ConvertedModel
    validation: ValidationInfo
    inputs: dict[str, Any]  # validation inputs, in the converted model's names and layouts
    reference: dict[str, Any]  # the source's outputs on them, likewise
    route_name: str
    route: Optional[RouteInfo] = None


def check_options(options: ConvertOptions) -> None:
    """What can be refused before anything is loaded."""
    registry.runtime(options.target)
    if options.quantize not in registry.target_precisions(options.target):
        raise UsageError(
            f"--quantize {options.quantize} is not available for {options.target}",
            f"use one of {', '.join(registry.target_precisions(options.target))}",
        )
    for opt in registry.build_options():
        value = getattr(options, opt.name)
        if opt.choices and value is not None and value not in opt.choices:
            raise UsageError(f"{opt.flag} {value} is not supported", f"use one of {', '.join(opt.choices)}")
    if options.io_dtype != "float32" and (options.quantize != "int8" or options.target != "tflite"):
        raise UsageError(
            f"--io-dtype {options.io_dtype} applies to --to tflite --quantize int8 only",
            "drop --io-dtype, or build a full-integer TFLite model",
        )
    if options.keep_float is not None or options.explain_quant:
        if options.keep_float is not None:
            converters.parse_keep_float(options.keep_float)
        if options.quantize not in ("int8", "int16x8"):
            raise UsageError(
                f"--keep-float/--explain-quant apply to calibrated integer builds, not --quantize {options.quantize}",
                "add --quantize int8 --calibration DATA.npz",
            )


def _routes_reading_options(options: ConvertOptions, plan: registry.Plan) -> registry.Plan:
    """The routes that read every route option the user set: one that would ignore it (``--keep-float`` on a
    fallback route without mixed precision) is skipped with that reason rather than taken silently. An option no
    candidate reads is refused."""
    candidates, skipped = list(plan.candidates), list(plan.skipped)
    for opt in registry.build_options():
        value = getattr(options, opt.name)
        if value is None or value == opt.default:
            continue
        if not any(opt in r.options for r in candidates):
            readers = [r.name for r in registry.routes() if opt in r.options]
            raise UsageError(
                f"{opt.flag} is not supported for --to {options.target} from this source (routes "
                f"{', '.join(r.name for r in candidates)})",
                f"drop {opt.flag}; it is read by the routes {', '.join(readers)}",
            )
        skipped += [(r.name, f"does not read {opt.flag}") for r in candidates if opt not in r.options]
        candidates = [r for r in candidates if opt in r.options]
    return registry.Plan(candidates, skipped)


def build(source: str, options: BuildOptions) -> BuildResult:
    check_options(options.convert)
    npu = converters.npu_compiler(options.npu.accelerator, options.convert.target) if options.npu else None
    out = Path(options.output) if options.output else default_output(source, options)
    if out.exists() and out.is_dir():
        raise UsageError(f"output {out} is a directory", "pass -o path/to/name.edgepack")
    check_build_output(
        out, source, options.data.calibration, options.data.eval, options.npu.config if options.npu else None
    )
    with tempfile.TemporaryDirectory(prefix="edgepack-build-") as tmp:
        work = Path(tmp)
        # the frameworks' own output goes to a log: kept beside the bundle with --verbose, else dropped
        log = out.parent / f"{out.name}.log" if options.verbose else work / "frameworks.log"
        if options.verbose:
            log.unlink(missing_ok=True)
        try:
            return _build(source, options, npu, out, work, log)
        except EdgepackError as e:
            if options.verbose:
                e.hint = f"{e.hint}; the converters' log is {log}" if e.hint else f"the converters' log is {log}"
            elif type(e) is EdgepackError:  # a converter failed: its log has the details
                e.hint = (
                    f"{e.hint}; --verbose keeps the converters' log"
                    if e.hint
                    else "--verbose keeps the converters' log"
                )
            raise


def _build(source: str, options: BuildOptions, npu: Any, out: Path, work: Path, log: Path) -> BuildResult:
    c = options.convert
    with step(f"load {source}"), framework_output(log):
        src = converters.load_source(str(source), list(options.inputs))
    plan = _routes_reading_options(c, registry.plan(src.framework, src.kind, c.target, c.quantize, c.route))
    data = load_data(src, options.data, c.quantize, plan.candidates)
    built = convert(src, plan, options, data, work, log)
    if c.explain_quant or c.keep_float is not None:
        from edgepack.quant_view import print_sensitivity

        print_sensitivity(built.converted.quantization)
    npu_path, npu_info = None, None
    if npu is not None:  # after validation: the NPU model's custom op cannot run on a CPU interpreter
        assert options.npu is not None  # npu is its compiler
        with step(f"compile for {options.npu.accelerator} (vela)"), framework_output(log):
            npu_path, npu_info = npu.compile_model(built.converted.path, options.npu, work)
        npu_summary(npu_info)
    manifest, members = bundle_contents(src, built, data, options, npu_path, npu_info)
    with step(f"write {out}"):
        size = write_bundle(out, manifest, expand_members(members))
    return BuildResult(path=out, manifest=manifest, bytes=size)


def load_data(src: ModelSource, options: DataOptions, quantize: str, candidates: list[registry.Route]) -> Data:
    # calibration is needed when every route this build may take needs it (CoreML int8 = weights only)
    calibrated = all(quantize in r.calibrated for r in candidates)
    calibration = None
    if options.calibration:
        calibration = load_dataset(options.calibration, src.inputs, "calibration")
        n = len(next(iter(calibration.values())))
        if calibrated and n < 100:
            note(
                f"[yellow]warning:[/yellow] calibration has {n} samples; 100+ representative samples "
                "usually give better int8 ranges"
            )
    elif calibrated:
        raise UsageError(
            f"--quantize {quantize} needs calibration data",
            "pass --calibration DATA.npz (one array per input, ~100+ representative samples)",
        )
    evaluation = load_dataset(options.eval, src.inputs, "eval", need_labels=True) if options.eval else None
    if calibration is not None:
        return Data(calibration, evaluation, take(calibration, options.validation_samples), "calibration")
    return Data(None, evaluation, random_dataset(src.inputs, options.validation_samples, options.seed), "random")


def convert(src: ModelSource, plan: registry.Plan, options: BuildOptions, data: Data, work: Path, log: Path) -> Built:
    """Try the plan's routes in order; the first whose model converts and validates is used. A failed route
    hands over to the next one; a build fails only when every route did, naming each with its reason."""
    n = len(next(iter(data.validation.values())))
    with step(f"reference outputs from {src.framework} on {n} samples"), framework_output(log):
        reference = reference_outputs(src, data.validation)
    c = options.convert
    attempts = [RouteAttempt(route=name, status="skipped", reason=why) for name, why in plan.skipped]
    errors: list[EdgepackError] = []
    overridable: Optional[Built] = None  # the first model that failed validation, for --allow-mismatch
    candidates = plan.candidates
    built: Optional[Built]
    failure: Optional[EdgepackError]
    for i, route in enumerate(candidates):
        missing = route.missing()
        if missing:
            reason = f"needs {', '.join(missing)} ({route.install_hint()})"
            attempts.append(RouteAttempt(route=route.name, status="skipped", reason=reason))
            errors.append(
                MissingExtraError(
                    f"route {route.name} {reason.split(' (')[0]}, which is not installed", route.install_hint()
                )
            )
            continue
        label = f"convert {src.framework} → {route.target} ({c.quantize}) via {route.name}"
        try:
            with step(label + (" with calibration" if data.calibration is not None else "")), framework_output(log):
                workdir = work / route.name
                workdir.mkdir()
                converted = route.convert(src, options, data.calibration, workdir)
            built, failure = _validate(src, converted, c.quantize, options.check, data, reference, route, log)
        except EdgepackError as e:
            failure, built = e, None
        except Exception as e:  # a converter crashing in its own code is a failed route, not a traceback
            failure, built = (
                EdgepackError(
                    f"{type(e).__name__}: {first_line(e)[:300]}", "report this model to edgepack, or try another --to"
                ),
                None,
            )
        if failure is None:
            assert built is not None  # _validate returned it
            attempts.append(RouteAttempt(route=route.name, status="used"))
            return replace(built, route=RouteInfo(name=route.name, pinned=bool(c.route), attempts=attempts))
        attempts.append(RouteAttempt(route=route.name, status="failed", reason=failure.message))
        errors.append(failure)
        if built is not None and overridable is None:
            overridable = built
        if i + 1 < len(candidates):
            note(
                f"[yellow]route {route.name} failed:[/yellow] {safe(failure.message)}; trying {candidates[i + 1].name}"
            )
    if overridable is not None and options.check.allow_mismatch:
        note("[yellow]warning:[/yellow] validation failed and was overridden (--allow-mismatch)")
        name = overridable.route_name
        attempts = [
            a.model_copy(update={"status": "used"}) if a.route == name and a.status == "failed" else a for a in attempts
        ]
        return replace(
            overridable,
            validation=overridable.validation.model_copy(update={"status": "failed-overridden"}),
            route=RouteInfo(name=name, pinned=bool(c.route), attempts=attempts),
        )
    raise _all_failed(src, c, attempts, errors)


def _validate(
    src: ModelSource,
    converted: ConvertedModel,
    quantize: str,
    options: CheckOptions,
    data: Data,
    reference: dict[str, Any],
    route: registry.Route,
    log: Path,
) -> tuple[Built, Optional[ValidationFailed]]:
    # from here on, tensors carry the converted model's names and layouts
    ref = map_tensors(reference, src.outputs, converted.outputs)
    inputs = map_tensors(data.validation, src.inputs, converted.inputs)
    if converted.predict is None:
        note(f"[yellow]validation pending-device:[/yellow] {converted.pending_reason}")
        threshold = registry.min_cosine(quantize) if options.min_cosine is None else options.min_cosine
        validation = ValidationInfo(
            status="pending-device",
            samples=0,
            inputs_from="none",
            reference=f"{src.framework} {src.framework_version or ''}".strip(),
            thresholds={"min_cosine": threshold},
            outputs={},
            pending_reason=converted.pending_reason,
            checks=converted.checks,
        )
        return Built(converted, validation, inputs, ref, route.name), None
    n = len(next(iter(inputs.values())))
    with step(f"validate against {src.framework} on {n} samples"), framework_output(log):
        validation, failure = validate(src, converted, inputs, ref, quantize, data.inputs_from, options.min_cosine)
    return Built(converted, validation, inputs, ref, route.name), failure


def _all_failed(
    src: ModelSource, options: ConvertOptions, attempts: list[RouteAttempt], errors: list[EdgepackError]
) -> EdgepackError:
    """One error for a build no route could make: a lone failure as it is; several, each route with its reason.
    The exit code is the most telling one: validation (4) over a converter error (1) over a missing extra (3)
    over a usage error (2)."""
    if len(errors) == 1:
        return errors[0]
    tried = "; ".join(f"{a.route}: {a.reason}" for a in attempts if a.status != "skipped" or a.reason)
    for kind in (ValidationFailed, EdgepackError, MissingExtraError, UsageError):
        picked = [e for e in errors if type(e) is kind]
        if picked:
            first = picked[0]
            return type(first)(
                f"no route could build {src.framework} -> {options.target} ({options.quantize}); tried {tried}",
                first.hint,
            )
    return errors[0]


def bundle_contents(
    src: ModelSource,
    built: Built,
    data: Data,
    options: BuildOptions,
    npu_path: Optional[Path],
    npu_info: Optional[NpuCompile],
) -> tuple[Manifest, dict[str, Content]]:
    """The manifest and the members (name -> path or bytes) of the bundle."""
    converted = built.converted
    golden_n = min(options.golden_samples, len(next(iter(built.inputs.values()))))
    golden = golden_arrays(take(built.inputs, golden_n), take(built.reference, golden_n))
    # a directory member (an .mlpackage) becomes one member per file
    members: dict[str, Content] = {converted.member: converted.path, "golden.npz": npz_bytes(golden)}
    if npu_info is not None:
        assert npu_path is not None  # compiled together
        members[npu_info.model.member] = npu_path
    if data.evaluation is not None:
        members["eval.npz"] = npz_bytes(eval_arrays(map_tensors(data.evaluation, src.inputs, converted.inputs)))
    quantization = converted.quantization
    calibration_file = options.data.calibration
    if data.calibration is not None and calibration_file:
        quantization = quantization.model_copy(update={"calibration_sha256": sha256_file(calibration_file)})
    runtime = registry.runtime(options.convert.target)
    manifest = Manifest(
        format=runtime.format,
        runtime=runtime.name,
        model=ModelMember(member=converted.member, bytes=_size(converted.path)),
        members=member_digests(expand_members(members)),
        inputs=converted.inputs,
        outputs=converted.outputs,
        quantization=quantization,
        source=SourceInfo(
            framework=src.framework,
            framework_version=src.framework_version,
            kind=src.kind,
            file=src.path.name,
            sha256=src.sha256,
        ),
        tools={"edgepack": __version__, **converted.tools},
        build_options=options.recorded(),
        validation=built.validation,
        golden=DataMember(member="golden.npz", samples=golden_n),
        eval=DataMember(member="eval.npz", samples=len(data.evaluation["labels"])) if data.evaluation else None,
        npu=npu_info,
        route=built.route,
    )
    return manifest, members


def _size(path: Path) -> int:
    """A model file's size, or the total of a model directory's files (an .mlpackage)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
