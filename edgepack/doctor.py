"""``edgepack doctor --device SPEC``: what a device has and what to install there for each format."""

from __future__ import annotations

import json
from typing import Any, Optional

from edgepack import registry
from edgepack.devices import DeviceSpec, SSHDevice, SSHOptions, open_device
from edgepack.errors import DeviceError
from edgepack.transport import _hint, q

MIN_FREE_KB = 2048  # the runner (~200 KiB) and a small bundle; the error names the directory and the fix


def probe(device: str | DeviceSpec, options: Optional[SSHOptions] = None) -> dict[str, Any]:
    """The device's facts (``device_runners/probe.py``) plus, over SSH, how files reach it: ``transport``
    (sftp|exec), ``sha256_tool`` and ``notes`` (one line each, with the fix). A device edgepack cannot use
    (no Python, an unwritable or full ``--remote-dir``) is a one-line DeviceError before anything is uploaded."""
    dev = open_device(device, options or SSHOptions())
    device = dev.name
    link: dict[str, Any] = {"transport": "local", "sha256_tool": None, "notes": [], "route": []}
    try:
        if isinstance(dev, SSHDevice):
            link = _link_facts(dev)
        runners = dev.put_runners()
        packages = sorted({p for rt in registry.runtimes() for p in rt.probe_packages})
        res = dev.run([f"{runners}/probe.py", *packages])
    finally:
        dev.close()
    if res.code != 0:
        raise DeviceError(
            f"the probe failed on {device} (exit {res.code}): {res.stderr.strip()[-300:]}",
            "check that --remote-python points at a working Python 3.9+",
        )
    try:
        facts: dict[str, Any] = json.loads(res.stdout)
    except ValueError as e:
        raise DeviceError(f"the probe on {device} printed no JSON ({e})", f"stderr: {res.stderr.strip()[-300:]}")
    facts.update(link)
    return facts


def _dir_script(remote_dir: str) -> str:
    """POSIX sh: can the SSH user write ``remote_dir``, how much is free there, may files there be executed
    (native libraries of a venv there are mapped executable), and is $TMPDIR (/tmp) noexec. Its probe files
    are removed; nothing else is written."""
    return (
        f"d={q(remote_dir)}\n"
        'if ! e=$(mkdir -p "$d" 2>&1); then echo "dir_error=$e"; exit 0; fi\n'
        'f="$d/.edgepack-probe-$$"\n'
        'if ! e=$( { printf \'#!/bin/sh\\nexit 0\\n\' > "$f"; } 2>&1); then rm -f "$f"; '
        'echo "dir_error=$e"; exit 0; fi\n'
        'if chmod +x "$f" 2>/dev/null && "$f" 2>/dev/null; then echo dir_exec=yes; else echo dir_exec=no; fi\n'
        'rm -f "$f"\n'
        'set -- $(df -k "$d" 2>/dev/null | tail -n 1); echo "dir_free_kb=$4"\n'
        't=${TMPDIR:-/tmp}; echo "tmp=$t"; g="$t/.edgepack-probe-$$"\n'
        'if { printf \'#!/bin/sh\\nexit 0\\n\' > "$g"; } 2>/dev/null && chmod +x "$g" 2>/dev/null; then '
        'if "$g" 2>/dev/null; then echo tmp_exec=yes; else echo tmp_exec=no; fi; rm -f "$g"; '
        "else echo tmp_exec=unwritable; fi\n"
    )


def _link_facts(dev: SSHDevice) -> dict[str, Any]:
    t = dev.transfer()
    shell = dev.shell_facts()
    dev.check_python()
    rd = dev.options.remote_dir
    code, out, err = t.run(_dir_script(rd), what=f"checking {rd}")
    d = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
    if d.get("dir_error") or code != 0:
        problem = d.get("dir_error") or err.strip() or f"exit {code}"
        raise DeviceError(
            f"--remote-dir {rd} on {dev.name} cannot be written: {problem.splitlines()[-1]}", _hint(problem, rd + "/x")
        )
    free = int(d["dir_free_kb"]) if d.get("dir_free_kb", "").isdigit() else None
    if free is not None and free < MIN_FREE_KB:
        raise DeviceError(
            f"--remote-dir {rd} on {dev.name} is (nearly) full: {free} KiB free, the runner and a "
            f"bundle need at least {MIN_FREE_KB} KiB",
            _hint("no space left", rd + "/x"),
        )
    tool = t.hash_tool()
    if tool is None:
        t.note(
            f"no sha256 tool on {dev.name} (sha256sum, {dev.python} hashlib, openssl): uploads are checked by "
            "size only (fix: install coreutils or BusyBox sha256sum on the device)"
        )
    if d.get("dir_exec") == "no":
        t.note(
            f"{rd} on {dev.name} is on a noexec mount: a venv there (--install-runtime) cannot load numpy or "
            "the runtime's native libraries (fix: pass --remote-dir on a mount without noexec, e.g. "
            "--remote-dir .cache/edgepack in the home directory)"
        )
    if d.get("tmp_exec") in ("no", "unwritable"):
        what = "noexec" if d["tmp_exec"] == "no" else "not writable"
        t.note(
            f"{d.get('tmp', '/tmp')} on {dev.name} is {what}: edgepack itself does not need it (the runner "
            f"extracts into {rd}/work, --install-runtime's pip uses {rd}/tmp), but a pip install run by hand "
            f"may fail (fix: TMPDIR={rd}/tmp {dev.python} -m pip install ...)"
        )
    if shell.get("shell") == "busybox":
        t.note(
            f"{dev.name} runs BusyBox sh: fine for edgepack (uploads need only cat, wc, mv, rm, mkdir and a "
            "sha256 tool)"
        )
    return {
        "transport": t.kind,
        "sha256_tool": tool,
        "notes": list(t.notes),
        "route": list(dev.route),
        "shell": shell.get("shell"),
        "remote_dir_free_kb": free,
    }


