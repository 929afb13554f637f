"""Op placement (which ops ran on the accelerator, which on the CPU and why) and per-op timing, for people.

One view for every source of placement (vela's Ethos-U compile in a manifest, a TFLite delegate or an
onnxruntime execution provider in a runner result): rich tables for the terminal, Markdown for reports.
``placement_markdown(result)`` and ``op_timing_markdown(result, n)`` take a RunResult, a BenchRecord, a Manifest
or plain dicts, so the report module can call them as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from edgepack.types import BenchRecord, NpuCompile, OpTiming, Placement
from edgepack.ui import safe  # result and bundle strings: never read as markup

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _get(obj: Any, key: str) -> Any:
    """``obj.key`` / ``obj[key]``, looking through BenchRecord.result and Manifest.npu."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        inner = obj.get("result") or obj.get("npu")
        return _get(inner, key) if isinstance(inner, dict) else None
    if hasattr(obj, key):
        return getattr(obj, key)
    for inner in ("result", "npu"):
        if hasattr(obj, inner):
            return _get(getattr(obj, inner), key)
    return None


def as_placement(obj: Any) -> Optional[Placement]:
    p = obj if isinstance(obj, Placement) else _get(obj, "placement")
    if p is None:
        return None
    return p if isinstance(p, Placement) else Placement.model_validate(p)


def as_op_timing(obj: Any) -> Optional[OpTiming]:
    t = obj if isinstance(obj, OpTiming) else _get(obj, "op_timing")
    if t is None:
        return None
    return t if isinstance(t, OpTiming) else OpTiming.model_validate(t)


def headline(p: Placement) -> str:
    total = p.accelerator_ops + p.cpu_ops
    if p.accelerator is None:
        return f"{total} ops, all on the CPU (no accelerator requested)"
    pct = 100.0 * p.accelerator_ops / total if total else 0.0
    parts = f" in {p.partitions} partition(s)" if p.partitions is not None else ""
    return (
        f"{p.accelerator}: {p.accelerator_ops}/{total} ops ({pct:.1f}%) on the accelerator{parts}, "
        f"{p.cpu_ops} on the CPU [{p.source}]"
    )


def _reasons(reasons: list[str]) -> str:
    return "; ".join(reasons) if reasons else "–"


# --------------------------------------------------------------------------- Markdown


def placement_markdown(obj: Any) -> str:
    p = as_placement(obj)
    if p is None:
        return ""
    lines = [
        f"**Op placement** — {headline(p)}",
        "",
        "| op type | accelerator | CPU | why on the CPU |",
        "|---|---:|---:|---|",
    ]
    for o in p.ops:
        lines.append(f"| {o.op_type} | {o.accelerator} | {o.cpu} | {_reasons(o.reasons).replace('|', '/')} |")
    lines += [f"_{n}_" for n in p.notes]
    return "\n".join(lines) + "\n"


def op_timing_markdown(obj: Any, n: int = 10) -> str:
    t = as_op_timing(obj)
    if t is None or not t.top:
        return ""
    lines = [
        f"**Per-op time** (top {min(n, len(t.top))}, median of {t.profiled_runs} profiled runs; "
        f"node total {t.node_total_ms:.3f} ms/inference)",
        "",
        "| node | op type | provider | ms | share |",
        "|---|---|---|---:|---:|",
    ]
    for o in t.top[:n]:
        lines.append(f"| {o.name} | {o.op_type} | {o.provider or '–'} | {o.ms:.4f} | {o.share * 100:.1f}% |")
    lines += ["", "_Profiled runs are separate from the timed runs; profiling adds overhead to these figures._"]
    return "\n".join(lines) + "\n"


def npu_markdown(npu: NpuCompile) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in _npu_rows(npu))
    return "| NPU build | |\n|---|---|\n" + rows + "\n\n" + placement_markdown(npu.placement)


# --------------------------------------------------------------------------- rich


def _kib(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / 1024:.2f} KiB"


def _npu_rows(npu: NpuCompile) -> list[tuple[str, str]]:
    est = (
        "–"
        if npu.est_inference_ms is None
        else (
            f"{npu.est_inference_ms:.4f} ms, {npu.est_inferences_per_s or 0:.0f} inferences/s"
            + (f" at {npu.clock_hz / 1e6:.0f} MHz" if npu.clock_hz else "")
            + " (vela's estimate"
            + (", NPU part only)" if npu.placement.cpu_ops else ")")
        )
    )
    return [
        (
            "accelerator",
            f"{npu.accelerator} — system {npu.system_config or '–'}, memory mode {npu.memory_mode or '–'}"
            + (f", config {npu.config_file}" if npu.config_file else ""),
        ),
        ("compiler", f"{npu.compiler} {npu.compiler_version}"),
        ("NPU model", f"{npu.model.member} ({npu.model.bytes / 1e3:.1f} kB)"),
        (
            "ops",
            f"{npu.placement.accelerator_ops} on the NPU, {npu.placement.cpu_ops} on the CPU "
            f"({npu.npu_percent:.1f}% NPU) in {npu.placement.partitions} NPU partition(s)",
        ),
        (
            "memory",
            f"SRAM {_kib(npu.sram_bytes)}, off-chip flash {_kib(npu.off_chip_flash_bytes)}"
            + (f", DRAM {_kib(npu.dram_bytes)}" if npu.dram_bytes else "")
            + (f", on-chip flash {_kib(npu.on_chip_flash_bytes)}" if npu.on_chip_flash_bytes else ""),
        ),
        (
            "compute",
            f"{npu.macs if npu.macs is not None else '–'} MACs, {npu.npu_cycles or '–'} NPU cycles, "
            f"{npu.total_cycles or '–'} total cycles",
        ),
        ("est. time", est),
        ("numerics", npu.numerics),
    ]


