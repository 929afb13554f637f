"""``edgepack tune``'s table in the terminal, Markdown, JSON and a self-contained HTML page with a Pareto plot
(p50 latency vs top-1 accuracy, marker area = bundle size; matplotlib from the ``report`` extra)."""

from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING, Optional

from edgepack.report_rows import _mb, _ms
from edgepack.types import TuneCandidate, TuneResult
from edgepack.ui import safe

if TYPE_CHECKING:
    from rich.table import Table

COLUMNS = [
    "candidate",
    "route",
    "p50",
    "p90",
    "p50 vs best",
    "size",
    "peak RSS",
    "accuracy",
    "drop",
    "cosine",
    "verdict",
]
_NUMERIC = ("p50", "p90", "p50 vs best", "size", "peak RSS", "accuracy", "drop", "cosine")

_VERDICT = {"best": "best", "within-budget": "within budget", "over-budget": "over budget"}


def verdict(c: TuneCandidate) -> str:
    if c.status in ("failed", "not-run"):
        return f"{c.status.replace('-', ' ')}: {c.reason or '?'}"
    return _VERDICT[c.status]


def row(c: TuneCandidate) -> list[str]:
    r = c.record.result if c.record else None
    vs = "–"
    if c.p50_vs_best:
        ratio, lo, hi = c.p50_vs_best
        vs = "1 (chosen)" if c.status == "best" else f"{ratio:.2f}× [{lo:.2f}, {hi:.2f}]"
    return [
        c.name,
        c.route or "–",
        _ms(r.latency_ms.p50) if r else "–",
        _ms(r.latency_ms.p90) if r else "–",
        vs,
        _mb(c.bundle_bytes) + (" (cached)" if c.cached else ""),
        "–" if r is None or r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f} MB",
        "–" if c.top1 is None else f"{c.top1 * 100:.2f}%",
        "–" if c.drop_points is None else f"{c.drop_points:+.2f} pt",
        "–" if c.cosine is None else f"{c.cosine:.5f}",
        verdict(c),
    ]


def headline(res: TuneResult) -> str:
    ref = f"reference top-1 {res.reference.top1 * 100:.2f}% (n={res.reference.n}, {res.reference_what})"
    if res.chosen:
        return f"chosen: {res.chosen} → {res.output}; {ref}; budget −{res.max_accuracy_drop:g} pt"
    return f"no candidate within −{res.max_accuracy_drop:g} pt of the {ref}"


def device_line(res: TuneResult) -> str:
    rec = next((c.record for c in res.candidates if c.record is not None), None)
    if rec is None:
        return f"device {res.device}: nothing ran"
    from edgepack.report_rows import device_label

    d = rec.result.device
    return f"device {device_label(rec)}: {d.cpu.model or '?'}, {d.cpu_count or '?'} cores"


def table(res: TuneResult) -> Table:
    from rich.table import Table

    t = Table(title=f"edgepack tune: {safe(res.source)} on {safe(res.device)}", caption=safe(headline(res)))
    for col in COLUMNS:
        t.add_column(col, justify="right" if col in _NUMERIC else "left")
    for c in res.candidates:
        style = "bold green" if c.status == "best" else ("dim" if c.status in ("failed", "not-run") else None)
        t.add_row(*(safe(x) for x in row(c)), style=style)
    return t


def markdown(res: TuneResult) -> str:
    from edgepack.report import _md_table

    lines = [f"### edgepack tune: {headline(res)}", "", device_line(res), ""]
    lines += _md_table(COLUMNS, [row(c) for c in res.candidates], _NUMERIC)
    lines += [""] + [f"_{n}_" for n in res.notes + _footnotes(res)]
    return "\n".join(lines) + "\n"


def _footnotes(res: TuneResult) -> list[str]:
    return [
        "accuracy = top-1 on the eval set measured on the device; drop = reference minus it, in points; "
        "cosine = worst output vs the source framework on the bundle's golden data, on the device; "
        "p50 vs best = ratio of medians with its bootstrap interval (timing windows resampled)."
    ]


def to_json(res: TuneResult) -> str:
    from edgepack.tuner import tune_result_json

    return tune_result_json(res)


# --------------------------------------------------------------------------- HTML


_STATUS_COLOR = {"best": "#2ca02c", "within-budget": "#1f77b4", "over-budget": "#d62728"}


def pareto_points(res: TuneResult) -> list[tuple[TuneCandidate, float, float, int]]:
    """(candidate, p50 ms, top-1 %, bundle bytes) of every candidate that was measured."""
    out = []
    for c in res.candidates:
        if c.record is not None and c.top1 is not None:
            out.append((c, c.record.result.latency_ms.p50, c.top1 * 100.0, c.bundle_bytes or c.record.bundle_bytes))
    return out


