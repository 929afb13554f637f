"""The wheel carries converters and runners inside the edgepack namespace and works from a fresh venv."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_in_fresh_venv(tmp_path, tiny_model, evalset):
    dist = tmp_path / "dist"
    had_build_dir = (REPO / "build").exists()
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(dist),
                str(REPO),
            ],
            check=True,
            capture_output=True,
        )
    finally:
        if not had_build_dir:  # setuptools builds in the checkout; leave it as we found it
            import shutil

            shutil.rmtree(REPO / "build", ignore_errors=True)
    wheel = next(dist.glob("edgepack-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"edgepack", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    assert "edgepack/device_runners/onnx_runner.py" in names and "edgepack/converters/onnx_to_onnx.py" in names
    assert "edgepack/schemas/manifest.schema.json" in names and "edgepack/schemas/result.schema.json" in names
    assert "edgepack/device_runners/runner_common/bundle.py" in names and "edgepack/runtimes/litert.py" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    exe = venv / "bin" / "edgepack"
    ver = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert ver.stdout.startswith("edgepack ")
    out = tmp_path / "w.edgepack"
    subprocess.run(
        [str(exe), "-q", "build", str(tiny_model), "--eval", str(evalset), "-o", str(out)], check=True, cwd=tmp_path
    )
    res = subprocess.run(
        [str(exe), "-q", "bench", str(out), "--device", "local", "--runs", "3", "--min-seconds", "0", "--json", "-"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)["results"][0]["result"]
    assert r["accuracy"]["n"] == 40 and r["validation"]["logits"]["cosine"] > 0.9999
    # runner came from the installed wheel, not from this checkout
    where = subprocess.run(
        [str(py), "-c", "import edgepack.devices as d; print(d.runner_dir())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert str(venv) in where
    # a TFLite bundle too: the wheel plus the interpreter alone (no TensorFlow) bundle and bench a .tflite
    from conftest import have_tensorflow

    if have_tensorflow():
        import edgepack
        from edgepack.bundle import read_member
        from helpers import keras_files

        (tmp_path / "k").mkdir()
        k = keras_files(tmp_path / "k")
        src = edgepack.build(k["keras"], to="tflite", output=tmp_path / "k.edgepack")
        tfl = tmp_path / "k.tflite"
        tfl.write_bytes(read_member(src.path, "model.tflite"))
        from importlib import metadata

        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"ai-edge-litert=={metadata.version('ai-edge-litert')}",
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        out = tmp_path / "t.edgepack"
        subprocess.run([str(exe), "-q", "build", str(tfl), "--to", "tflite", "-o", str(out)], check=True, cwd=tmp_path)
        res = subprocess.run(
            [str(exe), "-q", "bench", str(out), "--runs", "3", "--min-seconds", "0", "--json", "-"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        r = json.loads(res.stdout)["results"][0]["result"]
        assert r["device"]["runtime"] == "litert" and r["runtime_details"]["package"] == "ai-edge-litert"
        assert min(v["cosine"] for v in r["validation"].values()) > 0.9999
    no_torch = subprocess.run(
        [str(py), "-c", "import edgepack, sys; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert no_torch == "False"
