"""edgepack tune: the digits sample built in several precisions, benched on a device, the fastest within the
accuracy budget chosen. One candidate is made inaccurate honestly: its int8 calibration set is the digits
images scaled by 0.05, so the int8 ranges fit that set (build-time validation on it passes) but real digits
saturate them, and top-1 on the device really drops."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import edgepack
from conftest import have_coremltools, needs_torch
from helpers import cli, one_line_error

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "samples" / "digits"
SOURCE = f"{DIGITS / 'model.py'}:build_model"
FAST = dict(runs=20, warmup=2, min_seconds=0.0, repeat=2, cooldown=0.0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One build cache for the module: the builds of the first tune are cache hits for the next ones."""
    return tmp_path_factory.mktemp("tune-cache")


@pytest.fixture(scope="module")
def bad_calibration(tmp_path_factory) -> Path:
    with np.load(DIGITS / "calib.npz") as z:
        image = z["image"] * np.float32(0.05)
    path = tmp_path_factory.mktemp("tune-data") / "bad_calib.npz"
    np.savez(path, image=image.astype(np.float32))
    return path


def _png_pixels(page: str, alt: str) -> np.ndarray:
    from PIL import Image

    m = re.search(rf"<img alt='{alt}' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
    assert m, f"no {alt} image in the page"
    image = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    image.load()  # decodes the whole PNG (a truncated or corrupt one raises here)
    return np.asarray(image.convert("RGB"))


def _assert_real_plot(pixels: np.ndarray) -> None:
    h, w, _ = pixels.shape
    assert h > 200 and w > 300, pixels.shape
    colors = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colors) > 50, "a drawn plot has many colours (antialiased text, markers, lines)"
    assert pixels.std() > 10, "not a blank image"
    # the markers are drawn in the verdict colours: some pixels are clearly green (best) and red (over budget)
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    assert ((g - r > 40) & (g - b > 40)).sum() > 50, "no green (best) marker"
    assert ((r - g > 60) & (r - b > 60)).sum() > 50, "no red (over budget) marker"


# --------------------------------------------------------------------------- end to end on the local device


@pytest.mark.torch
@needs_torch
def test_tune_local_picks_the_accurate_candidate(tmp_path, cache_dir, bad_calibration):
    out = tmp_path / "best.edgepack"
    js, md, page = tmp_path / "tune.json", tmp_path / "tune.md", tmp_path / "tune.html"
    proc = cli(
        "tune",
        SOURCE,
        "--input",
        "image:1x1x8x8",
        "--eval",
        str(DIGITS / "eval.npz"),
        "--calibration",
        str(bad_calibration),
        "--max-accuracy-drop",
        "1.0",
        "--to",
        "onnx",
        "--quantize",
        "none,int8,int16x8",  # int16x8: a precision no ONNX route offers -> a failed row
        "--cache-dir",
        str(cache_dir),
        "-o",
        str(out),
        "--json",
        str(js),
        "--markdown",
        str(md),
        "--html",
        str(page),
        *[a for k, v in FAST.items() for a in (f"--{k.replace('_', '-')}", str(v))],
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"candidate 1/3: build onnx none", proc.stderr), proc.stderr
    assert "candidate 3/3" in proc.stderr
    res = json.loads(js.read_text())
    assert res["schema"] == "edgepack.tune/1"
    rows = {c["name"]: c for c in res["candidates"]}
    assert list(rows) == ["onnx fp32", "onnx int8", "onnx int16x8"]
    ref = res["reference"]
    assert ref["n"] == 450 and ref["top1"] > 0.95

    fp32, int8, bad = rows["onnx fp32"], rows["onnx int8"], rows["onnx int16x8"]
    assert res["chosen"] == "onnx fp32" and fp32["status"] == "best"
    # the int8 candidate ran, and its accuracy was measured on the device, not assumed
    assert int8["status"] == "over-budget"
    assert int8["record"]["result"]["accuracy"]["n"] == 450
    assert int8["top1"] == int8["record"]["result"]["accuracy"]["top1"] < ref["top1"] - 0.01
    assert int8["drop_points"] == pytest.approx((ref["top1"] - int8["top1"]) * 100, abs=1e-4)
    assert int8["drop_points"] > 1.0
    assert int8["cosine"] > 0.98, "it passed the build's validation: only real digits expose the calibration"
    assert abs(fp32["drop_points"]) <= 100.0 / 450 + 1e-6, "fp32 ONNX classifies like torch (±1 near-tie)"
    assert fp32["record"]["result"]["latency_ms"]["p50"] > 0 and fp32["p50_vs_best"][0] == 1.0
    assert bad["status"] == "failed" and "int16x8 is not available for onnx" in bad["reason"]
    assert bad["record"] is None and bad["top1"] is None

    # the chosen bundle, written atomically, is the fp32 one
    manifest, problems = edgepack.verify(out)
    assert problems == [] and manifest.quantization.mode == "none" and manifest.format == "onnx"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temp files left"

    text = md.read_text()
    assert "| onnx int8 | torch-onnx |" in text and "over budget" in text and "chosen: onnx fp32" in text
    assert "failed: --quantize int16x8 is not available for onnx" in text
    assert "over budget" in proc.stdout and "best" in proc.stdout  # the terminal table
    _assert_real_plot(_png_pixels(page.read_text(), "pareto plot"))

    # the same search again: every build comes from the cache, nothing is rebuilt
    again = edgepack.tune(
        SOURCE,
        eval=DIGITS / "eval.npz",
        calibration=bad_calibration,
        inputs=["image:1x1x8x8"],
        to=["onnx"],
        quantize=["none", "int8"],
        cache_dir=cache_dir,
        output=tmp_path / "again.edgepack",
        **FAST,
    )
    assert [(c.name, c.cached, c.build_seconds) for c in again.candidates] == [
        ("onnx fp32", True, 0.0),
        ("onnx int8", True, 0.0),
    ]
    assert again.chosen == "onnx fp32"
    assert (tmp_path / "again.edgepack").read_bytes() == out.read_bytes()

    # only the inaccurate candidate: nothing is within budget -> exit 1, one error line, the report still written
    proc = cli(
        "tune",
        SOURCE,
        *("--input", "image:1x1x8x8", "--eval", str(DIGITS / "eval.npz"), "--calibration", str(bad_calibration)),
        *("--to", "onnx", "--quantize", "int8", "--cache-dir", str(cache_dir)),
        *("-o", str(tmp_path / "none.edgepack"), "--markdown", str(tmp_path / "none.md")),
        *[a for k, v in FAST.items() for a in (f"--{k.replace('_', '-')}", str(v))],
    )
    assert proc.returncode == 1 and "no candidate is within 1 point(s)" in one_line_error(proc)
    assert not (tmp_path / "none.edgepack").exists()
    assert "| onnx int8 | torch-onnx |" in (tmp_path / "none.md").read_text()
    assert "build cache hit: onnx int8" in proc.stderr


