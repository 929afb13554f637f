"""CPU cores: per-core facts (max frequency, capacity), core clusters (big.LITTLE), pinning with ``--cpus``.

``--cpus`` takes core numbers (``4-7``, ``0,2``), or ``big`` / ``little`` / ``all``, resolved on the device from
each core's ``cpufreq/cpuinfo_max_freq`` (else its ``cpu_capacity``). The runner pins itself with
``os.sched_setaffinity`` before the model is loaded, so the runtime's threads inherit the set; the result records
the affinity every thread of the runner ended with and the cores' maximum frequencies.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from .errors import EXIT_USAGE, RunnerError
from .system import read_text, sys_path

CPU_DIR = "/sys/devices/system/cpu"


def parse_list(text: str) -> list[int]:
    """A kernel CPU list (``0-3,6``) -> [0, 1, 2, 3, 6]; ValueError when it is not one."""
    out: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(part)
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ValueError(part)
        out.update(range(a, b + 1))
    if not out:
        raise ValueError(text)
    return sorted(out)


def format_list(cpus: Any) -> str:
    """[0, 1, 2, 3, 6] -> ``0-3,6``."""
    cpus = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(parts)


def _int(path: str) -> Optional[int]:
    text = read_text(sys_path(path)).strip()
    return int(text) if text.isdigit() else None


def present_cpus() -> list[int]:
    """The online cores (``/sys/devices/system/cpu/online``, else the ``cpuN`` folders, else ``os.cpu_count()``)."""
    online = read_text(sys_path(CPU_DIR + "/online")).strip()
    if online:
        try:
            return parse_list(online)
        except ValueError:
            pass
    try:
        found = sorted(int(n[3:]) for n in os.listdir(sys_path(CPU_DIR)) if re.match(r"^cpu\d+$", n))
    except OSError:
        found = []
    return found or list(range(os.cpu_count() or 1))


def max_freq_mhz(cpu: int) -> Optional[int]:
    khz = _int("%s/cpu%d/cpufreq/cpuinfo_max_freq" % (CPU_DIR, cpu))
    return khz // 1000 if khz is not None else None


def cur_freq_mhz(cpu: int) -> Optional[int]:
    khz = _int("%s/cpu%d/cpufreq/scaling_cur_freq" % (CPU_DIR, cpu))
    return khz // 1000 if khz is not None else None


def core_facts(cpus: Optional[list[int]] = None) -> list[dict[str, Any]]:
    """Per core: ``cpu``, ``max_freq_mhz`` (cpufreq) and ``capacity`` (the scheduler's relative capacity, 1024 =
    the biggest core; arm64 and some others), each null where the device does not expose it."""
    return [
        {"cpu": c, "max_freq_mhz": max_freq_mhz(c), "capacity": _int("%s/cpu%d/cpu_capacity" % (CPU_DIR, c))}
        for c in (present_cpus() if cpus is None else cpus)
    ]


def clusters(facts: Optional[list[dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """Cores grouped by (max frequency, capacity), slowest first: ``[{"cpus": "0-3", "count": 4,
    "max_freq_mhz": 1800, "capacity": 446}, ...]``. One entry on a device whose cores are all alike (or that
    exposes neither figure)."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for f in core_facts() if facts is None else facts:
        key = (f["max_freq_mhz"] or 0, f["capacity"] or 0)
        groups.setdefault(key, []).append(f)
    out = []
    for key in sorted(groups):
        members = groups[key]
        out.append(
            {
                "cpus": format_list(m["cpu"] for m in members),
                "count": len(members),
                "max_freq_mhz": members[0]["max_freq_mhz"],
                "capacity": members[0]["capacity"],
            }
        )
    return out


def resolve(spec: str) -> list[int]:
    """``--cpus`` -> core numbers: a list (``4-7``, ``0,2``), ``all``, or ``big`` / ``little`` (the cluster(s) with
    the highest / lowest max frequency, else capacity)."""
    text = spec.strip().lower()
    if text in ("all", "big", "little"):
        facts = core_facts()
        if text == "all":
            return [f["cpu"] for f in facts]
        known = [f for f in facts if f["max_freq_mhz"] or f["capacity"]]
        if len(known) < len(facts) or not known:
            raise RunnerError(
                "--cpus %s: this device exposes no per-core max frequency (cpufreq) or capacity, so its core "
                "clusters cannot be told apart" % text,
                "pass the core numbers instead, e.g. --cpus 4-7 (edgepack doctor lists the cores)",
                EXIT_USAGE,
            )
        keys = sorted(set((f["max_freq_mhz"] or 0, f["capacity"] or 0) for f in facts))
        want = keys[-1] if text == "big" else keys[0]
        return [f["cpu"] for f in facts if (f["max_freq_mhz"] or 0, f["capacity"] or 0) == want]
    try:
        return parse_list(text)
    except ValueError:
        raise RunnerError(
            "--cpus %r is not a core list or big/little/all" % spec,
            "write it like --cpus 4-7, --cpus 0,2, --cpus big or --cpus little",
            EXIT_USAGE,
        )


def pin(spec: str) -> list[int]:
    """Pin this process -- every thread it has and the threads it starts later -- to the cores ``spec`` names;
    returns them."""
    setaffinity = getattr(os, "sched_setaffinity", None)
    if setaffinity is None:
        import platform

        raise RunnerError(
            "--cpus needs os.sched_setaffinity (Linux); this device runs %s" % platform.system(),
            "drop --cpus on this device",
            EXIT_USAGE,
        )
    cores = resolve(spec)
    try:
        setaffinity(0, cores)
        # threads started before this (numpy's BLAS pool, watchdogs) keep their own mask: pin each of them too
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            tids = []
        for tid in tids:
            try:
                setaffinity(tid, cores)
            except OSError:  # the thread ended meanwhile
                pass
    except (OSError, ValueError) as e:
        allowed = affinity() or []
        raise RunnerError(
            "--cpus %s: cannot pin to core(s) %s on this device (%s; the runner may use %s)"
            % (spec, format_list(cores), getattr(e, "strerror", None) or e, format_list(allowed) or "?"),
            "pass cores the device has and the runner may use (edgepack doctor lists the core clusters)",
            EXIT_USAGE,
        )
    return cores


def affinity() -> Optional[list[int]]:
    """The cores this process's threads may run on: the union of every thread's ``Cpus_allowed_list`` (so a
    runtime that re-pinned its own threads shows), else ``os.sched_getaffinity``; None where neither exists."""
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        tasks = []
    for tid in tasks:
        for line in read_text("/proc/self/task/%s/status" % tid).splitlines():
            if line.startswith("Cpus_allowed_list:"):
                try:
                    found.update(parse_list(line.split(":", 1)[1]))
                except ValueError:
                    pass
    if found:
        return sorted(found)
    getaffinity = getattr(os, "sched_getaffinity", None)
    return sorted(getaffinity(0)) if getaffinity else None


def facts(pinned: Optional[str]) -> dict[str, Any]:
    """The result's ``device.cpu`` additions: ``pinned`` (the ``--cpus`` request), ``affinity`` and ``cores``
    (max frequency and capacity of each core the runner could use)."""
    used = affinity()
    return {"pinned": pinned, "affinity": used, "cores": core_facts(used) if used is not None else None}
