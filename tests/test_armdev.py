"""The whole flow on an emulated 64-bit ARM device (aarch64 sshd, Python, numpy and runtimes under qemu-user):
build on the host -> bench over SSH -> the aarch64 runner verifies, runs golden and eval data, times -> JSON back."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

import edgepack
from conftest import have_tensorflow, have_torch
from devices import armdev
from sshd import free_port

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "samples" / "digits"

_reason = armdev.why_unavailable()
if _reason and os.environ.get("EDGEPACK_REQUIRE_ARMDEV"):
    raise RuntimeError(f"EDGEPACK_REQUIRE_ARMDEV is set but: {_reason}")
pytestmark = [pytest.mark.armdev, pytest.mark.slow, pytest.mark.skipif(bool(_reason), reason=_reason or "")]


@pytest.fixture(scope="module")
def arm():
    dev = armdev.start(free_port())
    yield dev
    armdev.stop()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    if not (have_torch() and have_tensorflow()):
        pytest.skip("needs the torch and tflite extras")
    d = tmp_path_factory.mktemp("digits")
    common = dict(inputs=["image:1x1x8x8"], quantize="int8", calibration=DIGITS / "calib.npz", eval=DIGITS / "eval.npz")
    src = f"{DIGITS / 'model.py'}:build_model"
    return {
        "onnx": edgepack.build(src, to="onnx", output=d / "digits.onnx.int8.edgepack", **common),
        "tflite": edgepack.build(src, to="tflite", layout="nhwc", output=d / "digits.tflite.int8.edgepack", **common),
    }


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_digits_on_emulated_arm(fmt, arm, digits):
    built = digits[fmt]
    host = edgepack.bench(built.path, "local", runs=3, min_seconds=0).result
    res = edgepack.bench(built.path, arm.spec, runs=3, warmup=1, min_seconds=0, **arm.ssh_options())
    r = res.result
    assert r.device.machine == "aarch64" and r.device.system == "Linux"
    assert r.device.cpu.emulated is True, "latency under qemu must be marked as emulated"
    out = built.manifest.outputs[0].name
    assert r.validation[out].cosine >= built.manifest.validation.thresholds["min_cosine"], "agrees with torch"
    assert r.accuracy.n == 450 and abs(r.accuracy.top1 - host.accuracy.top1) <= 0.005, (r.accuracy, host.accuracy)
    work = arm.home() / ".cache" / "edgepack" / "work"
    assert work.is_dir() and list(work.iterdir()) == [], "nothing left in the device's work dir"
    from edgepack import report

    md = report.markdown(report.make_report([res.record()]))
    assert "aarch64, emulated" in md and "Emulated devices: latency is not the real board's." in md


def test_sustained_on_emulated_arm(arm, digits):
    """A short sustained run on the aarch64 runner: windows, the cold/sustained ratio and a verdict come back; the
    emulated board exposes no Pi firmware flags, and the evidence says so."""
    res = edgepack.bench(
        digits["onnx"].path, arm.spec, sustained="1.5s", sustained_window=0.25, warmup=1, **arm.ssh_options()
    )
    s = res.result.sustained
    assert s is not None and len(s.windows) == 6 and all(w.runs >= 1 for w in s.windows)
    assert s.verdict in ("stable", "drifting", "throttled") and s.ratio > 0 and s.evidence
    assert s.sources["throttling"] is None and any("no throttling flags exposed" in e for e in s.evidence)
    assert res.result.device.cpu.emulated is True and res.result.device.cpu.affinity


def test_doctor_on_emulated_arm(arm):
    from edgepack import doctor
    from edgepack.devices import SSHOptions

    facts = doctor.probe(arm.spec, SSHOptions(**arm.ssh_options()))
    assert facts["machine"] == "aarch64" and facts["cpu"]["emulated"] is True
    assert "bookworm" in facts["os"] and facts["python"].startswith("3.11")
    adv = doctor.advice(facts)
    assert adv["onnx"]["ready"] and adv["tflite"]["ready"]
    bare = doctor.advice(doctor.probe(arm.spec, SSHOptions(remote_python="/usr/bin/python3", **arm.ssh_options())))
    assert bare["onnx"]["ready"] is False and "onnxruntime" in bare["onnx"]["install"]
    assert "python3 -m venv" in bare["onnx"]["install"], "bookworm's Python is externally managed (PEP 668)"


def test_install_runtime_on_emulated_arm(arm, digits):
    """The device's system Python has no numpy/onnxruntime: --install-runtime pip-installs aarch64 wheels."""
    import shutil

    venv = arm.home() / ".cache" / "edgepack" / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    res = edgepack.bench(
        digits["onnx"].path,
        arm.spec,
        runs=2,
        warmup=1,
        min_seconds=0,
        install_runtime=True,
        remote_python="/usr/bin/python3",
        **arm.ssh_options(),
    )
    assert res.result.device.machine == "aarch64" and res.result.accuracy.n == 450
    assert (venv / "bin" / "python").exists()