@pytest.mark.torch
@needs_torch
def test_budget_leaves_rows_not_run(tmp_path, cache_dir):
    out = tmp_path / "best.edgepack"
    res = edgepack.tune(
        SOURCE,
        eval=DIGITS / "eval.npz",
        inputs=["image:1x1x8x8"],
        to=["onnx"],
        quantize=["none", "fp16"],
        threads=[1, 2],
        budget_seconds=1e-6,
        cache_dir=cache_dir,
        output=out,
        **FAST,
    )
    assert [c.name for c in res.candidates] == ["onnx fp32 t1", "onnx fp32 t2", "onnx fp16 t1", "onnx fp16 t2"]
    assert {c.status for c in res.candidates} == {"not-run"}
    assert all(c.reason and c.reason.startswith("budget") and c.record is None for c in res.candidates)
    assert res.chosen is None and not out.exists()


# --------------------------------------------------------------------------- the choice and the plot, synthetic


def _record(name: str, p50: float, top1: float, size: int, seed: int) -> "edgepack.types.BenchRecord":
    from edgepack.types import BenchRecord, RunResult

    rng = np.random.default_rng(seed)
    windows = [list(p50 * np.exp(rng.normal(0, 0.05, 200))) for _ in range(3)]
    samples = [x for w in windows for x in w]
    q = np.percentile(samples, [50, 90, 99])
    result = RunResult.model_validate(
        {
            "schema": "edgepack.result/1",
            "bundle_sha256": "0" * 64,
            "bundle": {},
            "device": {
                "machine": "x86_64",
                "system": "Linux",
                "python": "3.11",
                "runtime": "onnxruntime",
                "runtime_version": "1",
                "cpu_count": 2,
            },
            "settings": {"threads": 0},
            "runtime_details": {},
            "load_ms": 1.0,
            "first_inference_ms": 1.0,
            "latency_ms": {
                "samples": samples,
                "min": min(samples),
                "p50": q[0],
                "p90": q[1],
                "p99": q[2],
                "mean": float(np.mean(samples)),
                "std": float(np.std(samples)),
                "windows": [{"n": 200, "p50": 0, "p90": 0, "mean": 0} for _ in windows],
            },
            "timed_seconds": 1.0,
            "throughput_ips": None,
            "peak_rss_mb": 100.0,
            "validation": {
                "out": {"max_abs_err": 0, "mean_abs_err": 0, "cosine": 0.999, "sqnr_db": None, "top1_agreement": 1}
            },
            "accuracy": {"top1": top1, "n": 1000},
        }
    )
    return BenchRecord(
        bundle=name, bundle_bytes=size, device_spec="local", format="onnx", quantization="x", result=result
    )


