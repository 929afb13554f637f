"""``edgepack bench --until-conclusive``: add timing windows until the latency verdict is known.

A fixed number of windows on a busy host often ends "inconclusive": a real +55% slowdown of a 0.4 ms model read
[-18%, +103%] from 3 windows and passed. Here the bundle and its baseline are served by a runner on the
same device (``runner --serve``, :mod:`edgepack.runner_session`: uploaded and loaded once), asked for one
window of each per round, in alternating order (AB, BA, ...), with ``--cooldown`` idle seconds before each
window after the first. After every round the anytime-valid interval of the latency ratio
(:func:`edgepack.stats.sequential_ratio`, Lai's confidence sequence of the per-round log ratios of window
medians) is compared with the limit: wholly above it -> ``regressed``, wholly at or below it -> ``ok``;
otherwise one more round, unless it would overrun ``--budget-seconds`` -> ``inconclusive-at-budget``.
Because the interval is a confidence *sequence*, looking after every round does not inflate false alarms
(re-checking a fixed-sample interval after every window would).

Both bundles are served by one runner process when they share a runtime (``--serve-also``), so nothing about
the process differs between them; two identical runner processes measured up to ±10% apart on a busy host.
Without the baseline's bundle (a ``--baseline`` JSON whose ``bundle_path`` is gone or holds another file),
the bundle's windows are compared with the baseline's stored windows (unpaired): the stored windows' own
spread then bounds the precision, and nothing cancels what changed on the host since they were recorded.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Optional

from edgepack import registry
from edgepack.bencher import (
    TIMEOUT_BASE_SECONDS,
    _checked,
    bench,
    check_settings,
    make_record,
    runner_argv,
)
from edgepack.bundle import sha256_file
from edgepack.device_runners import runner_common
from edgepack.devices import Execution, SSHOptions, open_device, parse_device
from edgepack.errors import DeviceError, UsageError
from edgepack.gate import GateSettings, parse_fraction
from edgepack.runner_session import RunnerSession
from edgepack.stats import SequentialInterval, sequential_ratio
from edgepack.types import BenchOptions, BenchRecord, Manifest, Report, RunResult, SequentialGate
from edgepack.ui import step

DEFAULT_BUDGET_SECONDS = 300.0
METHOD = "Lai (1976) confidence sequence of per-round log ratios of a window quantile"
METHOD_UNPAIRED = "Lai (1976) confidence sequences of a window log quantile, current and stored baseline (Bonferroni)"


def parse_statistic(text: Optional[str]) -> float:
    """``--statistic p50`` (each window's median, the default) or ``p10`` ... : the window quantile compared."""
    t = (text or "p50").strip().lower()
    t = {"median": "p50"}.get(t, t)
    try:
        value = float(t[1:]) if t.startswith("p") else float("nan")
    except ValueError:
        value = float("nan")
    if not (1 <= value <= 99):
        raise UsageError(
            f"--statistic {text!r} is not a window quantile p1..p99",
            "pass --statistic p50 (the median; default) or a low one such as p10 on a busy host",
        )
    return value


def check_flags(
    bundles: list[Path],
    until_conclusive: bool,
    baseline: Optional[Path],
    baseline_bundle: Optional[Path],
    max_latency_regression: Optional[str],
    budget_seconds: Optional[float],
    options: BenchOptions,
    statistic: Optional[str] = None,
) -> Optional[float]:
    """The flag combinations of ``bench --until-conclusive``, refused in one line before anything runs;
    returns the allowed regression (fraction)."""
    if not until_conclusive:
        given = [
            flag
            for flag, value in (
                ("--baseline", baseline),
                ("--baseline-bundle", baseline_bundle),
                ("--max-latency-regression", max_latency_regression),
                ("--budget-seconds", budget_seconds),
                ("--statistic", statistic),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"{given[0]} is an option of bench --until-conclusive",
                "add --until-conclusive, or compare saved results with edgepack report --baseline",
            )
        return None
    if baseline is None and baseline_bundle is None:
        raise UsageError(
            "--until-conclusive needs something to compare with",
            "pass --baseline-bundle OLD.edgepack (timed interleaved) or --baseline BASE.json",
        )
    if baseline is not None and baseline_bundle is not None:
        raise UsageError(
            "--baseline and --baseline-bundle both name the baseline",
            "pass one of them (--baseline-bundle to interleave)",
        )
    if baseline_bundle is not None and len(bundles) != 1:
        raise UsageError(
            f"--baseline-bundle compares one bundle, {len(bundles)} were given",
            "bench one bundle per --baseline-bundle, or use --baseline BASE.json (matched by bundle name)",
        )
    if baseline_bundle is not None and not Path(baseline_bundle).is_file():
        raise UsageError(f"--baseline-bundle {baseline_bundle}: no such file", "pass the baseline's .edgepack file")
    limit = parse_fraction(
        max_latency_regression if max_latency_regression is not None else "5%", "--max-latency-regression"
    )
    if limit is None:
        raise UsageError(
            "--until-conclusive with --max-latency-regression off has nothing to decide",
            "pass a limit such as --max-latency-regression 5%",
        )
    budget = DEFAULT_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    if not math.isfinite(budget) or budget <= 0:
        raise UsageError(f"--budget-seconds {budget} is out of range", "pass a number of seconds > 0, e.g. 300")
    parse_statistic(statistic)
    if getattr(options, "sustained", None):
        raise UsageError(
            "--sustained and --until-conclusive both decide the timing windows",
            "run bench --sustained and bench --until-conclusive separately",
        )
    if options.repeat != 1:
        raise UsageError(
            "--repeat and --until-conclusive both set the number of timing windows",
            "drop --repeat: --until-conclusive adds windows until the verdict is known",
        )
    return limit


def _finite(x: float) -> Optional[float]:
    return x if math.isfinite(x) else None


def _verdict(iv: SequentialInterval, limit: float) -> Optional[str]:
    if iv.beyond(limit):
        return "regressed"
    if iv.within(limit):
        return "ok"
    return None


def _wait_ready(session: RunnerSession, timeout: float) -> dict[str, Any]:
    event = session.event(timeout)
    if event.get("event") != "ready":
        raise DeviceError(f"the runner on {session.name} sent {event.get('event')!r} first", "check the device")
    return event


def _results(execution: Execution, device: str) -> list[RunResult]:
    """The result documents a serving runner printed after ``finish`` (one line per bundle)."""
    from edgepack.bencher import _parse

    lines = [ln for ln in execution.stdout.splitlines() if ln.strip()] or [""]
    return [_parse(dataclasses.replace(execution, stdout=ln), device) for ln in lines]


def _window(session: RunnerSession, index: int, timeout: float) -> list[float]:
    session.send(f"window {index}")
    event = session.event(timeout)
    samples = event.get("samples")
    if event.get("event") != "window" or not isinstance(samples, list) or not samples:
        raise DeviceError(f"the runner on {session.name} sent no window", "check the device")
    return [float(x) for x in samples]


def compare(
    candidate: Path,
    device: str,
    options: BenchOptions,
    ssh: Optional[SSHOptions],
    limit: float,
    budget_seconds: float,
    baseline_bundle: Optional[Path] = None,
    baseline_record: Optional[BenchRecord] = None,
    confidence: float = 0.95,
    quantile: float = 50.0,
) -> tuple[BenchRecord, BenchRecord]:
    """Time ``candidate`` (and ``baseline_bundle``, interleaved) window by window until the verdict is known.
    Returns (the candidate's record, carrying ``sequential``; the baseline's record: fresh when interleaved,
    else ``baseline_record``)."""
    check_settings(options)
    paired = baseline_bundle is not None
    if not paired:
        assert baseline_record is not None
        stored = baseline_record.result.latency_ms.window_samples()
        if len(stored) < 2:
            raise UsageError(
                f"the baseline of {candidate.name} has {len(stored)} timing window and its bundle is not here "
                "to time alongside",
                "give --baseline-bundle OLD.edgepack (interleaved), or record the baseline with bench --repeat 5",
            )
    if options.install_runtime and parse_device(device).local:
        raise UsageError("--install-runtime is for SSH devices", "install the runtime here with pip")
    bundles = [candidate] + ([baseline_bundle] if baseline_bundle is not None else [])
    manifests: list[Manifest] = [_checked(b) for b in bundles]
    shas = [sha256_file(b) for b in bundles]
    extras = [registry.runtime(m.format).runner_args(m, options.flags) for m in manifests]
    timeout = options.timeout
    if timeout is None:
        timeout = TIMEOUT_BASE_SECONDS + 2.0 * budget_seconds
    backstop = timeout + 30.0 if timeout else None
    ssh = dataclasses.replace(ssh) if ssh else SSHOptions()
    with step(f"connect to {device}"):
        dev = open_device(device, ssh)
    sessions: list[RunnerSession] = []
    try:
        with step(f"upload runner and {', '.join(b.name for b in bundles)} to {dev.name}"):
            runners = dev.put_runners()
            placed = [dev.put_bundle(b, sha) for b, sha in zip(bundles, shas)]
            workdir = dev.workdir()
        if options.install_runtime and dev.venv_python():
            dev.python = dev.venv_python()
        runtimes = [registry.runtime(m.format) for m in manifests]
        argvs = [
            runner_argv(f"{runners}/{rt.runner}", remote, options, timeout, extra, workdir) + ["--serve"]
            for rt, (remote, _), extra in zip(runtimes, placed, extras)
        ]
        # one process serves both bundles when it can: then nothing about the process (placement, memory
        # layout, scheduling) differs between them; a process effect measured +-10% between two identical
        # runner processes on a busy host, which no number of windows averages away
        shared = paired and runtimes[0].name == runtimes[1].name and extras[0] == extras[1]
        if shared:
            argvs = [argvs[0] + ["--serve-also", placed[1][0]]]
        for attempt in (1, 2):
            try:
                with step(f"load {len(bundles)} bundle(s) in {len(argvs)} serving runner(s) on {dev.name}"):
                    for argv in argvs:
                        sessions.append(dev.start(argv))
                    for s in sessions:
                        _wait_ready(s, backstop or TIMEOUT_BASE_SECONDS)
                break
            except DeviceError as e:
                missing = getattr(e, "runner_exit", None) == runner_common.EXIT_RUNTIME_MISSING
                if attempt == 2 or not (options.install_runtime and missing):
                    raise
                for s in sessions:
                    s.close()
                sessions.clear()
                packages = tuple(dict.fromkeys(p for rt in runtimes for p in rt.device_packages))
                steps = tuple(dict.fromkeys(s for rt in runtimes for s in rt.install_steps(dev.machine())))
                with step(f"install {' '.join(packages)} into a venv on {dev.name}"):
                    dev.install_runtime(steps)  # and runs the runners with the venv's Python
        slots = [(sessions[0], 0), (sessions[0], 1)] if shared else [(s, 0) for s in sessions]
        windows: list[list[list[float]]] = [[] for _ in slots]  # [candidate, baseline?]
        base_windows = windows[1] if paired else stored
        looks: list[list[Optional[float]]] = []
        verdict: Optional[str] = None
        iv: Optional[SequentialInterval] = None
        what = f"time {candidate.name}" + (f" and {baseline_bundle.name} interleaved" if baseline_bundle else "")
        with step(f"{what} until the latency verdict is known (budget {budget_seconds:g}s)"):
            start = time.monotonic()
            rounds = 0
            while True:
                order = list(range(len(slots)))
                if rounds % 2 == 1:
                    order.reverse()  # AB, BA, AB, ...: neither bundle always goes first
                for k in order:
                    if rounds or k != order[0]:
                        time.sleep(options.cooldown)
                    session, index = slots[k]
                    windows[k].append(_window(session, index, backstop or TIMEOUT_BASE_SECONDS))
                rounds += 1
                iv = sequential_ratio(base_windows, windows[0], confidence, paired=paired, quantile=quantile)
                looks.append([float(len(windows[0])), iv.low, _finite(iv.high)])
                verdict = _verdict(iv, 1.0 + limit)
                elapsed = time.monotonic() - start
                if verdict is not None or elapsed + elapsed / rounds > budget_seconds:
                    break
            seconds = time.monotonic() - start
        results: list[RunResult] = []
        with step("finish: golden and eval checks"):
            for s in sessions:
                results.extend(_results(s.finish(backstop), dev.name))
    except BaseException:
        for s in sessions:
            s.close()
        raise
    finally:
        dev.close()
    records = [
        make_record(b, m, sha, dev.name, uploaded, r, ssh.remote_dir)
        for b, m, sha, (_, uploaded), r in zip(bundles, manifests, shas, placed, results)
    ]
    assert iv is not None
    base_rec = records[1] if paired else baseline_record
    assert base_rec is not None
    records[0].sequential = SequentialGate(
        verdict=verdict or "inconclusive-at-budget",  # type: ignore[arg-type]
        paired=paired,
        baseline_bundle=base_rec.bundle,
        baseline_sha256=base_rec.result.bundle_sha256,
        windows=len(windows[0]),
        baseline_windows=len(base_windows),
        seconds=seconds,
        budget_seconds=budget_seconds,
        limit=1.0 + limit,
        confidence=confidence,
        statistic=f"p{quantile:g}",
        ratio=iv.ratio,
        low=iv.low,
        high=_finite(iv.high),
        method=METHOD if paired else METHOD_UNPAIRED,
        looks=looks,
    )
    return records[0], base_rec


def _stored_baseline(records: list[BenchRecord], bundle: Path, device: str) -> Optional[BenchRecord]:
    same = [r for r in records if r.bundle == bundle.name]
    return next((r for r in same if r.device_spec == device), same[0] if same else None)


def _bundle_of(record: BenchRecord) -> Optional[Path]:
    """The baseline's own bundle file, when it is still here unchanged (then it is timed interleaved)."""
    if not record.bundle_path:
        return None
    path = Path(record.bundle_path)
    try:
        return path if path.is_file() and sha256_file(path) == record.result.bundle_sha256 else None
    except OSError:
        return None


def bench_until_conclusive(
    bundles: list[Path],
    device: str,
    options: BenchOptions,
    ssh: Optional[SSHOptions],
    limit: float,
    budget_seconds: Optional[float],
    baseline: Optional[Path] = None,
    baseline_bundle: Optional[Path] = None,
    statistic: Optional[str] = None,
) -> tuple[list[BenchRecord], Report]:
    """The ``bench --until-conclusive`` command: every bundle against its baseline; the report gates them (its
    latency check is the sequential verdict; accuracy and size are checked as edgepack report does)."""
    from edgepack import report

    budget = DEFAULT_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    q = parse_statistic(statistic)
    stored = report.load_records(baseline) if baseline is not None else []
    # the plan first, so that a baseline that cannot be compared is refused before anything runs
    plan: list[tuple[Path, Optional[Path], Optional[BenchRecord]]] = []
    for b in bundles:
        if baseline_bundle is not None:
            plan.append((b, baseline_bundle, None))
            continue
        rec = _stored_baseline(stored, b, device)
        own = _bundle_of(rec) if rec is not None else None
        if rec is not None and own is None and len(rec.result.latency_ms.window_samples()) < 2:
            raise UsageError(
                f"the baseline of {b.name} in {baseline} has 1 timing window and its bundle "
                f"({rec.bundle_path}) is gone or changed, so it cannot be timed alongside",
                "give --baseline-bundle OLD.edgepack (interleaved), or record the baseline with bench --repeat 5",
            )
        plan.append((b, own, None if own is not None else rec))
    records: list[BenchRecord] = []
    bases: list[BenchRecord] = []
    for b, own, rec in plan:
        if own is None and rec is None:  # new since the baseline: measured, nothing compared (the report says so)
            records.append(bench(b, device, options, ssh))
            continue
        cur, base = compare(
            b, device, options, ssh, limit, budget, baseline_bundle=own, baseline_record=rec, quantile=q
        )
        records.append(cur)
        bases.append(base.model_copy(update={"bundle": cur.bundle, "device_spec": cur.device_spec}))
    settings = GateSettings(max_latency_regression=limit)
    return records, report.make_report(records, bases, settings)
