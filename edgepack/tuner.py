"""``edgepack tune``: the fastest bundle within an accuracy budget, measured on the device (``edgepack.tune()``; this
module is ``tuner``, like ``builder`` and ``bencher``, so that it does not shadow the function).

For one source model and one device: build every candidate (target format x precision; the builder with its route
fallback, through the build cache so identical inputs are not rebuilt), bench each on the device with every
``threads`` setting (one upload per bundle: the device's cache is content-addressed), read its top-1 on the eval
set and its agreement with the source framework from the device runner, and choose:

- **within budget**: top-1 at most ``max_accuracy_drop`` points below the reference (the source model in its own
  framework on the host, on the same eval set);
- among those, the fastest by p50; when others are not measurably slower than it (the bootstrap interval of their
  p50 ratio, :mod:`edgepack.stats`, reaches 1.0), the most accurate of them, then the smallest;
- candidates that fail to build, validate or run are rows with the reason, never a crash or a made-up number
  (a CoreML bundle on a Linux device: "not run", with the runner's own words).

``budget_seconds`` bounds the search: once spent, the remaining candidates are rows "not run: budget".
Rendering (terminal, Markdown, JSON, HTML with a Pareto plot) is :mod:`edgepack.tune_report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from edgepack import __version__, converters, registry  # type: ignore[attr-defined]  # converters/: package-dir
from edgepack.bencher import check_settings
from edgepack.build_cache import BuildCache, default_dir, source_digest, tool_versions
from edgepack.build_cache import key as cache_key
from edgepack.devices import SSHOptions
from edgepack.errors import EdgepackError, UsageError, first_line
from edgepack.types import (
    Accuracy,
    BenchOptions,
    BenchRecord,
    BuildOptions,
    ConvertOptions,
    DataOptions,
    Manifest,
    TuneCandidate,
    TuneResult,
)
from edgepack.ui import note, safe, step

TUNE_SCHEMA = "edgepack.tune/1"


def default_bench() -> BenchOptions:
    """Per candidate: 3 timing windows of >= 0.5 s (>= 50 runs overall), so the comparison sees run-to-run drift."""
    return BenchOptions(runs=50, warmup=5, min_seconds=0.5, repeat=3, cooldown=0.2)


@dataclass
class TuneOptions:
    """What ``tune`` searches and how it measures. Empty ``formats``/``precisions``: every format the source
    reaches, every precision each format's routes offer (``registry.target_precisions``)."""

    eval: Optional[Path] = None  # required: labelled data (--eval)
    device: str = "local"
    calibration: Optional[Path] = None
    max_accuracy_drop: float = 1.0  # top-1 percentage points below the reference
    formats: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    threads: tuple[int, ...] = (0,)  # bench --threads settings (0 = the runtime's default)
    inputs: tuple[str, ...] = ()  # NAME:1x3x224x224[:dtype] (file.py:callable sources)
    output: Optional[Path] = None  # the chosen bundle (default <stem>.best.edgepack)
    budget_seconds: Optional[float] = None
    cache_dir: Optional[Path] = None  # default: build_cache.default_dir()
    use_cache: bool = True
    confidence: float = 0.95
    bench: BenchOptions = field(default_factory=default_bench)
    ssh: SSHOptions = field(default_factory=SSHOptions)


def parse_list(text: Optional[str], option: str) -> tuple[str, ...]:
    """``'onnx,tflite'`` -> ('onnx', 'tflite'); None or '' -> ()."""
    if not text:
        return ()
    items = tuple(x.strip().lower() for x in str(text).split(",") if x.strip())
    if len(set(items)) != len(items):
        raise UsageError(f"{option} {text!r} names a value twice", f"list each value of {option} once")
    return items


def parse_threads(text: Optional[str]) -> tuple[int, ...]:
    items = parse_list(text, "--threads") or ("0",)
    try:
        values = tuple(int(x) for x in items)
    except ValueError:
        raise UsageError(f"--threads {text!r} is not a list of integers", "write it like --threads 1,2,4")
    if any(v < 0 for v in values):
        raise UsageError(f"--threads {text!r} has a negative value", "use 0 (runtime default) or a positive count")
    return values


