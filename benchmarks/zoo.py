"""The model-zoo matrix (issue 11): every zoo model × target × precision, each built in a fresh process.

For each case: pass (validation passed, or pending-device for CoreML on Linux) / expected refusal (documented in
samples/zoo/models.py) / refused (undocumented EdgepackError) / crash / timeout, with build seconds, bundle size,
the lowest cosine over the outputs, and the route the manifest records (when it records one).

    python benchmarks/zoo.py                                   # the whole matrix (~1 h on 2 cores)
    python benchmarks/zoo.py --models bert,vit --targets tflite --precisions none,dynamic
    python benchmarks/zoo.py --table-only                      # regenerate the table from zoo-results.json

Results are merged into benchmarks/zoo-results.json (a rerun of a subset replaces only those cases) and the
Markdown table is written between ``<!-- zoo:begin -->`` and ``<!-- zoo:end -->`` in ``--readme`` (markers are
added at the end of its "## Benchmarks" section when missing). Not a test: tests/test_zoo.py asserts outcomes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "samples" / "zoo"))

from runner import run_isolated  # noqa: E402

from models import TARGETS, ZOO  # noqa: E402

RESULTS = REPO / "benchmarks" / "zoo-results.json"
BEGIN, END = "<!-- zoo:begin -->", "<!-- zoo:end -->"
ORDER = {"pass": 0, "expected": 1, "refused": 2, "crash": 3, "timeout": 4}


def key(r: dict) -> str:
    return f"{r['model']}/{r['target']}/{r['precision']}"


def load(path: Path) -> dict:
    if path.is_file():
        return {key(r): r for r in json.loads(path.read_text()).get("results", [])}
    return {}


def save(path: Path, results: dict) -> None:
    order = {n: i for i, n in enumerate(ZOO)}
    rows = sorted(
        results.values(),
        key=lambda r: (
            order.get(r["model"], 999),
            TARGETS.index(r["target"]) if r["target"] in TARGETS else 9,
            r["precision"],
        ),
    )
    doc = {
        "schema": "edgepack.zoo-results/1",
        "updated": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"machine": platform.machine(), "python": platform.python_version()},
        "results": rows,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)


def reclassify(r: dict) -> dict:
    """Outcome against the refusals documented *now* (results may predate an update of models.py)."""
    m = ZOO.get(r["model"])
    refusal = m.refusal(r["target"], r["precision"]) if m else None
    r = dict(r, expected_refusal=refusal.why if refusal else None)
    if r["outcome"] in ("expected", "refused") and r.get("error_type"):
        r["outcome"] = "expected" if refusal and refusal.matches(r.get("message") or "") else "refused"
    if r["outcome"] == "pass":
        r["unexpected_pass"] = bool(refusal)
    return r


def _size(b) -> str:
    if not b:
        return ""
    return f"{b / 2**20:.2f} MB" if b >= 2**20 else f"{b / 2**10:.0f} kB"


def _cell(r: dict) -> str:
    o = r["outcome"]
    if o == "pass":
        text = "pass" if r.get("validation") == "passed" else f"pass ({r.get('validation')})"
        return text + (" ⚠ documented as refused" if r.get("unexpected_pass") else "")
    msg = (r.get("message") or "").replace("|", "\\|")
    if len(msg) > 140:
        msg = msg[:139] + "…"
    if o == "expected":
        return f"refused (expected): {msg}"
    return f"**{o.upper()}**: {msg}"


def table(results: dict) -> str:
    rows = [
        "| model | family | route | precision | outcome | build s | size | min cosine |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    results = {k: reclassify(r) for k, r in results.items()}
    order = {n: i for i, n in enumerate(ZOO)}
    prec_order = {p: i for i, p in enumerate(("none", "fp16", "dynamic", "int8"))}
    for r in sorted(
        results.values(),
        key=lambda r: (order.get(r["model"], 999), TARGETS.index(r["target"]), prec_order.get(r["precision"], 9)),
    ):
        m = ZOO.get(r["model"])
        route = f"{m.framework if m else '?'} → {r['target']}"
        if r.get("route"):
            failed = [f.split(" failed")[0] for f in r.get("fallback") or []]
            route += f" `{r['route']}`" + (f" (after {', '.join(failed)} failed)" if failed else "")
        cos = f"{r['cosine']:.6f}" if isinstance(r.get("cosine"), (int, float)) else ""
        secs = f"{r['seconds']:.1f}" if isinstance(r.get("seconds"), (int, float)) else ""
        rows.append(
            f"| {r['model']} | {r.get('family', m.family if m else '')} | {route} | {r['precision']} | "
            f"{_cell(r)} | {secs} | {_size(r.get('bytes'))} | {cos} |"
        )
    counts: dict[str, int] = {}
    results = {k: reclassify(r) for k, r in results.items()}
    for r in results.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    summary = ", ".join(f"{counts[k]} {k}" for k in sorted(counts, key=lambda k: ORDER.get(k, 9)))
    total = sum(r.get("wall_seconds") or r.get("seconds") or 0 for r in results.values())
    head = (
        f"Model zoo matrix (`benchmarks/zoo.py`, {len(results)} cases: {summary}; "
        f"{total / 60:.0f} min of builds on 2 cores). *build s* is `edgepack.build` alone (no interpreter "
        "start); *size* the bundle; *min cosine* the lowest over outputs (CoreML on Linux: not run, "
        "checked statically). Models are random-weight, small configs (`samples/zoo/models.py`)."
    )
    return head + "\n\n" + "\n".join(rows)


def update_readme(readme: Path, text: str) -> None:
    doc = readme.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        a, b = doc.index(BEGIN), doc.index(END) + len(END)
        doc = doc[:a] + block + doc[b:]
    else:
        head = "## Benchmarks"
        i = doc.find("\n" + head)
        if i < 0:
            doc = doc.rstrip("\n") + f"\n\n{head}\n\n{block}\n"
        else:
            nxt = doc.find("\n## ", i + len(head) + 1)
            nxt = len(doc) if nxt < 0 else nxt
            doc = doc[:nxt].rstrip("\n") + f"\n\n{block}\n" + doc[nxt:]
    tmp = readme.with_suffix(".zoo.tmp")
    tmp.write_text(doc)
    tmp.replace(readme)


def status_md(results: dict, running: str = "") -> str:
    lines = [
        "# Model zoo matrix on the current code (benchmarks/zoo.py, in progress)"
        if running
        else "# Model zoo matrix on the current code (benchmarks/zoo.py)",
        "",
    ]
    if running:
        lines += [f"Running now: {running}", ""]
    lines.append(table(results))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated zoo names (default: all)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--precisions", help="comma-separated (default: none,fp16,int8 + each model's extras)")
    ap.add_argument("--jobs", type=int, default=1, help="cases at once (default 1: conversions use all cores)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per case")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--readme", type=Path, default=REPO / "README.md", help="file whose zoo table is regenerated")
    ap.add_argument("--no-readme", action="store_true", help="do not touch the readme")
    ap.add_argument("--status", type=Path, help="also rewrite this Markdown file after every case")
    ap.add_argument("--table-only", action="store_true", help="regenerate the table from --results, build nothing")
    ap.add_argument("--skip-done", action="store_true", help="skip cases already in --results")
    args = ap.parse_args(argv)

    results = load(args.results)
    if not args.table_only:
        names = args.models.split(",") if args.models else list(ZOO)
        unknown = [n for n in names if n not in ZOO]
        if unknown:
            ap.error(f"unknown models {unknown}; known: {', '.join(ZOO)}")
        targets = args.targets.split(",")
        precisions = args.precisions.split(",") if args.precisions else None
        cases = [(n, t, p) for n in names for t, p in ZOO[n].cases(targets, precisions)]
        if args.skip_done:
            cases = [c for c in cases if "/".join(c) not in results]
        print(f"{len(cases)} cases, {args.jobs} at a time, timeout {args.timeout:.0f} s", flush=True)

        def one(case):
            if args.status:
                args.status.write_text(status_md(results, running="/".join(case)))
            t0 = time.time()
            r = run_isolated(*case, timeout=args.timeout)
            results[key(r)] = r
            save(args.results, results)
            if args.status:
                args.status.write_text(status_md(results))
            print(
                f"{'/'.join(case):45} {r['outcome']:9} {time.time() - t0:6.1f} s  {(r.get('message') or '')[:90]}",
                flush=True,
            )
            return r

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, cases))
    text = table(results)
    if not args.no_readme:
        update_readme(args.readme, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
