"""How often does the latency gate fail, by true slowdown? (false alarms at 0 %, detection above the limit)

Fixed windows (default): synthetic latencies shaped like real ones: log-normal samples (within-window spread)
around a level that drifts from window to window (run-to-run drift), R windows per side, as ``bench --repeat R``
gives. For each true slowdown, many independent baseline/current pairs go through the gate's own check
(edgepack.stats), and the fraction that fails is printed, for the hierarchical interval (windows resampled) and,
for contrast, for all samples pooled into one window.

``--sequential sim``: ``bench --until-conclusive``'s rule (edgepack.stats.sequential_ratio, a confidence
sequence checked after every round) on synthetic paired rounds, normal and heavy-tailed (t, 3 df), against a
fixed-sample t interval re-checked after every round: false alarms at 0 % and at the limit itself, detection,
median rounds to a decision.

``--sequential local``: the real thing on this machine. Two ONNX bundles of a MatMul→Tanh chain, the second with
10 % more layers (real extra work, not an injected delay; its true slowdown is measured, see below), and the
first against itself; each trial is a full ``edgepack.sequential.compare`` (one serving runner, interleaved
windows, fresh processes per trial). Prints detection, false alarms, median windows and seconds to a decision.
The true slowdown is the median over the trials of each trial's ratio estimate.

Figures, not a test.

    python benchmarks/gate_power.py [--trials 40] [--repeat 5] [--limit 0.05] [--drift 0.03]
    python benchmarks/gate_power.py --sequential sim [--trials 2000]
    python benchmarks/gate_power.py --sequential local [--trials 30] [--budget 60] [--min-seconds 0.1] [--quantile 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgepack.stats import ratio_of_medians


def windows(rng, level, repeat, n, spread, drift):
    return [list(level * np.exp(rng.normal(0, drift)) * rng.lognormal(0, spread, n)) for _ in range(repeat)]


def sequential_sim(args):
    """The sequential rule on synthetic paired rounds: d_i = log ratio of one round's window medians."""
    from scipy import stats as sps

    from edgepack.stats import lai_radius

    rng = np.random.default_rng(0)
    sd, alpha, cap = args.round_sd, 0.05, args.max_rounds
    lim = np.log(1 + args.limit)
    print(
        f"sequential gate at +{args.limit:.0%}, 95%: per-round log-ratio sd {sd:.0%}, at most {cap} rounds, "
        f"{args.trials} trials per row"
    )
    print(
        f"{'noise':>7} {'true':>6} | {'CS: regressed':>13} {'ok':>5} {'median rounds':>13} | "
        f"{'t re-checked: regressed':>23} {'ok':>5}"
    )
    for noise in ("normal", "t3"):
        for shift in (0.0, args.limit, 0.10, 0.55):
            res = {"cs": [0, 0, []], "t": [0, 0]}
            for _ in range(args.trials):
                if noise == "normal":
                    d = rng.normal(np.log(1 + shift), sd, cap)
                else:  # t with 3 df scaled to the same sd
                    d = np.log(1 + shift) + rng.standard_t(3, cap) * sd / np.sqrt(3.0)
                cs_done = t_done = False
                for n in range(2, cap + 1):
                    x = d[:n]
                    m = x.mean()
                    if not cs_done:
                        r = lai_radius(n, float(x.std()), alpha)
                        if m - r > lim or m + r <= lim:
                            res["cs"][0 if m - r > lim else 1] += 1
                            res["cs"][2].append(n)
                            cs_done = True
                    if not t_done:
                        h = sps.t.ppf(1 - alpha / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
                        if m - h > lim or m + h <= lim:
                            res["t"][0 if m - h > lim else 1] += 1
                            t_done = True
                    if cs_done and t_done:
                        break
            cs, t = res["cs"], res["t"]
            rounds = f"{np.median(cs[2]):.0f}" if cs[2] else "-"
            print(
                f"{noise:>7} {shift:>6.0%} | {cs[0] / args.trials:>13.1%} {cs[1] / args.trials:>5.0%} {rounds:>13} | "
                f"{t[0] / args.trials:>23.1%} {t[1] / args.trials:>5.0%}"
            )


def sequential_local(args):
    """Real trials of ``bench --until-conclusive`` on this machine."""
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import edgepack
    from edgepack.sequential import compare
    from edgepack.types import BenchOptions
    from edgepack.ui import set_quiet
    from helpers import chain_onnx

    set_quiet(True)
    more = round(args.layers * 1.10)
    tmp = Path(tempfile.mkdtemp(prefix="gate-power-"))
    base = edgepack.build(chain_onnx(tmp / "base.onnx", args.layers), output=tmp / "base.edgepack").path
    slow = edgepack.build(chain_onnx(tmp / "slow.onnx", more), output=tmp / "slow.edgepack").path
    options = BenchOptions(
        runs=args.runs, warmup=5, min_seconds=args.min_seconds, cooldown=args.cooldown, threads=args.threads
    )
    print(
        f"bench --until-conclusive on this machine: MatMul/Tanh chain, {args.layers} vs {more} layers of 256x256 "
        f"(+10% work), limit +{args.limit:.0%}, budget {args.budget:g}s, windows >= {args.runs} runs and "
        f">= {args.min_seconds:g}s, cooldown {args.cooldown:g}s, {args.threads} thread(s), window statistic "
        f"p{args.quantile:g}, {args.trials} trials per row"
    )
    print(
        f"{'pair':>22} {'regressed':>9} {'ok':>5} {'inconcl.':>8} {'median windows':>14} {'median s':>8} "
        f"{'median ratio':>12} {'p50 ms':>7}"
    )
    for label, cand in ((f"{args.layers} vs {args.layers} (0%)", base), (f"{more} vs {args.layers} (+10% work)", slow)):
        verdicts, windows, seconds, ratios, p50 = [], [], [], [], []
        for _ in range(args.trials):
            cur, _ = compare(
                cand, "local", options, None, args.limit, args.budget, baseline_bundle=base, quantile=args.quantile
            )
            s = cur.sequential
            verdicts.append(s.verdict)
            windows.append(s.windows + s.baseline_windows)
            seconds.append(s.seconds)
            ratios.append(s.ratio)
            p50.append(cur.result.latency_ms.p50)
        n = len(verdicts)
        print(
            f"{label:>22} {verdicts.count('regressed') / n:>9.0%} {verdicts.count('ok') / n:>5.0%} "
            f"{verdicts.count('inconclusive-at-budget') / n:>8.0%} {np.median(windows):>14.0f} "
            f"{np.median(seconds):>8.1f} {np.median(ratios):>12.3f} {np.median(p50):>7.3f}",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequential", choices=("sim", "local"), help="the sequential gate (bench --until-conclusive)")
    ap.add_argument("--round-sd", type=float, default=0.05, help="sim: sd of a round's log ratio")
    ap.add_argument("--max-rounds", type=int, default=200, help="sim: rounds before giving up")
    ap.add_argument("--layers", type=int, default=30, help="local: layers of the baseline chain")
    ap.add_argument("--threads", type=int, default=1, help="local: --threads")
    ap.add_argument("--quantile", type=float, default=50.0, help="local: --statistic pN (window quantile)")
    ap.add_argument("--budget", type=float, default=60.0, help="local: --budget-seconds")
    ap.add_argument("--runs", type=int, default=50, help="local: --runs per window")
    ap.add_argument("--min-seconds", type=float, default=0.1, help="local: --min-seconds per window")
    ap.add_argument("--cooldown", type=float, default=0.0, help="local: --cooldown")
    ap.add_argument("--trials", type=int, default=40, help="baseline/current pairs per slowdown")
    ap.add_argument("--repeat", type=int, default=5, help="timing windows per side")
    ap.add_argument("--samples", type=int, default=300, help="samples per window")
    ap.add_argument("--spread", type=float, default=0.10, help="within-window log-normal sigma")
    ap.add_argument("--drift", type=float, default=0.03, help="window-to-window level sigma")
    ap.add_argument("--limit", type=float, default=0.05, help="allowed regression")
    args = ap.parse_args()
    if args.sequential == "sim":
        return sequential_sim(args)
    if args.sequential == "local":
        return sequential_local(args)

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
