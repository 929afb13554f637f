"""The quantization debugger's table: each quantized layer's error against float, most sensitive first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from edgepack.types import QuantizationInfo
from edgepack.ui import console, safe

if TYPE_CHECKING:
    from rich.table import Table


def sensitivity_table(q: QuantizationInfo, top: Optional[int] = 15) -> Table:
    from rich.table import Table

    rows = q.sensitivity or []
    kept = len(q.kept_float or [])
    title = f"quantization sensitivity ({q.mode}): {len(rows)} quantized layers, most sensitive first"
    if q.kept_float is not None:
        title += f"; {kept} kept in float"
    t = Table(title=title, title_justify="left")
    for col, justify in (
        ("#", "right"),
        ("layer", "left"),
        ("op", "left"),
        ("loss dB", "right"),
        ("out SQNR dB", "right"),
        ("in SQNR dB", "right"),
        ("cosine", "right"),
        ("", "left"),
    ):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]  # rich's Literal
    shown = rows if top is None else rows[: max(top, kept)]
    for i, r in enumerate(shown, 1):
        t.add_row(
            str(i),
            safe(r.name),
            safe(r.op_type),
            f"{r.loss_db:.1f}",
            f"{r.sqnr_db:.1f}",
            f"{r.input_sqnr_db:.1f}",
            f"{r.cosine:.5f}",
            "[yellow]float[/yellow]" if r.kept_float else "",
        )
    if len(shown) < len(rows):
        t.caption = f"{len(rows) - len(shown)} more in manifest.json quantization.sensitivity"
    return t


def print_sensitivity(q: QuantizationInfo) -> None:
    from edgepack.ui import _quiet

    if q.sensitivity is None or _quiet:
        return
    console.print(sensitivity_table(q))
