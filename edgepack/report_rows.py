"""What a report says, as text cells: the result and device rows, notes and the one-line summary, shared by every
renderer (Markdown/JUnit/terminal in :mod:`edgepack.report`, HTML in :mod:`edgepack.report_html`)."""

from __future__ import annotations

from typing import Iterable, Optional

from edgepack.gate import fingerprint
from edgepack.types import BenchRecord, Report

_NUMERIC = ("size", "load", "first", "p50", "p90", "p99", "throughput", "peak RSS")
COLUMNS = [
    "device",
    "format",
    "quant",
    "size",
    "load",
    "first",
    "p50",
    "p90",
    "p99",
    "throughput",
    "peak RSS",
    "agreement",
    "accuracy",
]
ICON = {"pass": "✅", "fail": "❌", "flag": "⚠️", "skip": "➖"}


def summary_line(rep: Report) -> str:
    n, failed = len(rep.checks), rep.failed
    flagged = [c for c in rep.checks if c.status == "flag"]
    if failed:
        text = f"❌ {len(failed)} of {n} checks failed"
    else:
        text = f"✅ all {n - sum(c.status == 'skip' for c in rep.checks) - len(flagged)} checks passed"
    if flagged:
        text += f", ⚠️ {len(flagged)} flagged"
    return text


# --------------------------------------------------------------------------- cells


def _mb(n: Optional[float]) -> str:
    return "–" if n is None else (f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB")


def _ms(x: Optional[float]) -> str:
    if x is None:
        return "–"
    return f"{x:.3f} ms" if x < 1 else f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"


def _delta(cur: Optional[float], base: Optional[float]) -> str:
    """' ▲ +4.2%' / ' ▼ -3.0%' vs the baseline ('' without one)."""
    if cur is None or base is None or base == 0:
        return ""
    change = cur / base - 1.0
    if abs(change) < 0.0005:
        return " = 0.0%"
    return f" {'▲' if change > 0 else '▼'} {change * 100:+.1f}%"


def agreement(rec: BenchRecord) -> str:
    """Worst output's cosine (and top-1 agreement when classifier-shaped) against the source framework."""
    v = rec.result.validation
    if not v:
        return "–"
    worst = min(v.values(), key=lambda m: m.cosine)
    text = f"cos {worst.cosine:.5f}"
    tops = [m.top1_agreement for m in v.values() if m.top1_agreement is not None]
    if tops:
        text += f", top-1 {min(tops) * 100:.0f}%"
    return text


def device_label(rec: BenchRecord) -> str:
    d = rec.result.device
    label = f"{rec.device_spec} ({d.machine}"
    if d.cpu.emulated:
        label += ", emulated"
    return label + ")"


def row(rec: BenchRecord, base: Optional[BenchRecord] = None) -> list[str]:
    r = rec.result
    b = base.result if base else None

    def lat(q: str) -> str:
        return _ms(getattr(r.latency_ms, q)) + _delta(getattr(r.latency_ms, q), getattr(b.latency_ms, q) if b else None)

    acc = "–" if r.accuracy is None else f"{r.accuracy.top1 * 100:.2f}% (n={r.accuracy.n})"
    if r.accuracy is not None and b is not None and b.accuracy is not None:
        acc += f" {(r.accuracy.top1 - b.accuracy.top1) * 100:+.2f} pt"
    return [
        device_label(rec),
        f"{rec.format}/{r.device.runtime} {r.device.runtime_version}",
        rec.quantization,
        _mb(rec.bundle_bytes) + _delta(rec.bundle_bytes, base.bundle_bytes if base else None),
        _ms(r.load_ms),
        _ms(r.first_inference_ms),
        lat("p50"),
        lat("p90"),
        lat("p99"),
        "–" if r.throughput_ips is None else f"{r.throughput_ips:,.0f}/s",
        "–" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f} MB",
        agreement(rec),
        acc,
    ]


def _baseline_of(rep: Report) -> dict[str, BenchRecord]:
    return {b.key: b for b in (rep.baseline or [])}


def device_rows(rep: Report) -> list[list[str]]:
    """One row per distinct device fingerprint: what the figures were measured on."""
    rows, seen = [], set()
    for rec in rep.records:
        d, fp = rec.result.device, fingerprint(rec)
        key = (rec.device_spec, tuple(sorted((k, str(v)) for k, v in fp.items())))
        if key in seen:
            continue
        seen.add(key)
        c = d.cpu
        freq = (
            "–" if not (c.cur_freq_mhz or c.max_freq_mhz) else (f"{c.cur_freq_mhz or '?'}/{c.max_freq_mhz or '?'} MHz")
        )
        temp = (
            "–"
            if c.temperature_c is None
            else (
                f"{c.temperature_c:.0f}→{c.temperature_end_c:.0f} °C"
                if c.temperature_end_c is not None
                else f"{c.temperature_c:.0f} °C"
            )
        )
        threads = rec.result.settings.get("threads") or "default"
        rows.append(
            [
                rec.device_spec,
                f"{d.machine}{' (emulated)' if c.emulated else ''}",
                c.model or "–",
                str(d.cpu_count or "–") + _pinned(rec),
                f"{d.runtime} {d.runtime_version}",
                str(threads),
                c.governor or "–",
                freq,
                temp,
            ]
        )
    return rows


def _pinned(rec: BenchRecord) -> str:
    """', pinned big: 4-7 @ 2400 MHz' when bench --cpus pinned the runner ('' otherwise)."""
    c = rec.result.device.cpu
    if not c.pinned:
        return ""
    from edgepack.device_runners.runner_common.cpus import format_list

    used = format_list(c.affinity) if c.affinity else "?"
    freqs = sorted({k.max_freq_mhz for k in c.cores or [] if k.max_freq_mhz})
    mhz = f" @ {'/'.join(map(str, freqs))} MHz" if freqs else ""
    return f", pinned {c.pinned}: {used}{mhz}" if c.pinned != used else f", pinned {used}{mhz}"


DEVICE_COLUMNS = ["device", "machine", "CPU", "cores", "runtime", "threads", "governor", "freq cur/max", "temp"]


def run_warnings(records: Iterable[BenchRecord]) -> list[str]:
    """The runners' warnings (``RunResult.warnings``: e.g. a runtime older than the bundle's exporter), one line
    each, naming the bundle and device."""
    return [f"warning: {rec.bundle} on {rec.device_spec}: {w}" for rec in records for w in rec.result.warnings]


def notes(rep: Report) -> list[str]:
    out = run_warnings(rep.records)
    if any(r.result.device.cpu.emulated for r in rep.records):
        out.append("Emulated devices: latency is not the real board's.")
    counts = sorted({len(r.result.latency_ms.samples) for r in rep.records})
    span = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    windows = sorted({len(r.result.latency_ms.windows or [None]) for r in rep.records})
    text = f"Latency over {span} timed runs after warm-up"
    if windows != [1]:
        text += f" in {'/'.join(map(str, windows))} timing windows"
    out.append(text + "; agreement = worst output vs the source framework on the bundle's golden data.")
    if rep.baseline is not None:
        sequential = any(r.sequential is not None for r in rep.records)
        out.append(
            "▲/▼ = change vs the baseline. A latency regression fails only when the whole "
            + (
                "anytime-valid interval (bench --until-conclusive: a confidence sequence, sampled until it lay on "
                "one side of the limit or the budget ended)"
                if sequential
                else f"{rep.settings.get('confidence', 0.95):.0%} bootstrap interval of the ratio of medians"
            )
            + " is beyond the allowed regression."
        )
    return out


# --------------------------------------------------------------------------- formats
