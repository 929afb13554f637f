"""Bench results and gate checks for people and for CI: a terminal table, Markdown (PR comments,
``$GITHUB_STEP_SUMMARY``), JSON, JUnit XML and a self-contained HTML page (:mod:`edgepack.report_html`).

``bench`` and ``report`` render through the same functions: a :class:`edgepack.types.Report` holds the
records (one bundle on one device each), the baseline records if any, the settings and the checks.
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Optional
from xml.etree import ElementTree as ET

from pydantic import ValidationError

from edgepack import __version__
from edgepack.errors import UsageError
from edgepack.gate import GateSettings, evaluate, fingerprint
from edgepack.report_rows import (
    _NUMERIC,
    COLUMNS,
    DEVICE_COLUMNS,
    ICON,
    _baseline_of,
    device_rows,
    notes,
    row,
    summary_line,
)
from edgepack.types import BenchFailure, BenchRecord, Check, Report
from edgepack.ui import note, printable, safe

if TYPE_CHECKING:
    from rich.table import Table

BENCH_SCHEMA = "edgepack.bench/1"
REPORT_SCHEMA = "edgepack.report/1"


# --------------------------------------------------------------------------- building a report


def load_records(path: Path) -> list[BenchRecord]:
    """Records from a ``bench --json`` file or a saved report/baseline."""
    return load_results(path)[0]


def load_results(path: Path) -> tuple[list[BenchRecord], list[BenchFailure]]:
    """Records and failures (a multi-device bench's unmeasured bundle x device pairs, and the pairs still
    ``pending`` in a file whose bench was stopped) from a ``bench --json`` file or a saved report."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file", "pass the JSON written by edgepack bench --json or report")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not JSON ({e})", "pass the JSON written by edgepack bench --json or report")
    schema: Any = data.get("schema") if isinstance(data, dict) else None
    key = {BENCH_SCHEMA: "results", REPORT_SCHEMA: "records"}.get(schema)
    if key is None:
        raise UsageError(
            f"{path}: schema {schema!r} is not {BENCH_SCHEMA} or {REPORT_SCHEMA}",
            "pass the JSON written by edgepack bench --json, or a baseline from report --save-baseline",
        )
    try:
        records = [BenchRecord.model_validate(r) for r in data.get(key) or []]
        failures = [BenchFailure.model_validate(f) for f in data.get("failures") or []]
        for p in data.get("pending") or []:
            failures.append(
                BenchFailure.model_validate(
                    {
                        **p,
                        "status": "interrupted",
                        "message": "not measured: the bench writing this file stopped before it",
                        "hint": "run that bench again",
                    }
                )
            )
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(
            f"{path}: entry field {where}: {first['msg']}",
            "regenerate it with this edgepack version (edgepack bench --json)",
        )
    return records, failures


def merge(paths: list[Path]) -> list[BenchRecord]:
    return merge_results(paths)[0]


def merge_results(paths: list[Path]) -> tuple[list[BenchRecord], list[BenchFailure]]:
    """Several files' records (shards of one bench, several devices' files) as one set: a bundle x device
    that appears twice with the same measurement (the same file passed twice, overlapping artifacts) is kept
    once; with two different measurements it is an error. A failure is dropped when another file measured
    that bundle x device (a re-run shard), and kept once otherwise."""
    records: dict[str, BenchRecord] = {}
    seen: dict[str, Path] = {}
    failures: dict[str, BenchFailure] = {}
    for p in paths:
        recs, fails = load_results(p)
        for r in recs:
            if r.key in records:
                if r.model_dump(mode="json") == records[r.key].model_dump(mode="json"):
                    note(safe(f"edgepack: note: {r.key} is in {seen[r.key]} and {p} with the same result: kept once"))
                    continue
                raise UsageError(
                    f"{r.key} appears twice with different results ({seen[r.key]} and {p})",
                    "pass each bundle x device once (bench --repeat R gives one entry more windows)",
                )
            seen[r.key] = p
            records[r.key] = r
        for f in fails:
            failures.setdefault(f.key, f)
    if not records and not failures:
        raise UsageError("no results in " + ", ".join(str(p) for p in paths), "run edgepack bench --json first")
    return list(records.values()), [f for k, f in failures.items() if k not in records]


def make_report(
    records: list[BenchRecord],
    baseline: Optional[list[BenchRecord]] = None,
    settings: Optional[GateSettings] = None,
    failures: Collection[BenchFailure] = (),
) -> Report:
    settings = settings or GateSettings()
    checks = evaluate(records, baseline, settings) + [
        Check(entry=f.key, name="run", status="fail", message=f"{f.status}: {f.message}") for f in failures
    ]
    return Report(
        created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        edgepack=__version__,
        records=records,
        baseline=baseline,
        settings=settings.recorded(),
        checks=checks,
        failures=list(failures),
    )


def table(rep: Report) -> Table:
    """A rich table for the terminal."""
    from rich.table import Table

    base = _baseline_of(rep)
    t = Table(title="edgepack " + ("report" if rep.baseline is not None else "bench"), show_lines=False)
    t.add_column("bundle")
    for c in COLUMNS:
        t.add_column(c, justify="right" if c in _NUMERIC else "left")
    for rec in rep.records:
        t.add_row(*(safe(x) for x in [rec.bundle, *row(rec, base.get(rec.key))]))
    return t