def _check(source: str, o: TuneOptions) -> None:
    """Everything that can be refused before anything is built."""
    from edgepack.outputs import check_outputs

    if o.eval is None:
        raise UsageError("tune needs labelled data to measure accuracy", "pass --eval DATA.npz (inputs + 'labels')")
    if not math.isfinite(o.max_accuracy_drop) or not 0 <= o.max_accuracy_drop <= 100:
        raise UsageError(f"--max-accuracy-drop {o.max_accuracy_drop} is out of range", "use 0 to 100 points, e.g. 1.0")
    if o.budget_seconds is not None and (not math.isfinite(o.budget_seconds) or o.budget_seconds <= 0):
        raise UsageError(f"--budget-seconds {o.budget_seconds} is out of range", "pass a number of seconds > 0")
    if not 0.5 <= o.confidence < 1:
        raise UsageError(f"confidence {o.confidence} is out of range", "use a value like 0.95")
    for f in o.formats:
        registry.runtime(f)
    unknown = [p for p in o.precisions if p not in registry.PRECISIONS]
    if unknown:
        raise UsageError(
            f"--quantize {','.join(unknown)}: unknown precision", f"use some of {', '.join(registry.PRECISIONS)}"
        )
    if not o.threads or any(t < 0 for t in o.threads):
        raise UsageError(f"--threads {o.threads} is out of range", "use 0 (runtime default) or positive counts")
    check_settings(o.bench)
    converters.source_kind(source)  # a path edgepack cannot load is refused now, not once per candidate
    check_outputs({"-o": _output(source, o)}, [source, source.rsplit(":", 1)[0], o.eval, o.calibration])


def _output(source: str, o: TuneOptions) -> Path:
    if o.output is not None:
        return Path(o.output)
    split = converters.split_callable(source)
    stem = split[0].stem if split else Path(source).stem
    return Path(f"{stem}.best.edgepack")


# --------------------------------------------------------------------------- the reference


@dataclass
class Reference:
    """The source model's top-1 on the eval set, in its own framework on the host (what a drop is measured from)."""

    framework: str
    kind: str
    what: str
    top1: float
    n: int


def reference(source: str, source_sha: str, o: TuneOptions, cache: BuildCache) -> Reference:
    assert o.eval is not None  # _check
    from edgepack.bundle import sha256_file

    recipe = {"source": source_sha, "eval": sha256_file(o.eval), "inputs": list(o.inputs), "tools": tool_versions()}
    k = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    hit = cache.get_json(k, "reference")
    if hit is not None:
        try:
            return Reference(**hit)
        except TypeError:
            pass
    import numpy as np

    from edgepack.capture import framework_output
    from edgepack.data import load_dataset, parse_input_spec
    from edgepack.validate import run_batches

    with tempfile.TemporaryDirectory(prefix="edgepack-tune-ref-") as tmp:
        log = Path(tmp) / "frameworks.log"
        with step(f"reference: load {source}"), framework_output(log):
            src = converters.load_source(source, [parse_input_spec(s) for s in o.inputs])
        data = load_dataset(o.eval, src.inputs, "eval", need_labels=True)
        labels = np.asarray(data.pop("labels")).reshape(-1)
        assert src.predict is not None  # every source loader sets it
        first = src.outputs[0].name  # the output the device runner scores, too
        with step(f"reference: top-1 of {src.framework} on {len(labels)} eval samples"), framework_output(log):
            logits = run_batches(src.predict, data, src.inputs, [first])[first]
    pred = np.argmax(logits.reshape(len(logits), -1), axis=-1)
    top1 = float(np.mean(pred == labels[: len(pred)]))
    what = f"{src.framework} {src.framework_version or ''}".strip() + " on the host"
    ref = Reference(framework=src.framework, kind=src.kind, what=what, top1=top1, n=int(len(pred)))
    cache.put_json(k, "reference", dataclasses.asdict(ref))
    return ref


def reachable_formats(framework: str, kind: str) -> tuple[str, ...]:
    return tuple(
        f for f in registry.formats() if any(r.target == f and r.takes(framework, kind) for r in registry.routes())
    )


# --------------------------------------------------------------------------- one candidate


@dataclass
class _Built:
    path: Path
    manifest: Manifest
    cached: bool
    seconds: float


def _build(
    source: str, source_sha: str, fmt: str, precision: str, o: TuneOptions, cache: BuildCache, scratch: Path
) -> _Built:
    from edgepack.builder import build
    from edgepack.bundle import read_manifest
    from edgepack.data import parse_input_spec

    options = BuildOptions(
        convert=ConvertOptions(target=fmt, quantize=precision),
        data=DataOptions(
            calibration=Path(o.calibration) if o.calibration else None, eval=Path(o.eval) if o.eval else None
        ),
        inputs=tuple(parse_input_spec(s) for s in o.inputs),
    )
    k = cache_key(source_sha, options)
    hit = cache.get(k)
    if hit is not None:
        note(f"[green]✓[/green] build cache hit: {fmt} {precision} ({hit.name[:12]}…)")
        return _Built(hit, read_manifest(hit), True, 0.0)
    options = dataclasses.replace(options, output=cache.path(k) or scratch / f"{k}.edgepack")
    t0 = time.monotonic()
    res = build(source, options)
    return _Built(res.path, res.manifest, False, time.monotonic() - t0)


def _reason(e: BaseException) -> str:
    if isinstance(e, EdgepackError):
        return e.one_line()
    return f"{type(e).__name__}: {first_line(e)[:300]}"


