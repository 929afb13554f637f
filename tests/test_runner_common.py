"""The device runner's shared module: metrics, statistics, safe bundle reading."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
from edgepack.device_runners import runner_common as rc

from edgepack import registry


def test_compare_known_answers():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    m = rc.compare(ref, ref.copy())
    assert m["max_abs_err"] == 0 and m["cosine"] == pytest.approx(1.0) and m["sqnr_db"] is None
    assert m["top1_agreement"] == 1.0
    noisy = ref + 0.1
    m = rc.compare(ref, noisy)
    assert m["max_abs_err"] == pytest.approx(0.1)
    expected_sqnr = 10 * math.log10(np.sum(ref**2) / np.sum(0.1**2 * np.ones_like(ref)))
    assert m["sqnr_db"] == pytest.approx(expected_sqnr)
    flipped = ref[:, ::-1]
    assert rc.compare(ref, flipped)["top1_agreement"] == 0.0
    assert rc.compare(np.ones((1, 4, 4)), np.ones((1, 4, 4)))["top1_agreement"] is None
    bad = rc.compare(ref, np.full_like(ref, np.nan))
    assert bad["nonfinite"] and bad["cosine"] == 0.0


def test_summary_matches_numpy_percentiles():
    rng = np.random.default_rng(0)
    samples = list(rng.exponential(3.0, 501))
    s = rc.summarize(samples)
    for q in (50, 90, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(samples, q))
    assert s["min"] == min(samples) and s["mean"] == pytest.approx(np.mean(samples))
    assert s["std"] == pytest.approx(np.std(samples))


def test_timing_loop_meets_runs_and_seconds():
    calls = []
    import time

    samples, elapsed = rc.timing_loop(lambda: (calls.append(1), time.sleep(0.002)), warmup=3, runs=10, min_seconds=0.05)
    assert len(samples) >= 10 and elapsed >= 0.05 and len(calls) == len(samples) + 3
    samples, _ = rc.timing_loop(lambda: None, warmup=0, runs=5, min_seconds=10, max_runs=20)
    assert len(samples) == 20, "max_runs bounds the loop"


def _zip(path, members: dict, manifest: dict | None = None, links=()):
    with zipfile.ZipFile(path, "w") as zf:
        if manifest is not None:
            zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _manifest(members: dict) -> dict:
    import hashlib

    return {"schema": "edgepack.manifest/1", "members": {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}}


def test_bundle_rejects_path_traversal(tmp_path):
    members = {"../evil.txt": b"x"}
    p = _zip(tmp_path / "b.edgepack", members, _manifest(members))
    with pytest.raises(rc.RunnerError, match="unsafe member name") as e:
        rc.Bundle(str(p), str(tmp_path))
    assert e.value.code == rc.EXIT_BUNDLE_INVALID
    assert not (tmp_path.parent / "evil.txt").exists()
    assert [x.name for x in tmp_path.iterdir()] == ["b.edgepack"], "nothing extracted"


def test_bundle_rejects_symlink_members(tmp_path):
    p = _zip(tmp_path / "b.edgepack", {}, _manifest({"link": b"/etc/passwd"}), links=["link"])
    with pytest.raises(rc.RunnerError, match="symbolic link"):
        rc.Bundle(str(p), str(tmp_path))


def test_bundle_detects_tampering_and_unlisted_members(tmp_path):
    members = {"model.onnx": b"abc"}
    man = _manifest(members)
    p = _zip(tmp_path / "b.edgepack", {"model.onnx": b"abd", "extra.bin": b"1"}, man)
    with zipfile.ZipFile(p) as zf:
        problems = rc.verify_zip(zf, man)
    assert any("sha256 mismatch" in x for x in problems)
    assert any("extra.bin is not listed" in x for x in problems)


def test_bundle_extracts_and_cleans_up(tmp_path):
    members = {"model.onnx": b"abc", "sub/data.bin": b"123"}
    p = _zip(tmp_path / "b.edgepack", members, _manifest(members))
    work = tmp_path / "work"
    work.mkdir()
    with rc.Bundle(str(p), str(work)) as b:
        assert open(b.member("sub/data.bin"), "rb").read() == b"123"
    assert list(work.iterdir()) == []


def test_quantize_roundtrip():
    spec = {"name": "x", "shape": [1, 4], "dtype": "int8", "quant": {"scale": [0.5], "zero_point": [3]}}
    x = np.array([[-1.0, 0.0, 1.0, 100.0]])
    q = rc.quantize_input(x, spec)
    assert q.dtype == np.int8 and q.tolist() == [[1, 3, 5, 127]]
    assert rc.dequantize_output(q, spec).tolist() == [[-1.0, 0.0, 1.0, 62.0]]


def test_runner_imports_only_stdlib_numpy_and_runtime():
    """device_runners/ travels alone: no edgepack, no frameworks."""
    import ast
    import sys
    from pathlib import Path

    runtimes = {
        "onnx_runner.py": {"onnxruntime"},
        "tflite_runner.py": {"ai_edge_litert", "tflite_runtime", "tensorflow"},
        "coreml_runner.py": {"coremltools"},
        "executorch_runner.py": {"torch", "executorch"},  # the wheel's runtime links libtorch
    }
    folder = Path(rc.__file__).parents[1]
    files = sorted(folder.glob("**/*.py"))
    assert folder / "runner_common" / "bundle.py" in files
    for py in files:
        allowed = set(sys.stdlib_module_names) | {"numpy", "runner_common"} | runtimes.get(py.name, set())
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module.split(".")[0]]
            else:
                continue
            assert set(names) <= allowed, f"{py.name} imports {names}"


def test_runner_parses_as_python_39():
    """Raspberry Pi OS bullseye ships Python 3.9: the runner folder must not use newer syntax."""
    import ast
    from pathlib import Path

    for py in Path(rc.__file__).parents[1].glob("**/*.py"):
        ast.parse(py.read_text(), filename=str(py), feature_version=(3, 9))


def test_timing_windows_and_their_summary():
    import time

    seen = []
    samples, sizes, elapsed = rc.timing_windows(
        lambda: time.sleep(0.001),
        warmup=1,
        runs=4,
        min_seconds=0,
        max_runs=4,
        repeat=3,
        cooldown=0.01,
        between=lambda: seen.append(time.perf_counter()),
    )
    assert sizes == [4, 4, 4] and len(samples) == 12 and len(seen) == 2 and elapsed > 0
    s = rc.summarize(samples, sizes)
    assert [w["n"] for w in s["windows"]] == sizes
    assert s["windows"][1]["p50"] == pytest.approx(np.percentile(samples[4:8], 50))
    assert "windows" not in rc.summarize(samples)


def test_cpu_temperature_reads_the_hottest_plausible_zone(tmp_path):
    """A sysfs-shaped tree: millidegrees per zone; unreadable and implausible values are ignored."""
    for zone, text in (
        ("thermal_zone0", "45500\n"),
        ("thermal_zone1", "61250\n"),
        ("thermal_zone2", "garbage"),
        ("thermal_zone3", "200000\n"),
        ("cooling_device0", "99000\n"),
    ):
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "temp").write_text(text)
    assert rc.cpu_temperature(str(tmp_path)) == 61.25
    (tmp_path / "thermal_zone1" / "temp").write_text("-50000\n")
    assert rc.cpu_temperature(str(tmp_path)) == 45.5
    assert rc.cpu_temperature(str(tmp_path / "missing")) is None


def test_stale_profile_dirs_are_swept_like_extraction_dirs(tmp_path):
    """A runner killed during profiling leaves edgepack-run-<pid>-profile-*; the next run removes it."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f"edgepack-run-{dead}-profile-abc"
    stale.mkdir()
    (stale / "ort.json").write_text("[]")
    live = tmp_path / f"edgepack-run-{__import__('os').getpid()}-profile-def"
    live.mkdir()
    rc.remove_stale_workdirs(str(tmp_path))
    assert not stale.exists() and live.exists()


