"""Is a latency change real? A bootstrap confidence interval of the ratio of medians (current / baseline).

Latency samples from one timing window are not independent: a window that ran while the CPU was hot, or
shared with another process, is slow as a whole. So the bootstrap is hierarchical when the results have
several windows (``edgepack bench --repeat R``): each replicate resamples whole windows with replacement,
then samples within each picked window, and takes the median of what it drew. Between-window drift then
widens the interval as it should; with one window per side only sample-to-sample noise is seen, and the
interval is narrower than the truth (the report says so).

Deterministic: the same samples and seed give the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Samples drawn per window per replicate at most: enough for a stable median, bounded cost for fast models
# that produce 10,000 samples a window.
MAX_DRAW = 1000


@dataclass(frozen=True)
class RatioInterval:
    ratio: float  # point estimate: median(current) / median(baseline)
    low: float
    high: float
    confidence: float
    windows: tuple[int, int]  # (baseline, current) timing windows used

    def beyond(self, limit: float) -> bool:
        """The whole interval lies above ``limit`` (a real regression past it)."""
        return self.low > limit

    def within(self, limit: float) -> bool:
        return self.high <= limit


def _windows(groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    out = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not out:
        raise ValueError("no latency samples")
    return out


def _boot_medians(windows: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` hierarchical bootstrap replicates: pick R windows with replacement, draw ``m``
    samples with replacement from each (``m`` = the smallest window, at most MAX_DRAW), take the median."""
    r = len(windows)
    lens = np.array([len(w) for w in windows])
    m = int(min(lens.min(), MAX_DRAW))
    padded = np.zeros((r, lens.max()))
    for i, w in enumerate(windows):
        padded[i, : len(w)] = w
    medians = np.empty(n_boot)
    chunk = max(1, 4_000_000 // (r * m))  # bounded memory per block of replicates
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        picked = rng.integers(0, r, (b, r)) if r > 1 else np.zeros((b, 1), dtype=np.int64)
        within = (rng.random((b, r, m)) * lens[picked][..., None]).astype(np.int64)
        draws = padded[picked[..., None], within]
        medians[start : start + b] = np.median(draws.reshape(b, r * m), axis=1)
    return medians


def ratio_of_medians(
    baseline: Sequence[Sequence[float]],
    current: Sequence[Sequence[float]],
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> RatioInterval:
    """Bootstrap CI of median(current) / median(baseline); each argument is a list of timing windows."""
    base, cur = _windows(baseline), _windows(current)
    rng = np.random.default_rng(seed)
    ratios = _boot_medians(cur, n_boot, rng) / _boot_medians(base, n_boot, rng)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    point = float(np.median(np.concatenate(cur)) / np.median(np.concatenate(base)))
    return RatioInterval(point, float(low), float(high), confidence, (len(base), len(cur)))