def _measured(c: TuneCandidate, rec: BenchRecord) -> TuneCandidate:
    r = rec.result
    c.record = rec
    c.cosine = min((m.cosine for m in (r.validation or {}).values()), default=None)
    if r.accuracy is None:
        c.status, c.reason = "failed", "the device reported no accuracy (the bundle has no eval data)"
    else:
        c.top1 = r.accuracy.top1
    return c


# --------------------------------------------------------------------------- the choice


def _windows(c: TuneCandidate) -> list[list[float]]:
    assert c.record is not None
    return c.record.result.latency_ms.window_samples()


def _p50(c: TuneCandidate) -> float:
    assert c.record is not None
    return c.record.result.latency_ms.p50


def choose(
    candidates: list[TuneCandidate], ref: Reference, o: TuneOptions
) -> tuple[Optional[TuneCandidate], list[str]]:
    """Mark each measured candidate within/over budget and the best one; returns (best, notes)."""
    from edgepack.stats import ratio_of_medians

    notes: list[str] = []
    measured = [c for c in candidates if c.record is not None and c.top1 is not None and c.status != "failed"]
    for c in measured:
        assert c.top1 is not None
        c.drop_points = round((ref.top1 - c.top1) * 100.0, 6)
        c.status = "within-budget" if c.drop_points <= o.max_accuracy_drop + 1e-9 else "over-budget"
    within = [c for c in measured if c.status == "within-budget"]
    if not within:
        return None, notes
    fastest = min(within, key=_p50)
    tied = []
    for c in within:
        iv = ratio_of_medians(_windows(fastest), _windows(c), o.confidence)
        if iv.low <= 1.0:  # not measurably slower than the fastest
            tied.append(c)
    best = max(tied, key=lambda c: (c.top1 or 0.0, -(c.bundle_bytes or 0), -_p50(c)))
    best.status = "best"
    if best is not fastest:
        iv = ratio_of_medians(_windows(fastest), _windows(best), o.confidence)
        notes.append(
            f"{fastest.name} has the lowest p50, but {best.name} is not measurably slower (p50 ratio "
            f"{best.name} / {fastest.name} = {iv.ratio:.3f}, {o.confidence:.0%} interval [{iv.low:.3f}, "
            f"{iv.high:.3f}] reaches 1.0): of the candidates within noise of the fastest, the most accurate "
            "(then the smallest) is chosen"
        )
    for c in measured:
        iv = ratio_of_medians(_windows(best), _windows(c), o.confidence)
        c.p50_vs_best = [round(iv.ratio, 4), round(iv.low, 4), round(iv.high, 4)]
    return best, notes


# --------------------------------------------------------------------------- the search


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tune(source: str, options: TuneOptions) -> TuneResult:
    """Build, bench and choose (see the module doc). Returns the TuneResult; the chosen bundle is written to
    ``options.output`` (default ``<stem>.best.edgepack``) unless no candidate met the budget (then
    ``result.chosen`` is None and nothing is written)."""
    o = options
    t0 = time.monotonic()
    _check(source, o)
    out = _output(source, o)
    cache = BuildCache((o.cache_dir or default_dir()) if o.use_cache else None)
    source_sha = source_digest(source)
    ref = reference(source, source_sha, o, cache)
    note(f"reference: top-1 {ref.top1 * 100:.2f}% on {ref.n} eval samples ({safe(ref.what)})")
    formats = o.formats or reachable_formats(ref.framework, ref.kind)
    jobs = [(f, p) for f in formats for p in (o.precisions or registry.target_precisions(f))]
    search = _Search(source, source_sha, o, cache, t0, total=len(jobs) * len(o.threads))
    with tempfile.TemporaryDirectory(prefix="edgepack-tune-") as scratch:
        for fmt, precision in jobs:
            search.job(fmt, precision, Path(scratch))
        best, notes = choose(search.candidates, ref, o)
        if best is not None:
            assert best.record is not None and best.record.bundle_path is not None
            with step(f"write {out} ({best.name})"):
                _copy_atomic(Path(best.record.bundle_path), out)
    for c in search.candidates:  # cache entries and temp files are not the user's: only the written file is named
        if c.record is not None:
            c.record.bundle_path = str(out) if c is best else None
    if best is None:
        notes.append(
            f"no candidate is within {_points(o.max_accuracy_drop)} of the reference top-1 "
            f"{ref.top1 * 100:.2f}%: nothing was written"
        )
    return TuneResult(
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        edgepack=__version__,
        source=str(source),
        device=o.device,
        max_accuracy_drop=o.max_accuracy_drop,
        reference=Accuracy(top1=ref.top1, n=ref.n),
        reference_what=ref.what,
        chosen=best.name if best else None,
        output=str(out) if best else None,
        settings={
            "formats": list(formats),
            "precisions": list(o.precisions) or "each format's",
            "threads": list(o.threads),
            "bench": {k: v for k, v in dataclasses.asdict(o.bench).items() if k != "flags"},
            "confidence": o.confidence,
            "budget_seconds": o.budget_seconds,
            "cache": str(cache.root) if cache.root else None,
            "seconds": round(time.monotonic() - t0, 1),
        },
        notes=notes,
        candidates=search.candidates,
    )