# --------------------------------------------------------------------------- backend interface, result schema

# from the declarations, so a new runtime's runner lands checked
RUNTIME_MODULES = tuple(rt.runner.removesuffix(".py") for rt in registry.runtimes())


def test_runtimes_implement_the_backend_interface():
    """Every runtime subclasses Backend and implements what has no default; the shared runner probes nothing."""
    import importlib
    from pathlib import Path

    for name in RUNTIME_MODULES:
        mod = importlib.import_module(f"edgepack.device_runners.{name}")
        backends = [
            v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, rc.Backend) and v is not rc.Backend
        ]
        assert len(backends) == 1, name
        cls = backends[0]
        assert cls.runtime, name
        for method in ("version", "load", "run"):
            assert getattr(cls, method) is not getattr(rc.Backend, method), (name, method)
    folder = Path(rc.__file__).parents[1]
    for py in folder.glob("**/*.py"):
        assert "hasattr(backend" not in py.read_text(), py


def test_backend_defaults():
    import argparse

    b = rc.Backend()
    manifest = {"model": {"member": "model.onnx"}}
    assert b.model_member(manifest, argparse.Namespace()) == "model.onnx"
    assert b.details() == {} and b.analyze({}) == {}
    parser = rc.build_parser("x")
    b.add_arguments(parser)
    assert parser.parse_args(["b.edgepack"]).runs == 50
    with pytest.raises(NotImplementedError):
        b.run({})


def test_published_result_schema_is_current():
    from pathlib import Path

    from edgepack.types import RESULT_SCHEMA, RunResult

    committed = (Path(__file__).resolve().parents[1] / "edgepack" / "schemas" / "result.schema.json").read_text()
    assert committed == RunResult.json_schema_text(), (
        "regenerate: python -c 'from edgepack.types import RunResult; print(RunResult.json_schema_text(), end=\"\")' "
        "> edgepack/schemas/result.schema.json"
    )
    assert rc.RESULT_SCHEMA == RESULT_SCHEMA


def test_runner_document_has_exactly_the_schema_fields():
    """runner_common.result.document() spells every top-level field of RunResult, and no other."""
    import inspect

    from edgepack.types import RunResult

    schema = json.loads(RunResult.json_schema_text())
    params = set(inspect.signature(rc.document).parameters)
    assert params | {"schema"} == set(schema["properties"])
    assert set(schema["required"]) <= params | {"schema"}


def test_real_runner_output_validates_against_the_published_schema(tiny_bundle):
    import subprocess
    import sys
    from pathlib import Path

    import jsonschema

    from edgepack.types import RunResult

    runner = Path(rc.__file__).parents[1] / "onnx_runner.py"
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            str(runner),
            str(tiny_bundle),
            "--runs",
            "3",
            "--min-seconds",
            "0",
            "--repeat",
            "2",
            "--cooldown",
            "0",
            "--profile",
            "--profile-runs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    schema = json.loads(RunResult.json_schema_text())
    jsonschema.validate(result, schema)
    assert set(result) == set(schema["properties"])
    assert result["op_timing"]["source"] == "onnxruntime-profile" and len(result["latency_ms"]["windows"]) == 2
    RunResult.model_validate(result)
    result["latency_ms"] = {"p50": "fast"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(result, schema)