def pareto_front(points: list[tuple[TuneCandidate, float, float, int]]) -> list[TuneCandidate]:
    """Candidates no other one beats on both latency (lower) and accuracy (higher), fastest first."""
    front, best_acc = [], -1.0
    for c, _, acc, _ in sorted(points, key=lambda p: (p[1], -p[2])):
        if acc > best_acc:
            front.append(c)
            best_acc = acc
    return front


def pareto_chart(res: TuneResult) -> Optional[str]:
    """The Pareto plot as a base64 PNG (None when nothing was measured)."""
    points = pareto_points(res)
    if not points:
        return None
    from edgepack.report_html import _png, _pyplot

    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sizes = np.array([p[3] for p in points], dtype=float)
    area = 60 + 540 * (sizes / sizes.max())  # marker area follows the bundle size
    # labels of neighbours (similar latency) take turns above/below and left/right, so they do not overprint
    offsets = [((8, 6), "left"), ((8, -13), "left"), ((-8, 6), "right"), ((-8, -13), "right")]
    order = {id(p[0]): i for i, p in enumerate(sorted(points, key=lambda p: p[1]))}
    for (c, p50, acc, _), a in zip(points, area):
        ax.scatter(
            p50, acc, s=a, color=_STATUS_COLOR.get(c.status, "#7f7f7f"), alpha=0.65, edgecolors="black", linewidths=0.6
        )
        xy, ha = offsets[order[id(c)] % len(offsets)]
        ax.annotate(c.name, (p50, acc), textcoords="offset points", xytext=xy, fontsize=8, ha=ha)
    front = pareto_front(points)
    if len(front) > 1:
        by_name = {p[0].name: p for p in points}
        ax.plot(
            [by_name[c.name][1] for c in front],
            [by_name[c.name][2] for c in front],
            color="#555555",
            lw=1,
            ls="-",
            drawstyle="steps-post",
            label="Pareto front",
        )
    floor = (res.reference.top1 * 100.0) - res.max_accuracy_drop
    ax.axhline(res.reference.top1 * 100.0, color="#2ca02c", lw=0.8, ls=":", label="reference top-1")
    ax.axhline(floor, color="#d62728", lw=1, ls="--", label=f"budget: −{res.max_accuracy_drop:g} pt")
    shown = {p[0].status for p in points}
    for status, color in _STATUS_COLOR.items():
        if status in shown:
            ax.scatter([], [], color=color, s=60, label=status.replace("-", " "))
    p50s = [p[1] for p in points]
    if max(p50s) / max(min(p50s), 1e-12) > 20:
        ax.set_xscale("log")
    ax.margins(x=0.18, y=0.12)  # room for the labels
    ax.set_xlabel("p50 latency on the device (ms)")
    ax.set_ylabel("top-1 accuracy on the device (%)")
    ax.set_title(f"{res.source} on {res.device}: latency vs accuracy (marker area = bundle size)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def html(res: TuneResult) -> str:
    from edgepack.report import make_report
    from edgepack.report_html import _CSS, _table, latency_chart
    from edgepack.report_rows import DEVICE_COLUMNS, device_rows

    e = _html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgepack tune</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>edgepack tune: {e(res.source)} on {e(res.device)}</h1>",
        f"<p><b>{e(headline(res))}</b> — {e(res.created)}, edgepack {e(res.edgepack)}</p>",
        f"<p>{e(device_line(res))}</p>",
        "<h2>Candidates</h2>",
        _table(COLUMNS, [row(c) for c in res.candidates]),
    ]
    chart = pareto_chart(res)
    if chart:
        parts += ["<h2>Latency vs accuracy</h2>", f"<img alt='pareto plot' src='data:image/png;base64,{chart}'>"]
    records = [c.record for c in res.candidates if c.record is not None]
    if records:
        named = [r.model_copy(update={"bundle": c.name}) for c in res.candidates if (r := c.record) is not None]
        rep = make_report(named)
        parts.append("<h2>Latency distribution</h2>")
        parts.append(f"<img alt='latency distribution' src='data:image/png;base64,{latency_chart(rep)}'>")
        parts += ["<h2>Device</h2>", _table(DEVICE_COLUMNS, device_rows(rep))]
    parts.append("<div class='notes'>" + "".join(f"<p>{e(n)}</p>" for n in res.notes + _footnotes(res)) + "</div>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render(res: TuneResult, fmt: str) -> str:
    return {"md": markdown, "json": to_json, "html": html}[fmt](res)


__all__ = ["table", "markdown", "to_json", "html", "pareto_chart", "render", "row", "COLUMNS"]
