"""``edgepack doctor --device SPEC``: what a device has and what to install there for each format."""

from __future__ import annotations

import json
from typing import Optional

from edgepack import registry
from edgepack.devices import SSHOptions, open_device
from edgepack.errors import DeviceError


def probe(device: str, options: Optional[SSHOptions] = None) -> dict:
    dev = open_device(device, options or SSHOptions())
    try:
        runners = dev.put_runners()
        packages = sorted({p for rt in registry.runtimes() for p in rt.probe_packages})
        res = dev.run([f"{runners}/probe.py", *packages])
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
    """Per format (each declared Runtime): ready or not, and the exact command to get it ready on this device."""
    pip = f"{facts['python_executable']} -m pip install"
    if facts.get("externally_managed"):
        pip = ("python3 -m venv ~/.venv-edgepack && ~/.venv-edgepack/bin/pip install"
               "   # this Python is externally managed (PEP 668); then pass --remote-python ~/.venv-edgepack/bin/python,"
               " or use edgepack bench --install-runtime")
    out: dict[str, dict] = {}
    for rt in registry.runtimes():
        a = rt.advice(facts, pip)
        if a is not None:
            out[rt.format] = {**a, "device_packages": list(rt.device_packages)}
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
