"""Sustained mode (``--sustained SECONDS``): back-to-back timing windows for that long, the device's clocks,
temperatures and throttling flags read after each window, and a verdict on whether the latency held.

Read after every window (never inside one, so no timed inference waits for a sensor):

- CPU frequency: ``/sys/devices/system/cpu/cpuN/cpufreq/scaling_cur_freq`` of the cores the runner uses;
- temperatures: every ``/sys/class/thermal/thermal_zone*/temp``, labelled by the zone's ``type`` (a Pi:
  ``cpu-thermal``), and each zone's ``passive`` trip point (where the kernel starts to throttle);
- throttling flags: the Raspberry Pi firmware's ``get_throttled`` word, from sysfs
  (``/sys/devices/platform/soc/soc:firmware/get_throttled``, hex), else ``vcgencmd get_throttled``, else the
  ``rpi_volt`` hwmon under-voltage alarm. Bits (Raspberry Pi documentation, ``vcgencmd get_throttled``): 0
  under-voltage, 1 arm frequency capped, 2 currently throttled, 3 soft temperature limit active; 16-19 the same
  four "has occurred" since boot.

Verdict: ``throttled`` when a firmware flag was active during the run, a sticky flag appeared during it, or the
clock of the cores in use fell by more than 5% (median of the last third of windows vs the first window);
otherwise ``drifting`` when the sustained p50 (median of the last third's window p50s) differs from the cold p50
(the first window's) by more than the tolerance, else ``stable``. ``evidence`` says what was seen.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Sequence

from .system import read_text, sys_path, sysfs_root
from .timing import percentile

GET_THROTTLED = "/sys/devices/platform/soc/soc:firmware/get_throttled"
THROTTLE_BITS = (
    (0, "under-voltage"),
    (1, "arm frequency capped"),
    (2, "currently throttled"),
    (3, "soft temperature limit active"),
    (16, "under-voltage has occurred"),
    (17, "arm frequency capping has occurred"),
    (18, "throttling has occurred"),
    (19, "soft temperature limit has occurred"),
)
NOW_MASK = 0x0000F  # bits 0-3: the condition holds now
STICKY_MASK = 0xF0000  # bits 16-19: it has happened since boot
CLOCK_DROP = 0.05  # a fall of the cores' clock by more than this counts as throttling
MIN_WINDOWS = 3
AUTO_WINDOWS = 24  # --window 0: the duration split into about this many windows ...
AUTO_WINDOW_BOUNDS = (0.25, 10.0)  # ... each between these many seconds


def flag_names(value: Optional[int]) -> list[str]:
    """The names of the get_throttled bits set in ``value``."""
    if not value:
        return []
    return [name for bit, name in THROTTLE_BITS if value & (1 << bit)]


def window_seconds(duration: float, window: float) -> tuple[int, float]:
    """(number of windows, seconds each): ``window`` 0 picks about AUTO_WINDOWS windows within the bounds; the
    windows split ``duration`` evenly."""
    if window <= 0:
        lo, hi = AUTO_WINDOW_BOUNDS
        window = min(hi, max(lo, duration / AUTO_WINDOWS))
    n = max(1, int(round(duration / window)))
    return n, duration / n


def _median(values: Sequence[float]) -> float:
    got = percentile(sorted(values), 50)
    assert got is not None
    return got


class Sensors(object):
    """What the device exposes, found once; :meth:`read` returns one reading (a few small file reads)."""

    def __init__(self, cores: Sequence[int]) -> None:
        self.cores = list(cores)
        self.zones: list[tuple[str, str]] = []  # (zone directory, label)
        self.trips: dict[str, float] = {}  # label -> passive trip point, C
        base = sys_path("/sys/class/thermal")
        try:
            names = sorted((z for z in os.listdir(base) if z.startswith("thermal_zone")), key=lambda z: int(z[12:]))
        except (OSError, ValueError):
            names = []
        seen: set[str] = set()
        for z in names:
            d = os.path.join(base, z)
            if self._temp(d) is None:
                continue
            label = read_text(os.path.join(d, "type")).strip() or z
            if label in seen:
                label = "%s (%s)" % (label, z)
            seen.add(label)
            self.zones.append((d, label))
            for i in range(16):
                kind = read_text(os.path.join(d, "trip_point_%d_type" % i)).strip()
                if not kind:
                    break
                if kind == "passive" and label not in self.trips:
                    t = read_text(os.path.join(d, "trip_point_%d_temp" % i)).strip()
                    if t.lstrip("-").isdigit():
                        self.trips[label] = int(t) / 1000.0
        self.freq_source = "cpufreq scaling_cur_freq" if self._freqs() else None
        self.temperature_source = "/sys/class/thermal" if self.zones else None
        self.vcgencmd: Optional[str] = None
        self.hwmon_alarm: Optional[str] = None
        self.throttle_source: Optional[str] = None
        if self._sysfs_throttled() is not None:
            self.throttle_source = "sysfs get_throttled"
        elif not sysfs_root():  # a fake /sys (tests) is the whole truth: never ask the real firmware
            import shutil

            self.vcgencmd = shutil.which("vcgencmd")
            if self.vcgencmd and self._vcgencmd_throttled() is not None:
                self.throttle_source = "vcgencmd get_throttled"
            else:
                self.vcgencmd = None
        if self.throttle_source is None:
            self.hwmon_alarm = self._find_hwmon_alarm()
            if self.hwmon_alarm:
                self.throttle_source = "hwmon rpi_volt (under-voltage only)"

    @staticmethod
    def _temp(zone_dir: str) -> Optional[float]:
        text = read_text(os.path.join(zone_dir, "temp")).strip()
        try:
            value = int(text) / 1000.0
        except ValueError:
            return None
        return value if -40.0 < value < 150.0 else None

    def _freqs(self) -> dict[str, int]:
        from .cpus import cur_freq_mhz

        out = {}
        for c in self.cores:
            mhz = cur_freq_mhz(c)
            if mhz is not None:
                out[str(c)] = mhz
        return out

    @staticmethod
    def _sysfs_throttled() -> Optional[int]:
        text = read_text(sys_path(GET_THROTTLED)).strip().lower()
        try:
            return int(text, 16) if text else None
        except ValueError:
            return None

    def _vcgencmd_throttled(self) -> Optional[int]:
        import subprocess

        try:
            out = subprocess.run(
                [self.vcgencmd or "vcgencmd", "get_throttled"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=5,
            ).stdout.decode("ascii", "replace")
        except (OSError, subprocess.SubprocessError):
            return None
        _, _, value = out.strip().partition("=")  # "throttled=0x50005"
        try:
            return int(value, 16)
        except ValueError:
            return None

    @staticmethod
    def _find_hwmon_alarm() -> Optional[str]:
        base = sys_path("/sys/class/hwmon")
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return None
        for h in names:
            if read_text(os.path.join(base, h, "name")).strip() == "rpi_volt":
                path = os.path.join(base, h, "in0_lcrit_alarm")
                if read_text(path).strip().isdigit():
                    return path
        return None

    def _throttled(self) -> Optional[int]:
        if self.throttle_source == "sysfs get_throttled":
            return self._sysfs_throttled()
        if self.vcgencmd:
            return self._vcgencmd_throttled()
        if self.hwmon_alarm:
            text = read_text(self.hwmon_alarm).strip()
            return (1 if text == "1" else 0) if text.isdigit() else None
        return None

    def read(self) -> dict[str, Any]:
        temps: dict[str, float] = {}
        for d, label in self.zones:
            t = self._temp(d)
            if t is not None:
                temps[label] = t
        return {
            "freq_mhz": self._freqs() if self.freq_source else None,
            "temperatures": temps,
            "temperature_c": max(temps.values()) if temps else None,
            "throttled": self._throttled() if self.throttle_source else None,
        }

    def sources(self) -> dict[str, Optional[str]]:
        return {
            "frequency": self.freq_source,
            "temperature": self.temperature_source,
            "throttling": self.throttle_source,
        }


Progress = Callable[[dict[str, Any]], None]


def measure(
    fn: Callable[[], object],
    duration: float,
    window: float,
    warmup: int,
    max_kept: int,
    tolerance: float,
    cores: Sequence[int],
    progress: Optional[Progress] = None,
) -> tuple[dict[str, Any], list[float], list[int], float]:
    """Warm up, then run ``fn`` back to back for ``duration`` seconds in equal windows, reading the sensors after
    each. Returns (the result's ``sustained`` object, kept samples, kept samples per window, timed seconds).

    Every run counts in its window's statistics; at most ``max_kept`` samples in all (evenly spaced within each
    window) are kept for the result's ``latency_ms``, so a fast model's two-minute run stays a small document."""
    for _ in range(max(0, warmup)):
        fn()
    n, seconds = window_seconds(duration, window)
    sensors = Sensors(cores)
    before = sensors.read()
    cap = max(1, max_kept // n)
    clock = time.perf_counter
    windows: list[dict[str, Any]] = []
    kept: list[float] = []
    sizes: list[int] = []
    timed = 0.0
    start = clock()
    for i in range(n):
        end = start + (i + 1) * seconds  # anchored to the start: sensor reads do not stretch the run
        got: list[float] = []
        w0 = t1 = clock()
        while True:
            t0 = clock()
            fn()
            t1 = clock()
            got.append((t1 - t0) * 1000.0)
            if t1 >= end:
                break
        timed += t1 - w0
        s0 = clock()
        reading = sensors.read()
        sample_ms = (clock() - s0) * 1000.0
        s = sorted(got)
        stride = -(-len(got) // cap)  # ceil
        keep = got[::stride]
        kept.extend(keep)
        sizes.append(len(keep))
        w = {
            "index": i,
            "t_s": t1 - start,
            "seconds": t1 - w0,
            "runs": len(got),
            "p50": percentile(s, 50),
            "p90": percentile(s, 90),
            "mean": sum(s) / len(s),
            "min": s[0],
            "max": s[-1],
            "sample_ms": sample_ms,
        }
        w.update(reading)
        windows.append(w)
        if progress is not None:
            progress(
                {
                    "elapsed_s": round(clock() - start, 3),
                    "total_s": duration,
                    "window": i + 1,
                    "windows": n,
                    "p50_ms": w["p50"],
                    "temperature_c": w["temperature_c"],
                    "freq_mhz": _mean_freq(w),
                    "throttled": w["throttled"],
                }
            )
    elapsed = clock() - start
    doc = {
        "duration_s": duration,
        "window_s": seconds,
        "elapsed_s": elapsed,
        "runs": sum(w["runs"] for w in windows),
        "sampling_ms": _median([w["sample_ms"] for w in windows]),
        "throttled_before": before["throttled"],
        "temperature_before_c": before["temperature_c"],
        "sources": sensors.sources(),
        "trip_points_c": sensors.trips,
        "cores": list(cores),
        "windows": windows,
    }
    doc.update(verdict(windows, before["throttled"], tolerance, sensors.sources(), sensors.trips))
    return doc, kept, sizes, timed


def _mean_freq(w: dict[str, Any]) -> Optional[float]:
    f = w.get("freq_mhz")
    return sum(f.values()) / len(f) if f else None


def verdict(
    windows: Sequence[dict[str, Any]],
    throttled_before: Optional[int],
    tolerance: float,
    sources: dict[str, Optional[str]],
    trips: Optional[dict[str, float]] = None,
) -> dict[str, Any]:
    """``cold_p50``, ``sustained_p50``, ``ratio``, ``tolerance``, ``verdict`` and ``evidence`` from the windows
    (each with ``p50``, ``freq_mhz``, ``temperature_c``, ``temperatures``, ``throttled``)."""
    n = len(windows)
    tail = list(windows[-max(1, n // 3) :])
    cold = float(windows[0]["p50"])
    sustained = _median([float(w["p50"]) for w in tail])
    ratio = sustained / cold if cold > 0 else 1.0
    evidence: list[str] = []
    throttled = False

    # firmware flags
    active = [w for w in windows if w.get("throttled") is not None and w["throttled"] & NOW_MASK]
    if active:
        throttled = True
        bits = 0
        for w in active:
            bits |= w["throttled"] & NOW_MASK
        evidence.append(
            "firmware throttling flags active in %d of %d windows (from window %d): %s (get_throttled 0x%x)"
            % (len(active), n, active[0]["index"] + 1, ", ".join(flag_names(bits)), active[-1]["throttled"])
        )
    sticky = 0
    for w in windows:
        if w.get("throttled") is not None:
            sticky |= w["throttled"] & STICKY_MASK
    earlier = (throttled_before or 0) & STICKY_MASK
    new = sticky & ~earlier
    if new:
        throttled = True
        evidence.append("the firmware recorded during the run: %s" % ", ".join(flag_names(new)))
    if earlier:
        evidence.append(
            "before this run the device had already reported (since boot, not counted): %s"
            % ", ".join(flag_names(earlier))
        )
    if not sources.get("throttling"):
        evidence.append("no throttling flags exposed (Raspberry Pi firmware get_throttled / vcgencmd absent)")
    elif not active and not new:
        evidence.append("no firmware throttling flag during the run (%s)" % sources["throttling"])

    # clocks of the cores in use
    freqs = [_mean_freq(w) for w in windows]
    if sources.get("frequency") and all(f is not None for f in freqs):
        known = [float(f) for f in freqs if f is not None]
        first, low = known[0], min(known)
        late = _median(known[-len(tail) :])
        if first > 0 and late < first * (1 - CLOCK_DROP):
            throttled = True
            evidence.append(
                "CPU clock fell from %.0f MHz (window 1) to %.0f MHz (last third, median; lowest %.0f MHz in "
                "window %d)" % (first, late, low, known.index(low) + 1)
            )
        else:
            evidence.append("CPU clock held: %.0f MHz in window 1, %.0f MHz over the last third" % (first, late))
    else:
        evidence.append("no CPU frequency exposed (cpufreq): clock drops cannot be seen")

    # temperature
    temps = [w.get("temperature_c") for w in windows]
    seen = [float(t) for t in temps if t is not None]
    if seen:
        evidence.append("temperature %.1f -> %.1f C (max %.1f C)" % (seen[0], seen[-1], max(seen)))
        for label, trip in sorted((trips or {}).items()):
            peak = max((w.get("temperatures") or {}).get(label, -1e9) for w in windows)
            if peak >= trip:
                evidence.append(
                    "%s reached its passive trip point (%.1f C): the kernel throttles there" % (label, trip)
                )
    else:
        evidence.append("no temperature exposed (/sys/class/thermal)")

    change = "%+.1f%%" % ((ratio - 1) * 100)
    head = "sustained p50 %.4g ms vs cold %.4g ms (%s; tolerance +/-%g%%)" % (sustained, cold, change, tolerance * 100)
    if throttled:
        result = "throttled"
    elif abs(ratio - 1) > tolerance:
        result = "drifting"
        head += (
            ": slower when sustained, with no throttling seen (other load on the device, or limits it does not report)"
            if ratio > 1
            else ": faster when sustained (a warm-up longer than --warmup, or clocks ramping up)"
        )
    else:
        result = "stable"
    return {
        "cold_p50": cold,
        "sustained_p50": sustained,
        "ratio": ratio,
        "tolerance": tolerance,
        "verdict": result,
        "evidence": [head] + evidence,
    }
