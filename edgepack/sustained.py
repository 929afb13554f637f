"""``bench --sustained`` and ``--cpus`` on the host: the duration, the settings check, the runner's progress
relayed to the terminal, and the views of a sustained result (terminal, Markdown, HTML chart, a report check).

The runner does the measuring (``device_runners/runner_common/sustained.py``): back-to-back windows, the clocks,
temperatures and throttling flags after each, the cold vs sustained p50 and the verdict. Its result is
``RunResult.sustained`` (:class:`edgepack.types.Sustained`).
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from edgepack.errors import UsageError
from edgepack.types import BenchOptions, BenchRecord, Check, Sustained

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

PROGRESS_PREFIX = "edgepack-runner: progress "  # runner_common.cli.PROGRESS_PREFIX
MAX_SECONDS = 24 * 3600.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


def parse_duration(value: Union[float, int, str, None], option: str = "--sustained") -> float:
    """``2m``, ``30s``, ``1m30s``, ``1.5m``, ``1h``, ``500ms`` or a bare number of seconds -> seconds (0 = off)."""
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if text in ("", "off", "0"):
            return 0.0
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise UsageError(
                    f"{option} {value!r} is not a duration", f"write it like {option} 2m, {option} 30s or 1m30s"
                )
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_SECONDS:
        raise UsageError(f"{option} {value!r} is out of range", f"use a duration between 0 and 24h, e.g. {option} 2m")
    return seconds


def check_settings(o: BenchOptions) -> BenchOptions:
    """Normalize and check the sustained/pinning settings before anything connects; returns the options with
    ``sustained`` in seconds."""
    import dataclasses

    from edgepack.device_runners.runner_common import sustained as runner_sustained

    seconds = parse_duration(o.sustained)
    o = dataclasses.replace(o, sustained=seconds)
    for option, value in (("--sustained-window", o.sustained_window), ("--drift-tolerance", o.drift_tolerance)):
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"{option} {value} is out of range", f"pass {option} as a finite number >= 0")
    if o.drift_tolerance > 1:
        raise UsageError(
            f"--drift-tolerance {o.drift_tolerance:g} is more than 100%", "write it like --drift-tolerance 5%"
        )
    if o.cpus is not None and not re.fullmatch(r"\s*(big|little|all|\d+(-\d+)?(\s*,\s*\d+(-\d+)?)*)\s*", o.cpus):
        raise UsageError(
            f"--cpus {o.cpus!r} is not a core list or big/little/all",
            "write it like --cpus 4-7, --cpus 0,2, --cpus big or --cpus little",
        )
    if not seconds:
        if o.sustained_window:
            raise UsageError("--sustained-window needs --sustained", "add --sustained 2m (or drop --sustained-window)")
        return o
    if o.repeat > 1:
        raise UsageError(
            "--sustained makes its own back-to-back windows; --repeat does not apply",
            "drop --repeat (or --sustained)",
        )
    n, window = runner_sustained.window_seconds(seconds, o.sustained_window)
    if n < runner_sustained.MIN_WINDOWS:
        raise UsageError(
            f"--sustained {seconds:g}s gives {n} window(s) of {window:g}s; a verdict needs at least "
            f"{runner_sustained.MIN_WINDOWS}",
            "lengthen --sustained or shorten --sustained-window",
        )
    return o


# --------------------------------------------------------------------------- progress


def describe(state: dict[str, Any]) -> str:
    """One progress line: ``34/120 s, window 7/24, p50 1.23 ms, 61.2 °C, 1800 MHz``."""
    total = float(state.get("total_s") or 0)
    elapsed = float(state.get("elapsed_s") or 0)
    digits = 0 if total >= 20 else 1
    text = (
        f"{elapsed:.{digits}f}/{total:.{digits}f} s, window {state.get('window')}/{state.get('windows')}, "
        f"p50 {float(state.get('p50_ms') or 0):.4g} ms"
    )
    if state.get("temperature_c") is not None:
        text += f", {float(state['temperature_c']):.1f} °C"
    if state.get("freq_mhz") is not None:
        text += f", {float(state['freq_mhz']):.0f} MHz"
    if state.get("throttled"):
        from edgepack.device_runners.runner_common.sustained import NOW_MASK, flag_names

        now = flag_names(int(state["throttled"]) & NOW_MASK)
        if now:
            text += f", THROTTLED ({', '.join(now)})"
    return text


class Relay:
    """Turns the runner's progress lines (stderr) into the step's spinner text; without a terminal (CI logs), a
    plain line at most every 10% of the run."""

    def __init__(self, update: Callable[[str], None], what: str):
        from edgepack import ui

        self.update, self.what = update, what
        self.terminal = ui.console.is_terminal
        self.printed = -1

    def __call__(self, line: str) -> None:
        if not line.startswith(PROGRESS_PREFIX):
            return
        try:
            state = json.loads(line[len(PROGRESS_PREFIX) :])
        except ValueError:
            return
        if not isinstance(state, dict):
            return
        text = describe(state)
        if self.terminal:
            self.update(f"{self.what}: {text}")
            return
        total = float(state.get("total_s") or 0) or 1.0
        tenth = int(10 * float(state.get("elapsed_s") or 0) / total)
        if tenth > self.printed:
            from edgepack.ui import note, safe

            self.printed = tenth
            note(f"  {safe(text)}")


def without_progress(stderr: str) -> str:
    """A runner's stderr without its progress lines (they are not errors: error tails leave them out)."""
    return "\n".join(ln for ln in stderr.splitlines() if not ln.startswith(PROGRESS_PREFIX))


