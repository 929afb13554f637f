"""edgepack report and the CI gate: statistics with known answers, checks, every output format parsed back,
exit codes — on real bench results of a real bundle run here."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack import report as rp
from edgepack.gate import GateSettings, evaluate, parse_fraction
from edgepack.stats import ratio_of_medians
from edgepack.types import BenchRecord
from helpers import cli, one_line_error

JUNIT_XSD = Path(__file__).parent / "data" / "junit.xsd"


# --------------------------------------------------------------------------- statistics, known answers


def _windows(rng, scale, offsets, n=300, sigma=0.05):
    """Log-normal latencies around ``scale`` ms, one window per offset (run-to-run drift)."""
    return [list(scale * off * rng.lognormal(0.0, sigma, n)) for off in offsets]


def test_a_20_percent_shift_is_detected():
    rng = np.random.default_rng(1)
    base = _windows(rng, 10.0, [1.0, 1.0, 1.0])
    cur = _windows(rng, 12.0, [1.0, 1.0, 1.0])
    ci = ratio_of_medians(base, cur)
    assert ci.ratio == pytest.approx(1.2, abs=0.02)
    assert ci.low < 1.2 < ci.high
    assert ci.beyond(1.05), ci


def test_identical_distributions_pass():
    rng = np.random.default_rng(2)
    base = _windows(rng, 10.0, [1.0, 1.0, 1.0])
    cur = _windows(rng, 10.0, [1.0, 1.0, 1.0])
    ci = ratio_of_medians(base, cur)
    assert ci.low < 1.0 < ci.high
    assert ci.within(1.05) and not ci.beyond(1.05)


def test_noisy_but_equal_pair_passes_because_windows_are_resampled():
    # Same distribution; only the run-to-run drift of each window differs. The point ratio is ~+7 %.
    rng = np.random.default_rng(3)
    base = _windows(rng, 10.0, [1.00, 0.95, 1.05])
    cur = _windows(rng, 10.0, [1.14, 0.99, 1.08])
    ci = ratio_of_medians(base, cur)
    assert ci.ratio > 1.05, "the test needs a point estimate past the limit"
    assert not ci.beyond(1.05), ci
    # Pooling everything into one window ignores the drift: the same data would be called a regression.
    pooled = ratio_of_medians([sum(base, [])], [sum(cur, [])])
    assert pooled.beyond(1.05), pooled


def test_interval_is_deterministic():
    rng = np.random.default_rng(4)
    base, cur = _windows(rng, 5.0, [1, 1]), _windows(rng, 5.5, [1, 1])
    assert ratio_of_medians(base, cur) == ratio_of_medians(base, cur)


def test_parse_fraction():
    assert parse_fraction("5%", "--x") == pytest.approx(0.05)
    assert parse_fraction("0.1", "--x") == pytest.approx(0.1)
    assert parse_fraction("off", "--x") is None
    with pytest.raises(edgepack.errors.UsageError, match="--x 'abc' is not a number"):
        parse_fraction("abc", "--x")


# --------------------------------------------------------------------------- checks on real records


@pytest.fixture(scope="module")
def measured(tiny_bundle) -> BenchRecord:
    """A real bench record of a real bundle, with 3 timing windows."""
    return edgepack.bench(tiny_bundle, "local", runs=60, warmup=2, min_seconds=0, repeat=3, cooldown=0).record()


@pytest.fixture(scope="module")
def record(measured) -> BenchRecord:
    """The real record with steady synthetic latencies (3 windows x 200, 5% spread around 1 ms): a microsecond
    model's real windows on a shared VM differ by up to 2x, too noisy for checks with known answers."""
    rng = np.random.default_rng(7)
    samples = [float(x) for x in rng.lognormal(0.0, 0.05, 600)]
    data = measured.model_dump(mode="json", by_alias=True)
    lat = data["result"]["latency_ms"]
    lat["samples"] = samples
    lat["windows"] = [
        {"n": 200, "p50": float(np.median(samples[i : i + 200])), "p90": 0.0, "mean": 0.0} for i in (0, 200, 400)
    ]
    for k, v in (
        ("min", min(samples)),
        ("p50", float(np.median(samples))),
        ("p90", float(np.percentile(samples, 90))),
        ("p99", float(np.percentile(samples, 99))),
        ("mean", float(np.mean(samples))),
        ("std", float(np.std(samples))),
    ):
        lat[k] = v
    return BenchRecord.model_validate(data)


