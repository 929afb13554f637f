"""The CI gate: checks of current bench records against absolute ceilings and against a baseline.

Every check is one :class:`edgepack.types.Check` (pass / fail / flag / skip), so every output format shows
the same list. A latency regression fails only when it is statistically real: the whole bootstrap interval
of the ratio of medians lies beyond the allowed regression (see :mod:`edgepack.stats`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from edgepack import placement_gate, sustained
from edgepack.errors import UsageError
from edgepack.stats import ratio_of_medians
from edgepack.types import BenchRecord, Check, CheckStatus, SequentialGate


@dataclass
class GateSettings:
    """Relative checks (against a baseline) are on by default, at these limits; None switches one off.
    Absolute ceilings and floors are off unless set."""

    max_latency_regression: Optional[float] = 0.05  # fraction: 0.05 = 5 %
    max_accuracy_drop: Optional[float] = 0.5  # percentage points of top-1
    max_size_growth: Optional[float] = 0.10  # fraction
    max_p50_ms: Optional[float] = None
    max_p90_ms: Optional[float] = None
    max_p99_ms: Optional[float] = None
    min_accuracy: Optional[float] = None  # percent top-1
    confidence: float = 0.95
    strict_device: bool = False  # a device fingerprint that differs from the baseline's fails instead of flagging
    seed: int = 0
    max_cpu_fallback_ops: Optional[int] = None  # placement gate: ops an accelerator left on the CPU
    min_accelerated_share: Optional[float] = None  # placement gate: fraction of the ops on the accelerator

    def recorded(self) -> dict[str, Any]:
        return asdict(self)


def _number(text: str, option: str, example: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a number", f"write it like {option} {example}")
    if not math.isfinite(value):
        raise UsageError(f"{option} {text!r} is not a finite number", f"write it like {option} {example}")
    if value < 0:
        raise UsageError(f"{option} {text!r} is negative", f"write it like {option} {example}")
    return value


def parse_fraction(text: Optional[str], option: str) -> Optional[float]:
    """'5%' or '0.05' -> 0.05; 'off' -> None. A bare number is a fraction and must be <= 1, so '5' is refused
    rather than read as 500% (write '5%'); nan, inf and negative values are refused."""
    if text is None:
        return None
    t = str(text).strip().lower()
    if t in ("off", "none"):
        return None
    if t.endswith("%"):
        return _number(t[:-1].strip(), option, "5%") / 100.0
    value = _number(t, option, "5%")
    if value > 1:
        raise UsageError(
            f"{option} {text!r} is ambiguous: a bare number is a fraction (0.05 = 5%), so this would "
            f"mean {value * 100:g}%",
            f"write {option} {value:g}% (or a fraction <= 1)",
        )
    return value


def parse_points(text: Optional[str], option: str) -> Optional[float]:
    """Percentage points of top-1 ('0.5', '0.5%' or 'off'): finite, 0..100."""
    if text is None:
        return None
    t = str(text).strip().lower()
    if t in ("off", "none"):
        return None
    value = _number(t.rstrip("%").strip(), option, "0.5")
    if value > 100:
        raise UsageError(f"{option} {text!r} is more than 100 percentage points", f"write it like {option} 0.5")
    return value


def check_number(value: Optional[float], option: str, high: Optional[float] = None) -> None:
    """An absolute ceiling/floor option: finite, >= 0 (and <= ``high``); nan and inf are usage errors."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (high is not None and value > high):
        rule = f"between 0 and {high:g}" if high is not None else "a finite number >= 0"
        raise UsageError(f"{option} {value} is out of range", f"use {rule}")


def _finite(*values: Optional[float]) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


# --------------------------------------------------------------------------- device fingerprints


def fingerprint(rec: BenchRecord) -> dict[str, Any]:
    """What must match for two latency figures to be comparable."""
    d = rec.result.device
    return {
        "machine": d.machine,
        "system": d.system,
        "cpu": d.cpu.model,
        "cores": d.cpu_count,
        "emulated": d.cpu.emulated,
        "runtime": f"{d.runtime} {d.runtime_version}",
        "threads": rec.result.settings.get("threads") or "default",
        "pinned": _pinned_cores(rec),
    }


def _pinned_cores(rec: BenchRecord) -> str:
    """``all`` unless bench --cpus pinned the runner; then the cores it ran on."""
    c = rec.result.device.cpu
    if not c.pinned:
        return "all"
    from edgepack.device_runners.runner_common.cpus import format_list

    return format_list(c.affinity) if c.affinity else c.pinned


