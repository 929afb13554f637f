"""``edgepack doctor --device SPEC``: what a device has and what to install there for each format."""

from __future__ import annotations

import json
from typing import Optional

from edgepack import converters
from edgepack.devices import SSHOptions, open_device
from edgepack.errors import DeviceError


def probe(device: str, options: Optional[SSHOptions] = None) -> dict:
    dev = open_device(device, options or SSHOptions())
    try:
        runners = dev.put_runners()
        res = dev.run([f"{runners}/probe.py"])
    finally:
        dev.close()
    if res.code != 0:
        raise DeviceError(f"the probe failed on {device} (exit {res.code}): {res.stderr.strip()[-300:]}",
                          "check that --remote-python points at a working Python 3.9+")
    try:
        return json.loads(res.stdout)
    except ValueError as e:
        raise DeviceError(f"the probe on {device} printed no JSON ({e})", f"stderr: {res.stderr.strip()[-300:]}")


def advice(facts: dict) -> dict[str, dict]:
    """Per format: ready or not, and the exact command to get it ready on this device."""
    pk = facts["packages"]
    arch = facts["machine"]
    pip = f"{facts['python_executable']} -m pip install"
    if facts.get("externally_managed"):
        pip = ("python3 -m venv ~/.venv-edgepack && ~/.venv-edgepack/bin/pip install"
               "   # this Python is externally managed (PEP 668); then pass --remote-python ~/.venv-edgepack/bin/python,"
               " or use edgepack bench --install-runtime")
    out: dict[str, dict] = {}
    numpy_major = int(pk["numpy"].split(".")[0]) if pk.get("numpy") else None
    # ONNX Runtime publishes wheels for x86_64 and aarch64 (not 32-bit ARM).
    if pk.get("onnxruntime") and pk.get("numpy"):
        out["onnx"] = {"ready": True, "runtime": f"onnxruntime {pk['onnxruntime']}"}
    elif arch in ("armv7l", "armv6l"):
        out["onnx"] = {"ready": False, "install": None,
                       "note": f"PyPI has no onnxruntime wheel for {arch}; use the TFLite format on this device"}
    else:
        out["onnx"] = {"ready": False, "install": f"{pip} numpy onnxruntime"}
    if pk.get("ai-edge-litert") and pk.get("numpy"):
        out["tflite"] = {"ready": True, "runtime": f"ai-edge-litert {pk['ai-edge-litert']}"}
    elif pk.get("tflite-runtime") and numpy_major == 1:
        out["tflite"] = {"ready": True, "runtime": f"tflite-runtime {pk['tflite-runtime']}"}
    elif pk.get("tflite-runtime") and numpy_major and numpy_major >= 2:
        out["tflite"] = {"ready": False, "install": f"{pip} 'numpy<2'",
                         "note": "tflite-runtime is built for numpy 1.x and fails under numpy 2"}
    elif pk.get("tensorflow") or pk.get("tensorflow-cpu"):
        out["tflite"] = {"ready": True, "runtime": "tensorflow.lite"}
    elif arch in ("armv7l", "armv6l"):
        out["tflite"] = {"ready": False, "install": f"{pip} tflite-runtime 'numpy<2'",
                         "note": "tflite-runtime is the only TFLite wheel for 32-bit ARM"}
    else:
        out["tflite"] = {"ready": False, "install": f"{pip} numpy ai-edge-litert"}
    if facts["system"] == "Darwin":
        out["coreml"] = ({"ready": True, "runtime": f"coremltools {pk['coremltools']}"} if pk.get("coremltools")
                         else {"ready": False, "install": f"{pip} numpy coremltools"})
    for fmt, a in out.items():
        a["device_packages"] = list(converters.TARGETS[fmt].device_packages) if fmt in converters.TARGETS else []
    return out


def render(device: str, facts: dict, adv: dict) -> str:
    cpu = facts["cpu"]
    lines = [
        f"device    {device}",
        f"arch      {facts['machine']} ({facts['system']}, {facts['os']}, {facts['libc'] or 'libc ?'})",
        f"python    {facts['python']} at {facts['python_executable']}"
        + ("  [externally managed: use a venv]" if facts.get("externally_managed") else ""),
        f"cpu       {cpu.get('model') or '?'}, {facts['cpu_count']} cores, governor {cpu.get('governor') or '?'}, "
        f"max {cpu.get('max_freq_mhz') or '?'} MHz" + ("  [EMULATED: latency is not the real board's]"
                                                        if cpu.get("emulated") else ""),
        f"memory    {facts['mem_available_mb'] or '?'} MB available; disk {facts['disk_free_mb']} MB free in ~",
        "packages  " + (", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v) or "(none)"),
        "npu       " + (", ".join(facts["npu_device_nodes"]) or "no NPU device nodes found"),
        "delegates " + (", ".join(facts["delegate_libraries"]) or "no delegate libraries found"),
        "",
    ]
    for fmt, a in adv.items():
        if a["ready"]:
            lines.append(f"{fmt:<7} ready ({a['runtime']})")
        else:
            lines.append(f"{fmt:<7} not ready" + (f": {a['install']}" if a.get("install") else "")
                         + (f"  ({a['note']})" if a.get("note") else ""))
    return "\n".join(lines) + "\n"