def placement_table(p: Placement, title: Optional[str] = None) -> Table:
    from rich.table import Table

    t = Table(title=title or f"op placement — {safe(headline(p))}", title_justify="left")
    t.add_column("op type")
    t.add_column("accelerator", justify="right")
    t.add_column("CPU", justify="right")
    t.add_column("why on the CPU")
    for o in p.ops:
        t.add_row(
            safe(o.op_type),
            str(o.accelerator),
            f"[red]{o.cpu}[/red]" if o.cpu and p.accelerator else str(o.cpu),
            safe(_reasons(o.reasons)),
        )
    return t


def op_timing_table(t: OpTiming, n: int = 10, title: Optional[str] = None) -> Table:
    from rich.table import Table

    overhead = ""
    if t.profiled_run_ms:
        overhead = f", profiled run {t.profiled_run_ms:.3f} ms"
    table = Table(
        title=title
        or f"per-op time (top {min(n, len(t.top))} of {len(t.top)}, {t.profiled_runs} "
        f"profiled runs, node total {t.node_total_ms:.3f} ms{overhead})",
        title_justify="left",
    )
    for c in ("node", "op type", "provider", "ms", "share"):
        table.add_column(c, justify="right" if c in ("ms", "share") else "left")
    for o in t.top[:n]:
        table.add_row(safe(o.name), safe(o.op_type), safe(o.provider or "–"), f"{o.ms:.4f}", f"{o.share * 100:.1f}%")
    return table


def npu_tables(npu: NpuCompile, layers: int = 0) -> list[Table]:
    from rich.table import Table

    head = Table(title=f"NPU build ({npu.accelerator})", title_justify="left", show_header=False)
    head.add_column(style="bold")
    head.add_column()
    for k, v in _npu_rows(npu):
        head.add_row(k, safe(v))
    out = [head, placement_table(npu.placement)]
    if npu.hints:
        hints = Table(title="how to move the CPU ops to the NPU", title_justify="left", show_header=False)
        hints.add_column()
        for h in npu.hints:
            hints.add_row(safe(h))
        out.append(hints)
    if layers and npu.layers:
        lt = Table(title=f"vela per-layer estimate ({len(npu.layers)} layers)", title_justify="left")
        for c in ("original op", "NPU op", "target", "cycles", "MACs", "name"):
            lt.add_column(c, justify="right" if c in ("cycles", "MACs") else "left")
        for layer in npu.layers[:layers]:
            lt.add_row(
                safe(layer.original_op),
                safe(layer.npu_op),
                safe(layer.target),
                str(layer.cycles),
                str(layer.macs),
                safe(layer.name[-60:]),
            )
        out.append(lt)
    return out


def print_npu(npu: NpuCompile, console: Optional[Console] = None, layers: int = 0) -> None:
    from rich.console import Console

    console = console or Console()
    for t in npu_tables(npu, layers):
        console.print(t)


def npu_summary(npu: NpuCompile) -> None:
    """The build's NPU line (stderr): placement, and each CPU fallback with its reason and usual fix."""
    from edgepack.ui import note

    p = npu.placement
    est = f", est. {npu.est_inference_ms:.3f} ms/inference (vela)" if npu.est_inference_ms is not None else ""
    if p.cpu_ops and est:
        est = f", est. {npu.est_inference_ms:.3f} ms for the NPU part (vela; the CPU ops are not included)"
    if not p.cpu_ops:
        note(f"[green]✓[/green] {npu.accelerator}: all {p.accelerator_ops} ops on the NPU{est}")
        return
    note(
        f"[yellow]warning:[/yellow] {npu.accelerator}: {p.cpu_ops} of {p.accelerator_ops + p.cpu_ops} ops fall "
        f"back to the CPU ({npu.npu_percent:.1f}% NPU){est}"
    )
    for o in p.ops:
        if o.cpu:
            note(f"  CPU: {safe(o.op_type)} ×{o.cpu} — {safe(_reasons(o.reasons))}")
    for h in npu.hints:
        note(f"  fix: {safe(h)}")
    note("  (--npu-strict makes any CPU fallback an error)")


def results_markdown(records: list[BenchRecord], top: int = 10) -> str:
    """Placement and per-op timing sections for bench records that have them ("" when none has)."""
    parts = []
    for r in records:
        body = (
            placement_markdown(r) + ("\n" if as_placement(r) and as_op_timing(r) else "") + op_timing_markdown(r, top)
        )
        if body:
            parts.append(f"#### {r.key}\n\n{body}")
    return ("\n" + "\n".join(parts)) if parts else ""


def print_result(result: Any, console: Optional[Console] = None, top: int = 10, title: str = "") -> None:
    """Placement and per-op timing of one runner result (bench)."""
    from rich.console import Console

    console = console or Console()
    p = as_placement(result)
    prefix = f"{safe(title)}: " if title else ""
    if p is not None:
        console.print(placement_table(p, title=f"{prefix}op placement — {safe(headline(p))}"))
        for n in p.notes:
            console.print(f"[yellow]note:[/yellow] {safe(n)}")
    t = as_op_timing(result)
    if t is not None and t.top:
        table = op_timing_table(t, top)
        table.title = prefix + str(table.title)
        console.print(table)
