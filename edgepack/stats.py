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


# --------------------------------------------------------------------------- sequential: sampling until it knows

# Lai's mixture width parameter (prior precision of the effect in units of the noise's sd): 0.5 makes the
# sequence finite from the 5th observation and near its tightest between 10 and 40 (see lai_radius).
LAI_C = 0.5


def lai_radius(n: int, sd: float, alpha: float, c: float = LAI_C) -> float:
    """Half-width of Lai's (1976) confidence sequence for a normal mean with unknown variance, after ``n``
    observations with (biased, 1/n) standard deviation ``sd``: ``mean ± radius`` covers the true mean at every
    ``n`` at once with probability >= 1 - alpha, so it may be checked after every observation and the sampling
    stopped whenever it excludes a value (anytime-valid; a fixed-sample t interval re-checked after every
    window would not be).

    Derivation: the scale-invariant likelihood ratio of "mean = m" against a N(0, 1/c) mixture of effects in
    units of sigma is M_n = sqrt(c/(c+n)) * (1 - (sum y)^2 / ((n+c) sum y^2))^(-n/2) with y = x - m, a
    nonnegative martingale under "mean = m" (Lai 1976; Wang & Ramdas 2023, "Anytime-valid t-tests and
    confidence sequences for Gaussian means with unknown variance"). Ville's inequality bounds
    P(sup M_n >= 1/alpha) by alpha; solving M_n < 1/alpha for m gives |mean - m| < radius. Infinite (no
    conclusion) while n is too small."""
    if n < 2 or not np.isfinite(sd):
        return float("inf")
    q = (alpha * alpha * c / (c + n)) ** (1.0 / n)
    a = (1.0 - q) * (n + c)
    if n - a <= 0:
        return float("inf")
    return float(sd * np.sqrt(a / (n - a)))


@dataclass(frozen=True)
class SequentialInterval:
    """An anytime-valid interval of the latency ratio current / baseline after some timing windows."""

    ratio: float  # point estimate: exp(mean log ratio)
    low: float
    high: float
    confidence: float
    windows: tuple[int, int]  # (baseline, current) timing windows used
    paired: bool

    def beyond(self, limit: float) -> bool:
        return self.low > limit

    def within(self, limit: float) -> bool:
        return self.high <= limit


def _log_quantiles(groups: Sequence[Sequence[float]], quantile: float) -> np.ndarray:
    return np.log(np.array([np.percentile(w, quantile) for w in _windows(groups)], dtype=np.float64))


def sequential_ratio(
    baseline: Sequence[Sequence[float]],
    current: Sequence[Sequence[float]],
    confidence: float = 0.95,
    paired: bool = True,
    quantile: float = 50.0,
) -> SequentialInterval:
    """Anytime-valid interval of the latency ratio current / baseline from timing windows.

    Paired (baseline and current windows interleaved on one device, window i of each side from round i): the
    observations are the per-round log ratios of window medians, d_i = log(med cur_i / med base_i), whose
    common drift (a busy host slows both bundles of a round) cancels; Lai's confidence sequence of their mean
    at 1 - confidence. Unpaired (current windows against a stored baseline's): a confidence sequence of the
    current windows' mean log median at half the error and a Lai interval of the baseline's at the other
    half (Bonferroni), so the stored baseline's own windows bound the precision.

    ``quantile``: the window statistic (50 = the median). A low one (10) is far less disturbed by other
    processes on a busy host (they only ever add time), and moves with the model's own cost all the same."""
    alpha = 1.0 - confidence
    cur = _log_quantiles(current, quantile)
    base = _log_quantiles(baseline, quantile)
    if paired:
        n = min(len(cur), len(base))
        d = cur[:n] - base[:n]
        mean = float(d.mean())
        r = lai_radius(n, float(d.std()), alpha)
        low, high = mean - r, mean + r
    else:
        mc, mb = float(cur.mean()), float(base.mean())
        rc = lai_radius(len(cur), float(cur.std()), alpha / 2)
        rb = lai_radius(len(base), float(base.std()), alpha / 2)
        mean, low, high = mc - mb, mc - mb - rc - rb, mc - mb + rc + rb
    with np.errstate(over="ignore"):
        return SequentialInterval(
            float(np.exp(mean)),
            float(np.exp(low)),
            float(np.exp(high)),
            confidence,
            (len(base), len(cur)),
            paired,
        )
