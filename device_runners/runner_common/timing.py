"""Timing: warm-up, timed runs until both a count and a duration are met, windows, and their statistics."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional, Sequence


def timing_loop(
    fn: Callable[[], object], warmup: int, runs: int, min_seconds: float, max_runs: int = 10000
) -> tuple[list[float], float]:
    """Run ``fn`` ``warmup`` times, then time it until both ``runs`` and ``min_seconds`` are met.

    ``max_runs`` bounds the loop (and the size of the raw samples) for very fast models.
    Returns (samples in ms, timed seconds).
    """
    for _ in range(max(0, warmup)):
        fn()
    samples: list[float] = []
    clock = time.perf_counter
    start = clock()
    while True:
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000.0)
        if len(samples) >= max(1, runs) and clock() - start >= min_seconds:
            break
        if len(samples) >= max_runs:
            break
    return samples, clock() - start


def timing_windows(
    fn: Callable[[], object],
    warmup: int,
    runs: int,
    min_seconds: float,
    max_runs: int,
    repeat: int = 1,
    cooldown: float = 0.0,
    between: Optional[Callable[[], object]] = None,
) -> tuple[list[float], list[int], float]:
    """``repeat`` independent timing windows (each warmed up, ``cooldown`` seconds of idle before each
    window after the first); returns (all samples, window sizes, timed seconds). ``between`` runs in the
    idle gap (e.g. to read a temperature)."""
    samples: list[float] = []
    sizes: list[int] = []
    elapsed = 0.0
    for i in range(max(1, repeat)):
        if i:
            if between:
                between()
            time.sleep(max(0.0, cooldown))
        got, seconds = timing_loop(fn, warmup, runs, min_seconds, max_runs)
        samples.extend(got)
        sizes.append(len(got))
        elapsed += seconds
    return samples, sizes, elapsed


def percentile(sorted_values: Sequence[float], q: float) -> Optional[float]:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = int(math.floor(k)), int(math.ceil(k))
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples: Sequence[float], window_sizes: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Statistics of all timed samples (the result's ``latency_ms``); ``window_sizes`` (timing windows of
    ``--repeat``, in order) adds a per-window summary so a report can compare run-to-run spread, not only
    sample spread."""
    s = sorted(samples)
    n = len(s)
    mean = sum(s) / n
    var = sum((x - mean) ** 2 for x in s) / n
    out: dict[str, Any] = {
        "samples": [round(x, 6) for x in samples],
        "min": s[0],
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "p99": percentile(s, 99),
        "mean": mean,
        "std": math.sqrt(var),
    }
    if window_sizes:
        windows, start = [], 0
        for size in window_sizes:
            w = sorted(samples[start : start + size])
            start += size
            windows.append({"n": size, "p50": percentile(w, 50), "p90": percentile(w, 90), "mean": sum(w) / size})
        out["windows"] = windows
    return out
