"""bench --until-conclusive: the confidence sequence, the serving runner, the verdicts, the flags."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack.devices import runner_dir
from edgepack.stats import lai_radius, sequential_ratio
from helpers import chain_onnx, cli, one_line_error

# ---------------------------------------------------------------------------------------------- statistics


def test_lai_radius_is_unbounded_at_first_then_shrinks():
    assert lai_radius(1, 0.05, 0.05) == float("inf")
    assert lai_radius(3, 0.05, 0.05) == float("inf")
    finite = [lai_radius(n, 0.05, 0.05) for n in (5, 10, 20, 40, 80)]
    assert all(np.isfinite(finite)) and finite == sorted(finite, reverse=True)
    # anytime validity costs width: wider than a fixed-sample t interval (t(0.975, 19) = 2.093) at n = 20
    assert lai_radius(20, 1.0, 0.05) > 2.093 * np.sqrt(20 / 19) / np.sqrt(20)


def test_confidence_sequence_holds_its_level_under_continuous_looks():
    """Looked at after every one of 150 rounds, Lai's sequence excludes the true mean in at most ~5% of runs
    (theory: <= 5%), where a 95% t interval re-checked after every round does so far more often."""
    sps = pytest.importorskip("scipy.stats", reason="scipy (a dependency of the tensorflow/coreml extras) is missing")

    rng = np.random.default_rng(1)
    trials, rounds = 600, 150
    d = rng.normal(0.0, 0.05, (trials, rounds))
    n = np.arange(1, rounds + 1)
    mean = np.cumsum(d, axis=1) / n
    sd = np.sqrt(np.maximum(np.cumsum(d * d, axis=1) / n - mean**2, 0))  # biased (1/n)
    with np.errstate(invalid="ignore"):  # 0 * inf at the first round: no interval yet
        lai = sd * np.array([lai_radius(k, 1.0, 0.05) for k in n])
    t = sd * np.sqrt(n / np.maximum(n - 1, 1)) / np.sqrt(n) * sps.t.ppf(0.975, np.maximum(n - 1, 1))
    looks = slice(1, None)  # from 2 rounds on
    lai_miss = (np.abs(mean) > lai)[:, looks].any(axis=1).mean()
    t_miss = (np.abs(mean) > t)[:, looks].any(axis=1).mean()
    assert lai_miss <= 0.06, lai_miss
    assert t_miss >= 0.2, t_miss  # the reason for a confidence sequence


def test_sequential_ratio_paired_and_unpaired():
    rng = np.random.default_rng(0)
    base = [list(1.0 * np.exp(rng.normal(0, 0.01, 200))) for _ in range(30)]
    slow = [list(np.asarray(w) * 1.5) for w in base]
    paired = sequential_ratio(base, slow, paired=True)
    assert paired.low <= 1.5 <= paired.high and paired.beyond(1.05)
    assert abs(paired.ratio - 1.5) < 1e-6
    unpaired = sequential_ratio(base, slow, paired=False)
    assert unpaired.beyond(1.05) and unpaired.high - unpaired.low > paired.high - paired.low
    few = sequential_ratio(base[:2], slow[:2], paired=True)
    assert few.high == float("inf") and not few.beyond(1.05) and not few.within(1.05)


# ---------------------------------------------------------------------------------------------- the runner


def test_serving_runner_times_two_bundles_on_request(tiny_bundle):
    runner = runner_dir() / "onnx_runner.py"
    proc = subprocess.Popen(
        [sys.executable, str(runner), str(tiny_bundle), "--serve", "--serve-also", str(tiny_bundle)]
        + ["--runs", "5", "--min-seconds", "0", "--warmup", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        for i in (0, 1, 1):
            proc.stdin.write(f"window {i}\n")
            proc.stdin.flush()
            event = json.loads(proc.stdout.readline())
            assert event["event"] == "window" and event["bundle"] == i and len(event["samples"]) >= 5
        proc.stdin.write("finish\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert [len(d["latency_ms"].get("windows") or []) for d in docs] == [0, 2]  # one window: no per-window summary
    assert all(d["settings"]["served"] and d["validation"]["logits"]["cosine"] > 0.9999 for d in docs)


def test_serving_runner_refuses_a_bad_request_in_one_line(tiny_bundle):
    runner = runner_dir() / "onnx_runner.py"
    proc = subprocess.Popen(
        [sys.executable, str(runner), str(tiny_bundle), "--serve", "--runs", "1", "--min-seconds", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdin.write("window 3\n")
        proc.stdin.flush()
        code = proc.wait(timeout=120)  # stdin still open: the request itself ends the runner
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("edgepack-runner: error: no bundle '3' to time")


# ---------------------------------------------------------------------------------------------- verdicts


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("chains")
    return {n: edgepack.build(chain_onnx(d / f"c{n}.onnx", n), output=d / f"c{n}.edgepack").path for n in (20, 40)}


FAST = ["--runs", "20", "--min-seconds", "0.05", "--cooldown", "0", "--threads", "1"]


@pytest.mark.slow
def test_a_real_large_slowdown_is_detected_with_few_windows(chains, tmp_path):
    """Twice the layers (a real +~100% of work): regressed, after a handful of windows, in every format."""
    out = {k: tmp_path / f"r.{k}" for k in ("json", "md", "xml")}
    proc = cli(
        "bench", str(chains[40]), "--until-conclusive", "--baseline-bundle", str(chains[20]),
        "--max-latency-regression", "5%", "--budget-seconds", "60", *FAST,
        "--json", str(out["json"]), "--markdown", str(out["md"]), "--junit", str(out["xml"]),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    seq = json.loads(out["json"].read_text())["results"][0]["sequential"]
    assert seq["verdict"] == "regressed" and seq["paired"]
    assert seq["windows"] <= 12 and seq["low"] > 1.05
    assert "regressed beyond allowed +5%" in out["md"].read_text()
    failures = ET.parse(out["xml"]).getroot().findall(".//testcase[@name='latency']/failure")
    assert len(failures) == 1 and f"after {seq['windows']} windows" in failures[0].get("message")
    assert "edgepack: error:" in proc.stderr and "regressed" in proc.stderr


@pytest.mark.slow
def test_identical_bundles_never_read_regressed(chains):
    from edgepack.sequential import compare
    from edgepack.types import BenchOptions

    options = BenchOptions(runs=20, min_seconds=0.05, cooldown=0, threads=1)
    verdicts = []
    for _ in range(3):
        cur, base = compare(chains[20], "local", options, None, 0.05, 6.0, baseline_bundle=chains[20])
        verdicts.append(cur.sequential.verdict)
        assert cur.sequential.windows == base.result.settings["repeat"]
    assert "regressed" not in verdicts, verdicts


@pytest.mark.slow
def test_budget_exhaustion_is_inconclusive_with_the_windows_count(chains, tmp_path):
    out = tmp_path / "r.json"
    proc = cli(
        "bench", str(chains[20]), "--until-conclusive", "--baseline-bundle", str(chains[20]),
        "--budget-seconds", "0.3", *FAST, "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seq = json.loads(out.read_text())["results"][0]["sequential"]
    assert seq["verdict"] == "inconclusive-at-budget"
    assert 1 <= seq["windows"] <= 3 and seq["windows"] == seq["baseline_windows"]
    assert f"after {seq['windows']} windows" in proc.stdout and "inconclusive at the budget" in proc.stdout


@pytest.mark.slow
def test_baseline_json_uses_its_bundle_when_still_there_else_its_stored_windows(chains, tmp_path):
    base_json = tmp_path / "base.json"
    cli("bench", str(chains[20]), "--repeat", "3", *FAST, "--json", str(base_json), check=True)
    out = tmp_path / "r.json"
    proc = cli(
        "bench", str(chains[20]), "--until-conclusive", "--baseline", str(base_json), "--budget-seconds", "1",
        *FAST, "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["results"][0]["sequential"]["paired"] is True
    # edgepack report holds that record against the same baseline with the sequential interval, not a bootstrap
    rep = cli("report", str(out), "--baseline", str(base_json), "--format", "json")
    latency = [c for c in json.loads(rep.stdout)["checks"] if c["name"] == "latency"]
    assert len(latency) == 1 and "anytime-valid" in latency[0]["message"], rep.stderr
    # the baseline's bundle changed since: its 3 stored windows are compared, unpaired
    data = json.loads(base_json.read_text())
    data["results"][0]["bundle_path"] = str(tmp_path / "gone.edgepack")
    base_json.write_text(json.dumps(data))
    proc = cli(
        "bench", str(chains[20]), "--until-conclusive", "--baseline", str(base_json), "--budget-seconds", "1",
        *FAST, "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seq = json.loads(out.read_text())["results"][0]["sequential"]
    assert seq["paired"] is False and seq["baseline_windows"] == 3
    assert "against the baseline's 3 stored windows" in proc.stdout
    # one stored window and no bundle: nothing to compare with, refused before anything runs
    data["results"][0]["result"]["latency_ms"]["windows"] = None
    base_json.write_text(json.dumps(data))
    line = one_line_error(cli("bench", str(chains[20]), "--until-conclusive", "--baseline", str(base_json)))
    assert "has 1 timing window" in line and "--baseline-bundle" in line


# ---------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "args, says",
    [
        (["--baseline-bundle", "B"], "--baseline-bundle is an option of bench --until-conclusive"),
        (["--budget-seconds", "5"], "--budget-seconds is an option of bench --until-conclusive"),
        (["--until-conclusive"], "--until-conclusive needs something to compare with"),
        (["--until-conclusive", "--baseline-bundle", "B", "--max-latency-regression", "off"], "nothing to decide"),
        (["--until-conclusive", "--baseline-bundle", "B", "--budget-seconds", "0"], "--budget-seconds 0.0 is out"),
        (["--until-conclusive", "--baseline-bundle", "B", "--budget-seconds", "nan"], "--budget-seconds nan is out"),
        (["--until-conclusive", "--baseline-bundle", "B", "--statistic", "p0"], "not a window quantile"),
        (["--until-conclusive", "--baseline-bundle", "B", "--repeat", "3"], "--repeat and --until-conclusive"),
        (["--until-conclusive", "--baseline-bundle", "missing.edgepack"], "no such file"),
        (["--until-conclusive", "--baseline-bundle", "B", "--baseline", "x.json"], "both name the baseline"),
        (["--until-conclusive", "--baseline-bundle", "B"], "compares one bundle, 2 were given"),
        (["--until-conclusive", "--baseline-bundle", "B", "--sustained", "2m"], "--sustained and --until-conclusive"),
    ],
)
def test_bad_flag_combinations_are_one_line_errors(tiny_bundle, args, says, capsys):
    from types import SimpleNamespace

    from edgepack.cli import main

    args = [str(tiny_bundle) if a == "B" else a for a in args]
    extra = [str(tiny_bundle)] if "compares one bundle" in says else []
    code = main(["bench", str(tiny_bundle), *extra, *args])  # in-process: refused before anything runs
    assert code == 2
    line = one_line_error(SimpleNamespace(returncode=code, stderr=capsys.readouterr().err))
    assert says in line, line
