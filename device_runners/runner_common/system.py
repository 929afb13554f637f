"""Facts about the device and this process: CPU fingerprint, temperature, memory, threads."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Optional

#: TEST-ONLY: a directory standing in for ``/`` when the runner reads ``/sys`` (cpufreq, thermal zones, firmware
#: throttling flags), so tests can give it a fake tree whose values they change between windows. Never set it on a
#: real device: every result read through it records it as ``device.cpu.sysfs_root``.
SYSFS_ROOT_ENV = "EDGEPACK_SYSFS_ROOT"


def sysfs_root() -> Optional[str]:
    """The test-only fake root for ``/sys`` (``EDGEPACK_SYSFS_ROOT``), or None (the real ``/sys``)."""
    return os.environ.get(SYSFS_ROOT_ENV) or None


def sys_path(path: str) -> str:
    """``path`` (absolute, under ``/sys``) in the tree the runner reads: the real one, or the test-only fake root."""
    root = sysfs_root()
    return os.path.join(root, path.lstrip("/")) if root else path


def read_text(path: str) -> str:
    """A small system file's text, or "" when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except (OSError, IOError):
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat_text = read_text("/proc/%d/stat" % pid)
    if stat_text and stat_text.rsplit(")", 1)[-1].split()[:1] == ["Z"]:
        return False  # a zombie: killed, waiting to be reaped
    return True


def process_threads() -> Optional[int]:
    """OS threads of this process (Linux), i.e. what the runtime really started."""
    for line in read_text("/proc/self/status").splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return None


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident set size. Linux: VmHWM of /proc/self/status, because getrusage's ru_maxrss
    survives execve: a runner started by a large process (edgepack with torch loaded, on the local device)
    would report its parent's size (measured: 407 MB for a 11 MB child of a 400 MB parent)."""
    for line in read_text("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) / 1024.0  # kB
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    if sys.platform == "darwin":
        return rss / (1024.0 * 1024.0)
    return rss / 1024.0


def cpu_fingerprint() -> dict[str, Any]:
    """CPU model, emulation and frequency facts the device exposes (best effort)."""
    info: dict[str, Any] = {"model": None, "emulated": False, "governor": None, "max_freq_mhz": None}
    text = read_text("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if value and key not in fields:
            fields[key] = value
    # x86: "model name"; Raspberry Pi: "Model" (board) or "Hardware"; others: "cpu model".
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        value = fields.get(key, "")
        if value and not value.isdigit():
            info["model"] = value
            break
    if not info["model"]:
        info["model"] = platform.processor() or None
    gov = read_text(sys_path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")).strip()
    info["governor"] = gov or None
    freq = read_text(sys_path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")).strip()
    if freq.isdigit():
        info["max_freq_mhz"] = int(freq) // 1000
    cur = read_text(sys_path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")).strip()
    if cur.isdigit():
        info["cur_freq_mhz"] = int(cur) // 1000
    info["temperature_c"] = cpu_temperature()
    if sysfs_root():
        info["sysfs_root"] = sysfs_root()
    # qemu-user leaves its own binfmt interpreter in our maps; qemu-system names itself in cpuinfo.
    maps = read_text("/proc/self/maps")
    if "qemu" in maps or "QEMU" in text or os.environ.get("QEMU_CPU") or os.environ.get("QEMU_LD_PREFIX"):
        info["emulated"] = True
    return info


def cpu_temperature(base: Optional[str] = None) -> Optional[float]:
    """The hottest thermal zone in degrees C (Raspberry Pi: cpu-thermal), or None where none is exposed."""
    hottest: Optional[float] = None
    base = base or sys_path("/sys/class/thermal")
    try:
        zones = [z for z in os.listdir(base) if z.startswith("thermal_zone")]
    except OSError:
        return None
    for zone in zones:
        text = read_text(os.path.join(base, zone, "temp")).strip()
        try:
            value = int(text) / 1000.0
        except ValueError:
            continue
        if -40.0 < value < 150.0 and (hottest is None or value > hottest):
            hottest = value
    return hottest


def device_info(runtime: str, runtime_version: str) -> dict[str, Any]:
    """The result's ``device`` object (its ``cpu`` gains end/max temperatures after timing)."""
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "numpy": numpy_version(),
        "runtime": runtime,
        "runtime_version": runtime_version,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_fingerprint(),
    }


def numpy_version() -> Optional[str]:
    try:
        import numpy
    except ImportError:
        return None
    return str(numpy.__version__)