def advice(facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per format (each declared Runtime): ready or not, and the exact command to get it ready on this device."""
    pip = f"{facts['python_executable']} -m pip install"
    if facts.get("externally_managed"):
        pip = (
            "python3 -m venv ~/.venv-edgepack && ~/.venv-edgepack/bin/pip install"
            "   # this Python is externally managed (PEP 668); then pass --remote-python "
            "~/.venv-edgepack/bin/python, or use edgepack bench --install-runtime"
        )
    out: dict[str, dict[str, Any]] = {}
    for rt in registry.runtimes():
        a = rt.advice(facts, pip)
        if a is not None:
            out[rt.format] = {**a, "device_packages": list(rt.device_packages)}
    return out


def _clusters(clusters: Optional[list[dict[str, Any]]]) -> str:
    """``0-3 @ 1800 MHz (little), 4-7 @ 2400 MHz (big)``: the core clusters, for bench --cpus."""
    if not clusters:
        return "?"
    parts = []
    for i, c in enumerate(clusters):
        facts = [f"{c['max_freq_mhz']} MHz" if c.get("max_freq_mhz") else None]
        facts.append(f"capacity {c['capacity']}" if c.get("capacity") else None)
        text = f"{c['cpus']} @ {', '.join(f for f in facts if f)}" if any(facts) else f"{c['cpus']} (no max frequency)"
        if len(clusters) > 1:
            text += " (little)" if i == 0 else " (big)" if i == len(clusters) - 1 else ""
        parts.append(text)
    suffix = "  [bench --cpus big|little|LIST]" if len(clusters) > 1 else "  [one cluster; bench --cpus LIST pins]"
    return "; ".join(parts) + suffix


def render(device: str, facts: dict[str, Any], adv: dict[str, dict[str, Any]]) -> str:
    cpu = facts["cpu"]
    lines = [
        f"device    {device}",
        f"arch      {facts['machine']} ({facts['system']}, {facts['os']}, {facts['libc'] or 'libc ?'})",
        f"python    {facts['python']} at {facts['python_executable']}"
        + ("  [externally managed: use a venv]" if facts.get("externally_managed") else ""),
        f"cpu       {cpu.get('model') or '?'}, {facts['cpu_count']} cores, governor {cpu.get('governor') or '?'}, "
        f"max {cpu.get('max_freq_mhz') or '?'} MHz"
        + ("  [EMULATED: latency is not the real board's]" if cpu.get("emulated") else ""),
        f"cores     {_clusters(facts.get('core_clusters'))}",
        f"memory    {facts['mem_available_mb'] or '?'} MB available; disk {facts['disk_free_mb']} MB free in ~",
        "packages  " + (", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v) or "(none)"),
        "npu       " + (", ".join(facts["npu_device_nodes"]) or "no NPU device nodes found"),
        "delegates " + (", ".join(facts["delegate_libraries"]) or "no delegate libraries found"),
        f"transport {facts.get('transport', 'local')}"
        + (f", sha256 checked with {facts['sha256_tool']}" if facts.get("sha256_tool") else "")
        + (f", via {' -> '.join(facts['route'])}" if facts.get("route") else ""),
        *(f"note      {n}" for n in facts.get("notes", [])),
        "",
    ]
    width = max([9, *(len(f) for f in adv)])  # the labels above are 9 wide ("delegates"); executorch is 10
    for fmt, a in adv.items():
        if a["ready"]:
            lines.append(f"{fmt:<{width}} ready ({a['runtime']})")
        else:
            lines.append(
                f"{fmt:<{width}} not ready"
                + (f": {a['install']}" if a.get("install") else "")
                + (f"  ({a['note']})" if a.get("note") else "")
            )
    return "\n".join(lines) + "\n"
