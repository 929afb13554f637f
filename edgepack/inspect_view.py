"""The human view of a manifest (``edgepack inspect`` and the end of ``edgepack build``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgepack.types import Manifest, TensorSpec
from edgepack.ui import safe


def _tensor_row(kind: str, t: TensorSpec) -> list[str]:
    q = (
        "–"
        if t.quant is None or not t.quant.scale or not t.quant.zero_point
        else f"scale {t.quant.scale[0]:.4g}, zp {t.quant.zero_point[0]}"
    )
    return [kind, *(safe(x) for x in (t.name, t.shape_text(), t.dtype, t.layout or "–")), q]


def summary(m: Manifest, path: Path, size: int, console: Console | None = None) -> None:
    console = console or Console()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    # every string below comes from the bundle (or the command line): escaped, never read as markup
    head.add_row("bundle", f"{safe(path)} ({size / 1e3:.1f} kB)")
    head.add_row(
        "format", safe(f"{m.format} (runtime {m.runtime}), model {m.model.member} ({m.model.bytes / 1e3:.1f} kB)")
    )
    q = m.quantization
    head.add_row(
        "quantization",
        safe(
            q.mode
            + (f" — {q.method}" if q.method else "")
            + (f", {q.calibration_samples} calibration samples" if q.calibration_samples else "")
        ),
    )
    s = m.source
    head.add_row(
        "source", safe(f"{s.file} ({s.kind}, {s.framework} {s.framework_version or ''}) sha256 {s.sha256[:16]}…")
    )
    head.add_row("tools", safe(", ".join(f"{k} {v}" for k, v in sorted(m.tools.items()))))
    if m.route is not None:
        head.add_row("route", safe(m.route.name + (" (pinned with --route)" if m.route.pinned else "")))
        for a in m.route.attempts:
            if a.status != "used":
                head.add_row("", Text(f"{a.route} {a.status}: {a.reason}", style="dim"))
    v = m.validation
    where = "on the device" if v.status == "pending-device" else f"on {v.samples} {v.inputs_from} samples"
    head.add_row(
        "validation", safe(f"{v.status}: {where} vs {v.reference} (min cosine {v.thresholds.get('min_cosine')})")
    )
    extras = [
        f"golden {m.golden.samples} samples" if m.golden else None,
        f"eval {m.eval.samples} labelled samples" if m.eval else None,
    ]
    head.add_row("data", ", ".join(e for e in extras if e) or "–")
    console.print(head)

    tensors = Table(title="tensors", title_justify="left")
    for c in ("", "name", "shape", "dtype", "layout", "quantization"):
        tensors.add_column(c)
    for t in m.inputs:
        tensors.add_row(*_tensor_row("in", t))
    for t in m.outputs:
        tensors.add_row(*_tensor_row("out", t))
    console.print(tensors)

    if v.pending_reason:
        console.print(f"[yellow]validation pending-device:[/yellow] {safe(v.pending_reason)}")
    if v.checks:
        ch = v.checks  # not `c`: that is the column-name loop variable (a str) above and below
        weights = ", ".join(f"{k} {n}" for k, n in sorted((ch.get("weights") or {}).items())) or "–"
        console.print(
            safe(
                f"static checks passed: {ch.get('model_type')} (spec v{ch.get('specification_version')}, "
                f"target {ch.get('deployment_target')}), compute {ch.get('compute_precision')}, "
                f"{sum((ch.get('ops') or {}).values())} ops, unsupported ops: "
                f"{', '.join(map(str, ch.get('unsupported_ops') or [])) or 'none'}; "
                f"weight tensors: {weights}"
            )
        )
        stage = ch.get("tensorflow_stage")
        if stage:
            worst = min(o["cosine"] for o in stage["outputs"].values())
            console.print(
                safe(
                    f"intermediate stage run here, {stage['status']}: {stage['stage']}, "
                    f"{stage['samples']} {stage['inputs_from']} samples, lowest cosine {worst:.6f} "
                    f"(min {stage['min_cosine']})"
                )
            )
    if not v.outputs:
        return
    metrics = Table(title="build-time agreement with the source", title_justify="left")
    for c in ("output", "max abs err", "mean abs err", "cosine", "SQNR dB", "top-1 agree"):
        metrics.add_column(c, justify="right" if c != "output" else "left")
    for name, o in v.outputs.items():
        metrics.add_row(
            safe(name),
            _f(o.max_abs_err),
            _f(o.mean_abs_err),
            f"{o.cosine:.6f}",
            "exact" if o.sqnr_db is None else f"{o.sqnr_db:.1f}",
            "–" if o.top1_agreement is None else f"{o.top1_agreement * 100:.1f}%",
        )
    console.print(metrics)

    if m.npu is not None:
        from edgepack.placement_view import print_npu

        print_npu(m.npu, console, layers=40)


def _f(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.3g}"