@pytest.fixture(scope="module")
def executorch_digits(tmp_path_factory):
    """The digits sample as ExecuTorch programs (fp32, int8), and the device's executorch layer."""
    reason = armdev.why_layer_missing("executorch")
    if reason:
        if os.environ.get("EDGEPACK_REQUIRE_ARMDEV"):
            pytest.fail(f"EDGEPACK_REQUIRE_ARMDEV is set but: {reason}")
        pytest.skip(reason)
    if importlib.util.find_spec("executorch") is None:
        pytest.skip("needs the executorch extra")
    d = tmp_path_factory.mktemp("digits-et")
    src = f"{DIGITS / 'model.py'}:build_model"
    common = dict(inputs=["image:1x1x8x8"], calibration=DIGITS / "calib.npz", eval=DIGITS / "eval.npz")
    return {
        q: edgepack.build(src, to="executorch", quantize=q, output=d / f"digits.{q}.edgepack", **common)
        for q in ("none", "int8")
    }


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_executorch_on_emulated_arm(quantize, arm, executorch_digits):
    """A .pte built here runs on the aarch64 device's executorch runtime (torch 2.10 + executorch 1.1, the newest
    CPU pair on PyPI for aarch64: older than the exporter). The runner says so in the result's warnings, and the
    program still agrees with torch and classifies as on the host; XNNPACK took the ops."""
    from edgepack.device_runners.executorch_runner import _release

    from edgepack import doctor, report
    from edgepack.devices import SSHOptions

    built = executorch_digits[quantize]
    host = edgepack.bench(built.path, "local", runs=3, min_seconds=0).result
    res = edgepack.bench(built.path, arm.spec, runs=3, warmup=1, min_seconds=0, **arm.ssh_options())
    r = res.result
    assert (r.device.machine, r.device.runtime) == ("aarch64", "executorch") and r.device.cpu.emulated
    out = built.manifest.outputs[0].name
    assert r.validation[out].cosine >= built.manifest.validation.thresholds["min_cosine"], "agrees with torch"
    assert r.accuracy.n == 450 and abs(r.accuracy.top1 - host.accuracy.top1) <= 0.005, (r.accuracy, host.accuracy)
    assert r.placement is not None and r.placement.partitions >= 1 and r.placement.accelerator_ops > 0
    assert r.runtime_details["backends"] == ["XnnpackBackend"] and r.runtime_details["torch"].startswith("2.10")
    exporter = built.manifest.tools["executorch"]
    older = _release(r.device.runtime_version)[:2] < _release(exporter)[:2]
    assert older == any("runtime older than the exporter" in w and exporter in w for w in r.warnings), r.warnings
    md = report.markdown(report.make_report([res.record()]))
    assert older == (f"warning: {built.path.name} on {arm.spec}: runtime older than the exporter" in md)
    assert host.warnings == [], "the host's executorch is the exporter's"
    adv = doctor.advice(doctor.probe(arm.spec, SSHOptions(**arm.ssh_options())))["executorch"]
    assert adv["ready"] and adv["runtime"].startswith(f"executorch {r.device.runtime_version}"), adv
