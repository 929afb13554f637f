"""``edgepack report --format html``: one self-contained page (tables + charts as embedded PNGs).

Charts (matplotlib, imported only here; ``pip install 'edgepack[report]'``):
- latency distribution per bundle x device, current over baseline (histograms on a shared scale per entry),
- the p50 ratio to the baseline with its bootstrap interval against the allowed regression.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
from typing import Any, Sequence

from edgepack.errors import require
from edgepack.report_rows import COLUMNS, DEVICE_COLUMNS, ICON, _baseline_of, device_rows, notes, row, summary_line
from edgepack.types import Report

MAX_PANELS = 24  # latency histograms per page

_COLOR = {
    "current": "#1f77b4",
    "baseline": "#9a9a9a",
    "pass": "#2ca02c",
    "fail": "#d62728",
    "flag": "#ff7f0e",
    "skip": "#7f7f7f",
}


def _pyplot() -> Any:
    require("matplotlib", "report")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def latency_chart(rep: Report) -> str:
    """Small multiples: per entry, a histogram of the current samples over the baseline's."""
    plt = _pyplot()
    import numpy as np

    base = _baseline_of(rep)
    recs = rep.records[:MAX_PANELS]
    cols = min(3, len(recs))
    rows = math.ceil(len(recs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.0 * rows), squeeze=False)
    for ax, rec in zip(axes.ravel(), recs):
        cur = np.asarray(rec.result.latency_ms.samples)
        b = base.get(rec.key)
        ref = np.asarray(b.result.latency_ms.samples) if b else None
        both = cur if ref is None else np.concatenate([cur, ref])
        lo, hi = np.percentile(both, [0.5, 99.5])
        if hi <= lo:
            lo, hi = lo * 0.95, hi * 1.05 + 1e-9
        log = lo > 0 and hi / lo > 4  # heavy tails (a few slow runs): a log axis keeps the body readable
        bins = np.geomspace(lo, hi, 40) if log else np.linspace(lo, hi, 40)
        if ref is not None:
            assert b is not None  # ref holds b's samples
            ax.hist(
                np.clip(ref, lo, hi),
                bins=bins,
                color=_COLOR["baseline"],
                alpha=0.6,
                density=True,
                label=f"baseline p50 {b.result.latency_ms.p50:.3g}",
            )
        ax.hist(
            np.clip(cur, lo, hi),
            bins=bins,
            color=_COLOR["current"],
            alpha=0.6,
            density=True,
            label=f"current p50 {rec.result.latency_ms.p50:.3g}",
        )
        ax.axvline(rec.result.latency_ms.p50, color=_COLOR["current"], lw=1.5)
        if b:
            ax.axvline(b.result.latency_ms.p50, color=_COLOR["baseline"], lw=1.5, ls="--")
        ax.set_title(f"{rec.bundle}\n{rec.device_spec} ({rec.result.device.machine})", fontsize=9)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel("latency (ms)" + (", log scale" if log else ""))
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes.ravel()[len(recs) :]:
        ax.axis("off")
    fig.suptitle("Latency distribution per bundle and device (0.5–99.5th percentile)", fontsize=11)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def ratio_chart(rep: Report) -> str | None:
    """p50 change vs baseline with its interval; the allowed regression as a line. None without latency checks."""
    checks = [c for c in rep.checks if c.name == "latency" and c.interval]
    if not checks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(checks) + 1.4))
    for i, c in enumerate(checks):
        assert c.value is not None and c.interval is not None  # a latency check with an interval has its ratio
        mid, lo, hi = (c.value - 1) * 100, (c.interval[0] - 1) * 100, (c.interval[1] - 1) * 100
        ax.errorbar(mid, i, xerr=[[mid - lo], [hi - mid]], fmt="o", color=_COLOR[c.status], capsize=4)
    assert checks[0].limit is not None  # a latency check has its limit (edgepack.gate._latency)
    limit = (checks[0].limit - 1) * 100
    ax.axvline(limit, color=_COLOR["fail"], ls="--", lw=1, label=f"allowed +{limit:g}%")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(checks)))
    ax.set_yticklabels([c.entry for c in checks], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("p50 change vs baseline (%), with its bootstrap interval")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Latency vs baseline", fontsize=11)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _table(header: list[str], rows: Sequence[Sequence[object]]) -> str:
    e = _html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0;
font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}
tr.fail td{background:#fde8e8}img{max-width:100%;display:block;margin:1em 0}.notes{color:#555;font-size:12px}"""


def _placement_html(rep: Report, top: int) -> str:
    """Op placement and per-op time per record, the same rows as the Markdown and terminal views."""
    from edgepack.placement_view import as_op_timing, as_placement, headline

    e = _html.escape
    parts = []
    for rec in rep.records:
        p, t = as_placement(rec), as_op_timing(rec)
        if p is not None:
            parts.append(f"<h3>{e(rec.key)}: op placement</h3><p>{e(headline(p))}</p>")
            parts.append(
                _table(
                    ["op type", "accelerator", "CPU", "why on the CPU"],
                    [[o.op_type, o.accelerator, o.cpu, "; ".join(o.reasons) or "–"] for o in p.ops],
                )
            )
        if t is not None and t.top:
            parts.append(
                f"<h3>{e(rec.key)}: per-op time (top {min(top, len(t.top))}, median of "
                f"{t.profiled_runs} profiled runs)</h3>"
            )
            parts.append(
                _table(
                    ["node", "op type", "provider", "ms", "share"],
                    [
                        [o.name, o.op_type, o.provider or "–", f"{o.ms:.4f}", f"{o.share * 100:.1f}%"]
                        for o in t.top[:top]
                    ],
                )
            )
    return "".join(parts)


def html(rep: Report, top: int = 10) -> str:
    e = _html.escape
    base = _baseline_of(rep)
    title = "edgepack report" if rep.baseline is not None else "edgepack bench"
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p><b>{e(summary_line(rep))}</b> — {e(rep.created)}, edgepack {e(rep.edgepack)}</p>",
        "<h2>Results</h2>",
        _table(["bundle"] + COLUMNS, [[r.bundle] + row(r, base.get(r.key)) for r in rep.records]),
        "<h2>Checks</h2>",
    ]
    check_rows = "".join(
        f"<tr class='{c.status}'><td>{ICON[c.status]}</td><td>{e(c.entry)}</td><td>{e(c.name)}</td>"
        f"<td>{e(c.message)}</td></tr>"
        for c in rep.checks
    )
    parts.append(
        "<table><thead><tr><th></th><th>bundle @ device</th><th>check</th><th>result</th></tr></thead>"
        f"<tbody>{check_rows}</tbody></table>"
    )
    ratio = ratio_chart(rep)
    if ratio:
        parts.append(f"<img alt='latency vs baseline' src='data:image/png;base64,{ratio}'>")
    parts.append("<h2>Latency distribution</h2>")
    parts.append(f"<img alt='latency distribution' src='data:image/png;base64,{latency_chart(rep)}'>")
    parts += ["<h2>Devices</h2>", _table(DEVICE_COLUMNS, device_rows(rep))]
    from edgepack.sustained import html as sustained_html

    parts.append(sustained_html(rep.records))
    placement = _placement_html(rep, top)
    if placement:
        parts += ["<h2>Op placement and per-op time</h2>", placement]
    parts.append("<div class='notes'>" + "".join(f"<p>{e(n)}</p>" for n in notes(rep)) + "</div>")
    parts.append("</body></html>\n")
    return "".join(parts)