# --------------------------------------------------------------------------- views


def _ms(x: float) -> str:
    return f"{x:.4g} ms"


def _records(records: Sequence[BenchRecord]) -> list[tuple[BenchRecord, Sustained]]:
    return [(r, r.result.sustained) for r in records if r.result.sustained is not None]


def _clock(s: Sustained) -> str:
    freqs = [sum(w.freq_mhz.values()) / len(w.freq_mhz) for w in s.windows if w.freq_mhz]
    if not freqs:
        return "–"
    return f"{freqs[0]:.0f}→{freqs[-1]:.0f} MHz (min {min(freqs):.0f})"


def _temp(s: Sustained) -> str:
    temps = [w.temperature_c for w in s.windows if w.temperature_c is not None]
    if not temps:
        return "–"
    return f"{temps[0]:.1f}→{temps[-1]:.1f} °C (max {max(temps):.1f})"


COLUMNS = ["bundle @ device", "windows", "cold p50", "sustained p50", "ratio", "verdict", "temp", "clock", "flags"]


def row(rec: BenchRecord, s: Sustained) -> list[str]:
    return [
        rec.key,
        f"{len(s.windows)} × {s.window_s:.3g}s",
        _ms(s.cold_p50),
        _ms(s.sustained_p50),
        f"{s.ratio:.3f}",
        s.verdict,
        _temp(s),
        _clock(s),
        ", ".join(s.flags()) or ("–" if s.sources.get("throttling") else "not exposed"),
    ]


def markdown(records: Sequence[BenchRecord]) -> str:
    """The sustained runs as Markdown: one table row each, then each verdict's evidence ("" when none)."""
    got = _records(records)
    if not got:
        return ""
    from edgepack.report import _md_cell, _md_table

    lines = ["", "#### Sustained runs", ""]
    lines += _md_table(COLUMNS, [row(r, s) for r, s in got])
    for r, s in got:
        lines += ["", f"**{_md_cell(r.key)}: {s.verdict}** (cold p50 = first window, sustained p50 = last third)"]
        lines += [f"- {_md_cell(e)}" for e in s.evidence]
    return "\n".join(lines) + "\n"


def table(records: Sequence[BenchRecord]) -> Optional[Table]:
    from rich.table import Table

    from edgepack.ui import safe

    got = _records(records)
    if not got:
        return None
    t = Table(title="sustained runs (cold p50 = first window, sustained p50 = last third)", title_justify="left")
    for c in COLUMNS:
        t.add_column(c, justify="right" if c in ("windows", "cold p50", "sustained p50", "ratio") else "left")
    color = {"stable": "green", "throttled": "red", "drifting": "yellow"}
    for r, s in got:
        cells = [safe(c) for c in row(r, s)]
        cells[5] = f"[{color[s.verdict]}]{cells[5]}[/{color[s.verdict]}]"
        t.add_row(*cells)
    return t