def test_choice_is_noise_aware_and_the_plot_is_drawn(tmp_path):
    from edgepack import tune_report
    from edgepack.tuner import Reference, TuneOptions, choose
    from edgepack.types import Accuracy, TuneCandidate, TuneResult

    specs = [  # name, p50 ms, top-1, bundle bytes
        ("fast-inaccurate", 0.50, 0.90, 30_000),  # fastest of all, 9 points down: over budget
        ("fastest-within", 1.00, 0.985, 40_000),
        ("tied-more-accurate", 1.005, 0.99, 80_000),  # within noise of the fastest, more accurate: chosen
        ("slow-most-accurate", 2.00, 0.995, 160_000),  # measurably slower
    ]
    cands = []
    for i, (name, p50, top1, size) in enumerate(specs):
        rec = _record(name, p50, top1, size, seed=i)
        cands.append(
            TuneCandidate(
                name=name,
                format="onnx",
                precision="x",
                threads=0,
                status="within-budget",
                bundle_bytes=size,
                top1=top1,
                cosine=0.999,
                record=rec,
            )
        )
    cands.append(TuneCandidate(name="coreml fp32", format="coreml", precision="none", status="not-run", reason="x"))
    ref = Reference(framework="torch", kind="python-callable", what="torch", top1=0.995, n=1000)
    best, notes = choose(cands, ref, TuneOptions(max_accuracy_drop=1.0))
    status = {c.name: c.status for c in cands}
    assert best is not None and best.name == "tied-more-accurate"
    assert status == {
        "fast-inaccurate": "over-budget",
        "fastest-within": "within-budget",
        "tied-more-accurate": "best",
        "slow-most-accurate": "within-budget",
        "coreml fp32": "not-run",
    }
    assert any("fastest-within has the lowest p50" in n for n in notes)
    slow = next(c for c in cands if c.name == "slow-most-accurate")
    assert slow.p50_vs_best is not None and slow.p50_vs_best[1] > 1.5, "measurably slower than the chosen one"

    res = TuneResult(
        created="now",
        edgepack="0",
        source="m",
        device="local",
        max_accuracy_drop=1.0,
        reference=Accuracy(top1=0.995, n=1000),
        reference_what="torch",
        chosen=best.name,
        candidates=cands,
        notes=notes,
    )
    front = [c.name for c in tune_report.pareto_front(tune_report.pareto_points(res))]
    assert front == ["fast-inaccurate", "fastest-within", "tied-more-accurate", "slow-most-accurate"]
    page = tune_report.html(res)
    _assert_real_plot(_png_pixels(page, "pareto plot"))
    assert "not run: x" in page and "coreml fp32" in page
    # markers scale with size: the plot is not the same with the sizes swapped
    swapped = res.model_copy(deep=True)
    for c in swapped.candidates:
        c.bundle_bytes = 200_000 - (c.bundle_bytes or 0)
    assert tune_report.pareto_chart(swapped) != tune_report.pareto_chart(res)


def test_bad_options_are_one_line_errors(tmp_path):
    from edgepack.errors import UsageError

    proc = cli("tune", SOURCE, "--eval", str(DIGITS / "eval.npz"), "--quantize", "none,int9", "-o", str(tmp_path / "b"))
    assert "unknown precision" in one_line_error(proc) and proc.returncode == 2
    evalset = DIGITS / "eval.npz"
    for kwargs, words in (
        (dict(threads=[-1]), "--threads"),
        (dict(max_accuracy_drop=float("nan")), "--max-accuracy-drop"),
        (dict(output=evalset), "also an input"),
        (dict(to=["onnx", "nosuch"]), "unknown target format"),
        (dict(eval=None), "labelled data"),
        (dict(budget_seconds=0), "--budget-seconds"),
    ):
        with pytest.raises(UsageError, match=re.escape(words)):
            edgepack.tune(SOURCE, **{"eval": evalset, **kwargs})
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- CoreML on Linux: a row, no number


@pytest.mark.slow
@pytest.mark.coreml
@pytest.mark.torch
@needs_torch
@pytest.mark.skipif(not have_coremltools(), reason="needs the coreml extra (pip install 'edgepack[coreml]')")
@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS CoreML runs: this test is about Linux")
def test_coreml_candidate_is_a_not_run_row_on_linux(tmp_path, cache_dir):
    res = edgepack.tune(
        SOURCE,
        eval=DIGITS / "eval.npz",
        inputs=["image:1x1x8x8"],
        to=["onnx", "coreml"],
        quantize=["none"],
        cache_dir=cache_dir,
        output=tmp_path / "best.edgepack",
        **FAST,
    )
    rows = {c.name: c for c in res.candidates}
    coreml = rows["coreml fp32"]
    assert coreml.status == "not-run" and "CoreML prediction needs macOS" in (coreml.reason or "")
    assert coreml.record is None and coreml.top1 is None and coreml.bundle_bytes  # built, never measured
    assert res.chosen == "onnx fp32"


