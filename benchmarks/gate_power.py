"""How often does the latency gate fail, by true slowdown? (false alarms at 0 %, detection above the limit)

Synthetic latencies shaped like real ones: log-normal samples (within-window spread) around a level that drifts
from window to window (run-to-run drift), R windows per side, as ``bench --repeat R`` gives. For each true
slowdown, many independent baseline/current pairs go through the gate's own check (edgepack.stats), and the
fraction that fails is printed, for the hierarchical interval (windows resampled) and, for contrast, for all
samples pooled into one window. Figures, not a test.

    python benchmarks/gate_power.py [--trials 40] [--repeat 5] [--limit 0.05] [--drift 0.03]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgepack.stats import ratio_of_medians


def windows(rng, level, repeat, n, spread, drift):
    return [list(level * np.exp(rng.normal(0, drift)) * rng.lognormal(0, spread, n)) for _ in range(repeat)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=40, help="baseline/current pairs per slowdown")
    ap.add_argument("--repeat", type=int, default=5, help="timing windows per side")
    ap.add_argument("--samples", type=int, default=300, help="samples per window")
    ap.add_argument("--spread", type=float, default=0.10, help="within-window log-normal sigma")
    ap.add_argument("--drift", type=float, default=0.03, help="window-to-window level sigma")
    ap.add_argument("--limit", type=float, default=0.05, help="allowed regression")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    print(
        f"gate at +{args.limit:.0%}: {args.repeat} windows x {args.samples} samples per side, within-window "
        f"sigma {args.spread:.0%}, window drift sigma {args.drift:.0%}, {args.trials} pairs per row"
    )
    print(f"{'true slowdown':>14} {'fails (windows)':>16} {'fails (pooled)':>15} {'median interval width':>22}")
    t0 = time.perf_counter()
    for shift in (0.0, 0.02, 0.05, 0.10, 0.15, 0.20, 0.30):
        fails = pooled_fails = 0
        widths = []
        for t in range(args.trials):
            base = windows(rng, 10.0, args.repeat, args.samples, args.spread, args.drift)
            cur = windows(rng, 10.0 * (1 + shift), args.repeat, args.samples, args.spread, args.drift)
            ci = ratio_of_medians(base, cur, seed=t)
            fails += ci.beyond(1 + args.limit)
            widths.append(ci.high - ci.low)
            pooled = ratio_of_medians([sum(base, [])], [sum(cur, [])], seed=t)
            pooled_fails += pooled.beyond(1 + args.limit)
        print(
            f"{shift:>13.0%} {fails / args.trials:>16.0%} {pooled_fails / args.trials:>15.0%} "
            f"{np.median(widths) * 100:>20.1f} pt"
        )
    per = (time.perf_counter() - t0) / (7 * args.trials * 2)
    print(f"one comparison (2000 bootstrap replicates): {per * 1000:.0f} ms")


if __name__ == "__main__":
    main()