def print_tables(records: Sequence[BenchRecord], console: Console) -> None:
    """The sustained table and each verdict's evidence (bench, report)."""
    from edgepack.ui import safe

    t = table(records)
    if t is None:
        return
    console.print(t)
    for r, s in _records(records):
        console.print(f"{safe(r.key)}: [bold]{s.verdict}[/bold]")
        for e in s.evidence:
            console.print(f"  {safe(e)}")


def check(entry: str, rec: BenchRecord) -> list[Check]:
    """A report check per sustained record: pass when stable, flagged (shown, not failed) when throttled or
    drifting, with the evidence."""
    s = rec.result.sustained
    if s is None:
        return []
    message = f"cold p50 {_ms(s.cold_p50)} -> sustained {_ms(s.sustained_p50)} (ratio {s.ratio:.3f}): {s.verdict}"
    if s.verdict != "stable":
        message += " — " + "; ".join(s.evidence[1:] if s.verdict == "throttled" else s.evidence[:1])
    return [
        Check(
            entry=entry,
            name="sustained",
            status="pass" if s.verdict == "stable" else "flag",
            value=s.ratio,
            limit=1 + s.tolerance,
            message=message,
        )
    ]


def chart(records: Sequence[BenchRecord]) -> Optional[str]:
    """Per sustained record, latency (window p50 and p90) and temperature over time; windows with a firmware
    throttling flag shaded. A base64 PNG, or None without sustained records."""
    got = _records(records)[:24]
    if not got:
        return None
    from edgepack.device_runners.runner_common.sustained import NOW_MASK
    from edgepack.report_html import _png, _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(len(got), 1, figsize=(9, 2.8 * len(got)), squeeze=False)
    for ax, (rec, s) in zip(axes.ravel(), got):
        t = [w.t_s for w in s.windows]
        ax.fill_between(t, [w.p50 for w in s.windows], [w.p90 for w in s.windows], color="#1f77b4", alpha=0.2)
        ax.plot(t, [w.p50 for w in s.windows], color="#1f77b4", marker=".", label="p50 (band to p90)")
        ax.set_ylabel("latency (ms)")
        ax.set_xlabel("seconds")
        lo = min(w.p50 for w in s.windows)
        ax.set_ylim(bottom=max(0.0, lo * 0.8))
        for w in s.windows:
            if w.throttled and w.throttled & NOW_MASK:
                ax.axvspan(w.t_s - w.seconds, w.t_s, color="#d62728", alpha=0.12, lw=0)
        temps = [(w.t_s, w.temperature_c) for w in s.windows if w.temperature_c is not None]
        if temps:
            tax = ax.twinx()
            tax.plot([x for x, _ in temps], [y for _, y in temps], color="#d62728", lw=1.2, label="temperature")
            tax.set_ylabel("°C", color="#d62728")
        else:
            ax.text(0.99, 0.04, "no temperature exposed", transform=ax.transAxes, ha="right", fontsize=8)
        ax.set_title(f"{rec.key}: {s.verdict}, sustained/cold p50 = {s.ratio:.3f}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Sustained runs: latency and temperature over time (red bands: firmware throttling)", fontsize=11)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def html(records: Sequence[BenchRecord]) -> str:
    """The report page's sustained section ("" without sustained records)."""
    import html as _html

    got = _records(records)
    if not got:
        return ""
    e = _html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row(r, s)) + "</tr>" for r, s in got)
    parts = [
        "<h2>Sustained runs</h2>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
    ]
    png = chart(records)
    if png:
        parts.append(f"<img alt='sustained latency and temperature' src='data:image/png;base64,{png}'>")
    for r, s in got:
        items = "".join(f"<li>{e(x)}</li>" for x in s.evidence)
        parts.append(f"<p><b>{e(r.key)}: {e(s.verdict)}</b></p><ul>{items}</ul>")
    return "".join(parts)