# --------------------------------------------------------------------------- over SSH


def _ssh_unavailable() -> str | None:
    from sshd import why_unavailable

    return why_unavailable()


@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.torch
@needs_torch
@pytest.mark.skipif(bool(_ssh_unavailable()), reason=_ssh_unavailable() or "")
def test_tune_over_ssh_picks_the_accurate_candidate(tmp_path, tmp_path_factory, cache_dir, bad_calibration):
    from edgepack.devices import SSHOptions
    from sshd import Sshd

    if os.environ.get("EDGEPACK_REQUIRE_SSHD") and _ssh_unavailable():
        raise RuntimeError(f"EDGEPACK_REQUIRE_SSHD is set but: {_ssh_unavailable()}")
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    try:
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
        (home / ".ssh" / "config").write_text(
            f"Host edgedev\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n"
            f"  IdentityFile {server.user_key}\n  UserKnownHostsFile {home / '.ssh' / 'known_hosts'}\n"
        )
        remote_dir = tmp_path / "device-cache"
        ssh = SSHOptions(ssh_config=home / ".ssh" / "config", remote_python=sys.executable, remote_dir=str(remote_dir))
        res = edgepack.tune(
            SOURCE,
            device="edgedev",
            eval=DIGITS / "eval.npz",
            calibration=bad_calibration,
            inputs=["image:1x1x8x8"],
            to=["onnx"],
            quantize=["none", "int8"],
            threads=[1, 2],
            cache_dir=cache_dir,
            output=tmp_path / "best.edgepack",
            ssh=ssh,
            **FAST,
        )
    finally:
        server.stop()
    rows = {c.name: c for c in res.candidates}
    assert list(rows) == ["onnx fp32 t1", "onnx fp32 t2", "onnx int8 t1", "onnx int8 t2"]
    assert res.chosen in ("onnx fp32 t1", "onnx fp32 t2")
    for name in ("onnx int8 t1", "onnx int8 t2"):
        assert rows[name].status == "over-budget" and (rows[name].drop_points or 0) > 1.0
    for c in res.candidates:
        assert c.record is not None and c.record.device_spec == "edgedev"
        assert c.record.result.settings["threads"] == c.threads
    # one upload per bundle: the second thread setting found it in the device's cache
    assert [c.record.uploaded for c in res.candidates if c.record] == [True, False, True, False]
    assert len(list((remote_dir / "bundles").iterdir())) == 2
    assert list((remote_dir / "work").iterdir()) == [], "nothing left on the device"
    assert edgepack.verify(tmp_path / "best.edgepack")[0].quantization.mode == "none"


# --------------------------------------------------------------------------- the build cache's key


def test_cache_key_follows_what_a_build_reads(tmp_path, tiny_bundle):
    import shutil

    from edgepack.build_cache import BuildCache, key, source_digest
    from edgepack.types import BuildOptions, ConvertOptions, DataOptions

    def options(target: str, quantize: str) -> BuildOptions:
        return BuildOptions(
            convert=ConvertOptions(target=target, quantize=quantize), data=DataOptions(calibration=calib)
        )

    src = tmp_path / "m"
    src.mkdir()
    (src / "model.py").write_text("def build_model(): ...\n")
    (src / "weights.npz").write_bytes(b"w1")
    calib = tmp_path / "c.npz"
    calib.write_bytes(b"c1")
    callable_ = f"{src / 'model.py'}:build_model"
    base = source_digest(callable_)
    assert source_digest(callable_) == base
    assert source_digest(f"{src / 'model.py'}:other") != base, "another callable is another model"
    (src / "weights.npz").write_bytes(b"w2")
    assert source_digest(callable_) != base, "the weights beside the file are part of the source"

    opts = options("onnx", "int8")
    k = key(base, opts)
    assert key(base, options("onnx", "int8")) == k
    assert key(base, options("onnx", "fp16")) != k
    assert key(base, options("tflite", "int8")) != k
    assert key(base, dataclasses.replace(opts, output=tmp_path / "elsewhere.edgepack")) == k, (
        "where the bundle goes is not what it is"
    )
    calib.write_bytes(b"c2")
    assert key(base, opts) != k, "calibration data by content, not by name"

    cache = BuildCache(tmp_path / "cache")
    entry = cache.path("abc")
    entry.parent.mkdir()
    shutil.copyfile(tiny_bundle, entry)
    assert cache.get("abc") == entry
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the zip
    entry.write_bytes(bytes(data))
    assert cache.get("abc") is None and not entry.exists(), "a corrupt entry is dropped and rebuilt"
    assert BuildCache(None).get("abc") is None