def _points(x: float) -> str:
    return f"{x:g} point" + ("" if x == 1 else "s")


@dataclass
class _Search:
    """The candidates so far, the progress count and the time budget."""

    source: str
    source_sha: str
    o: TuneOptions
    cache: BuildCache
    t0: float
    total: int
    done: int = 0
    candidates: list[TuneCandidate] = field(default_factory=list)

    def spent(self) -> bool:
        budget = self.o.budget_seconds
        return budget is not None and time.monotonic() - self.t0 >= budget

    @property
    def budget_reason(self) -> str:
        return f"budget: --budget-seconds {self.o.budget_seconds:g} spent"

    def job(self, fmt: str, precision: str, scratch: Path) -> None:
        """One bundle: build it (a failure is one row), then bench it with each thread setting (a row each)."""
        o = self.o
        base: dict[str, Any] = {"format": fmt, "precision": precision}
        if self.spent():
            for t in o.threads:
                self.done += 1
                self.candidates.append(
                    TuneCandidate(
                        name=_name(fmt, precision, t, o), threads=t, status="not-run", reason=self.budget_reason, **base
                    )
                )
            return
        note(f"[bold]candidate {self.done + 1}/{self.total}[/bold]: build {fmt} {precision}")
        started = time.monotonic()
        try:
            built = _build(self.source, self.source_sha, fmt, precision, o, self.cache, scratch)
        except Exception as e:  # a candidate that cannot be built is a row, not the end of the search
            reason = _reason(e)
            note(f"[yellow]candidate {fmt} {precision} failed:[/yellow] {safe(reason)}")
            self.done += len(o.threads)
            self.candidates.append(
                TuneCandidate(
                    name=_name(fmt, precision, None, o),
                    status="failed",
                    reason=reason,
                    build_seconds=round(time.monotonic() - started, 3),
                    **base,
                )
            )
            return
        facts: dict[str, Any] = dict(
            route=built.manifest.route.name if built.manifest.route else None,
            bundle_bytes=built.path.stat().st_size,
            cached=built.cached,
            build_seconds=round(built.seconds, 3),
        )
        for t in o.threads:
            self.done += 1
            c = TuneCandidate(name=_name(fmt, precision, t, o), threads=t, status="failed", **base, **facts)
            self.candidates.append(c)
            if self.spent():
                c.status, c.reason = "not-run", self.budget_reason
                continue
            note(f"[bold]candidate {self.done}/{self.total}[/bold]: bench {safe(c.name)} on {safe(o.device)}")
            c.status, c.reason = _bench(c, built.path, t, o, self.source)


def _name(fmt: str, precision: str, threads: Optional[int], o: TuneOptions) -> str:
    name = f"{fmt} {registry.suffix(precision)}"
    if threads is not None and len(o.threads) > 1:
        name += f" t{threads}"
    return name


def _bench(c: TuneCandidate, bundle: Path, threads: int, o: TuneOptions, source: str) -> tuple[Any, Optional[str]]:
    from edgepack.bencher import bench
    from edgepack.builder import default_output
    from edgepack.errors import DeviceError

    try:
        rec = bench(bundle, o.device, dataclasses.replace(o.bench, threads=threads), o.ssh)
    except DeviceError as e:
        # exit 3: the device cannot run this format at all (no runtime; CoreML off macOS): not run, no number
        status = "not-run" if "(exit 3)" in e.message else "failed"
        note(f"[yellow]{safe(c.name)} {status.replace('-', ' ')}:[/yellow] {safe(e.one_line())}")
        if status == "not-run":  # "runner failed on DEV (exit 3): CoreML prediction needs macOS; ..." -> the why
            return status, e.one_line().split("): ", 1)[-1]
        return status, e.one_line()
    except Exception as e:
        note(f"[yellow]{safe(c.name)} failed:[/yellow] {safe(_reason(e))}")
        return "failed", _reason(e)
    rec.bundle = default_output(
        source, BuildOptions(convert=ConvertOptions(target=c.format, quantize=c.precision))
    ).name
    _measured(c, rec)
    return ("failed", c.reason) if c.reason else ("within-budget", None)  # choose() settles within/over


def tune_result_json(result: TuneResult) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True, allow_nan=False) + "\n"


__all__: Sequence[str] = ("TuneOptions", "tune", "choose", "parse_list", "parse_threads", "tune_result_json")
