"""Declared routes and runtimes: what edgepack can build and what runs it.

A **route** (one module in ``converters/``) turns a source framework into a target format; it declares itself
once, next to its ``convert``, as ``ROUTE = Route(...)``. A **runtime** (one module in ``edgepack/runtimes/``)
runs a target format on a device; it declares itself as ``RUNTIME = Runtime(...)``. The CLI (build options,
bench flags), ``edgepack routes``, ``doctor``, ``bench`` and the conformance test are generated from these
declarations. Reading them imports no framework: a route imports its framework inside ``convert``.

Adding a route or a runtime = one module + its name in ``converters.ROUTE_MODULES`` or
``edgepack.runtimes.RUNTIME_MODULES`` (see CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgepack.errors import UsageError

if TYPE_CHECKING:
    from edgepack.types import ConvertedModel, Manifest

# Precisions, once: name -> (bundle file-name suffix, default min cosine vs the source).
# README "Validation thresholds" documents the cosines; types.Precision names the same keys.
PRECISIONS: dict[str, tuple[str, float]] = {
    "none": ("fp32", 0.9999),
    "fp16": ("fp16", 0.999),
    "dynamic": ("dynamic", 0.99),
    "int8": ("int8", 0.98),
    "int16x8": ("int16x8", 0.995),
    # int8 weights dequantized at load, float compute (TFLite from PyTorch: ai-edge-quantizer weight-only)
    "int8-weights": ("int8w", 0.999),
    # CoreML weight palettization (k-means lookup tables); checked on macOS only
    "palettize6": ("pal6", 0.99),
    "palettize4": ("pal4", 0.95),
}


def min_cosine(precision: str) -> float:
    return PRECISIONS[precision][1]


def suffix(precision: str) -> str:
    return PRECISIONS.get(precision, (precision,))[0]


@dataclass(frozen=True)
class Option:
    """A build option a route reads (a ``ConvertOptions`` field of the same name), shown as ``--name-with-dashes``."""

    name: str
    help: str
    choices: tuple[str, ...] = ()
    type: type = str
    default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Route:
    """One conversion route: ``convert(source, options, calibration, workdir) -> ConvertedModel``.

    ``sources``: source frameworks it takes (``ModelSource.framework``); ``kinds``: if set, only these source
    kinds (e.g. ``torchscript``). For one (framework, target), routes are tried in registry order: a route that
    fails to convert or to validate hands over to the next (``--route NAME`` pins one).
    ``requires``: top-level modules it imports (checked with ``find_spec``, without importing), ``extra``: the
    pip extra that installs them (``install``: a different command, e.g. onnx2tf's ``--no-deps`` line).
    ``calibrated``: the precisions that need calibration data on this route.
    """

    name: str
    sources: tuple[str, ...]
    target: str
    precisions: tuple[str, ...]
    convert: Callable[..., ConvertedModel]
    summary: str
    extra: str
    requires: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    install: str = ""
    calibrated: tuple[str, ...] = ("int8", "int16x8")  # precisions that need --calibration on this route
    precision_hint: str = ""  # the fix to show when a precision it lacks is asked for

    def takes(self, framework: str, kind: str) -> bool:
        return framework in self.sources and (not self.kinds or kind in self.kinds)

    def missing(self) -> list[str]:
        """Modules this route needs that are not installed (found without importing them)."""
        out = []
        for m in self.requires:
            try:
                found = importlib.util.find_spec(m) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(m)
        return out

    def install_hint(self) -> str:
        return self.install or f"pip install 'edgepack[{self.extra}]'"


@dataclass(frozen=True)
class Flag:
    """An accelerator/runtime flag of ``edgepack bench``, passed to the runtime's device runner as ``--name``.

    ``kind``: ``bool`` (a switch), ``str`` (one value) or ``list`` (repeatable)."""

    name: str
    help: str
    kind: type = bool
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def argv(self, value: Any) -> list[str]:
        if self.kind is bool:
            return [self.flag] if value else []
        if self.kind is list:
            return [a for v in value or () for a in (self.flag, str(v))]
        return [self.flag, str(value)] if value not in (None, "") else []


@dataclass(frozen=True)
class Runtime:
    """What runs one target format on a device.

    ``runner``: its module in ``device_runners/``; ``device_packages``: what ``bench --install-runtime``
    pip-installs there (``pip_steps(machine)``, when set, says how: several ``pip install`` argument lists, e.g.
    an index or ``--no-deps``); ``probe_packages``: distributions ``doctor`` looks up on the device; ``advice(facts,
    pip)``: per-device readiness (``{"ready": bool, "runtime"|"install"|"note": str}``); ``flags``: the bench
    flags it takes; ``check(manifest, values)``: refuses flag values that do not fit the bundle."""

    format: str
    name: str
    runner: str
    device_packages: tuple[str, ...]
    probe_packages: tuple[str, ...]
    advice: Callable[[dict[str, Any], str], Optional[dict[str, Any]]]
    flags: tuple[Flag, ...] = ()
    check: Optional[Callable[[Manifest, dict[str, Any]], None]] = None
    notes: str = ""
    pip_steps: Optional[Callable[[str], tuple[tuple[str, ...], ...]]] = None

    def install_steps(self, machine: str) -> tuple[tuple[str, ...], ...]:
        """The ``pip install`` argument lists that install this runtime on a device whose ``uname -m`` is
        ``machine``, in order (default: one, ``device_packages``)."""
        return self.pip_steps(machine) if self.pip_steps is not None else (self.device_packages,)

    def runner_args(self, manifest: Manifest, values: dict[str, Any]) -> list[str]:
        """Bench flag values (flag name -> value) as runner arguments; a flag of another runtime is an error."""
        mine = {f.name: f for f in self.flags}
        wrong = [n for n, v in values.items() if v and n not in mine]
        if wrong:
            owners = {f.name: rt.format for rt in runtimes() for f in rt.flags}
            raise UsageError(
                f"{', '.join('--' + n.replace('_', '-') for n in wrong)} do(es) not apply to a {self.format} bundle",
                "; ".join(f"--{n.replace('_', '-')} is for {owners.get(n, '?')} bundles" for n in wrong),
            )
        if self.check is not None:
            self.check(manifest, values)
        return [a for n, f in mine.items() for a in f.argv(values.get(n))]


# --------------------------------------------------------------------------- the registry


@lru_cache(maxsize=None)
def routes() -> tuple[Route, ...]:
    from edgepack import converters  # type: ignore[attr-defined]  # converters/ (package-dir): unseen by mypy

    return tuple(importlib.import_module(f"{converters.__name__}.{m}").ROUTE for m in converters.ROUTE_MODULES)


@lru_cache(maxsize=None)
def runtimes() -> tuple[Runtime, ...]:
    from edgepack import runtimes as package

    return tuple(importlib.import_module(f"{package.__name__}.{m}").RUNTIME for m in package.RUNTIME_MODULES)


def formats() -> tuple[str, ...]:
    return tuple(r.format for r in runtimes())


def runtime(fmt: str) -> Runtime:
    for r in runtimes():
        if r.format == fmt:
            return r
    raise UsageError(f"unknown target format {fmt!r}", f"use --to with one of {', '.join(formats())}")


def route(name: str) -> Route:
    for r in routes():
        if r.name == name:
            return r
    raise UsageError(f"unknown route {name!r}", f"edgepack routes lists them: {', '.join(r.name for r in routes())}")


def target_precisions(fmt: str) -> tuple[str, ...]:
    """Every precision some route to ``fmt`` offers, in PRECISIONS order."""
    offered = {p for r in routes() if r.target == fmt for p in r.precisions}
    return tuple(p for p in PRECISIONS if p in offered)


def build_options() -> tuple[Option, ...]:
    """Every route option, once (the build command's route-specific flags)."""
    seen: dict[str, Option] = {}
    for r in routes():
        for o in r.options:
            seen.setdefault(o.name, o)
    return tuple(seen.values())


def bench_flags() -> tuple[Flag, ...]:
    seen: dict[str, Flag] = {}
    for rt in runtimes():
        for f in rt.flags:
            seen.setdefault(f.name, f)
    return tuple(seen.values())


@dataclass
class Plan:
    """The routes a build will try, in order, and why the others for this target were left out."""

    candidates: list[Route]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (route name, reason)


def plan(framework: str, kind: str, target: str, precision: str, pinned: Optional[str] = None) -> Plan:
    """Routes from ``framework`` (source kind ``kind``) to ``target`` that offer ``precision``, in fallback order."""
    runtime(target)
    if pinned:
        r = route(pinned)
        if r.target != target or not r.takes(framework, kind):
            raise UsageError(
                f"route {r.name} goes {'/'.join(r.sources)} -> {r.target}"
                + (f" ({', '.join(r.kinds)} only)" if r.kinds else "")
                + f"; this build is {framework} ({kind}) -> {target}",
                "drop --route, or pick one that edgepack routes lists for this source and target",
            )
        if precision not in r.precisions:
            raise UsageError(
                f"--quantize {precision} is not available on route {r.name}",
                f"use one of {', '.join(r.precisions)}, or drop --route",
            )
        return Plan([r])
    to_target = [r for r in routes() if r.target == target and r.takes(framework, kind)]
    other_kinds = [
        (r.name, f"does not take {kind} sources (only {', '.join(r.kinds)})")
        for r in routes()
        if r.target == target and framework in r.sources and not r.takes(framework, kind)
    ]
    if not to_target:
        reachable = sorted({r.target for r in routes() if r.takes(framework, kind)})
        raise UsageError(
            f"no route from {framework} to {target}", f"{framework} sources go to: {', '.join(reachable) or 'nothing'}"
        )
    out = Plan([r for r in to_target if precision in r.precisions])
    out.skipped = other_kinds + [
        (r.name, f"no {precision} precision") for r in to_target if precision not in r.precisions
    ]
    if not out.candidates:
        offered = sorted({p for r in to_target for p in r.precisions}, key=list(PRECISIONS).index)
        hints = [r.precision_hint for r in to_target if r.precision_hint]
        raise UsageError(
            f"--quantize {precision} is not available for {framework} -> {target}",
            hints[0] if hints else f"use one of {', '.join(offered)}",
        )
    return out
