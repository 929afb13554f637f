"""Bench results for people (a rich table, Markdown for PR comments) and for tools (JSON)."""

from __future__ import annotations

import json
from typing import Iterable, Optional

from edgepack.types import BenchResult

_NUMERIC = ("size", "load", "first", "p50", "p90", "p99")
COLUMNS = ["device", "format", "quant", "size", "load", "first", "p50", "p90", "p99", "agreement", "accuracy"]


def _mb(n: Optional[float]) -> str:
    return "–" if n is None else (f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB")


def _ms(x: Optional[float]) -> str:
    if x is None:
        return "–"
    return f"{x:.3f} ms" if x < 1 else f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"


def agreement(b: BenchResult) -> str:
    """Worst output's cosine (and top-1 agreement when classifier-shaped) against the source framework."""
    v = b.result.validation
    if not v:
        return "–"
    worst = min(v.values(), key=lambda m: m.cosine)
    text = f"cos {worst.cosine:.5f}"
    tops = [m.top1_agreement for m in v.values() if m.top1_agreement is not None]
    if tops:
        text += f", top-1 {min(tops) * 100:.0f}%"
    return text


def device_label(b: BenchResult) -> str:
    d = b.result.device
    label = f"{b.device} ({d.machine}"
    if d.cpu.emulated:
        label += ", emulated"
    return label + ")"


def row(b: BenchResult) -> list[str]:
    r = b.result
    acc = "–" if r.accuracy is None else f"{r.accuracy.top1 * 100:.2f}% (n={r.accuracy.n})"
    return [device_label(b), f"{b.manifest.format}/{r.device.runtime} {r.device.runtime_version}",
            b.manifest.quantization.mode, _mb(b.bundle_bytes), _ms(r.load_ms), _ms(r.first_inference_ms),
            _ms(r.latency_ms.p50), _ms(r.latency_ms.p90), _ms(r.latency_ms.p99), agreement(b), acc]


def table(results: Iterable[BenchResult]):
    from rich.table import Table

    t = Table(title="edgepack bench", show_lines=False)
    t.add_column("bundle")
    for c in COLUMNS:
        t.add_column(c, justify="right" if c in _NUMERIC else "left")
    for b in results:
        t.add_row(b.bundle_name, *row(b))
    return t


def markdown(results: list[BenchResult]) -> str:
    lines = ["| bundle | " + " | ".join(COLUMNS) + " |",
             "|---|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|"]
    for b in results:
        lines.append(f"| {b.bundle_name} | " + " | ".join(row(b)) + " |")
    notes = []
    if any(b.result.device.cpu.emulated for b in results):
        notes.append("Emulated devices: latency is not the real board's.")
    counts = sorted({len(b.result.latency_ms.samples) for b in results})
    span = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    notes.append(f"Latency over {span} timed runs after warm-up; agreement = worst output vs the source "
                 "framework on the bundle's golden data.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"_{n}_" for n in notes) + "\n"


def to_json(results: list[BenchResult]) -> str:
    return json.dumps({"schema": "edgepack.bench/1", "results": [b.to_dict() for b in results]},
                      indent=2, sort_keys=True, allow_nan=False) + "\n"