def checks_table(rep: Report) -> Table:
    from rich.table import Table

    t = Table(title=summary_line(rep), title_justify="left")
    for c in ("", "bundle @ device", "check", "result"):
        t.add_column(c)
    for chk in rep.checks:  # not `c`, the column names' loop variable (a str)
        t.add_row(ICON[chk.status], safe(chk.entry), safe(chk.name), safe(chk.message))
    return t


def _md_cell(text: str) -> str:
    """A table cell of Markdown for a PR comment: names come from result files, so no HTML (<img>, <a>)
    and no control characters get through."""
    return printable(str(text).replace("\n", " ")).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _md_table(header: list[str], rows: list[list[str]], numeric: Collection[str] = ()) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if h in numeric else "---" for h in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return lines


def markdown(rep: Report, top: int = 10) -> str:
    base = _baseline_of(rep)
    title = "edgepack report" if rep.baseline is not None else "edgepack bench"
    lines = [f"### {title}: {summary_line(rep)}", ""]
    lines += _md_table(["bundle"] + COLUMNS, [[r.bundle] + row(r, base.get(r.key)) for r in rep.records], _NUMERIC)
    lines += ["", "#### Checks", ""]
    lines += _md_table(
        ["", "bundle @ device", "check", "result"], [[ICON[c.status], c.entry, c.name, c.message] for c in rep.checks]
    )
    lines += ["", "#### Devices", ""]
    lines += _md_table(DEVICE_COLUMNS, device_rows(rep))
    lines += [""] + [f"_{n}_" for n in notes(rep)]
    from edgepack.placement_view import results_markdown
    from edgepack.sustained import markdown as sustained_markdown

    return "\n".join(lines) + "\n" + sustained_markdown(rep.records) + results_markdown(rep.records, top)


def to_json(rep: Report) -> str:
    return json.dumps(rep.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True, allow_nan=False) + "\n"


def bench_json(
    records: list[BenchRecord], failures: Collection[BenchFailure] = (), pending: Collection[tuple[str, str]] = ()
) -> str:
    """``bench --json``: the records (``edgepack.bench/1``); a multi-device bench adds ``failures`` (what it
    could not measure, and why) and, while it runs, ``pending`` (bundle x device pairs not finished yet)."""
    doc: dict[str, Any] = {
        "schema": BENCH_SCHEMA,
        "results": [r.model_dump(mode="json", by_alias=True) for r in records],
    }
    if failures:
        doc["failures"] = [f.model_dump(mode="json") for f in failures]
    if pending:
        doc["pending"] = [{"bundle": b, "device_spec": d} for b, d in pending]
    return (
        json.dumps(
            doc,
            indent=2,
            sort_keys=True,
            allow_nan=False,
        )
        + "\n"
    )


def junit(rep: Report) -> str:
    """JUnit XML: one testsuite per bundle x device, one testcase per check (flagged/skipped -> <skipped>)."""
    by_entry: dict[str, list[Check]] = {}
    for c in rep.checks:
        by_entry.setdefault(c.entry, []).append(c)
    records = {r.key: r for r in rep.records}
    root = ET.Element(
        "testsuites",
        name="edgepack report",
        tests=str(len(rep.checks)),
        failures=str(len(rep.failed)),
        errors="0",
        skipped=str(sum(c.status in ("skip", "flag") for c in rep.checks)),
        time="0",
    )
    host = socket.gethostname()
    for entry, checks in by_entry.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=entry,
            tests=str(len(checks)),
            failures=str(sum(c.status == "fail" for c in checks)),
            errors="0",
            skipped=str(sum(c.status in ("skip", "flag") for c in checks)),
            time="0",
            timestamp=rep.created,
            hostname=host,
        )
        rec = records.get(entry)
        if rec is not None:
            props = ET.SubElement(suite, "properties")
            facts = {
                "bundle": rec.bundle,
                "device": rec.device_spec,
                "format": rec.format,
                "quantization": rec.quantization,
                "p50_ms": f"{rec.result.latency_ms.p50:.6g}",
                **{f"device.{k}": str(v) for k, v in fingerprint(rec).items()},
            }
            for k, v in facts.items():
                ET.SubElement(props, "property", name=k, value=str(v))
        classname = "edgepack." + "".join(ch if ch.isalnum() else "_" for ch in entry)
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=classname, name=c.name, time="0")
            if c.status == "fail":
                ET.SubElement(case, "failure", message=c.message, type=c.name).text = c.message
            elif c.status in ("skip", "flag"):
                ET.SubElement(case, "skipped", message=("flagged: " if c.status == "flag" else "") + c.message)
            ET.SubElement(case, "system-out").text = c.message
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    # control characters from a result file would make the XML invalid (XML 1.0 has no escape for them)
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"


FORMATS = ("md", "json", "junit", "html")


def render(rep: Report, fmt: str, top: int = 10) -> str:
    if fmt == "md":
        return markdown(rep, top)
    if fmt == "json":
        return to_json(rep)
    if fmt == "junit":
        return junit(rep)
    if fmt == "html":
        from edgepack.report_html import html

        return html(rep, top)
    raise UsageError(f"unknown report format {fmt!r}", f"use --format with one of {', '.join(FORMATS)}")
