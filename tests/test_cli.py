"""The CLI end to end (real subprocesses) and the lazy-import promise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import edgepack
from helpers import cli, one_line_error

FRAMEWORKS = ("torch", "tensorflow", "coremltools", "onnxscript", "keras", "matplotlib")


@pytest.mark.parametrize(
    "code",
    [
        "import edgepack",
        "import edgepack.cli, edgepack.builder, edgepack.bencher, edgepack.report, edgepack.devices, edgepack.gate",
        "from edgepack.cli import main; main(['--help'])",
        "from edgepack.cli import main; import sys; main(['inspect', sys.argv[1]])",
    ],
)
def test_no_framework_is_imported(code, tiny_bundle):
    probe = f"{code}\nimport sys; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe, str(tiny_bundle)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_version():
    res = cli("--version", check=True)
    assert res.stdout.strip() == f"edgepack {edgepack.__version__}"


def test_build_inspect_bench_json(tiny_model, evalset, tmp_path):
    out = tmp_path / "m.edgepack"
    res = cli("build", str(tiny_model), "--eval", str(evalset), "-o", str(out), "--json", check=True)
    manifest = json.loads(res.stdout)
    assert manifest["schema"] == "edgepack.manifest/1" and manifest["eval"]["samples"] == 40
    shown = cli("inspect", str(out), check=True).stdout
    assert "logits" in shown and "passed" in shown
    assert json.loads(cli("inspect", str(out), "--json", check=True).stdout) == manifest
    res = cli("bench", str(out), "--runs", "7", "--min-seconds", "0", "--warmup", "1", "--json", "-", check=True)
    data = json.loads(res.stdout)
    r = data["results"][0]["result"]
    for key in (
        "schema",
        "bundle_sha256",
        "device",
        "load_ms",
        "first_inference_ms",
        "latency_ms",
        "peak_rss_mb",
        "validation",
        "accuracy",
    ):
        assert key in r
    for key in ("machine", "system", "python", "runtime", "runtime_version", "cpu_count"):
        assert key in r["device"]
    # the runner's document is what the published result schema says (edgepack schema result)
    import jsonschema

    jsonschema.validate(r, json.loads(cli("schema", "result", check=True).stdout))
    assert r["settings"]["runs"] == 7 and len(r["latency_ms"]["samples"]) >= 7
    lat = r["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert r["accuracy"]["n"] == 40 and 0 <= r["accuracy"]["top1"] <= 1
    md = cli("bench", str(out), "--runs", "3", "--min-seconds", "0", "--markdown", "-", check=True).stdout
    assert md.splitlines()[0].startswith("### edgepack bench: ✅")
    assert md.splitlines()[2].startswith("| bundle | device |") and "| m.edgepack |" in md


def test_bench_of_missing_or_tampered_bundle(tmp_path, tiny_bundle):
    res = cli("bench", str(tmp_path / "nope.edgepack"))
    assert "does not exist" in one_line_error(res)
    bad = tmp_path / "bad.edgepack"
    data = bytearray(tiny_bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    res = cli("bench", str(bad))
    assert res.returncode != 0
    one_line_error(res)


def test_bad_device_spec(tiny_bundle):
    res = cli("bench", str(tiny_bundle), "--device", "user@@host")
    assert "bad --device" in one_line_error(res) and res.returncode == 2


def test_runner_script_runs_standalone(tiny_bundle, tmp_path):
    """The runner folder copied alone (as on a device) works with just numpy + onnxruntime."""
    import shutil

    from edgepack.devices import runner_files, runner_path

    for p in runner_files():
        (tmp_path / runner_path(p)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / runner_path(p))
    out = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "onnx_runner.py"), str(tiny_bundle), "--runs", "3", "--min-seconds", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["schema"] == "edgepack.result/1" and result["validation"]["logits"]["cosine"] > 0.9999
    missing = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "onnx_runner.py"), str(tmp_path / "x.edgepack")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and missing.stdout == "" and "does not exist" in missing.stderr


def test_doctor_advice_for_other_devices():
    """The install advice for devices this machine is not (32-bit ARM, numpy 2 with tflite-runtime)."""
    from edgepack.doctor import advice

    base = {
        "machine": "armv7l",
        "system": "Linux",
        "python": "3.9.2",
        "python_executable": "/usr/bin/python3",
        "externally_managed": False,
        "packages": {
            "numpy": "2.0.1",
            "onnxruntime": None,
            "ai-edge-litert": None,
            "tflite-runtime": "2.14.0",
            "tensorflow": None,
            "tensorflow-cpu": None,
            "coremltools": None,
        },
    }
    a = advice(base)
    assert a["onnx"]["ready"] is False and "no onnxruntime wheel for armv7l" in a["onnx"]["note"]
    assert a["tflite"]["ready"] is False and "numpy<2" in a["tflite"]["install"]
    pi = dict(
        base,
        machine="aarch64",
        externally_managed=True,
        packages=dict(base["packages"], numpy=None, **{"tflite-runtime": None}),
    )
    a = advice(pi)
    assert "python3 -m venv" in a["onnx"]["install"] and "ai-edge-litert" in a["tflite"]["install"]