def fingerprint_diff(base: BenchRecord, cur: BenchRecord) -> list[str]:
    a, b = fingerprint(base), fingerprint(cur)
    return [f"{k} {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]


# --------------------------------------------------------------------------- checks


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _latency(entry: str, base: BenchRecord, cur: BenchRecord, s: GateSettings) -> Check:
    assert s.max_latency_regression is not None  # evaluate() checks only what is switched on
    limit = 1.0 + s.max_latency_regression
    for which, rec in (("current", cur), ("baseline", base)):
        lat = rec.result.latency_ms
        if not lat.samples or not _finite(*lat.samples, lat.p50):
            return Check(
                entry=entry,
                name="latency",
                status="fail",
                limit=limit,
                message=f"the {which} latency samples are empty or not finite numbers (NaN/Inf): "
                "nothing can be compared",
            )
    seq = cur.sequential
    if seq is not None and seq.baseline_sha256 == base.result.bundle_sha256:
        return _sequential(entry, base, cur, seq, s)
    ci = ratio_of_medians(
        base.result.latency_ms.window_samples(), cur.result.latency_ms.window_samples(), s.confidence, seed=s.seed
    )
    span = f"p50 {_pct(ci.ratio - 1)} [{_pct(ci.low - 1)}, {_pct(ci.high - 1)}] at {ci.confidence:.0%}"
    allowed = f"allowed +{s.max_latency_regression * 100:g}%"
    if ci.windows == (1, 1):
        span += " (single timing windows: run bench --repeat 3+ to include run-to-run drift)"
    diffs = fingerprint_diff(base, cur)
    status: CheckStatus
    if diffs:
        status = "fail" if s.strict_device else "flag"
        message = f"not compared: measured on a different device than the baseline ({'; '.join(diffs)}); {span}"
    else:
        if ci.beyond(limit):
            status, verdict = "fail", f"regression beyond {allowed}"
        elif ci.within(limit):
            status, verdict = "pass", allowed
        else:
            status, verdict = "pass", f"inconclusive: the interval straddles {allowed}; not a proven regression"
        message = f"{span}; {verdict}"
    return Check(
        entry=entry,
        name="latency",
        status=status,
        value=ci.ratio,
        limit=limit,
        interval=[ci.low, ci.high],
        message=message,
    )


def _sequential(entry: str, base: BenchRecord, cur: BenchRecord, seq: SequentialGate, s: GateSettings) -> Check:
    """The latency check of ``bench --until-conclusive``: its anytime-valid interval, which stays valid at the
    round it stopped at, so it can also be held against another limit than the one it sampled for."""
    assert s.max_latency_regression is not None
    limit = 1.0 + s.max_latency_regression
    allowed = f"allowed +{s.max_latency_regression * 100:g}%"
    how = (
        f"interleaved with {seq.baseline_bundle} on the device"
        if seq.paired
        else f"against the baseline's {seq.baseline_windows} stored windows"
    )
    high = math.inf if seq.high is None else seq.high
    upper = _pct(high - 1) if seq.high is not None else "unbounded"
    span = (
        f"{seq.statistic} {_pct(seq.ratio - 1)} [{_pct(seq.low - 1)}, {upper}] at {seq.confidence:.0%} "
        f"(anytime-valid) after {seq.windows} windows, {how}, {seq.seconds:.0f}s of {seq.budget_seconds:g}s"
    )
    if seq.low > limit:
        status: CheckStatus = "fail"
        verdict = f"regressed beyond {allowed}"
    elif high <= limit:
        status, verdict = "pass", f"ok: {allowed}"
    else:
        status = "pass"
        verdict = f"inconclusive at the budget: the interval straddles {allowed}; not a proven regression"
    diffs = fingerprint_diff(base, cur)
    if diffs:
        return Check(
            entry=entry,
            name="latency",
            status="fail" if s.strict_device else "flag",
            value=seq.ratio,
            limit=limit,
            interval=None if seq.high is None else [seq.low, seq.high],
            message=f"not compared: measured on a different device than the baseline ({'; '.join(diffs)}); {span}",
        )
    return Check(
        entry=entry,
        name="latency",
        status=status,
        value=seq.ratio,
        limit=limit,
        interval=None if seq.high is None else [seq.low, seq.high],
        message=f"{span}; {verdict}",
    )


def _accuracy(entry: str, base: BenchRecord, cur: BenchRecord, s: GateSettings) -> Check:
    assert s.max_accuracy_drop is not None  # evaluate() checks only what is switched on
    a, b = base.result.accuracy, cur.result.accuracy
    if a is None or b is None:
        return Check(
            entry=entry, name="accuracy", status="skip", message="no accuracy to compare (build the bundle with --eval)"
        )
    if not _finite(a.top1, b.top1):
        return Check(
            entry=entry,
            name="accuracy",
            status="fail",
            message=f"top-1 is not a finite number (baseline {a.top1}, current {b.top1})",
        )
    drop = round((a.top1 - b.top1) * 100.0, 6)
    status: CheckStatus = "fail" if drop > s.max_accuracy_drop + 1e-9 else "pass"
    return Check(
        entry=entry,
        name="accuracy",
        status=status,
        value=b.top1 * 100,
        limit=a.top1 * 100 - s.max_accuracy_drop,
        message=f"top-1 {a.top1 * 100:.2f}% -> {b.top1 * 100:.2f}% ({-drop + 0.0:+.2f} points; "
        f"allowed drop {s.max_accuracy_drop:g})",
    )


def _size(entry: str, base: BenchRecord, cur: BenchRecord, s: GateSettings) -> Check:
    assert s.max_size_growth is not None  # evaluate() checks only what is switched on
    if base.bundle_bytes <= 0 or cur.bundle_bytes < 0:
        return Check(
            entry=entry,
            name="size",
            status="fail",
            message=f"bundle sizes {base.bundle_bytes} -> {cur.bundle_bytes} bytes are not comparable",
        )
    growth = cur.bundle_bytes / base.bundle_bytes - 1.0
    status: CheckStatus = "fail" if growth > s.max_size_growth + 1e-12 else "pass"
    return Check(
        entry=entry,
        name="size",
        status=status,
        value=float(cur.bundle_bytes),
        limit=base.bundle_bytes * (1 + s.max_size_growth),
        message=f"{base.bundle_bytes} -> {cur.bundle_bytes} bytes ({_pct(growth)}; "
        f"allowed +{s.max_size_growth * 100:g}%)",
    )


def _ceilings(entry: str, cur: BenchRecord, s: GateSettings) -> list[Check]:
    out = []
    lat = cur.result.latency_ms
    for q, limit in (("p50", s.max_p50_ms), ("p90", s.max_p90_ms), ("p99", s.max_p99_ms)):
        if limit is not None:
            v = getattr(lat, q)
            if not _finite(v):  # NaN compares False with everything: it would pass "v > limit"
                out.append(
                    Check(
                        entry=entry,
                        name=f"{q}-ceiling",
                        status="fail",
                        limit=limit,
                        message=f"{q} is {v}, not a finite number (ceiling {limit:g} ms)",
                    )
                )
                continue
            out.append(
                Check(
                    entry=entry,
                    name=f"{q}-ceiling",
                    status="fail" if v > limit else "pass",
                    value=v,
                    limit=limit,
                    message=f"{q} {v:.3f} ms (ceiling {limit:g} ms)",
                )
            )
    if s.min_accuracy is not None:
        acc = cur.result.accuracy
        if acc is None:
            out.append(
                Check(
                    entry=entry,
                    name="accuracy-floor",
                    status="fail",
                    limit=s.min_accuracy,
                    message="no accuracy measured (build the bundle with --eval)",
                )
            )
        else:
            v = acc.top1 * 100
            out.append(
                Check(
                    entry=entry,
                    name="accuracy-floor",
                    status="fail" if not _finite(v) or v < s.min_accuracy else "pass",
                    value=v,
                    limit=s.min_accuracy,
                    message=f"top-1 {v:.2f}% (floor {s.min_accuracy:g}%, n={acc.n})",
                )
            )
    return out


def _agreement(entry: str, cur: BenchRecord) -> Check:
    v = cur.result.validation
    if not v:
        return Check(entry=entry, name="agreement", status="skip", message="the runner checked no golden data")
    name, worst = min(v.items(), key=lambda kv: kv[1].cosine)
    limit = cur.min_cosine
    if limit is None:
        return Check(
            entry=entry,
            name="agreement",
            status="skip",
            value=worst.cosine,
            message=f"cosine {worst.cosine:.6f} on {name}; the bundle records no threshold",
        )
    ok = _finite(worst.cosine, limit) and worst.cosine >= limit and not worst.nonfinite
    return Check(
        entry=entry,
        name="agreement",
        status="pass" if ok else "fail",
        value=worst.cosine,
        limit=limit,
        message=f"on-device output {name!r} vs the source framework: cosine {worst.cosine:.6f} "
        f"(bundle threshold {limit:g})",
    )


def evaluate(current: list[BenchRecord], baseline: Optional[list[BenchRecord]], settings: GateSettings) -> list[Check]:
    """All checks, in the order of ``current`` (then baseline entries that are missing now)."""
    s = settings
    base_by_key = {b.key: b for b in (baseline or [])}
    checks: list[Check] = []
    for cur in current:
        entry = cur.key
        checks.append(_agreement(entry, cur))
        checks.extend(_ceilings(entry, cur, s))
        checks.extend(placement_gate.checks(entry, cur, s.max_cpu_fallback_ops, s.min_accelerated_share))
        checks.extend(sustained.check(entry, cur))
        if baseline is None:
            continue
        base = base_by_key.get(entry)
        if base is None:
            checks.append(
                Check(
                    entry=entry,
                    name="baseline",
                    status="skip",
                    message="no baseline entry for this bundle and device (new): nothing compared",
                )
            )
            continue
        if s.max_latency_regression is not None:
            checks.append(_latency(entry, base, cur, s))
        if s.max_accuracy_drop is not None:
            checks.append(_accuracy(entry, base, cur, s))
        if s.max_size_growth is not None:
            checks.append(_size(entry, base, cur, s))
    current_keys = {c.key for c in current}
    for key in base_by_key:
        if key not in current_keys:
            checks.append(
                Check(
                    entry=key, name="baseline", status="flag", message="in the baseline but not in the current results"
                )
            )
    return checks