def _scaled(rec: BenchRecord, factor: float, **changes) -> BenchRecord:
    """The same record with every latency sample multiplied by ``factor`` (a synthetic regression)."""
    data = rec.model_dump(mode="json", by_alias=True)
    lat = data["result"]["latency_ms"]
    lat["samples"] = [x * factor for x in lat["samples"]]
    for k in ("min", "p50", "p90", "p99", "mean", "std"):
        lat[k] *= factor
    for w in lat["windows"] or []:
        for k in ("p50", "p90", "mean"):
            w[k] *= factor
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return BenchRecord.model_validate(data)


def test_repeat_gives_windows(measured):
    lat = measured.result.latency_ms
    assert measured.result.settings["repeat"] == 3
    assert [w.n for w in lat.windows] and sum(w.n for w in lat.windows) == len(lat.samples)
    assert len(measured.result.latency_ms.window_samples()) == 3
    # the real record goes through the gate against itself
    assert all(c.status == "pass" for c in evaluate([measured], [measured], GateSettings()))


def _by_name(checks):
    return {c.name: c for c in checks}


def test_same_record_passes_every_check(record):
    checks = _by_name(evaluate([record], [record], GateSettings()))
    assert set(checks) == {"agreement", "latency", "accuracy", "size"}
    assert all(c.status == "pass" for c in checks.values()), checks
    assert checks["latency"].interval[0] <= 1.0 <= checks["latency"].interval[1]


def test_slower_bigger_less_accurate_fails(record):
    worse = _scaled(
        record,
        1.5,
        bundle_bytes=int(record.bundle_bytes * 1.2),
        **{"result.accuracy.top1": record.result.accuracy.top1 - 0.05},
    )
    checks = _by_name(evaluate([worse], [record], GateSettings()))
    assert checks["latency"].status == "fail" and checks["latency"].interval[0] > 1.05
    assert checks["size"].status == "fail" and "+20.0%" in checks["size"].message
    assert checks["accuracy"].status == "fail" and "-5.00 points" in checks["accuracy"].message
    # the same changes inside generous limits pass
    loose = GateSettings(max_latency_regression=0.8, max_size_growth=0.25, max_accuracy_drop=6)
    assert all(c.status == "pass" for c in evaluate([worse], [record], loose))
    # and switched off, the relative checks are absent
    off = GateSettings(max_latency_regression=None, max_size_growth=None, max_accuracy_drop=None)
    assert {c.name for c in evaluate([worse], [record], off)} == {"agreement"}


def test_faster_is_not_a_regression(record):
    checks = _by_name(evaluate([_scaled(record, 0.7)], [record], GateSettings()))
    assert checks["latency"].status == "pass" and checks["latency"].value < 0.8


def test_different_device_is_flagged_not_compared(record):
    other = _scaled(record, 2.0, **{"result.device.machine": "aarch64"})
    checks = _by_name(evaluate([other], [record], GateSettings()))
    assert checks["latency"].status == "flag"
    assert "different device" in checks["latency"].message and "'x86_64' -> 'aarch64'" in checks["latency"].message
    strict = _by_name(evaluate([other], [record], GateSettings(strict_device=True)))
    assert strict["latency"].status == "fail"


def test_ceilings_and_floors(record):
    p90 = record.result.latency_ms.p90
    checks = evaluate([record], None, GateSettings(max_p90_ms=p90 * 0.5, max_p50_ms=p90 * 100, min_accuracy=101))
    by = _by_name(checks)
    assert by["p90-ceiling"].status == "fail" and by["p50-ceiling"].status == "pass"
    assert by["accuracy-floor"].status == "fail"
    assert "latency" not in by, "no baseline, no relative checks"


def test_new_and_missing_entries(record):
    renamed = record.model_copy(update={"bundle": "other.edgepack"})
    checks = evaluate([renamed], [record], GateSettings())
    assert [(c.entry, c.name, c.status) for c in checks if c.name == "baseline"] == [
        ("other.edgepack @ local", "baseline", "skip"),
        (record.key, "baseline", "flag"),
    ]


def test_disagreeing_device_output_fails_agreement(record):
    bad = record.model_copy(update={"min_cosine": 1.5})
    assert _by_name(evaluate([bad], None, GateSettings()))["agreement"].status == "fail"


# --------------------------------------------------------------------------- formats, parsed back


@pytest.fixture(scope="module")
def files(tmp_path_factory, record):
    d = tmp_path_factory.mktemp("report")
    base = d / "bench-base.json"
    base.write_text(rp.bench_json([record]))
    slow = d / "bench-slow.json"
    slow.write_text(rp.bench_json([_scaled(record, 1.5)]))
    same = d / "bench-same.json"
    same.write_text(rp.bench_json([_scaled(record, 1.0)]))
    return d, base, slow, same


def test_cli_gate_exit_codes_and_baseline(files):
    d, base, slow, same = files
    baseline = d / "baseline.json"
    p = cli("report", str(base), "--save-baseline", str(baseline), "-o", str(d / "r0.md"))
    assert p.returncode == 0, p.stderr
    assert json.loads(baseline.read_text())["schema"] == "edgepack.report/1"
    ok = cli("report", str(same), "--baseline", str(baseline), "--format", "json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert {c["name"] for c in data["checks"]} == {"agreement", "latency", "accuracy", "size"}
    bad = cli("report", str(slow), "--baseline", str(baseline), "--max-latency-regression", "5%")
    assert bad.returncode == 1
    assert "❌ 1 of 4 checks failed" in bad.stdout
    loose = cli("report", str(slow), "--baseline", str(baseline), "--max-latency-regression", "80%")
    assert loose.returncode == 0, loose.stdout


def test_markdown_tables_are_well_formed(files):
    d, base, slow, _ = files
    text = cli("report", str(slow), "--baseline", str(base)).stdout
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 3  # results, checks, devices
    for t in tables:
        widths = {len(re.findall(r"(?<!\\)\|", ln)) for ln in t}
        assert len(widths) == 1, t
        assert re.fullmatch(r"\|(-+:?\|)+", t[1].replace("---:", "---")), t[1]
    assert "▲ +50.0%" in tables[0][2]
    assert any("❌" in ln and "latency" in ln for ln in tables[1])


def test_junit_validates_and_counts(files, tmp_path):
    from xml.etree import ElementTree as ET

    import xmlschema

    d, base, slow, _ = files
    out = tmp_path / "junit.xml"
    p = cli("report", str(slow), "--baseline", str(base), "--format", "junit", "-o", str(out))
    assert p.returncode == 1
    xmlschema.XMLSchema(str(JUNIT_XSD)).validate(str(out))
    root = ET.parse(out).getroot()
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["agreement", "latency", "accuracy", "size"]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["latency"] and root.get("failures") == "1"
    # a broken document is caught by the same schema
    broken = out.read_text().replace('failures="1"', 'failures="one"', 1)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        xmlschema.XMLSchema(str(JUNIT_XSD)).validate(broken)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "table":
            self.tables += 1

    def handle_data(self, data):
        self.text.append(data)


def test_html_charts_render(files, tmp_path):
    import io

    import matplotlib.image as mpimg

    d, base, slow, _ = files
    out = tmp_path / "report.html"
    p = cli("report", str(slow), "--baseline", str(base), "--format", "html", "-o", str(out))
    assert p.returncode == 1
    page = _Page()
    page.feed(out.read_text())
    assert page.tables >= 3 and "checks failed" in "".join(page.text)
    assert {i["alt"] for i in page.images} == {"latency vs baseline", "latency distribution"}
    assert "http" not in out.read_text().split("<body>")[1], "self-contained: no external resources"
    for img in page.images:
        raw = base64.b64decode(img["src"].split("base64,", 1)[1])
        pixels = mpimg.imread(io.BytesIO(raw), format="png")
        h, w = pixels.shape[:2]
        assert w >= 400 and h >= 100
        # a real chart: many distinct colours, not a blank canvas
        flat = (pixels[..., :3] * 255).astype(int).reshape(-1, 3)
        assert len(np.unique(flat, axis=0)) > 20
        assert (flat.sum(axis=1) < 600).mean() > 0.01  # some non-white ink


def test_bad_inputs_are_one_line_errors(files, tmp_path):
    d, base, _, _ = files
    out = tmp_path / "x.md"
    line = one_line_error(cli("report", str(tmp_path / "missing.json"), "-o", str(out)))
    assert "no such file" in line
    junk = tmp_path / "junk.json"
    junk.write_text('{"schema": "something/1"}')
    p = cli("report", str(junk))
    assert p.returncode == 2 and "is not edgepack.bench/1" in one_line_error(p)
    p = cli("report", str(base), "--format", "pdf")
    assert p.returncode == 2 and "unknown report format" in one_line_error(p)
    p = cli("report", str(base), "--baseline", str(base), "--max-latency-regression", "lots")
    assert p.returncode == 2 and "is not a number" in one_line_error(p)
    p = cli("report", str(base), str(base))  # the same results twice (overlapping shard artifacts): kept once
    assert p.returncode == 0 and "with the same result: kept once" in " ".join(p.stderr.split())
    assert not out.exists()


def test_bench_markdown_and_json_roundtrip(tiny_bundle, tmp_path):
    js, md = tmp_path / "b.json", tmp_path / "b.md"
    p = cli(
        "bench",
        str(tiny_bundle),
        "--runs",
        "5",
        "--min-seconds",
        "0",
        "--repeat",
        "2",
        "--cooldown",
        "0",
        "--json",
        str(js),
        "--markdown",
        str(md),
    )
    assert p.returncode == 0, p.stderr
    recs = rp.load_records(js)
    assert len(recs) == 1 and len(recs[0].result.latency_ms.windows) == 2
    assert md.read_text().startswith("### edgepack bench: ✅")
    assert oct(js.stat().st_mode & 0o777) != "0o600"
    # the bench JSON is a valid report input as it is
    assert cli("report", str(js), "--format", "junit").returncode == 0


@pytest.mark.slow
def test_ci_recipe_records_then_gates(tmp_path):
    """samples/ci/gate.sh as CI runs it: no baseline -> records one; a baseline 4x faster -> exit 1 with a
    JUnit failure and the Markdown appended to $GITHUB_STEP_SUMMARY."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out, baseline, summary = tmp_path / "ci", tmp_path / "baseline.json", tmp_path / "summary.md"
    env = {
        **os.environ,
        "EDGEPACK": str(Path(sys.executable).parent / "edgepack"),
        "OUT": str(out),
        "BASELINE": str(baseline),
        "REPEAT": "2",
        "GITHUB_STEP_SUMMARY": str(summary),
    }

    def gate():
        return subprocess.run(
            ["bash", str(repo / "samples" / "ci" / "gate.sh")],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    first = gate()
    assert first.returncode == 0, first.stderr
    assert "recorded one" in first.stdout and baseline.is_file() and not summary.exists()
    data = json.loads(baseline.read_text())
    for r in data["records"]:
        lat = r["result"]["latency_ms"]
        lat["samples"] = [x * 0.25 for x in lat["samples"]]  # 4x: beyond the window-to-window noise of a VM
        lat["p50"] *= 0.25
    baseline.write_text(json.dumps(data))
    second = gate()
    assert second.returncode == 1, second.stdout + second.stderr
    from xml.etree import ElementTree as ET

    failures = ET.parse(out / "report.junit.xml").getroot().findall(".//failure")
    assert len(failures) == 2 and all(f.get("type") == "latency" for f in failures)
    assert summary.read_text().startswith("### edgepack report: ❌ 2 of 8 checks failed")
    assert (out / "report.html").stat().st_size > 10_000


def test_report_shows_placement_and_op_timing(tiny_bundle, tmp_path):
    """Placement and per-op time from the runner appear in the report's Markdown and HTML as in bench's."""
    rec = edgepack.bench(tiny_bundle, "local", runs=3, min_seconds=0, profile=True).record()
    assert rec.result.placement is not None and rec.result.op_timing is not None
    rep = rp.make_report([rec])
    md = rp.markdown(rep, top=3)
    assert f"#### {rec.key}" in md and "**Op placement**" in md and "**Per-op time** (top 3" in md
    page = rp.render(rep, "html", top=3)
    assert "Op placement and per-op time" in page and "CPUExecutionProvider" in page
